"""urban_analyze tool: its schema, a direct call and a call through the agent server."""

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
from eokit.urban.tools import TOOLS


def test_schema_types_ranges_and_enums():
    schema = tool_schema(TOOLS[0])
    jsonschema.Draft202012Validator.check_schema(schema)
    props = schema["properties"]
    assert props["optical"]["format"] == "input-file" and props["out_dir"]["format"] == "output-dir"
    assert props["mode"]["enum"] == ["paper", "geo"]
    size = props["pixel_size_m"]
    assert size["anyOf"][0]["exclusiveMinimum"] == 0 and size["anyOf"][1] == {"type": "null"}
    assert "metres" in size["description"]
    assert props["rgb_bands"]["minItems"] == 3 and props["rgb_bands"]["maxItems"] == 3
    assert schema["required"] == ["optical", "sar", "out_dir"]


def test_geo_mode_summary_matches_the_written_files(mono_city, tmp_path):
    city, paths = mono_city
    out = tmp_path / "geo"
    summary = TOOLS[0].function(str(paths["optical_tif"]), str(paths["sar_tif"]), str(out),
                                mode="geo", chunk=192)
    json.dumps(summary, allow_nan=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert summary["alpha_per_km"] == metrics["alpha_per_km"]
    assert summary["warnings"] == metrics.get("warnings", [])  # failed assumptions reach the agent
    assert summary["clark"]["alpha_per_km"] > 0  # density above the baseline decays outwards
    assert summary["structure"]["call"] == "monocentric"
    assert summary["structure"]["n_centres"] == len(summary["centres"]) >= 1
    assert "ci95" in summary["clark"]
    lon, lat = summary["centres"][0]["coordinates"]
    assert 14 < lon < 16 and 52 < lat < 53
    with rasterio.open(out / "classes.tif") as src:
        classes = src.read(1)
        pixel_area = abs(src.transform.a * src.transform.e)
        assert src.crs == city.grid.crs
    assert summary["class_area_m2"]["urban"] == pytest.approx((classes == 3).sum() * pixel_area)
    built_km2 = (summary["class_area_m2"]["urban"] + summary["class_area_m2"]["centre"]) / 1e6
    assert built_km2 == pytest.approx(metrics["urban_area_km2"], rel=1e-3)  # centres are urban
    assert summary["grid"]["crs"] == "EPSG:32633"
    assert set(summary["files"]) >= {"metrics.json", "classes.tif", "centres.geojson",
                                     "report.html"}


def test_through_the_server_paper_mode(mono_city, tmp_path):
    _, paths = mono_city
    root = paths["optical_jpg"].parent
    server = EokitServer(Sandbox.create([root], tmp_path / "out"), TOOLS)
    arguments = {"optical": paths["optical_jpg"].name, "sar": paths["sar_jpg"].name,
                 "out_dir": "city", "pixel_size_m": 10.0}
    result = anyio.run(server.call, "urban_analyze", arguments)
    assert not result.isError, result.content[0].text
    summary = result.structuredContent
    out = tmp_path / "out" / "city"
    assert summary["files"]["classes.tif"] == str(out / "classes.tif")
    assert summary["grid"]["crs"] is None  # an 8-bit rendering: areas from the pixel size
    with rasterio.open(out / "classes.tif") as src:
        classes = src.read(1)
    for value, name in enumerate(("water", "terrain", "urban", "centre"), start=1):
        assert summary["class_area_m2"].get(name, 0.0) == pytest.approx(
            (classes == value).sum() * 100.0)
    assert summary["mode"] == "paper" and np.isfinite(summary["alpha_per_km"])
    bad = anyio.run(server.call, "urban_analyze", {**arguments, "mode": "fancy"})
    assert bad.isError and "mode" in bad.content[0].text
