"""``eokit urban``: density-gradient metrics of one city or a batch of cities."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from eokit.core.cliopts import out_option


@click.group(name="urban")
def urban() -> None:
    """Urban density-gradient metrics from optical + SAR imagery."""


def _geo_config(chunk: int, rgb_bands: str, sar_units: str, seed: int) -> object:
    from eokit.core.errors import InputError
    from eokit.urban.geo import GeoConfig

    try:
        bands = tuple(int(b) for b in rgb_bands.split(","))
    except ValueError:
        raise InputError(
            f"must be three comma-separated band numbers, got {rgb_bands!r}",
            parameter="--rgb-bands",
        ) from None
    if len(bands) != 3:
        raise InputError(
            f"must name three bands (red,green,blue), got {rgb_bands!r}", parameter="--rgb-bands"
        )
    rgb = (bands[0], bands[1], bands[2])
    return GeoConfig(chunk=chunk, rgb_bands=rgb, sar_units=sar_units, seed=seed)


_common = [
    click.option(
        "--mode",
        type=click.Choice(["paper", "geo"]),
        default="paper",
        show_default=True,
        help="paper: the published procedure on 8-bit renderings; geo: GeoTIFFs.",
    ),
    click.option(
        "--pixel-size-m",
        type=float,
        default=None,
        help="Ground pixel size in metres (required for non-georeferenced images).",
    ),
    click.option("--chunk", type=click.IntRange(min=1), default=1024, show_default=True,
                 help="Dask chunk (geo)."),
    click.option(
        "--rgb-bands",
        default="1,2,3",
        show_default=True,
        help="1-based red,green,blue bands of the optical GeoTIFF (geo).",
    ),
    click.option(
        "--sar-units",
        type=click.Choice(["auto", "db", "linear"]),
        default="auto",
        show_default=True,
        help="SAR GeoTIFF values (geo).",
    ),
    click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed (geo)."),
]


def _with_common(func: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_common):
        func = option(func)
    return func


@urban.command("analyze")
@click.option("--optical", required=True, type=click.Path(path_type=Path), help="Optical image.")
@click.option("--sar", required=True, type=click.Path(path_type=Path), help="SAR VV image.")
@out_option("out_dir", required=True, type=click.Path(path_type=Path), help="Output folder."
)
@click.option("--name", default=None, help="City name for the report.")
@_with_common
def analyze_command(
    optical: Path,
    sar: Path,
    out_dir: Path,
    name: str | None,
    mode: str,
    pixel_size_m: float | None,
    chunk: int,
    rgb_bands: str,
    sar_units: str,
    seed: int,
) -> None:
    """Analyse one optical + SAR pair; write metrics, profile, class map, centres, report."""
    from eokit.urban.task import analyze_to

    config = _geo_config(chunk, rgb_bands, sar_units, seed) if mode == "geo" else None
    m = analyze_to(
        optical,
        sar,
        out_dir,
        mode=mode,
        pixel_size_m=pixel_size_m,
        name=name,
        geo_config=config,
        command=" ".join(["eokit", *sys.argv[1:]]),
    )
    regions = ", ".join(
        f"{r['kind']} {r['start_km']:.2f}-{r['end_km']:.2f} km" for r in m["regions"]
    )
    click.echo(
        f"profile alpha {_num(m['alpha_per_km'])} C per km (published: slope of the fused value "
        f"through the profile minima), LD {_num(m['ld_km'])} km, regions: {regions}"
    )
    click.echo(m["structure"]["explanation"])
    if "clark" in m:
        c = m["clark"]
        click.echo(
            f"Clark alpha {_num(c['alpha_per_km'])} per km (95% CI {_num(c['ci95'][0])}-"
            f"{_num(c['ci95'][1])}): exponential decay rate of density above the rural baseline, "
            "a different quantity from the profile alpha"
        )
    for note in m.get("notes", []):
        if not note.startswith("assumption failed:"):
            click.echo(f"note: {note}")
    if m.get("warnings"):
        click.echo(
            f"WARNING: {len(m['warnings'])} assumption(s) of the method fail here (logged above; "
            "'warnings' in metrics.json): "
            + "; ".join(w.split(":")[0] for w in m["warnings"])
        )
    click.echo(f"outputs in {out_dir}")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


@urban.command("batch")
@click.argument("cities_csv", type=click.Path(path_type=Path))
@out_option("out_dir", required=True, type=click.Path(path_type=Path), help="Output folder."
)
@click.option("--workers", type=int, default=None, help="Parallel processes (default: CPUs).")
@_with_common
def batch_command(
    cities_csv: Path,
    out_dir: Path,
    workers: int | None,
    mode: str,
    pixel_size_m: float | None,
    chunk: int,
    rgb_bands: str,
    sar_units: str,
    seed: int,
) -> None:
    """Analyse the cities of a CSV (name,optical,sar[,pixel_size_m][,mode]) in parallel."""
    from eokit.urban.task import batch

    config = _geo_config(chunk, rgb_bands, sar_units, seed)
    results = batch(
        cities_csv,
        out_dir,
        workers=workers,
        mode=mode,
        pixel_size_m=pixel_size_m,
        geo_config=config,
        command=" ".join(["eokit", *sys.argv[1:]]),
    )
    for m in results:
        if "error" in m:
            click.echo(f"{m['name']}: error: {m['error']}")
        else:
            flag = f", {len(m['warnings'])} warning(s)" if m.get("warnings") else ""
            click.echo(
                f"{m['name']}: profile alpha {_num(m['alpha_per_km'])} C/km, LD "
                f"{_num(m['ld_km'])} km, {len(m['regions'])} region(s), "
                f"{m['structure']['call']}{flag}"
            )
    click.echo(f"comparison in {out_dir / 'comparison.csv'} and {out_dir / 'report.html'}")
