from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import distance_transform_cdt, distance_transform_edt

from eokit.core.errors import InputError
from eokit.core.split import spatial_block_split, windows_by_split
from eokit.core.tiling import plan_windows


@pytest.mark.parametrize(
    ("height", "width", "block", "buffer", "seed"),
    [(200, 260, 32, 8, 0), (200, 260, 32, 7, 1), (150, 90, 20, 3, 2), (128, 128, 16, 1, 3)],
)
def test_no_eval_pixel_within_buffer_of_train(height, width, block, buffer, seed):
    split = spatial_block_split(height, width, block=block, buffer=buffer, seed=seed)
    assert split.dtype == np.int8 and split.shape == (height, width)
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        # chessboard distance from every pixel to the nearest pixel of split a
        distance = distance_transform_cdt(split != a, metric="chessboard")
        assert distance[split == b].min() > buffer
        euclid = distance_transform_edt(split != a)
        assert euclid[split == b].min() > buffer


def test_without_buffer_blocks_are_whole_and_fractions_hold():
    split = spatial_block_split(320, 320, block=32, seed=5)
    assert set(np.unique(split)) == {0, 1, 2}
    blocks = split.reshape(10, 32, 10, 32).transpose(0, 2, 1, 3).reshape(100, -1)
    assert (blocks == blocks[:, :1]).all()  # each block is one split
    counts = np.bincount(blocks[:, 0], minlength=3)
    np.testing.assert_array_equal(counts, [70, 15, 15])


def test_seed_is_deterministic_and_matters():
    a = spatial_block_split(100, 100, block=10, seed=1)
    np.testing.assert_array_equal(a, spatial_block_split(100, 100, block=10, seed=1))
    assert (a != spatial_block_split(100, 100, block=10, seed=2)).any()


def test_buffer_pixels_are_marked():
    split = spatial_block_split(96, 96, block=32, buffer=4, seed=0)
    assert (split == -1).any()
    assert (split >= -1).all() and (split <= 2).all()


def test_every_split_gets_a_block_on_small_rasters():
    split = spatial_block_split(20, 30, block=10, seed=0)  # 6 blocks
    assert set(np.unique(split)) == {0, 1, 2}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"block": 0}, "block"),
        ({"block": 8, "fractions": (0.5, 0.2)}, "fractions"),
        ({"block": 8, "fractions": (1.2, -0.2)}, "fractions"),
        ({"block": 8, "buffer": -1}, "buffer"),
        ({"block": 64}, "block"),
        ({"block": 8, "buffer": 20}, "buffer"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(InputError, match=match):
        spatial_block_split(32, 32, **kwargs)


def test_windows_by_split_never_mix_splits():
    split = spatial_block_split(128, 128, block=32, buffer=4, seed=0)
    groups = windows_by_split(split, plan_windows(128, 128, tile=16, overlap=0))
    assert groups[0] and groups[1]
    for split_id, windows in groups.items():
        for r, c, h, w in windows:
            assert (split[r : r + h, c : c + w] == split_id).all()
