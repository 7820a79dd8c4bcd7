from typing import Annotated, Literal

import jsonschema
import pytest

from eokit.agent.schema import discover_tools, tool_schema, validate_arguments
from eokit.core.errors import InputError
from eokit.core.tools import InputPath, OutputPath, Range, ToolSpec, Unit


def _demo(
    image: Annotated[str, InputPath()],
    out: Annotated[str, OutputPath("dir")],
    threshold: Annotated[float, Range(0, 1, exclusive_minimum=True)] = 0.5,
    buffer: Annotated[float, Range(0), Unit("m")] = 10.0,
    mode: Literal["fast", "exact"] = "fast",
) -> dict[str, object]:
    """Do a demo thing.

    Args:
        image: Input raster.
        out: Output folder.
        threshold: Decision threshold.
        buffer: Buffer distance.
        mode: Speed mode.
    """
    return {}


SPEC = ToolSpec("demo_run", _demo, effect="write")


def test_schema_generated_from_signature():
    s = tool_schema(SPEC)
    jsonschema.Draft202012Validator.check_schema(s)
    p = s["properties"]
    assert p["image"] == {"type": "string", "format": "input-file", "description": "Input raster."}
    assert p["out"]["format"] == "output-dir"
    assert p["threshold"]["exclusiveMinimum"] == 0 and p["threshold"]["maximum"] == 1
    assert "Unit: m." in p["buffer"]["description"] and p["buffer"]["minimum"] == 0
    assert p["mode"]["enum"] == ["fast", "exact"]
    assert s["required"] == ["image", "out"]
    assert "overwrite" in p


@pytest.mark.parametrize(
    "args,word",
    [
        ({"image": "a", "out": "b", "threshold": 0.0}, "threshold"),
        ({"image": "a", "out": "b", "mode": "slow"}, "mode"),
        ({"image": 3, "out": "b"}, "image"),
        ({"image": "a", "out": "b", "bogus": 1}, "bogus"),
        ({"out": "b"}, "image"),
    ],
)
def test_bad_arguments_refused(args, word):
    with pytest.raises(InputError, match=word):
        validate_arguments(SPEC, args)


def test_good_arguments_pass():
    validate_arguments(SPEC, {"image": "a", "out": "b", "threshold": 1.0, "mode": "exact"})


def test_discovery_schemas_valid():
    for spec in discover_tools():
        jsonschema.Draft202012Validator.check_schema(tool_schema(spec))


def test_every_capability_tools_module_is_registered():
    from pathlib import Path

    import eokit
    from eokit.agent.schema import tool_modules

    src = Path(eokit.__file__).parent
    on_disk = {".".join(("eokit", *p.relative_to(src).with_suffix("").parts))
               for p in src.rglob("tools.py") if p.parent.name not in ("core", "agent")}
    assert on_disk and on_disk <= set(tool_modules())
    names = [spec.name for spec in discover_tools()]
    assert len(names) == len(set(names))
    assert {n.split("_")[0] for n in names} >= {"synth", "change", "lst", "urban", "timeseries"}
