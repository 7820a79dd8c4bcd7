"""timeseries_predict tool: schema, a direct call and a job through the agent server."""

from __future__ import annotations

import json

import anyio
import jsonschema
import numpy as np
import pytest
import rasterio
import torch

from eokit.agent.sandbox import Sandbox
from eokit.agent.schema import tool_schema
from eokit.agent.server import EokitServer, Limits
from eokit.timeseries.model import (
    FineTunedSeriesModel,
    PixelSeriesTransformer,
    SeriesModelConfig,
    save_model,
)
from eokit.timeseries.tools import TOOLS

DATES = ["2020-01-05", "2020-03-01", "2020-05-20", "2020-08-01"]
PREDICT = TOOLS[0].function


@pytest.fixture
def inputs(tmp_path, write_test_geotiff):
    """A tiny untrained fine-tuned model and a 2-band, 4-date stack with one unobserved pixel."""
    root = tmp_path / "data"
    stack = root / "stack"
    stack.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for date in DATES:
        data = rng.uniform(0, 0.5, size=(2, 12, 10)).astype(np.float32)
        data[:, 3, 4] = np.nan
        write_test_geotiff(stack / f"img_{date}.tif", data, nodata=np.nan)
    torch.manual_seed(0)
    backbone = PixelSeriesTransformer(SeriesModelConfig.from_size("tiny", 2, max_len=16))
    model = FineTunedSeriesModel(backbone, 2, class_names=["none", "forest"]).eval()
    return root, save_model(model, root / "model.safetensors")


def _areas_from_cog(path, bands=(1, 2)):
    """Canopy and class areas computed independently of eokit from a probability COG."""
    with rasterio.open(path) as src:
        probs = src.read(list(bands))
        cell = abs(src.transform.a * src.transform.e)
    valid = probs[0] != -1
    forest = valid & (probs[1] > 0.5)
    winner = probs.argmax(0)
    return (float(forest.sum() * cell), float(((winner == 0) & valid).sum() * cell),
            int((~valid).sum()))


def test_schema():
    schema = tool_schema(TOOLS[0])
    jsonschema.Draft202012Validator.check_schema(schema)
    props = schema["properties"]
    assert props["input_path"]["format"] == "input-dir"
    assert props["layout"]["enum"] == ["auto", "geotiff", "eopatch"]
    assert props["forest_classes"]["anyOf"][0] == {"type": "array", "items": {"type": "string"}}
    assert TOOLS[0].effect == "long"


@pytest.mark.parametrize("multiband", [False, True])
def test_canopy_area_matches_the_written_maps(inputs, tmp_path, multiband):
    root, model = inputs
    out = tmp_path / "maps"
    summary = PREDICT(str(root / "stack"), str(model), str(out), dates="2020-03-01,2020-08-10",
                      multiband=multiband, rows_per_block=5)
    json.dumps(summary, allow_nan=False)
    assert [m["date"] for m in summary["maps"]] == ["2020-03-01", "2020-08-01"]
    assert summary["requested_dates"][1] == {"requested": "2020-08-10",
                                             "acquisition": "2020-08-01", "offset_days": -9}
    for j, mapped in enumerate(summary["maps"]):
        bands = (2 * j + 1, 2 * j + 2) if multiband else (1, 2)
        canopy, none_area, nodata = _areas_from_cog(mapped["file"], bands)
        assert mapped["canopy_area_m2"] == pytest.approx(canopy)
        assert mapped["class_area_m2"]["none"] == pytest.approx(none_area)
        assert nodata == mapped["nodata_pixels"] == 1
        assert sum(mapped["class_area_m2"].values()) == pytest.approx((120 - 1) * 100.0)
    assert summary["unobserved_pixels"] == 1 and summary["pixels"] == 120
    assert summary["forest_classes"] == ["forest"] and summary["warnings"]
    with rasterio.open(out / "stops_forest.tif") as src:
        losses = int((src.read(1) != 0).sum())
    assert summary["stops_forest_changes"] == {"pixels": losses, "area_m2": losses * 100.0}
    assert summary["grid"]["crs"] == "EPSG:32633" and (out / "report.html").is_file()


def test_as_a_job_through_the_server(inputs, tmp_path):
    root, _ = inputs
    server = EokitServer(Sandbox.create([root], tmp_path / "out"), TOOLS,
                         Limits(job_seconds=120))

    async def body():
        started = await server.call("timeseries_predict", {
            "input_path": "stack", "model": "model.safetensors", "out_dir": "canopy",
            "dates": "last", "refine_dates": False})
        assert not started.isError, started.content[0].text
        job = started.structuredContent["job"]
        return await server.call("job_wait", {"job_id": job, "timeout_s": 90})

    done = anyio.run(body)
    status = done.structuredContent
    assert status["state"] == "done", status
    assert status["progress_messages"] >= 2  # the job reports its steps
    summary = status["result"]
    out = tmp_path / "out" / "canopy"
    mapped = summary["maps"][0]
    assert mapped["file"] == str(out / "probability_2020-08-01.tif")
    canopy, _, _ = _areas_from_cog(mapped["file"])
    assert mapped["canopy_area_m2"] == pytest.approx(canopy)
    assert "stops_forest_refined" not in summary["files"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
