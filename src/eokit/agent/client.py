"""Start ``eokit agent serve`` as a separate process and talk to it with the MCP SDK's client."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal

from mcp import ClientSession

from eokit.core.errors import InputError

Transport = Literal["stdio", "http"]


def serve_command(roots: Sequence[str | Path], out_dir: str | Path, *, transport: Transport,
                  port: int | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The ``eokit agent serve`` command line, run with this interpreter."""
    command = [sys.executable, "-m", "eokit.cli", "agent", "serve", "--out", str(out_dir),
               "--transport", transport]
    for root in roots:
        command += ["--root", str(root)]
    if port is not None:
        command += ["--port", str(port)]
    return [*command, *extra]


def free_port() -> int:
    """A TCP port on the loopback interface nobody listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise InputError(f"the server exited with code {process.returncode} before listening")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise InputError(f"the server did not listen on port {port} within {timeout_s:g} s")


@contextlib.asynccontextmanager
async def connect(roots: Sequence[str | Path], out_dir: str | Path, *,
                  transport: Transport = "stdio", extra: Sequence[str] = (),
                  env: dict[str, str] | None = None, start_timeout_s: float = 60.0,
                  ) -> AsyncIterator[ClientSession]:
    """Start a server process and yield an initialised client session connected to it.

    Args:
        roots: Folders the server may read.
        out_dir: Folder it writes under.
        transport: ``stdio`` (the client owns the process's stdin/stdout) or ``http``
            (streamable HTTP on a free loopback port).
        extra: More ``eokit agent serve`` options (limits).
        env: Environment of the server process (default: this one).
        start_timeout_s: How long the HTTP server may take to listen.

    Yields:
        The session; the process is stopped when the block ends.
    """
    environment = {**os.environ, **(env or {})}
    if transport == "stdio":
        from mcp.client.stdio import StdioServerParameters, stdio_client

        command = serve_command(roots, out_dir, transport="stdio", extra=extra)
        params = StdioServerParameters(command=command[0], args=command[1:], env=environment)
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session
        return
    from mcp.client.streamable_http import streamable_http_client

    port = free_port()
    command = serve_command(roots, out_dir, transport="http", port=port, extra=extra)
    process = subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL)
    try:
        _wait_for_port(port, process, start_timeout_s)
        url = f"http://127.0.0.1:{port}/mcp"
        async with streamable_http_client(url) as (read, write, _), \
                ClientSession(read, write) as session:
            await session.initialize()
            yield session
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def summary(result: Any) -> dict[str, Any]:
    """The JSON summary of a successful tool result; a tool error raises :class:`InputError`."""
    if result.isError:
        text = result.content[0].text if result.content else "tool error"
        raise InputError(text)
    return dict(result.structuredContent or {})
