"""Demo section: an MCP client session against the tool server, shown as a transcript."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _short(payload: Any, limit: int = 360) -> str:
    text = json.dumps(payload, separators=(", ", ": "), default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def add_demo_section(report: Any, out_dir: Path, *, quick: bool, seed: int) -> None:
    """Simulate a change pair and answer spatial questions about it through the MCP protocol.

    The client talks to the server over in-memory streams (the same protocol as stdio/HTTP):
    simulate, describe, class areas, zonal statistics over a polygon, a refused path. The
    full calls and results are written to ``out_dir/agent/transcript.json``.
    """
    import importlib.util

    if importlib.util.find_spec("mcp") is None:
        report.section("Agent interface (MCP)", "Skipped: the MCP SDK is not installed "
                       "(`pip install \"eokit[agent]\"`).")
        logger.warning("agent demo skipped: the mcp package is not installed")
        return
    import anyio
    import rasterio
    from mcp.shared.memory import create_connected_server_and_client_session

    from eokit.agent.sandbox import Sandbox
    from eokit.agent.server import EokitServer
    from eokit.core.raster import write_geojson

    start = time.perf_counter()
    root = Path(out_dir) / "agent"
    data, out = root / "data", root / "out"
    data.mkdir(parents=True, exist_ok=True)
    server = EokitServer(Sandbox.create([data], out))
    size = 96 if quick else 192
    turns: list[dict[str, str]] = []
    full: list[dict[str, Any]] = []

    async def session_body() -> None:
        async with create_connected_server_and_client_session(server.server) as session:
            async def ask(question: str, tool: str, arguments: dict[str, Any]) -> Any:
                result = await session.call_tool(tool, arguments)
                answer = (f"error: {result.content[0].text}" if result.isError
                          else _short(result.structuredContent))
                turns.append({"question": question, "tool call": f"{tool} {_short(arguments)}",
                              "result": answer})
                full.append({"question": question, "tool": tool, "arguments": arguments,
                             "error": result.content[0].text if result.isError else None,
                             "result": result.structuredContent})
                logger.info("agent demo: %s -> %s", tool, "error" if result.isError else "ok")
                return result.structuredContent

            pair = await ask("Simulate two dates of a scene with new buildings.",
                             "synth_change_pair", {"out_dir": "pair", "size": size,
                                                   "seed": seed, "overwrite": True})
            await ask("What CRS and pixel size does it have?", "geo_describe",
                      {"path": "pair/change_type.tif"})
            await ask("How much area changed, by type?", "geo_class_areas",
                      {"path": "pair/change_type.tif"})
            # a zone over the scene's western half, written as a user would bring one
            with rasterio.open(pair["files"]["change_type"]) as src:
                left, bottom, right, top = src.bounds
                crs = src.crs
            mid = (left + right) / 2
            zone = {"type": "Polygon", "coordinates": [[[left, bottom], [mid, bottom],
                                                        [mid, top], [left, top], [left, bottom]]]}
            west = [{"geometry": zone, "properties": {"name": "west"}}]
            write_geojson(data / "west.geojson", west, crs=crs)
            await ask("How many m² of new buildings are in the western half?", "geo_zonal_stats",
                      {"raster": "pair/change_type.tif", "zones": "west.geojson",
                       "categorical": True})
            await ask("Read /etc/passwd.", "geo_describe", {"path": "/etc/passwd"})

    anyio.run(session_body)
    from eokit.core.raster import atomic_write

    with atomic_write(root / "transcript.json") as tmp:
        tmp.write_text(json.dumps(full, indent=1, default=str), encoding="utf-8")
    report.section(
        "Agent interface (MCP)",
        "An MCP client session against `eokit agent serve`'s server (in-memory streams here; stdio "
        "or HTTP in use): each question is answered by one tool call whose result is a compact "
        "JSON summary. Paths outside the allowed folders are refused.",
    )
    report.table(turns, caption="Transcript: question, the client's tool call, the server's result")
    report.metrics({"tools offered": len(server.tool_list()), "calls": len(turns),
                    "seconds": round(time.perf_counter() - start, 1)})
