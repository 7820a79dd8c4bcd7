"""``eokit agent``: serve the eokit tools over MCP, or list their schemas."""

from __future__ import annotations

import json
from pathlib import Path

import click

from eokit.core.cliopts import out_option


@click.group(name="agent")
def agent() -> None:
    """Tool server exposing eokit to LLM agents (Model Context Protocol)."""


@agent.command("serve")
@click.option("--root", "roots", multiple=True, required=True,
              type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Folder the tools may read (repeat for several).")
@out_option("out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder the tools write under (created if missing; also readable).")
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio",
              show_default=True, help="stdio for desktop clients; http: streamable HTTP at /mcp.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="HTTP bind address (loopback unless you mean to expose the files).")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True,
              help="HTTP port (with --transport http).")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=300.0,
              show_default=True, help="Seconds a read/write call may take.")
@click.option("--job-time-limit", type=click.FloatRange(min=0, min_open=True), default=3600.0,
              show_default=True, help="Seconds a long-running job may take.")
@click.option("--max-output-mb", type=click.FloatRange(min=0, min_open=True), default=4096.0,
              show_default=True, help="Largest total output of one call.")
@click.option("--max-jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Jobs running at once.")
def serve(roots: tuple[Path, ...], out_dir: Path, transport: str, host: str, port: int,
          time_limit: float, job_time_limit: float, max_output_mb: float, max_jobs: int) -> None:
    """Serve every eokit tool over MCP, paths confined to the --root folders and --out."""
    import logging

    import anyio

    from eokit.agent.sandbox import Sandbox
    from eokit.agent.server import EokitServer, Limits

    log = logging.getLogger("eokit.agent")
    sandbox = Sandbox.create(list(roots), out_dir)
    limits = Limits(call_seconds=time_limit, job_seconds=job_time_limit,
                    output_bytes=int(max_output_mb * 1024**2), jobs=max_jobs)
    server = EokitServer(sandbox, limits=limits)
    log.info("%d tools; reading %s; writing %s", len(server.tool_list()),
             ", ".join(str(r) for r in sandbox.roots), sandbox.out_root)
    if transport == "stdio":
        anyio.run(server.run_stdio)
        return
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who reaches this address can call the tools", host)
    log.info("MCP endpoint http://%s:%d/mcp", host, port)
    server.run_http(host, port)


@agent.command("tools")
@click.option("--json", "as_json", is_flag=True, help="Full MCP tool definitions as JSON.")
def tools(as_json: bool) -> None:
    """List the tools an agent sees, with their effect (read, write, long)."""
    import tempfile

    from eokit.agent.sandbox import Sandbox
    from eokit.agent.server import EokitServer

    with tempfile.TemporaryDirectory() as tmp:
        server = EokitServer(Sandbox.create([tmp], Path(tmp) / "out"))
        listing = server.tool_list()
    if as_json:
        click.echo(json.dumps([t.model_dump(mode="json", by_alias=True, exclude_none=True)
                               for t in listing], indent=2))
        return
    for tool in listing:
        effect = (tool.meta or {}).get("eokit/effect", "read")
        click.echo(f"{tool.name:28s} {effect:5s} {(tool.description or '').split('. ')[0]}")
