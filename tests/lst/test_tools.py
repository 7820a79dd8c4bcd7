"""lst_retrieve tool: schema, a direct call on a simulated scene and a call through the server."""

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
from eokit.lst.demo import simulate_scene
from eokit.lst.tools import TOOLS

RETRIEVE = TOOLS[0].function


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene")
    paths = simulate_scene(root, size=48, seed=0)
    return root, paths, json.loads(paths["scene"].read_text())["atmosphere"]


def _truth(paths):
    with rasterio.open(paths["lst_truth"]) as src:
        return src.read(1, masked=True).filled(np.nan)


def test_schema():
    schema = tool_schema(TOOLS[0])
    jsonschema.Draft202012Validator.check_schema(schema)
    props = schema["properties"]
    assert props["method"]["enum"] == ["piml", "sc", "rte", "mono"]
    assert props["output"]["format"] == "output-file"
    assert props["water_vapour"]["maximum"] == 10 and "Unit: g cm-2." in \
        props["water_vapour"]["description"]
    assert schema["required"] == ["thermal", "output"]


def test_statistics_are_those_of_the_written_cog_and_physical(scene, tmp_path):
    root, paths, atmosphere = scene
    summary = RETRIEVE(str(paths["B10"]), str(tmp_path / "lst.tif"), mtl=str(paths["MTL"]),
                       red=str(paths["red"]), nir=str(paths["nir"]), method="sc",
                       water_vapour=atmosphere["water_vapour"], block=20)
    json.dumps(summary, allow_nan=False)
    with rasterio.open(tmp_path / "lst.tif") as src:
        lst = src.read(1)
        assert src.crs is not None and summary["grid"]["crs"] == f"EPSG:{src.crs.to_epsg()}"
    valid = lst[np.isfinite(lst)]
    stats = summary["lst"]
    assert stats["valid_pixels"] == valid.size and stats["nodata_pixels"] == lst.size - valid.size
    assert stats["min_k"] == pytest.approx(valid.min(), abs=1e-3)
    assert stats["max_k"] == pytest.approx(valid.max(), abs=1e-3)
    assert stats["mean_k"] == pytest.approx(valid.mean(), abs=1e-3)
    assert stats["std_k"] == pytest.approx(valid.std(), abs=1e-3)
    assert 200.0 < stats["min_k"] <= stats["mean_k"] <= stats["max_k"] < 350.0
    truth = _truth(paths)
    assert abs(stats["mean_k"] - float(np.nanmean(truth))) < 3.0  # SC within a few K
    assert (tmp_path / "lst.html").is_file() and summary["files"]["report"].endswith("lst.html")


def test_piml_through_the_server(scene, tmp_path):
    root, paths, atmosphere = scene
    server = EokitServer(Sandbox.create([root], tmp_path / "out"), TOOLS)
    arguments = {"thermal": "B10.tif", "mtl": "MTL.txt", "red": "red.tif", "nir": "nir.tif",
                 "water_vapour": atmosphere["water_vapour"], "output": "maps/lst_piml.tif"}
    result = anyio.run(server.call, "lst_retrieve", arguments)
    assert not result.isError, result.content[0].text
    summary = result.structuredContent
    written = tmp_path / "out" / "maps" / "lst_piml.tif"
    assert summary["files"]["lst"] == str(written) and summary["grid"]["path"] == str(written)
    assert (tmp_path / "out" / "maps" / "lst_piml.html").is_file()
    stats = summary["lst"]
    assert 200.0 < stats["min_k"] <= stats["mean_k"] <= stats["max_k"] < 350.0
    assert abs(stats["mean_k"] - float(np.nanmean(_truth(paths)))) < 3.0
    missing = anyio.run(server.call, "lst_retrieve",
                        {**arguments, "output": "x.tif", "method": "rte", "tau": 0.8})
    assert missing.isError and "tau, up and down" in missing.content[0].text
    assert not (tmp_path / "out" / "x.tif").exists()
    wet = anyio.run(server.call, "lst_retrieve", {**arguments, "output": "y.tif",
                                                  "water_vapour": 12.0})
    assert wet.isError and "water_vapour" in wet.content[0].text
