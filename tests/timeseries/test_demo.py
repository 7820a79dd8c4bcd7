import rasterio

from eokit.core.report import Report
from eokit.timeseries.demo import add_demo_section


def test_demo_section_writes_canopy_and_change_cogs_and_report(tmp_path):
    report = Report("demo")
    add_demo_section(report, tmp_path, quick=True, seed=0)
    folder = tmp_path / "timeseries"
    (probability,) = folder.glob("canopy_probability_*.tif")
    with rasterio.open(probability) as src:
        assert src.crs is not None and src.count == 3
    with rasterio.open(folder / "stops_forest.tif") as a, \
            rasterio.open(folder / "stops_forest_refined.tif") as b:
        assert b.crs == a.crs and b.transform == a.transform
        stops, refined = a.read(1), b.read(1)  # YYYYMMDD, 0 = no change
    assert ((refined == 0) == (stops == 0)).all() and (refined <= stops).all()
    assert (folder / "backbone.safetensors").is_file() and (folder / "model.safetensors").is_file()
    html = report.write(tmp_path / "report.html").read_text()
    assert "Pixel time series" in html and html.count("<img") >= 5  # maps, change maps, forecast
