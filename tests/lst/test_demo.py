import rasterio

from eokit.core.report import Report
from eokit.lst.demo import add_demo_section


def test_demo_section_writes_cog_and_report(tmp_path):
    report = Report("demo")
    add_demo_section(report, tmp_path, quick=True, seed=0)
    outputs = sorted((tmp_path / "lst").glob("lst_*.tif"))
    assert outputs
    with rasterio.open(outputs[0]) as src:
        assert src.crs is not None and src.count == 1
    html = report.write(tmp_path / "report.html").read_text()
    assert "Land-surface temperature" in html and "<img" in html
