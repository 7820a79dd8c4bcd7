"""``eokit weights``: list the weights catalogue and verify the files it resolves to."""

from __future__ import annotations

import json

import click

from eokit.core.errors import InputError


@click.group("weights")
def weights() -> None:
    """Pretrained weights eokit knows: where each resolves now, licences, checksums."""


@weights.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def list_command(as_json: bool) -> None:
    """Show every catalogue entry, where it resolves now (offline) or why not, and its licence."""
    from eokit.core.weights import describe_catalogue

    rows = describe_catalogue()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']}  [{row['status']}]  {row['licence']}")
        click.echo(f"    {row['description']}")
        click.echo(f"    {row['location']}")


@weights.command("verify")
@click.argument("names", nargs=-1)
def verify_command(names: tuple[str, ...]) -> None:
    """Re-hash the installed or cached files of NAMES (default: all) against the catalogue."""
    from eokit.core.weights import verify_catalogue

    results = verify_catalogue(list(names) or None)
    bad = {name: status for name, status in results.items() if status not in ("ok", "missing")}
    for name, status in results.items():
        click.echo(f"{name}: {status if status in ('ok', 'missing') else 'MISMATCH'}")
    if bad:
        raise InputError(next(iter(bad.values())))
