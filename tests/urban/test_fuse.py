"""Steps 1-2: edge density, SAR scaling, fusion."""

from __future__ import annotations

import numpy as np
import pytest

from eokit.core.errors import InputError
from eokit.urban.fuse import edge_density, fuse, quantise_fused, sar_unit, to_grey


def _step_image() -> np.ndarray:
    rgb = np.zeros((3, 64, 64), np.uint8)
    rgb[:, :, 32:] = 200
    return rgb


def test_edge_density_is_unit_scaled_and_peaks_on_the_edge() -> None:
    e = edge_density(_step_image())
    assert e.shape == (64, 64)
    assert e.max() == pytest.approx(1.0)
    assert e.min() >= 0.0
    row = e[32]
    assert abs(int(np.argmax(row)) - 31.5) <= 1.5
    assert row[0] == 0.0 and row[-1] == 0.0


def test_grey_uses_opencv_luma_and_accepts_both_layouts() -> None:
    rgb = np.zeros((3, 8, 8), np.uint8)
    rgb[0] = 100
    assert to_grey(rgb)[0, 0] == round(0.299 * 100)
    assert np.array_equal(to_grey(rgb), to_grey(np.moveaxis(rgb, 0, -1)))


def test_single_band_optical_is_an_input_error() -> None:
    with pytest.raises(InputError, match="optical"):
        edge_density(np.zeros((1, 16, 16), np.uint8))


def test_constant_optical_is_an_input_error() -> None:
    with pytest.raises(InputError, match="no edges"):
        edge_density(np.full((3, 16, 16), 7, np.uint8))


def test_sar_scaling_and_quantisation() -> None:
    s = sar_unit(np.array([[0, 255], [51, 102]], np.uint8))
    assert np.allclose(s, [[0, 1], [0.2, 0.4]])
    # C * 127.5 truncated, clipped to 255
    assert quantise_fused(np.array([0.0, 1.0, 1.999, 2.5])).tolist() == [0, 127, 254, 255]


def test_fuse_range_and_size_mismatch() -> None:
    rng = np.random.default_rng(0)
    e = rng.uniform(0, 1, (40, 40))
    s = rng.uniform(0, 1, (40, 40))
    c = fuse(e, s)
    assert c.shape == (40, 40) and c.min() >= 0 and c.max() <= 2
    assert abs(c.mean() - (e + s).mean()) < 0.05  # NLM keeps the mean
    with pytest.raises(InputError, match="differ"):
        fuse(e, s[:, :30])
