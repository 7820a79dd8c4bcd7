"""Change tools: schemas, direct calls and a call through the agent server."""

from __future__ import annotations

import json

import anyio
import jsonschema
import numpy as np
import pytest
import rasterio

from eokit.agent.sandbox import Sandbox
from eokit.agent.schema import tool_schema
from eokit.agent.server import EokitServer
from eokit.change.model import build_canet
from eokit.change.task import save_model
from eokit.change.tools import TOOLS
from eokit.core.errors import InputError
from eokit.core.raster import write_raster
from eokit.core.synth.change import change_pair, write_change_dataset

FUNCTIONS = {tool.name: tool.function for tool in TOOLS}


@pytest.fixture
def inputs(tmp_path):
    """An untrained two-dataset model and a simulated 64 px pair with its label, in one root."""
    root = tmp_path / "data"
    root.mkdir()
    model = save_model(build_canet(["sim_buildings", "sim_landcover"], in_channels=6),
                       root / "model.safetensors")
    pair = change_pair(64, seed=5, domain="sim_buildings")
    files = {
        "A": write_raster(root / "A.tif", pair.image_a, pair.grid),
        "B": write_raster(root / "B.tif", pair.image_b, pair.grid),
        "label": write_raster(root / "label.tif", (pair.label * 255).astype(np.uint8), pair.grid),
    }
    return root, model, files


def test_schemas():
    assert set(FUNCTIONS) == {"change_predict", "change_evaluate", "change_fit"}
    for tool in TOOLS:
        jsonschema.Draft202012Validator.check_schema(tool_schema(tool))
    predict = tool_schema(next(t for t in TOOLS if t.name == "change_predict"))
    assert predict["required"] == ["checkpoint", "image_a", "image_b", "out_dir", "domain"]
    assert predict["properties"]["label_mode"]["enum"][0] == "auto"
    assert predict["properties"]["adapter"]["anyOf"][0]["format"] == "input-file"
    fit = tool_schema(next(t for t in TOOLS if t.name == "change_fit"))
    assert fit["properties"]["datasets"]["items"]["enum"][0] == "sim_buildings"
    assert list(fit["properties"]["datasets"]["default"]) == ["sim_buildings"]


def _changed_area_from_cog(path):
    """Changed area computed independently of eokit from the binary COG."""
    with rasterio.open(path) as src:
        binary = src.read(1)
        cell = abs(src.transform.a * src.transform.e)
    return float((binary == 1).sum() * cell), int((binary == 255).sum())


def test_predict_summary_matches_the_written_cog(inputs, tmp_path):
    _, model, files = inputs
    out = tmp_path / "pred"
    summary = FUNCTIONS["change_predict"](str(model), str(files["A"]), str(files["B"]), str(out),
                                          "sim_buildings", label=str(files["label"]), tile=64,
                                          overlap=32)
    json.dumps(summary, allow_nan=False)
    area, nodata = _changed_area_from_cog(out / "change_binary.tif")
    assert nodata == 0
    assert summary["changed_area_m2"] == pytest.approx(area)
    assert sum(summary["class_pixels"].values()) == 64 * 64
    assert summary["grid"]["crs"] == "EPSG:32633" and summary["grid"]["pixel_size"] == [10.0, 10.0]
    assert summary["files"]["probability"] == str(out / "change_probability.tif")
    saved = json.loads((out / "metrics.json").read_text())
    assert summary["metrics"]["f1"] == pytest.approx(saved["f1"])
    assert summary["metrics"]["pixels"] == 64 * 64
    # predicted change pixels = true positives + false positives = recall*support/precision
    m = summary["metrics"]
    if m["precision"]:
        predicted = m["recall"] * m["change_pixels"] / m["precision"]
        assert predicted == pytest.approx(summary["class_pixels"].get("change", 0), abs=0.5)


def test_evaluate_on_a_levir_folder(inputs, tmp_path):
    _, model, _ = inputs
    root = tmp_path / "levir"
    write_change_dataset(root, count=3, size=32, seed=1)
    result = FUNCTIONS["change_evaluate"](str(model), str(root), "sim_buildings")
    json.dumps(result, allow_nan=False)
    assert result["pairs"] == 1 and result["metrics"]["pixels"] == 32 * 32
    assert 0.0 <= result["metrics"]["oa"] <= 1.0
    assert result["threshold"] == 0.5


def test_predict_through_the_server(inputs, tmp_path):
    root, _, _ = inputs
    server = EokitServer(Sandbox.create([root], tmp_path / "out"), TOOLS)
    arguments = {"checkpoint": "model.safetensors", "image_a": "A.tif", "image_b": "B.tif",
                 "out_dir": "change", "domain": "sim_buildings", "tile": 64, "overlap": 32}
    result = anyio.run(server.call, "change_predict", arguments)
    assert not result.isError, result.content[0].text
    summary = result.structuredContent
    binary = tmp_path / "out" / "change" / "change_binary.tif"
    assert summary["files"]["binary"] == str(binary) and summary["grid"]["path"] == str(binary)
    area, _ = _changed_area_from_cog(binary)
    assert summary["changed_area_m2"] == pytest.approx(area)
    assert "metrics" not in summary  # no label given
    links = {c.name for c in result.content if c.type == "resource_link"}
    assert {"change/change_binary.tif", "change/change_probability.tif"} <= links
    unknown = anyio.run(server.call, "change_predict", {**arguments, "out_dir": "c2",
                                                        "domain": "nowhere"})
    assert unknown.isError and "nowhere" in unknown.content[0].text
    assert not (tmp_path / "out" / "c2").exists()


def test_fit_on_the_simulator_then_predict(inputs, tmp_path):
    _, _, files = inputs
    run = tmp_path / "run"
    fitted = FUNCTIONS["change_fit"](str(run), datasets=("sim_buildings", "sim_sensor"),
                                     count=2, size=32, epochs=1, batch_size=2)
    json.dumps(fitted, allow_nan=False)
    assert fitted["model"] == str(run / "model.safetensors")
    assert set(fitted["val_metrics"]) == {"sim_buildings", "sim_sensor"}
    assert fitted["val_metrics"]["sim_sensor"]["pixels"] > 0
    summary = FUNCTIONS["change_predict"](fitted["model"], str(files["A"]), str(files["B"]),
                                          str(tmp_path / "p"), "sim_sensor", tile=64, overlap=32)
    assert summary["domain"] == "sim_sensor" and 0.0 < summary["threshold"] < 1.0
    with pytest.raises(InputError, match="datasets"):
        FUNCTIONS["change_fit"](str(tmp_path / "none"), datasets=())
