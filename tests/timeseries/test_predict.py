"""Map writing: never-observed pixels become nodata (not NaN), date selection, multi-band COG,
spatial averaging of the probability maps."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from eokit.core.errors import InputError
from eokit.timeseries.data import SeriesReader
from eokit.timeseries.model import FineTunedSeriesModel, PixelSeriesTransformer, SeriesModelConfig
from eokit.timeseries.predict import match_dates, select_dates, spatial_mean, write_maps

DATES = ["2020-01-05", "2020-03-01", "2020-05-20", "2020-08-01"]


def _model(bands: int = 2) -> FineTunedSeriesModel:
    torch.manual_seed(0)
    backbone = PixelSeriesTransformer(SeriesModelConfig.from_size("tiny", bands, max_len=16))
    return FineTunedSeriesModel(backbone, 2, class_names=["none", "forest"]).eval()


def _stack(folder, write_test_geotiff, shape, unobserved, seed):  # noqa: ANN001, ANN202
    """A 2-band GeoTIFF stack over DATES whose pixel ``unobserved`` (row, col) is always NaN."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for date in DATES:
        data = rng.uniform(0, 0.5, size=(2, *shape)).astype(np.float32)
        data[:, unobserved[0], unobserved[1]] = np.nan  # never observed
        write_test_geotiff(folder / f"img_{date}.tif", data, nodata=np.nan)
    return SeriesReader(folder)


def test_unobserved_pixel_is_nodata_and_reported(tmp_path, write_test_geotiff):
    reader = _stack(tmp_path / "stack", write_test_geotiff, (6, 5), (2, 3), seed=0)
    result = write_maps(_model(), reader, tmp_path / "out", dates="2020-05-25,2020-08-01",
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
    assert select_dates(dates, DATES[-1][:10]) == [3]
    assert select_dates(dates, "last") == [3]
    assert select_dates(dates, "all") == [0, 1, 2, 3]
    # Nearest acquisition: 2020-05-10 is 10 days before 2020-05-20 (and 70 after 2020-03-01).
    assert select_dates(dates, "2020-03-01,2020-05-10,2020-05-20") == [1, 2]
    assert select_dates(dates, "2020-08-10") == [3]  # 9 days after the last: within 16
    with pytest.raises(InputError, match="dates: not an ISO date"):
        select_dates(dates, "yesterday")


@pytest.mark.parametrize(("value", "where"), [
    ("2019-12-01", "before the first acquisition"),
    ("2030-01-01", "after the last acquisition"),
    ("2020-04-10", "in a gap of the series"),  # 40 days from both neighbours
])
def test_requested_dates_far_from_every_acquisition_are_refused(value, where):
    dates = np.array(DATES, dtype="datetime64[s]")
    with pytest.raises(InputError, match=f"dates: {value} is {where}") as error:
        select_dates(dates, value)
    assert "--date-tolerance-days 16" in str(error.value) and "\n" not in str(error.value)
    # A wider tolerance accepts it, and says where it lands.
    match = match_dates(dates, value, tolerance_days=4000)[0]
    assert match.requested == value and match.acquisition in DATES
    assert match.offset_days == int((np.datetime64(match.acquisition) - np.datetime64(value))
                                    .astype(int))


def test_match_dates_reports_the_acquisition_and_offset():
    dates = np.array(DATES, dtype="datetime64[s]")
    early, same, late = match_dates(dates, "2020-05-10,2020-08-01,2020-08-05")
    assert (early.acquisition, early.offset_days) == ("2020-05-20", 10)
    assert early.describe() == "2020-05-10 -> 2020-05-20 (10 days later)"
    assert same.describe() == "2020-08-01 -> 2020-08-01 (same day)"
    assert (late.acquisition, late.offset_days) == ("2020-08-01", -4)
    assert "4 days earlier" in late.describe()
    # A tie goes to the earlier acquisition (it is what the causal map has seen).
    assert match_dates(np.array(["2020-01-01", "2020-01-11"], dtype="datetime64[s]"),
                       "2020-01-06")[0].acquisition == "2020-01-01"


def test_maps_name_the_acquisition_and_tag_the_requested_date(tmp_path, write_test_geotiff,
                                                              caplog):
    reader = _stack(tmp_path / "stack", write_test_geotiff, (4, 3), (0, 0), seed=2)
    with caplog.at_level("INFO", logger="eokit.timeseries.predict"):
        result = write_maps(_model(), reader, tmp_path / "out", dates="2020-05-12",
                            refine_dates=False, progress=False)
    assert "dates: 2020-05-12 -> 2020-05-20 (8 days later)" in caplog.text
    assert [m.acquisition for m in result.date_matches] == ["2020-05-20"]
    with rasterio.open(tmp_path / "out" / "probability_2020-05-20.tif") as src:
        tags = src.tags()
    assert tags["acquisition_date"] == "2020-05-20" and tags["requested_dates"] == "2020-05-12"
    multi = write_maps(_model(), reader, tmp_path / "multi", dates="2020-05-12,2020-01-01",
                       multiband=True, refine_dates=False, progress=False)
    with rasterio.open(multi.files["probabilities"]) as src:
        assert src.tags()["requested_dates"] == "2020-05-12->2020-05-20,2020-01-01->2020-01-05"
    with pytest.raises(InputError, match="dates: 2020-04-10 is in a gap"):
        write_maps(_model(), reader, tmp_path / "refused", dates="2020-04-10", progress=False)
    assert not (tmp_path / "refused").exists()  # refused before anything is written


def test_spatial_mean_against_hand_computed_neighbourhoods():
    values = np.arange(20, dtype=np.float32).reshape(4, 5)
    values[1, 1] = np.nan  # never observed: neither counted nor filled
    out = spatial_mean(values, 3)
    # Corner (0, 0): neighbours (0,0) (0,1) (1,0); (1,1) is NaN and left out.
    assert out[0, 0] == pytest.approx((0 + 1 + 5) / 3)
    # (2, 2): a full 3 x 3 window with the NaN in it; (3, 3): clipped at the bottom edge.
    assert out[2, 2] == pytest.approx(values[1:4, 1:4][np.isfinite(values[1:4, 1:4])].mean())
    assert out[3, 3] == pytest.approx(np.mean([12, 13, 14, 17, 18, 19]))
    # (2, 1): its window holds the NaN at (1, 1) -> mean of the 8 others.
    window = values[1:4, 0:3]
    assert out[2, 1] == pytest.approx(np.nanmean(window))
    assert np.isnan(out[1, 1])
    assert spatial_mean(values, 1) is values
    # Class probabilities stay probabilities (trailing axis averaged independently).
    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1, 1], size=(6, 7)).astype(np.float32)
    p[3, 4] = np.nan
    q = spatial_mean(p, 5)
    ok = np.isfinite(p).all(-1)
    assert np.allclose(q[ok].sum(-1), 1.0, atol=1e-6) and np.isnan(q[3, 4]).all()
    for bad in (0, 2, -3, 1.5, True):
        with pytest.raises(InputError, match="spatial_window: must be an odd integer"):
            spatial_mean(values, bad)


def test_spatial_window_maps_do_not_depend_on_the_row_blocks(tmp_path, write_test_geotiff):
    reader = _stack(tmp_path / "stack", write_test_geotiff, (9, 4), (4, 2), seed=1)
    model = _model()

    def probabilities(name, **options):  # noqa: ANN001, ANN202
        write_maps(model, reader, tmp_path / name, dates="last", refine_dates=False,
                   progress=False, **options)
        with rasterio.open(tmp_path / name / "probability_2020-08-01.tif") as src:
            return src.read(), src.nodata

    pixel, _ = probabilities("pixel", rows_per_block=9)
    whole, _ = probabilities("whole", rows_per_block=9, spatial_window=3)
    blocks, nodata = probabilities("blocks", rows_per_block=2, spatial_window=3)
    assert np.allclose(whole, blocks, atol=1e-6)  # the halo rows make block edges invisible
    expected = spatial_mean(np.where(pixel == nodata, np.nan, pixel).transpose(1, 2, 0), 3)
    assert np.allclose(np.nan_to_num(expected.transpose(2, 0, 1), nan=nodata), whole, atol=1e-6)
    assert np.abs(pixel - whole).max() > 1e-4  # the averaging did something (beyond rounding)
    assert (whole[:, 4, 2] == nodata).all()
    with pytest.raises(InputError, match="spatial_window"):
        write_maps(model, reader, tmp_path / "bad", spatial_window=2, progress=False)
    assert not (tmp_path / "bad").exists()
