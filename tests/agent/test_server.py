"""The MCP server driven in-process by the SDK's client session over memory streams."""

import json
import sys
import time
from pathlib import Path

import anyio
import jsonschema
import pytest
from mcp.shared.memory import create_connected_server_and_client_session

from eokit.agent.sandbox import Sandbox
from eokit.agent.server import EokitServer, Limits, all_tools

sys.path.insert(0, str(Path(__file__).parent))
import fake_tools  # noqa: E402  (a module the job process can import by name)


@pytest.fixture
def env(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.txt").write_text("12345")
    (root / "sub").mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    (root / "link.txt").symlink_to(secret)
    sandbox = Sandbox.create([root], tmp_path / "out")
    tools = [*fake_tools.TOOLS, *[s for s in all_tools() if s.name == "synth_scene"]]
    server = EokitServer(sandbox, tools, Limits(call_seconds=1.5, job_seconds=20))
    return server, root, secret


def run(server, body):
    """Connect a client session to the server and run ``body(session)``."""
    async def main():
        async with create_connected_server_and_client_session(server.server) as session:
            return await body(session)

    return anyio.run(main)


def text(result):
    return result.content[0].text


def test_every_tool_schema_and_annotations(env):
    server, _, _ = env

    async def body(session):
        return (await session.list_tools()).tools

    tools = {t.name: t for t in run(server, body)}
    assert {"fake_count", "fake_write", "fake_long", "job_wait", "job_cancel",
            "eokit_find_tools", "synth_scene"} <= set(tools)
    for tool in tools.values():
        jsonschema.Draft202012Validator.check_schema(tool.inputSchema)
    assert tools["fake_count"].annotations.readOnlyHint is True
    assert tools["fake_write"].annotations.readOnlyHint is False
    assert tools["job_cancel"].annotations.readOnlyHint is False
    assert tools["job_cancel"].meta["eokit/effect"] == "control"
    assert "overwrite" in tools["fake_write"].inputSchema["properties"]
    assert "job id" in tools["fake_long"].description
    assert tools["synth_scene"].inputSchema["properties"]["size"]["maximum"] == 2048


def test_results_are_links_and_summary_no_overwrite(env):
    server, _, _ = env

    async def body(session):
        first = await session.call_tool("synth_scene", {"out_dir": "s1", "size": 32})
        again = await session.call_tool("synth_scene", {"out_dir": "s1", "size": 32})
        forced = await session.call_tool("synth_scene", {"out_dir": "s1", "size": 32,
                                                         "seed": 3, "overwrite": True})
        return first, again, forced

    first, again, forced = run(server, body)
    assert not first.isError, text(first)
    summary = first.structuredContent
    assert summary["grid"]["crs"] == "EPSG:32633"
    assert json.loads(text(first)) == summary
    out = server.sandbox.out_root / "s1"
    assert summary["files"]["landcover"] == str(out / "landcover.tif")
    links = [c for c in first.content if c.type == "resource_link"]
    assert {link.name for link in links} >= {"s1/landcover.tif", "s1/reflectance.tif"}
    assert all(Path(link.uri.path).is_file() for link in links)
    # the area of all classes is the scene's area
    assert sum(summary["class_area_m2"].values()) == pytest.approx(32 * 32 * 100.0)
    assert again.isError and "exists" in text(again) and "overwrite" in text(again)
    assert not forced.isError, text(forced)
    assert not any(p.name.startswith(".") for p in server.sandbox.out_root.iterdir())


@pytest.mark.parametrize("args,word", [
    ({"path": "../secret.txt"}, "outside"),
    ({"path": "link.txt"}, "outside"),
    ({"path": "/etc/passwd"}, "outside"),
    ({"path": "sub"}, "not a file"),
    ({"path": "missing.txt"}, "does not exist"),
    ({"path": 3}, "path"),
    ({}, "path"),
    ({"path": "a.txt", "extra": 1}, "extra"),
])
def test_bad_inputs_are_tool_errors_and_server_keeps_serving(env, args, word):
    server, _, _ = env

    async def body(session):
        bad = await session.call_tool("fake_count", args)
        good = await session.call_tool("fake_count", {"path": "a.txt"})
        return bad, good

    bad, good = run(server, body)
    assert bad.isError and word in text(bad)
    assert "\n" not in text(bad) and "Traceback" not in text(bad)
    assert not good.isError and good.structuredContent == {"bytes": 5}


@pytest.mark.parametrize("args,word", [
    ({"out": "x.txt", "repeat": 0}, "repeat"),
    ({"out": "x.txt", "repeat": 5000}, "repeat"),
    ({"out": "x.txt", "mode": "shout"}, "mode"),
    ({"out": "x.txt", "repeat": "many"}, "repeat"),
    ({"out": "../x.txt"}, "outside"),
    ({"out": "/tmp/x.txt"}, "outside"),
])
def test_bad_outputs_and_values(env, args, word):
    server, _, _ = env

    async def body(session):
        return await session.call_tool("fake_write", args)

    result = run(server, body)
    assert result.isError and word in text(result)
    assert not (server.sandbox.out_root / "x.txt").exists()


def test_errors_are_one_line(env):
    server, _, _ = env

    async def body(session):
        return (await session.call_tool("fake_fail", {"kind": "input"}),
                await session.call_tool("fake_fail", {"kind": "bug"}),
                await session.call_tool("no_such_tool", {}))

    user, bug, unknown = run(server, body)
    assert user.isError and text(user) == "size: must be positive"
    assert bug.isError and text(bug) == "internal error in fake_fail: ValueError: boom"
    assert unknown.isError and "unknown tool" in text(unknown)


def test_time_limit_leaves_no_output(env):
    server, _, _ = env

    async def body(session):
        return await session.call_tool("fake_write", {"out": "slow.txt", "delay_s": 3})

    result = run(server, body)
    assert result.isError and "time limit" in text(result)
    time.sleep(2.0)  # the abandoned work ends; its staged output must vanish, not appear
    assert list(server.sandbox.out_root.iterdir()) == []


def test_concurrent_writers_one_wins(env):
    server, _, _ = env

    async def body(session):
        results = {}

        async def one(key, text_):
            results[key] = await session.call_tool(
                "fake_write", {"out": "same.txt", "text": text_, "repeat": 100, "delay_s": 0.5})

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "a", "A")
            tg.start_soon(one, "b", "B")
        return results

    results = run(server, body)
    errors = [r for r in results.values() if r.isError]
    assert len(errors) == 1 and "another call" in text(errors[0])
    body_text = (server.sandbox.out_root / "same.txt").read_text()
    assert body_text in ("A" * 100, "B" * 100)


def test_job_progress_and_result(env):
    server, _, _ = env
    seen = []

    async def progress(value, total, message):
        seen.append((value, message))

    async def body(session):
        started = await session.call_tool("fake_long", {"out_dir": "job1", "steps": 4})
        job = started.structuredContent["job"]
        assert started.structuredContent["state"] == "running"
        done = await session.call_tool("job_wait", {"job_id": job, "timeout_s": 30},
                                       progress_callback=progress)
        status = await session.call_tool("job_status", {"job_id": job})
        return done, status

    done, status = run(server, body)
    assert done.structuredContent["state"] == "done", text(done)
    assert done.structuredContent["result"]["out_dir"] == str(server.sandbox.out_root / "job1")
    assert (server.sandbox.out_root / "job1" / "done.txt").read_text() == "complete"
    assert any(c.type == "resource_link" and c.name == "job1/done.txt" for c in done.content)
    assert status.structuredContent["state"] == "done"
    assert seen and any("step" in (m or "") for _, m in seen)
    values = [v for v, _ in seen]
    assert values == sorted(values)


def test_job_cancel_discards_outputs(env):
    server, _, _ = env

    async def body(session):
        started = await session.call_tool("fake_long",
                                          {"out_dir": "job2", "steps": 50, "step_s": 0.2})
        job = started.structuredContent["job"]
        waited = await session.call_tool("job_wait", {"job_id": job, "timeout_s": 1.0})
        cancelled = await session.call_tool("job_cancel", {"job_id": job})
        return waited, cancelled

    waited, cancelled = run(server, body)
    assert waited.structuredContent["state"] == "running"
    assert cancelled.structuredContent["state"] == "cancelled"
    assert list(server.sandbox.out_root.iterdir()) == []


def test_call_during_shutdown_refused(env):
    server, _, _ = env

    async def body(session):
        before = await session.call_tool("fake_count", {"path": "a.txt"})
        server.close()
        after = await session.call_tool("fake_count", {"path": "a.txt"})
        return before, after

    before, after = run(server, body)
    assert not before.isError
    assert after.isError and "shutting down" in text(after)


def test_resources_list_and_read(env):
    server, _, secret = env

    async def body(session):
        await session.call_tool("fake_write", {"out": "r/note.txt", "text": "hi"})
        listed = (await session.list_resources()).resources
        read = await session.read_resource(listed[0].uri)
        try:
            await session.read_resource(secret.as_uri())
            outside = None
        except Exception as error:  # noqa: BLE001 - the SDK raises McpError
            outside = str(error)
        return listed, read, outside

    listed, read, outside = run(server, body)
    assert [r.name for r in listed] == ["r/note.txt"]
    assert read.contents[0].text == "hi"
    assert outside is not None and "outside" in outside


def test_find_tools(env):
    server, _, _ = env

    async def body(session):
        return await session.call_tool("eokit_find_tools", {"query": "simulate scene"})

    result = run(server, body)
    assert result.structuredContent["tools"][0]["name"] == "synth_scene"


def test_output_over_the_size_limit_is_discarded(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    sandbox = Sandbox.create([root], tmp_path / "out")
    tools = [s for s in all_tools() if s.name == "synth_scene"]
    server = EokitServer(sandbox, tools, Limits(output_bytes=2000))

    async def body(session):
        return await session.call_tool("synth_scene", {"out_dir": "big", "size": 64})

    result = run(server, body)
    assert result.isError and "over the limit" in text(result) and "\n" not in text(result)
    assert list(sandbox.out_root.iterdir()) == []  # neither the output nor its staging folder
