"""Steps 6-9: profile statistics, minima trend, LD arithmetic, K-means regions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eokit.core.errors import InputError
from eokit.urban.profile import (
    Profile,
    density_profile,
    fit_trend,
    ld_km,
    profile_extrema,
    profile_from_samples,
)
from eokit.urban.regions import (
    classify_regions,
    kmeans_regions,
    label_runs,
    merge_short_runs,
    min_region_size,
    residual_features,
)


def test_profile_statistics_match_numpy_per_bin() -> None:
    rng = np.random.default_rng(1)
    d = rng.uniform(0, 5, 2000)
    v = rng.normal(1, 0.2, 2000)
    p = profile_from_samples(d, v)
    assert p.distance_px.tolist() == [0, 1, 2, 3, 4]
    for i in range(5):
        sel = v[np.floor(d) == i]
        assert p.count[i] == sel.size
        assert p.mean[i] == pytest.approx(sel.mean())
        assert p.median[i] == pytest.approx(np.median(sel))
        assert p.q1[i] == pytest.approx(np.percentile(sel, 25))
        assert p.q3[i] == pytest.approx(np.percentile(sel, 75))
        assert (p.minimum[i], p.maximum[i]) == (sel.min(), sel.max())


def test_density_profile_measures_distance_to_nearest_centre_pixel() -> None:
    fused = np.zeros((9, 9))
    urban = np.ones((9, 9), bool)
    centres = np.zeros((9, 9), bool)
    centres[4, 4] = True
    rows, cols = np.mgrid[0:9, 0:9]
    fused[:] = 2.0 - np.hypot(rows - 4, cols - 4) / 10
    p = density_profile(fused, urban, centres)
    assert p.distance_px[0] == 0 and p.count[0] == 1 and p.mean[0] == pytest.approx(2.0)
    assert np.all(np.diff(p.mean) < 0)


def test_extrema_add_the_last_bin_to_the_minima() -> None:
    mean = np.array([2.0, 1.5, 1.0, 1.4, 1.2, 0.6, 1.0, 0.9])
    peaks, minima = profile_extrema(mean)
    assert peaks.tolist() == [3, 6]
    assert minima.tolist() == [2, 5, 7]
    # fewer than 6 bins: no extrema search, only the last bin
    assert profile_extrema(np.array([3.0, 1.0, 2.0]))[1].tolist() == [2]


def _profile(mean: np.ndarray) -> Profile:
    n = mean.size
    return Profile(
        np.arange(n, dtype=float),
        np.full(n, 10),
        mean,
        mean,
        mean - 0.3,
        mean - 0.1,
        mean + 0.1,
        mean + 0.3,
    )


def test_trend_goes_through_the_minima_and_converts_units() -> None:
    d = np.arange(38, dtype=float)  # the last bin lies on the floor
    mean = 1.6 - 0.02 * d + 0.1 * (np.sin(d) > 0.6)  # bumps above a straight floor
    t = fit_trend(_profile(mean), pixel_size_m=10.0)
    assert t.method == "minima"
    assert t.slope_px == pytest.approx(-0.02, abs=1e-9)
    assert t.alpha_per_km == pytest.approx(-0.02 * 1000 / 10.0)
    assert t.intercept == pytest.approx(1.6, abs=1e-9)
    # LD = (target - beta) / alpha in km, target = min Q1
    assert t.target == pytest.approx(mean.min() - 0.1)
    assert t.ld_km == pytest.approx((t.target - 1.6) / -0.02 * 10 / 1000)


def test_ld_arithmetic() -> None:
    assert ld_km(0.4, 1.2, -0.004, 20.0) == pytest.approx(200 * 20 / 1000)
    assert ld_km(0.4, 1.2, 0.0, 20.0) == math.inf


def test_monotone_profile_falls_back_to_all_bins() -> None:
    mean = np.linspace(1.5, 0.5, 30)
    t = fit_trend(_profile(mean), pixel_size_m=5.0)
    assert t.method == "all_bins_fallback" and "fewer than 2" in t.note
    assert t.alpha_per_km == pytest.approx((-1.0 / 29) * 1000 / 5.0)


def test_missing_pixel_size_is_an_input_error() -> None:
    with pytest.raises(InputError, match="pixel_size_m"):
        fit_trend(_profile(np.linspace(1, 0, 10)), pixel_size_m=None)  # type: ignore[arg-type]


def test_run_merging_follows_the_published_rule() -> None:
    assert label_runs(np.array([0, 0, 1, 1, 1, 0])) == [(0, 1, 0), (2, 4, 1), (5, 5, 0)]
    runs = [(0, 9, 0), (10, 11, 1), (12, 30, 2), (31, 32, 0)]
    # short runs merge into the previous run (keeping its label)
    assert merge_short_runs(runs, 3) == [(0, 11, 0), (12, 32, 2)]
    # a short first run merges into the next one (taking the next label)
    assert merge_short_runs([(0, 1, 5), (2, 20, 6)], 3) == [(0, 20, 6)]
    assert min_region_size(40) == 3 and min_region_size(200) == 10


def test_features_shift_by_one_bin() -> None:
    r = np.array([0.0, 1.0, 3.0, 6.0])
    f = residual_features(r)
    assert f[:, 0].tolist() == r.tolist()
    assert f[:, 1].tolist() == np.gradient(r).tolist()
    assert f[2, 3] == 1.0 and f[0, 2:].tolist() == f[1, 2:].tolist()


def test_regions_split_a_level_shift_at_the_right_bin() -> None:
    rng = np.random.default_rng(0)
    residuals = np.concatenate([rng.normal(0, 0.005, 50), rng.normal(0.5, 0.005, 50)])
    regions, k = kmeans_regions(residuals)
    assert k >= 2
    assert regions[0].start == 0 and regions[-1].end == 99
    assert all(a.end + 1 == b.start for a, b in zip(regions[:-1], regions[1:], strict=True))
    boundaries = [r.start for r in regions[1:]]
    assert any(abs(b - 50) <= 2 for b in boundaries)
    assert all(r.kind == "uniform" for r in regions)
    again, _ = kmeans_regions(residuals)
    assert again == regions  # fixed random state


def test_region_kind_uses_the_0_7_std_rule() -> None:
    residuals = np.array([0.0, 0.0, 0.0, 1.0, -1.0, 1.0])
    kinds = classify_regions([(0, 2, 0), (3, 5, 1)], residuals)
    assert [r.kind for r in kinds] == ["uniform", "variation"]
