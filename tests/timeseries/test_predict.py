"""Map writing: never-observed pixels become nodata (not NaN), date selection, multi-band COG."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from eokit.core.errors import InputError
from eokit.timeseries.data import SeriesReader
from eokit.timeseries.model import FineTunedSeriesModel, PixelSeriesTransformer, SeriesModelConfig
from eokit.timeseries.predict import select_dates, write_maps

DATES = ["2020-01-05", "2020-03-01", "2020-05-20", "2020-08-01"]


def _model(bands: int = 2) -> FineTunedSeriesModel:
    torch.manual_seed(0)
    backbone = PixelSeriesTransformer(SeriesModelConfig.from_size("tiny", bands, max_len=16))
    return FineTunedSeriesModel(backbone, 2, class_names=["none", "forest"]).eval()


def test_unobserved_pixel_is_nodata_and_reported(tmp_path, write_test_geotiff):
    folder = tmp_path / "stack"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for date in DATES:
        data = rng.uniform(0, 0.5, size=(2, 6, 5)).astype(np.float32)
        data[:, 2, 3] = np.nan  # never observed
        write_test_geotiff(folder / f"img_{date}.tif", data, nodata=np.nan)
    reader = SeriesReader(folder)
    result = write_maps(_model(), reader, tmp_path / "out", dates="2020-06-01,2020-08-01",
                        rows_per_block=4, progress=False)
    assert result.unobserved_pixels == 1
    with rasterio.open(tmp_path / "out" / "probability_2020-05-20.tif") as src:
        probs = src.read()
        assert src.nodata == -1.0
    assert np.isfinite(probs).all()
    assert (probs[:, 2, 3] == -1.0).all()
    ok = np.ones((6, 5), bool)
    ok[2, 3] = False
    assert np.allclose(probs[:, ok].sum(0), 1.0, atol=1e-5)
    with rasterio.open(tmp_path / "out" / "stops_forest.tif") as src:
        stops = src.read(1)
        assert stops[2, 3] == 0
    with rasterio.open(tmp_path / "out" / "stops_forest_refined.tif") as src:
        refined = src.read(1)  # YYYYMMDD: never after the detection, only where one exists
    assert ((refined == 0) == (stops == 0)).all() and (refined <= stops).all()
    assert result.stops_forest_refined is not None
    plain = write_maps(_model(), reader, tmp_path / "plain", dates="last", refine_dates=False,
                       progress=False)
    assert "stops_forest_refined" not in plain.files and plain.stops_forest_refined is None
    multi = write_maps(_model(), reader, tmp_path / "multi", dates="all", multiband=True,
                       progress=False)
    with rasterio.open(multi.files["probabilities"]) as src:
        assert src.count == 2 * len(DATES)
        assert src.descriptions[0] == "2020-01-05_none"


def test_select_dates():
    dates = np.array(DATES, dtype="datetime64[s]")
    assert select_dates(dates, "last") == [3]
    assert select_dates(dates, "all") == [0, 1, 2, 3]
    assert select_dates(dates, "2020-03-01,2020-04-30") == [1]
    with pytest.raises(InputError, match="dates: 2019-12-01 is before the first date"):
        select_dates(dates, "2019-12-01")
    with pytest.raises(InputError, match="dates: not an ISO date"):
        select_dates(dates, "yesterday")
