"""Simulator for pixel time series: determinism, phenology, clouds, events, GeoTIFF stack output."""

from __future__ import annotations

import numpy as np
import pytest

from eokit.core.errors import InputError
from eokit.core.synth.pixel_series import (
    PIXEL_SERIES_CLASSES,
    generate_pixel_series,
    ndvi,
    write_pixel_series,
)


@pytest.fixture(scope="module")
def scene():
    return generate_pixel_series(48, seed=3, years=3)


def test_deterministic_and_seed_dependent(scene):
    again = generate_pixel_series(48, seed=3, years=3)
    np.testing.assert_array_equal(
        np.nan_to_num(scene.reflectance), np.nan_to_num(again.reflectance)
    )
    other = generate_pixel_series(48, seed=4, years=3)
    assert not np.array_equal(scene.landcover, other.landcover)


def test_dates_irregular_and_increasing(scene):
    gaps = np.diff(scene.dates).astype(int)
    assert (gaps > 0).all() and len(set(gaps.tolist())) > 1
    assert (scene.dates[-1] - scene.dates[0]).astype(int) > 2.5 * 365


def test_phenology_per_class(scene):
    vi = ndvi(scene.reflectance)
    doy = scene.doy

    def mean_ndvi(cls, months):
        pixels = (scene.landcover == cls) & (scene.event_type == 0)
        dates = np.isin(((doy - 1) // 30.5).astype(int), months)
        values = vi[dates][:, pixels]
        ok = scene.valid[dates][:, pixels]
        return float(values[ok].mean())

    conifer = PIXEL_SERIES_CLASSES.index("conifer")
    broadleaf = PIXEL_SERIES_CLASSES.index("broadleaf")
    crop = PIXEL_SERIES_CLASSES.index("crop")
    summer, winter = [5, 6, 7], [0, 1, 11]
    # Deciduous: large seasonal amplitude; evergreen: small.
    assert mean_ndvi(broadleaf, summer) - mean_ndvi(broadleaf, winter) > 0.25
    assert abs(mean_ndvi(conifer, summer) - mean_ndvi(conifer, winter)) < 0.1
    # Crops: bare soil in winter.
    assert mean_ndvi(crop, winter) < 0.3


def test_clouds_and_gaps(scene):
    fraction = 1.0 - scene.valid.mean()
    assert 0.15 < fraction < 0.6
    clouded = ~scene.valid & np.isfinite(scene.reflectance[:, 0])
    # Clouds are bright in the blue band.
    assert scene.reflectance[:, 0][clouded].mean() > 0.2


def test_events_change_canopy_truth(scene):
    assert scene.events, "expected at least one event"
    cut = scene.event_type == 1
    if cut.any():
        r, c = np.argwhere(cut)[0]
        series = scene.canopy[:, r, c]
        when = np.searchsorted(scene.dates, scene.event_date[r, c])
        assert series[0] > 0 and series[-1] == 0
        assert (series[when:] == 0).all() and (series[:when] > 0).all()
    planted = scene.event_type == 2
    if planted.any():
        r, c = np.argwhere(planted)[0]
        assert scene.canopy[0, r, c] == 0 and scene.canopy[-1, r, c] > 0
    assert scene.hedgerow.any()
    assert (scene.canopy[-1][scene.hedgerow & (scene.event_type == 0)] == 2).all()


def test_bad_parameters():
    with pytest.raises(InputError, match="size"):
        generate_pixel_series(4)
    with pytest.raises(InputError, match="cloud_fraction"):
        generate_pixel_series(16, cloud_fraction=1.5)


def test_write_geotiff_stack(tmp_path):
    small = generate_pixel_series(16, seed=1, years=1)
    paths = write_pixel_series(small, tmp_path)
    from eokit.timeseries.data import read_geotiff_stack

    data = read_geotiff_stack(paths["stack"])
    assert data.n_dates == len(small.dates)
    np.testing.assert_array_equal(data.valid, small.valid.reshape(len(small.dates), -1).T)
    assert data.band_names == list(small.band_names)
    assert (tmp_path / "canopy_last.tif").is_file()
