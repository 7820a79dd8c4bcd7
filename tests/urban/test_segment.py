"""Step 3-4: thresholds by Gaussian intersections, fallbacks, urban mask cleaning."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eokit.urban import segment
from eokit.urban.segment import (
    TERRAIN,
    URBAN,
    WATER,
    classify,
    clean_urban_mask,
    decompose_histogram,
    gaussian,
    intersection_between,
    intersection_fsolve,
)


def _three_modes(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.normal(0.2, 0.05, 20_000),
            rng.normal(0.7, 0.10, 60_000),
            rng.normal(1.3, 0.12, 30_000),
        ]
    ).clip(0, 2)


def test_intersection_of_equal_gaussians_is_the_midpoint() -> None:
    p1, p2 = (1.0, 0.4, 0.1), (1.0, 1.0, 0.1)
    assert intersection_between(p1, p2) == pytest.approx(0.7)
    assert intersection_fsolve(p1, p2, (0, 2)) == pytest.approx(0.7)


def test_intersection_with_unequal_gaussians_solves_the_equation() -> None:
    p1, p2 = (500.0, 0.3, 0.05), (900.0, 0.8, 0.2)
    x = intersection_between(p1, p2)
    assert x is not None and 0.3 < x < 0.8
    assert gaussian(x, *p1) == pytest.approx(gaussian(x, *p2), rel=1e-9)
    assert intersection_fsolve(p1, p2, (0, 2)) == pytest.approx(x, abs=1e-6)


def test_three_gaussian_thresholds_recover_the_mode_boundaries() -> None:
    fit = decompose_histogram(_three_modes(), 3)
    assert fit.method == "gaussian_intersection", fit.note
    assert fit.means == pytest.approx([0.2, 0.7, 1.3], abs=0.05)
    water, urban = fit.thresholds
    assert 0.3 < water < 0.5 and 0.9 < urban < 1.15
    em = decompose_histogram(_three_modes(), 3, em=True, closed_form=True)
    assert em.thresholds == pytest.approx(fit.thresholds, abs=0.06)


def test_non_converging_fit_falls_back_to_otsu_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(segment, "curve_fit", fail)
    fit = decompose_histogram(_three_modes(), 3)
    assert fit.method == "otsu_fallback"
    assert "did not converge" in fit.note
    assert len(fit.thresholds) == 2 and fit.thresholds[0] < fit.thresholds[1]
    assert 0.3 < fit.thresholds[0] < 0.55


def test_shoulder_component_gives_documented_fallback() -> None:
    # a small narrow mode hidden under a wide one: adjacent Gaussians do not cross between means
    params = np.array([50.0, 0.45, 0.03, 1000.0, 0.7, 0.2, 300.0, 1.3, 0.1])
    centers = np.linspace(0.02, 1.98, 50)
    hist = segment.gaussian_sum(centers, *params)
    fit = segment.mixture_thresholds(
        params, "gaussian_intersection", hist, centers, (0, 2), closed_form=False
    )
    assert fit.method == "partial_otsu_fallback"
    assert fit.thresholds[0] == pytest.approx(segment.otsu_thresholds(hist, centers, 3)[0])
    assert "Otsu" in fit.note and "1/2" in fit.note
    # the second threshold is still the true intersection of components 2 and 3
    root = intersection_between((1000.0, 0.7, 0.2), (300.0, 1.3, 0.1))
    assert fit.thresholds[1] == pytest.approx(root, abs=1e-6)


def test_classify_uses_strict_and_inclusive_bounds() -> None:
    c = np.array([[0.1, 0.5, 0.9, 1.0]])
    assert classify(c, 0.5, 0.9).tolist() == [[WATER, TERRAIN, URBAN, URBAN]]


def test_clean_urban_mask_drops_small_patches_and_fills_gaps() -> None:
    raw = np.zeros((60, 60), bool)
    raw[5:25, 5:25] = True
    raw[14, 14] = False  # a hole: closed
    raw[50:52, 50:52] = True  # 4 px -> 36 px after dilation -> dropped (< 100)
    mask = clean_urban_mask(raw)
    assert mask[14, 14]
    assert not mask[50:52, 50:52].any()
    assert mask[3:27, 3:27].all()  # 5x5 dilation grows the patch by 2 px
    assert not mask[0, 0]


def test_empty_selection_is_a_data_error() -> None:
    from eokit.core.errors import DataError

    with pytest.raises(DataError):
        decompose_histogram(np.zeros(10), 2, exclude_zeros=True)
    assert math.isfinite(decompose_histogram(_three_modes(), 2).thresholds[0])
