"""The grounding demo section: a model folder, GeoJSON answers and figures in the report."""

from __future__ import annotations

import json
from pathlib import Path

from eokit.core.report import Report
from eokit.grounding.demo import add_demo_section


def test_demo_section_writes_geojson_and_figures(tmp_path: Path) -> None:
    report = Report("demo")
    add_demo_section(report, tmp_path, quick=True, seed=0)
    out = tmp_path / "grounding"
    assert (out / "model" / "model.safetensors").is_file()
    answer = json.loads((out / "answer.geojson").read_text())
    assert answer["features"][0]["geometry"]["type"] == "Polygon"
    assert answer["features"][0]["properties"]["expression"]
    html = report.write(tmp_path / "report.html").read_text()
    assert "visual grounding" in html and html.count("<img") >= 2 and "IoU of the answer" in html
