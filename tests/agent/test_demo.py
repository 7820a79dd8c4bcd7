"""The agent demo section: a real MCP session whose answers match the files it wrote."""

import json

import numpy as np
import rasterio

from eokit.agent.demo import add_demo_section
from eokit.core.report import Report


def test_demo_transcript_answers_match_the_files(tmp_path):
    report = Report("t")
    add_demo_section(report, tmp_path, quick=True, seed=2)
    turns = json.loads((tmp_path / "agent" / "transcript.json").read_text())
    assert [t["tool"] for t in turns] == ["synth_change_pair", "geo_describe", "geo_class_areas",
                                          "geo_zonal_stats", "geo_describe"]
    assert all(t["error"] is None for t in turns[:4])
    assert "outside the allowed folders" in turns[4]["error"]
    path = turns[0]["result"]["files"]["change_type"]
    with rasterio.open(path) as src:
        data = src.read(1)
        cell = abs(src.transform.a * src.transform.e)
    new = data == 1  # change type 1: new building (class names tagged in the file)
    west = np.zeros_like(new)
    west[:, : data.shape[1] // 2] = True
    assert new.sum() > 0
    assert turns[2]["result"]["area_m2"]["new_building"] == new.sum() * cell
    zone = turns[3]["result"]["zones_stats"][0]["class_area_m2"]
    assert zone.get("new_building", 0.0) == (new & west).sum() * cell
    assert "Agent interface (MCP)" in report.to_html()
