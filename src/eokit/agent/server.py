"""MCP server over the eokit tools: sandboxed paths, staged outputs, jobs, results as file links."""

from __future__ import annotations

import inspect
import json
import logging
import mimetypes
import multiprocessing
import os
import shutil
import threading
import time
import types as types_module
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import anyio
import anyio.to_thread
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.lowlevel.helper_types import ReadResourceContents
from pydantic import AnyUrl

from eokit.agent.sandbox import Sandbox
from eokit.agent.schema import discover_tools, tool_schema, validate_arguments
from eokit.core.errors import EokitError, InputError
from eokit.core.tools import InputPath, OutputPath, Range, ToolSpec

log = logging.getLogger(__name__)

#: Modules whose ``TOOLS`` the agent itself adds to the capabilities' tools.
AGENT_TOOL_MODULES: tuple[str, ...] = ("eokit.agent.tools",)

_TEXT_SUFFIXES = {".json", ".geojson", ".csv", ".txt", ".html", ".md", ".yaml", ".yml", ".xml"}
_MAX_LINKS = 50
#: Server tools that change state although they write no file.
_CONTROL_TOOLS = frozenset({"job_cancel"})


@dataclass(frozen=True)
class Limits:
    """Per-call limits.

    Attributes:
        call_seconds: Wall time of a read or write call; past it the call is an error and its
            outputs are discarded.
        job_seconds: Wall time of a job; past it the job is stopped.
        output_bytes: Total size a call may write; more is discarded and reported.
        resource_bytes: Largest file sent back through ``resources/read``.
        jobs: Jobs running at once; more are refused until one ends.
    """

    call_seconds: float = 300.0
    job_seconds: float = 3600.0
    output_bytes: int = 4 * 1024**3
    resource_bytes: int = 16 * 1024**2
    jobs: int = 2


@dataclass
class _Output:
    """One output path of a call: where the user asked for it and where it is written first."""

    parameter: str
    final: Path
    staging: Path
    kind: str

    @property
    def written(self) -> Path:
        """The path the tool function is given."""
        return self.staging / self.final.name if self.kind == "file" else self.staging


@dataclass
class _Call:
    """A prepared call: checked arguments, confined paths, claimed outputs."""

    spec: ToolSpec
    kwargs: dict[str, Any]
    outputs: list[_Output]
    overwrite: bool


@dataclass
class Job:
    """A long operation running in its own process.

    Attributes:
        id: Job identifier.
        tool: Tool name.
        state: ``running``, ``done``, ``failed``, ``cancelled`` or ``timed out``.
        started: Start time (epoch seconds).
        finished: End time, or None while running.
        progress: Progress messages received so far (monotonic).
        message: The latest progress message.
        result: The committed summary once done.
        error: The one-line error once failed.
    """

    id: str
    tool: str
    state: str = "running"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    progress: int = 0
    message: str = ""
    result: dict[str, Any] | None = None
    error: str | None = None
    links: list[dict[str, Any]] = field(default_factory=list)
    process: Any = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def status(self) -> dict[str, Any]:
        """Status as a JSON-able dict."""
        end = self.finished or time.time()
        out: dict[str, Any] = {"job": self.id, "tool": self.tool, "state": self.state,
                               "elapsed_s": round(end - self.started, 2),
                               "progress_messages": self.progress}
        if self.message:
            out["last_message"] = self.message
        if self.error:
            out["error"] = self.error
        if self.result is not None:
            out["result"] = self.result
        return out


def _marker(tp: Any) -> InputPath | OutputPath | None:
    """The path marker of a parameter type, also inside ``X | None``."""
    if get_origin(tp) is Annotated:
        for meta in get_args(tp)[1:]:
            if isinstance(meta, InputPath | OutputPath):
                return meta
        return _marker(get_args(tp)[0])
    if get_origin(tp) in (Union, types_module.UnionType):
        for arg in get_args(tp):
            found = _marker(arg)
            if found is not None:
                return found
    return None


def _rewrite(value: Any, old: str, new: str) -> Any:
    """Replace a path prefix in every string of a JSON-able value."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: _rewrite(v, old, new) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rewrite(v, old, new) for v in value]
    return value


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _mime(path: Path) -> str:
    if path.suffix.lower() in (".tif", ".tiff"):
        return "image/tiff"
    if path.suffix.lower() == ".geojson":
        return "application/geo+json"
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _job_main(tool: str, target: tuple[str, str], kwargs: dict[str, Any], queue: Any) -> None:
    """Entry point of a job process: run one tool, send log lines as progress and the result."""
    # The parent's stdout may be the MCP channel: nothing of the job may reach it.
    os.dup2(2, 1)
    import sys

    sys.stdout = sys.stderr

    class _Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                queue.put(("progress", record.getMessage()[:300]))
            except Exception:  # noqa: BLE001 - progress is best effort
                pass

    logging.getLogger("eokit").addHandler(_Forward(logging.INFO))
    logging.getLogger("eokit").setLevel(logging.INFO)
    try:
        import importlib

        function = importlib.import_module(target[0])
        for part in target[1].split("."):
            function = getattr(function, part)
        result = function(**kwargs)
        queue.put(("done", json.loads(json.dumps(result, default=str))))
    except EokitError as error:
        queue.put(("error", str(error)))
    except BaseException as error:  # noqa: BLE001 - reported as one line, never a traceback
        logging.getLogger(__name__).exception("job %s failed", tool)
        queue.put(("error", f"internal error in {tool}: {type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else ''}"))


def _closed_stream_filter(record: logging.LogRecord) -> bool:
    """Drop the SDK's traceback for a client that closed its event stream (a normal goodbye)."""
    error = record.exc_info[1] if record.exc_info else None
    return not isinstance(error, anyio.ClosedResourceError)


def all_tools() -> list[ToolSpec]:
    """The capabilities' tools plus the agent's own spatial tools, names unique."""
    specs = discover_tools()
    names = {s.name for s in specs}
    for spec in discover_tools(AGENT_TOOL_MODULES):
        if spec.name in names:
            raise ValueError(f"tool name {spec.name!r} defined twice")
        specs.append(spec)
    return specs


class EokitServer:
    """An MCP server exposing eokit tools with sandboxing, staged outputs and jobs.

    Every path argument is confined by the :class:`Sandbox`. Outputs are written to a hidden
    staging path beside their final place and moved there only when the call succeeds within
    its limits, so a failed, timed-out or cancelled call leaves nothing that looks complete, and
    two calls naming the same output cannot both write it. Tools whose effect is ``long`` run as
    jobs in their own process (``job_wait`` / ``job_status`` / ``job_cancel``).

    Args:
        sandbox: Allowed input roots and the output root.
        tools: Tool specs (default: every installed capability's plus the spatial tools).
        limits: Per-call limits.
    """

    def __init__(self, sandbox: Sandbox, tools: list[ToolSpec] | None = None,
                 limits: Limits | None = None) -> None:
        from eokit import __version__

        self.sandbox = sandbox
        self.limits = limits or Limits()
        self.specs: dict[str, ToolSpec] = {s.name: s for s in (tools or all_tools())}
        self.jobs: dict[str, Job] = {}
        self.closing = False
        self._claims: set[Path] = set()
        self._lock = threading.Lock()
        self._builtin: dict[str, tuple[ToolSpec, Callable[..., Any]]] = {}
        for spec, handler in self._builtin_tools():
            self._builtin[spec.name] = (spec, handler)
        self.server: Server[Any, Any] = Server(
            "eokit", version=__version__,
            instructions=(
                "eokit: Earth-observation tools. Paths are relative to the allowed folders "
                f"({', '.join(str(r) for r in sandbox.roots)}) or absolute inside them; outputs "
                f"go under {sandbox.out_root}. Tools marked long return a job id: follow with "
                "job_wait. Results are file links plus a JSON summary (CRS, extent, areas in "
                "m^2). Use eokit_find_tools to search the tools by keyword."),
        )
        self._register()

    # ----------------------------------------------------------------- listing
    def tool_list(self) -> list[types.Tool]:
        """Every tool as an MCP tool definition (schema, annotations)."""
        out = []
        for spec in [*self.specs.values(), *(s for s, _ in self._builtin.values())]:
            description = spec.description
            doc = (spec.function.__doc__ or "").strip()
            body = doc.split("\n\n", 1)[1].split("\n\n    Args:")[0] if "\n\n" in doc else ""
            body = " ".join(body.split("Args:")[0].split())
            if body:
                description = f"{description} {body}"
            if spec.effect == "long":
                description += (" Long-running: returns a job id at once; use job_wait for "
                                "progress and the result, job_cancel to stop it.")
            if spec.effect != "read":
                description += " Writes only under the output folder; never replaces an " \
                               "existing output unless overwrite is true."
            out.append(types.Tool(
                name=spec.name,
                title=spec.name.replace("_", " "),
                description=description,
                inputSchema=tool_schema(spec),
                annotations=types.ToolAnnotations(
                    title=spec.name.replace("_", " "),
                    readOnlyHint=spec.effect == "read" and spec.name not in _CONTROL_TOOLS,
                    # Additive by default: replacing a file needs overwrite=true in the call.
                    destructiveHint=False,
                    idempotentHint=spec.effect == "read",
                    openWorldHint=False,
                ),
                # job_cancel writes no file but changes state: not "read" for a careful client.
                _meta={"eokit/effect": "control" if spec.name in _CONTROL_TOOLS else spec.effect},
            ))
        return out

    # ----------------------------------------------------------------- preparing
    def _prepare(self, spec: ToolSpec, arguments: dict[str, Any]) -> _Call:
        validate_arguments(spec, arguments)
        args = dict(arguments)
        overwrite = bool(args.pop("overwrite", False))
        hints = typing.get_type_hints(spec.function, include_extras=True)
        kwargs: dict[str, Any] = {}
        outputs: list[_Output] = []
        for name in inspect.signature(spec.function).parameters:
            if name not in args:
                continue
            value = args[name]
            marker = _marker(hints[name])
            if value is None or marker is None:
                kwargs[name] = value
            elif isinstance(marker, InputPath):
                kwargs[name] = str(self.sandbox.input_path(name, value, marker.kind))
            else:
                final = self.sandbox.output_path(name, value, overwrite=overwrite)
                staging = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
                outputs.append(_Output(name, final, staging, marker.kind))
        self._claim(outputs)
        for out in outputs:
            if out.kind == "file":
                out.staging.mkdir(parents=True)
            else:
                out.staging.parent.mkdir(parents=True, exist_ok=True)
            kwargs[out.parameter] = str(out.written)
        return _Call(spec, kwargs, outputs, overwrite)

    def _claim(self, outputs: list[_Output]) -> None:
        with self._lock:
            for out in outputs:
                for held in self._claims:
                    if out.final == held or out.final.is_relative_to(held) or \
                            held.is_relative_to(out.final):
                        raise InputError(f"{out.parameter}: {out.final.name!r} is being written "
                                         "by another call; wait for it or choose another name")
            self._claims.update(o.final for o in outputs)

    def _release(self, call: _Call, *, discard: bool) -> None:
        for out in call.outputs:
            if discard:
                shutil.rmtree(out.staging, ignore_errors=True)
        with self._lock:
            self._claims.difference_update(o.final for o in call.outputs)

    def _commit(self, call: _Call, result: dict[str, Any]) -> tuple[dict[str, Any], list[Path]]:
        """Move staged outputs into place; rewrite staged paths in the summary."""
        size = sum(_tree_bytes(o.staging) for o in call.outputs if o.staging.exists())
        if size > self.limits.output_bytes:
            raise InputError(f"{call.spec.name}: the outputs would take {size / 1e6:.1f} MB, "
                             f"over the limit of {self.limits.output_bytes / 1e6:.1f} MB; "
                             "ask for a smaller size")
        files: list[Path] = []
        for out in call.outputs:
            if out.kind == "file":
                staged = sorted(p for p in out.staging.iterdir())
                for item in staged:
                    target = out.final.parent / item.name
                    if target.exists() and not call.overwrite:
                        raise InputError(f"{out.parameter}: {target.name!r} exists (pass "
                                         "overwrite: true to replace it)")
                for item in staged:
                    target = out.final.parent / item.name
                    if target.is_dir():
                        shutil.rmtree(target)
                    os.replace(item, target)
                    files.append(target)
                out.staging.rmdir()
                result = _rewrite(result, str(out.staging), str(out.final.parent))
            else:
                if not out.staging.exists():
                    out.staging.mkdir(parents=True)
                if out.final.exists():
                    if not call.overwrite:
                        raise InputError(f"{out.parameter}: {out.final.name!r} exists (pass "
                                         "overwrite: true to replace it)")
                    trash = out.final.parent / f".{out.final.name}.old-{uuid.uuid4().hex[:8]}"
                    os.replace(out.final, trash)
                    os.replace(out.staging, out.final)
                    shutil.rmtree(trash, ignore_errors=True)
                else:
                    os.replace(out.staging, out.final)
                files.extend(sorted(p for p in out.final.rglob("*") if p.is_file()))
                result = _rewrite(result, str(out.staging), str(out.final))
        return result, files

    # ----------------------------------------------------------------- results
    def _links(self, files: list[Path]) -> list[dict[str, Any]]:
        links = []
        for path in files[:_MAX_LINKS]:
            name = str(path.relative_to(self.sandbox.out_root)) \
                if path.is_relative_to(self.sandbox.out_root) else path.name
            links.append({"uri": path.as_uri(), "name": name, "mimeType": _mime(path),
                          "size": path.stat().st_size})
        return links

    @staticmethod
    def _result(summary: dict[str, Any], links: list[dict[str, Any]]) -> types.CallToolResult:
        content: list[types.ContentBlock] = [
            types.TextContent(type="text", text=json.dumps(summary, separators=(",", ":"),
                                                           default=str))]
        content += [types.ResourceLink(type="resource_link", **link) for link in links]
        return types.CallToolResult(content=content, structuredContent=summary, isError=False)

    @staticmethod
    def _error(message: str) -> types.CallToolResult:
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=" ".join(message.split()))],
            isError=True)

    # ----------------------------------------------------------------- calling
    async def call(self, name: str, arguments: dict[str, Any] | None) -> types.CallToolResult:
        """Run one tool call; every failure is a tool error with a one-line message."""
        arguments = arguments or {}
        if self.closing:
            return self._error("the server is shutting down; the call was not run")
        try:
            if name in self._builtin:
                spec, handler = self._builtin[name]
                validate_arguments(spec, arguments)
                summary = await handler(**arguments)
                links = summary.pop("_links", []) if isinstance(summary, dict) else []
                return self._result(summary, links)
            if name not in self.specs:
                raise InputError(f"unknown tool {name!r}; list the tools or use "
                                 "eokit_find_tools")
            spec = self.specs[name]
            call = self._prepare(spec, arguments)
            if spec.effect == "long":
                return self._result(self._start_job(call).status(), [])
            return await self._run_inline(call)
        except EokitError as error:
            return self._error(str(error))
        except Exception as error:  # noqa: BLE001 - a bug is still one line for the client
            log.exception("tool %s failed", name)
            first = str(error).splitlines()[0] if str(error) else ""
            return self._error(f"internal error in {name}: {type(error).__name__}: {first}")

    async def _run_inline(self, call: _Call) -> types.CallToolResult:
        done = threading.Event()
        abandoned = threading.Event()
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["result"] = call.spec.function(**call.kwargs)
            except BaseException as error:  # noqa: BLE001 - re-raised in the event loop
                box["error"] = error
            finally:
                done.set()
                if abandoned.is_set():  # the caller gave up: its outputs must not appear
                    self._release(call, discard=True)

        try:
            with anyio.fail_after(self.limits.call_seconds):
                await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
        except TimeoutError:
            abandoned.set()
            if done.is_set():
                self._release(call, discard=True)
            raise InputError(f"{call.spec.name}: stopped after the time limit of "
                             f"{self.limits.call_seconds:g} s; nothing was written") from None
        except BaseException:
            abandoned.set()
            if done.is_set():
                self._release(call, discard=True)
            raise
        try:
            if "error" in box:
                raise box["error"]
            result = json.loads(json.dumps(box["result"], default=str))
            result, files = self._commit(call, result)
        except BaseException:
            self._release(call, discard=True)
            raise
        self._release(call, discard=False)
        return self._result(result, self._links(files))

    # ----------------------------------------------------------------- jobs
    def _start_job(self, call: _Call) -> Job:
        running = sum(j.state == "running" for j in self.jobs.values())
        if running >= self.limits.jobs:
            self._release(call, discard=True)
            raise InputError(f"{running} jobs are running (the limit); wait for one with "
                             "job_wait or stop one with job_cancel")
        job = Job(id=uuid.uuid4().hex[:12], tool=call.spec.name)
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        function = call.spec.function
        target = (function.__module__, function.__qualname__)
        job.process = ctx.Process(target=_job_main,
                                  args=(call.spec.name, target, call.kwargs, queue),
                                  daemon=True, name=f"eokit-job-{job.id}")
        job.process.start()
        self.jobs[job.id] = job
        threading.Thread(target=self._watch, args=(job, call, queue), daemon=True).start()
        log.info("job %s started: %s", job.id, call.spec.name)
        return job

    def _watch(self, job: Job, call: _Call, queue: Any) -> None:
        import queue as queue_module

        outcome: tuple[str, Any] | None = None
        while outcome is None:
            if job.cancel.is_set():
                self._stop(job.process)
                job.state, job.error = "cancelled", "cancelled; its outputs were discarded"
                break
            if time.time() - job.started > self.limits.job_seconds:
                self._stop(job.process)
                job.state = "timed out"
                job.error = (f"stopped after the job time limit of {self.limits.job_seconds:g} "
                             "s; its outputs were discarded")
                break
            try:
                kind, payload = queue.get(timeout=0.2)
            except queue_module.Empty:
                if not job.process.is_alive():
                    try:  # the last message may arrive after the exit
                        kind, payload = queue.get(timeout=0.5)
                    except queue_module.Empty:
                        job.state = "failed"
                        job.error = f"the job process ended (exit code {job.process.exitcode})"
                        break
                else:
                    continue
            if kind == "progress":
                job.progress += 1
                job.message = str(payload)
            else:
                outcome = (kind, payload)
        if outcome is None:
            self._release(call, discard=True)
        elif outcome[0] == "error":
            job.state, job.error = "failed", str(outcome[1])
            self._release(call, discard=True)
        else:
            try:
                result, files = self._commit(call, outcome[1])
                job.result, job.links = result, self._links(files)
                job.state = "done"
                self._release(call, discard=False)
            except EokitError as error:
                job.state, job.error = "failed", str(error)
                self._release(call, discard=True)
        job.finished = time.time()
        job.process.join(timeout=5)
        log.info("job %s %s", job.id, job.state)

    @staticmethod
    def _stop(process: Any) -> None:
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)

    def _job(self, job_id: str) -> Job:
        if job_id not in self.jobs:
            raise InputError(f"job_id: no job {job_id!r}")
        return self.jobs[job_id]

    def _builtin_tools(self) -> list[tuple[ToolSpec, Callable[..., Any]]]:
        """Job control and tool search: tools of the server itself."""

        async def job_status(job_id: str) -> dict[str, Any]:
            """Report a job's state, progress and, once done, its result.

            Args:
                job_id: The id a long-running tool returned.
            """
            job = self._job(job_id)
            return {**job.status(), "_links": job.links}

        async def job_wait(
            job_id: str,
            timeout_s: Annotated[float, Range(0, 600)] = 60.0,
        ) -> dict[str, Any]:
            """Wait for a job to end (or the timeout), sending progress notifications meanwhile.

            Args:
                job_id: The id a long-running tool returned.
                timeout_s: Longest wait in seconds; the job keeps running after it.
            """
            job = self._job(job_id)
            token = None
            session = None
            try:
                context = self.server.request_context
                session = context.session
                token = context.meta.progressToken if context.meta else None
            except LookupError:
                pass
            deadline = time.monotonic() + timeout_s
            sent = -1
            while job.state == "running" and time.monotonic() < deadline:
                if token is not None and session is not None and job.progress != sent:
                    sent = job.progress
                    await session.send_progress_notification(
                        token, float(job.progress), None, job.message or "running")
                await anyio.sleep(0.1)
            return {**job.status(), "_links": job.links}

        async def job_cancel(job_id: str) -> dict[str, Any]:
            """Stop a running job; its outputs are discarded.

            Args:
                job_id: The id a long-running tool returned.
            """
            job = self._job(job_id)
            if job.state == "running":
                job.cancel.set()
                with anyio.fail_after(30):
                    while job.finished is None:
                        await anyio.sleep(0.05)
            return job.status()

        async def job_list() -> dict[str, Any]:
            """List the jobs of this server and their states."""
            return {"jobs": [j.status() for j in self.jobs.values()]}

        async def eokit_find_tools(
            query: str, limit: Annotated[int, Range(1, 50)] = 8,
        ) -> dict[str, Any]:
            """Find tools by keywords (name and description), best first.

            Args:
                query: Words describing the operation, e.g. "land surface temperature".
                limit: Most tools returned.
            """
            words = [w for w in query.lower().replace("_", " ").split() if len(w) > 1]
            scored = []
            for tool in self.tool_list():
                text = f"{tool.name.replace('_', ' ')} {tool.description or ''}".lower()
                score = sum(text.count(w) + 3 * (w in tool.name) for w in words)
                if score:
                    scored.append((score, tool.name, (tool.description or "").split(". ")[0]))
            scored.sort(key=lambda t: (-t[0], t[1]))
            return {"tools": [{"name": n, "description": d} for _, n, d in scored[:limit]]}

        handlers: list[Callable[..., Any]] = [job_status, job_wait, job_cancel, job_list,
                                              eokit_find_tools]
        return [(ToolSpec(f.__name__, f, effect="read"), f) for f in handlers]

    # ----------------------------------------------------------------- resources
    def resource_list(self) -> list[types.Resource]:
        """Files under the output root (newest first, at most 200)."""
        root = self.sandbox.out_root
        files = [p for p in root.rglob("*") if p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(root).parts)]
        files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        return [types.Resource(uri=AnyUrl(p.as_uri()), name=str(p.relative_to(root)),
                               mimeType=_mime(p), size=p.stat().st_size) for p in files[:200]]

    def resource_read(self, uri: str) -> list[ReadResourceContents]:
        """Contents of a file inside the allowed folders, within the size limit."""
        if not uri.startswith("file://"):
            raise InputError(f"uri: only file:// resources exist here, got {uri!r}")
        from urllib.parse import unquote, urlparse

        path = self.sandbox.input_path("uri", unquote(urlparse(uri).path))
        size = path.stat().st_size
        if size > self.limits.resource_bytes:
            raise InputError(f"uri: {path.name} has {size / 1e6:.1f} MB, over the "
                             f"{self.limits.resource_bytes / 1e6:.0f} MB read limit; inspect it "
                             "with the describe/zonal tools instead")
        if path.suffix.lower() in _TEXT_SUFFIXES:
            return [ReadResourceContents(path.read_text(errors="replace"), _mime(path))]
        return [ReadResourceContents(path.read_bytes(), _mime(path))]

    # ----------------------------------------------------------------- wiring
    def _register(self) -> None:
        server = self.server

        @server.list_tools()  # type: ignore[no-untyped-call,untyped-decorator]
        async def _list_tools() -> list[types.Tool]:
            return self.tool_list()

        @server.call_tool(validate_input=False)  # type: ignore[untyped-decorator]
        async def _call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
            return await self.call(name, arguments)

        @server.list_resources()  # type: ignore[no-untyped-call,untyped-decorator]
        async def _list_resources() -> list[types.Resource]:
            return self.resource_list()

        @server.read_resource()  # type: ignore[no-untyped-call,untyped-decorator]
        async def _read_resource(uri: AnyUrl) -> list[ReadResourceContents]:
            try:
                return self.resource_read(str(uri))
            except EokitError as error:
                # resources/read has no error result: a JSON-RPC error with the one line.
                from mcp.shared.exceptions import McpError

                raise McpError(types.ErrorData(code=types.INVALID_PARAMS,
                                               message=str(error))) from None

    def close(self) -> None:
        """Refuse new calls, stop running jobs and discard their outputs."""
        self.closing = True
        for job in self.jobs.values():
            if job.state == "running":
                job.cancel.set()
        deadline = time.time() + 15
        while any(j.finished is None for j in self.jobs.values()) and time.time() < deadline:
            time.sleep(0.05)

    # ----------------------------------------------------------------- transports
    async def run_stdio(self) -> None:
        """Serve over stdin/stdout until the client closes the stream."""
        import sys
        from io import TextIOWrapper

        from mcp.server.stdio import stdio_server

        # Keep the protocol on a private copy of fd 1 and send everything else written to
        # stdout (a library's print, a C extension) to stderr, where it cannot corrupt it.
        channel = os.fdopen(os.dup(1), "wb", buffering=0)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        stdout = anyio.wrap_file(TextIOWrapper(channel, encoding="utf-8", write_through=True))
        try:
            async with stdio_server(stdout=stdout) as (read, write):
                await self.server.run(read, write, self.server.create_initialization_options())
        finally:
            self.close()

    def run_http(self, host: str = "127.0.0.1", port: int = 8765) -> None:
        """Serve the streamable HTTP transport at ``http://HOST:PORT/mcp``."""
        import contextlib
        from collections.abc import AsyncIterator

        import uvicorn
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
        from mcp.server.transport_security import TransportSecuritySettings
        from starlette.applications import Starlette
        from starlette.routing import Route
        from starlette.types import Receive, Scope, Send

        security = None
        if host in ("127.0.0.1", "localhost", "::1"):
            # A web page in the user's browser must not reach a loopback server by DNS rebinding.
            security = TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
                allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"])
        manager = StreamableHTTPSessionManager(app=self.server, json_response=False,
                                               security_settings=security)
        logging.getLogger("mcp.server.streamable_http").addFilter(_closed_stream_filter)

        class _Endpoint:
            async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
                await manager.handle_request(scope, receive, send)

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            async with manager.run():
                try:
                    yield
                finally:
                    self.closing = True
                    await anyio.to_thread.run_sync(self.close)

        app = Starlette(routes=[Route("/mcp", endpoint=_Endpoint())], lifespan=lifespan)
        uvicorn.run(app, host=host, port=port, log_level="warning")

