"""Readers on generated folders in every layout, and their one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eokit.core.errors import InputError
from eokit.timeseries.data import (
    check_labels,
    detect_layout,
    read_eopatch,
    read_geotiff_stack,
    read_label_raster,
    read_presto_npy,
    read_series,
)

DATES = ["2020-01-05", "2020-02-14", "2020-03-01", "2020-05-20"]


def _stack(tmp_path, write_test_geotiff, *, dates=DATES, bands=3, h=5, w=4, nodata_at=None):
    folder = tmp_path / "stack"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cubes = []
    for t, date in enumerate(dates):
        data = rng.uniform(0, 0.5, size=(bands, h, w)).astype(np.float32)
        if nodata_at is not None and t == nodata_at[0]:
            data[:, nodata_at[1], nodata_at[2]] = np.nan
        cubes.append(data)
        write_test_geotiff(folder / f"S2_{date.replace('-', '')}_L2A.tif", data, nodata=np.nan)
    return folder, np.stack(cubes)


def test_geotiff_stack_sorted_by_date_with_nodata(tmp_path, write_test_geotiff):
    # Written out of order on purpose: the reader sorts by the date in the name.
    folder, cube = _stack(tmp_path, write_test_geotiff, dates=[DATES[2], DATES[0], DATES[3],
                                                               DATES[1]], nodata_at=(0, 1, 2))
    data = read_geotiff_stack(folder)
    assert data.series.shape == (20, 4, 3)
    assert [str(d)[:10] for d in data.dates] == DATES
    order = [1, 3, 0, 2]  # file index of each sorted date
    np.testing.assert_allclose(data.series[4 + 2, 0], np.nan_to_num(cube[order[0], :, 1, 2]))
    # Pixel (1, 2) is NaN on the file dated DATES[2] -> sorted position 2 invalid.
    assert not data.valid[1 * 4 + 2, 2]
    assert data.valid.sum() == 20 * 4 - 1
    assert data.doy[0].tolist() == [5.0, 45.0, 61.0, 141.0]
    assert data.grid is not None and data.grid.crs is not None
    assert data.shape == (5, 4)
    window = read_geotiff_stack(folder, window=(1, 1, 2, 2))
    np.testing.assert_array_equal(window.series[0], data.series[1 * 4 + 1])
    assert detect_layout(folder) == "geotiff"


def test_geotiff_stack_csv_dates_must_increase(tmp_path, write_test_geotiff):
    folder, _ = _stack(tmp_path, write_test_geotiff)
    names = sorted(p.name for p in folder.iterdir())
    csv_path = tmp_path / "stack.csv"
    csv_path.write_text("path,date\n" + "\n".join(
        f"stack/{n},{d}" for n, d in zip(names, ["2020-01-01", "2020-03-01", "2020-02-01",
                                                  "2020-04-01"], strict=True)))
    with pytest.raises(InputError, match="stack.csv: dates are not increasing"):
        read_geotiff_stack(csv_path)
    csv_path.write_text("path,date\n" + "\n".join(
        f"stack/{n},{d}" for n, d in zip(names, DATES, strict=True)))
    assert read_geotiff_stack(csv_path).n_dates == 4


def test_geotiff_stack_mixed_grids_and_band_counts(tmp_path, write_test_geotiff):
    folder, _ = _stack(tmp_path, write_test_geotiff)
    write_test_geotiff(folder / "S2_20200601.tif", np.zeros((3, 5, 4), np.float32),
                       origin=(500100.0, 5000000.0))
    with pytest.raises(InputError) as err:
        read_geotiff_stack(folder)
    message = str(err.value)
    assert "S2_20200601.tif" in message and "\n" not in message
    (folder / "S2_20200601.tif").unlink()
    write_test_geotiff(folder / "S2_20200601.tif", np.zeros((2, 5, 4), np.float32))
    with pytest.raises(InputError, match="has 2 bands"):
        read_geotiff_stack(folder)


def test_geotiff_stack_name_without_date_and_duplicates(tmp_path, write_test_geotiff):
    folder, _ = _stack(tmp_path, write_test_geotiff)
    write_test_geotiff(folder / "extra.tif", np.zeros((3, 5, 4), np.float32))
    with pytest.raises(InputError, match="extra.tif: no date"):
        read_geotiff_stack(folder)
    (folder / "extra.tif").unlink()
    write_test_geotiff(folder / "copy_2020-01-05.tif", np.zeros((3, 5, 4), np.float32))
    with pytest.raises(InputError, match="not increasing"):
        read_geotiff_stack(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no GeoTIFF"):
        read_geotiff_stack(empty)


def _eopatch(tmp_path, *, t=6, h=4, w=5, stamps=None):
    root = tmp_path / "patch"
    for sub in ("data", "mask", "mask_timeless"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(1)
    ndvi = rng.uniform(-0.1, 0.9, size=(t, h, w, 1)).astype(np.float32)
    valid = rng.uniform(size=(t, h, w, 1)) > 0.3
    lulc = rng.integers(0, 4, size=(h, w, 1)).astype(np.uint16)
    np.save(root / "data" / "NDVI.npy", ndvi)
    np.save(root / "mask" / "IS_VALID.npy", valid)
    np.save(root / "mask_timeless" / "LULC.npy", lulc)
    if stamps is None:
        stamps = [f"2016-{m:02d}-10T10:00:00" for m in range(1, t + 1)]
    (root / "timestamps.json").write_text(json.dumps(stamps))
    (root / "bbox.geojson").write_text(json.dumps({
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
        "type": "Polygon",
        "coordinates": [[[465000.0, 5079000.0], [465000.0, 5079040.0], [465050.0, 5079040.0],
                         [465050.0, 5079000.0], [465000.0, 5079000.0]]]}))
    return root, ndvi, valid, lulc


def test_eopatch_layout(tmp_path):
    root, ndvi, valid, lulc = _eopatch(tmp_path)
    data = read_eopatch(root, labels="mask_timeless/LULC")
    assert data.series.shape == (20, 6, 1)
    np.testing.assert_array_equal(data.series[7, :, 0], ndvi[:, 1, 2, 0])
    np.testing.assert_array_equal(data.valid[7], valid[:, 1, 2, 0])
    np.testing.assert_array_equal(data.targets, lulc[..., 0].reshape(-1))
    assert data.grid.res == pytest.approx((10.0, 10.0))
    assert data.grid.crs.to_epsg() == 32633
    assert detect_layout(root) == "eopatch"
    part = read_series(root, window=(1, 2, 2, 3))
    np.testing.assert_array_equal(part.series[0], data.series[1 * 5 + 2])
    assert part.grid.transform.c == pytest.approx(465020.0)


def test_eopatch_dates_not_increasing_and_missing_feature(tmp_path):
    stamps = ["2016-01-10", "2016-03-10", "2016-02-10", "2016-04-10", "2016-05-10", "2016-06-10"]
    root, *_ = _eopatch(tmp_path, stamps=stamps)
    with pytest.raises(InputError, match="timestamps.json: dates are not increasing"):
        read_eopatch(root)
    (root / "timestamps.json").write_text(json.dumps(sorted(stamps)))
    with pytest.raises(InputError, match="BANDS"):
        read_eopatch(root, features=["data/BANDS"])


def test_presto_layout(tmp_path):
    folder = tmp_path / "fuel" / "npy"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    x = rng.uniform(100, 3000, size=(7, 3, 18))
    np.save(folder / "s1_s2_era5_srtm.npy", x)
    np.save(folder / "month.npy", np.array([[10, 11, 0]] * 7))
    np.save(folder / "target.npy", rng.uniform(50, 200, size=7))
    np.save(folder / "is_test.npy", np.array([0, 1, 0, 0, 1, 0, 0]))
    data = read_presto_npy(tmp_path / "fuel")
    assert data.series.shape == (7, 3, 18) and data.targets.shape == (7,)
    ndvi = (x[..., 8] - x[..., 4]) / (x[..., 8] + x[..., 4])
    np.testing.assert_allclose(data.series[..., 17], ndvi, rtol=1e-5)
    assert data.doy[0].tolist() == pytest.approx([319.4, 349.84, 15.0], abs=0.1)
    assert data.extra["is_test"].sum() == 2
    assert detect_layout(tmp_path / "fuel") == "presto"
    np.save(folder / "month.npy", np.array([[10, 11, 12]] * 7))
    with pytest.raises(InputError, match="month.npy"):
        read_presto_npy(folder)


def test_labels_outside_class_list(tmp_path, write_test_geotiff):
    with pytest.raises(InputError, match=r"label values \[3\] are outside"):
        check_labels(np.array([0, 1, 3, 255]), ["a", "b", "c"], source="labels")
    check_labels(np.array([0, 1, 2, 255]), ["a", "b", "c"], source="labels")
    folder, _ = _stack(tmp_path, write_test_geotiff)
    grid = read_geotiff_stack(folder).grid
    path = write_test_geotiff(tmp_path / "labels.tif", np.full((5, 4), 7, np.uint8))
    with pytest.raises(InputError, match="labels.tif: label values"):
        read_label_raster(path, grid, ["none", "forest"])


def test_series_reader_windows_match_full_read(tmp_path, write_test_geotiff):
    from eokit.timeseries.data import SeriesReader

    root, *_ = _eopatch(tmp_path)
    reader = SeriesReader(root)
    full = reader.read()
    assert reader.grid.shape == (4, 5) and len(reader.dates) == 6
    block = reader.read((2, 0, 2, 5))
    np.testing.assert_array_equal(block.series, full.series[10:20])
    np.testing.assert_array_equal(block.valid, full.valid[10:20])
    folder, _ = _stack(tmp_path, write_test_geotiff)
    stack = SeriesReader(folder)
    assert stack.grid.shape == (5, 4) and stack.band_names == ["b1", "b2", "b3"]
    with pytest.raises(InputError, match="GeoTIFF stack or an EOPatch"):
        SeriesReader(folder, layout="presto")


def test_map_labels_from_an_eopatch_feature_or_a_geotiff(tmp_path, write_test_geotiff):
    from eokit.timeseries.data import SeriesReader
    from eokit.timeseries.predict import read_map_labels

    root, _, _, lulc = _eopatch(tmp_path)
    reader = SeriesReader(root)
    truth = read_map_labels("mask_timeless/LULC", reader, ["other", "forest"],
                            label_map={"0": 255, "2": 1, "*": 0})
    expected = np.where(lulc[..., 0] == 0, 255, (lulc[..., 0] == 2).astype(np.int64))
    np.testing.assert_array_equal(truth, expected)
    with pytest.raises(InputError, match=r"LULC: label values \[2, 3\] are outside"):
        read_map_labels("mask_timeless/LULC", reader, ["a", "b"])
    np.save(root / "mask_timeless" / "WRONG.npy", np.zeros((3, 5, 1), np.uint8))
    with pytest.raises(InputError, match=r"WRONG: shape \(3, 5, 1\) is not \(H, W, 1\)"):
        read_map_labels("mask_timeless/WRONG", reader, ["a", "b"])
    with pytest.raises(InputError, match="MISSING"):
        read_map_labels("mask_timeless/MISSING", reader, ["a", "b"])
    raster = write_test_geotiff(tmp_path / "labels.tif", np.ones((4, 5), np.uint8),
                                transform=reader.grid.transform, crs=reader.grid.crs)
    assert (read_map_labels(raster, reader, ["a", "b"]) == 1).all()


def test_all_nan_series_is_a_data_error(tmp_path):
    folder = tmp_path / "empty" / "npy"
    folder.mkdir(parents=True)
    np.save(folder / "s1_s2_era5_srtm.npy", np.full((4, 3, 18), np.nan))
    np.save(folder / "month.npy", np.array([[10, 11, 0]] * 4))
    from eokit.core.errors import DataError

    with pytest.raises(DataError, match="no valid observation"):
        read_series(tmp_path / "empty")
