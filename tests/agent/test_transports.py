"""``eokit agent serve`` as a separate process, driven by the MCP SDK client (stdio and HTTP)."""

import json

import anyio
import jsonschema
import pytest

from eokit.agent.client import connect, summary


@pytest.fixture
def dirs(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("no")
    return root, tmp_path / "out", outside


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_serve_process_lists_calls_and_refuses(dirs, transport):
    root, out, outside = dirs

    async def main():
        async with connect([root], out, transport=transport) as session:
            tools = (await session.list_tools()).tools
            scene = await session.call_tool("synth_scene", {"out_dir": "s", "size": 32})
            escape = await session.call_tool("synth_scene", {"out_dir": "../escape", "size": 32})
            huge = await session.call_tool("synth_scene", {"out_dir": "h", "size": 10**6})
            enum = await session.call_tool("synth_change_pair", {"out_dir": "p",
                                                                 "domain": "mars"})
            resources = (await session.list_resources()).resources
            read = await session.read_resource(resources[0].uri) if resources else None
            again = await session.call_tool("synth_scene", {"out_dir": "s2", "size": 32})
            return tools, scene, escape, huge, enum, resources, read, again

    tools, scene, escape, huge, enum, resources, read, again = anyio.run(main)
    names = {t.name for t in tools}
    assert {"synth_scene", "job_wait", "eokit_find_tools"} <= names
    for tool in tools:
        jsonschema.Draft202012Validator.check_schema(tool.inputSchema)
    result = summary(scene)
    assert result["grid"]["crs"] == "EPSG:32633"
    assert (out / "s" / "landcover.tif").is_file()
    assert json.loads(scene.content[0].text) == result
    for bad, word in [(escape, "outside"), (huge, "size"), (enum, "domain")]:
        assert bad.isError and word in bad.content[0].text, bad.content[0].text
        assert "Traceback" not in bad.content[0].text
    assert not (out.parent / "escape").exists()
    assert resources and read is not None and read.contents
    assert not again.isError  # still serving after the refusals
