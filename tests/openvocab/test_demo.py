"""The open-vocabulary demo section: a run folder, a class COG on the scene grid, a report."""

from __future__ import annotations

from pathlib import Path

from eokit.core.report import Report
from eokit.openvocab.demo import add_demo_section


def test_demo_section_writes_a_model_class_map_and_scores(tmp_path: Path) -> None:
    import rasterio

    report = Report("demo")
    add_demo_section(report, tmp_path, quick=True, seed=0)
    out = tmp_path / "openvocab"
    assert (out / "run" / "model.safetensors").is_file()
    with rasterio.open(out / "scene.tif") as src, \
            rasterio.open(out / "predict" / "classes.tif") as cls:
        assert cls.crs == src.crs and cls.transform == src.transform
    assert (out / "evaluate" / "per_class_iou.csv").is_file()
    html = report.write(tmp_path / "report.html").read_text()
    assert "Open-vocabulary segmentation" in html and html.count("<img") >= 3
    assert "h_miou" in html
