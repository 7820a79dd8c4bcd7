"""Noise protocols: realised rates, per-file determinism, independence from visiting order."""

from __future__ import annotations

import numpy as np
import pytest

from eokit.core.errors import InputError
from eokit.noisy import noise


def rect_masks(n: int, size: int = 128, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        mask = np.zeros((size, size), dtype=np.int64)
        for top in range(4, size - 24, 42):
            for left in range(4, size - 24, 42):
                h, w = rng.integers(10, 22, size=2)
                mask[top:top + h, left:left + w] = 1
        masks.append(mask)
    return masks


@pytest.mark.parametrize("level", ["L1", "L2", "L3"])
def test_object_noise_rates_match_the_level(level: str) -> None:
    spec = noise.NOISE_LEVELS[level]
    removed, added, changed = [], [], []
    for i, mask in enumerate(rect_masks(40)):
        noisy = noise.corrupt_objects(mask, spec, seed=3, key=f"tile_{i}")
        rates = noise.noise_rates(mask, noisy)
        removed.append(rates["removed"] * rates["objects"])
        added.append(rates["added"] * rates["objects"])
        changed.append(rates["pixel_error"])
    objects = 40 * 9
    assert sum(removed) / objects == pytest.approx(spec.p_remove, abs=0.04)
    assert sum(added) / objects == pytest.approx(spec.p_add, abs=0.03)
    assert np.mean(changed) > 0.005


def test_margin_noise_changes_outlines_without_removing() -> None:
    mask = rect_masks(1)[0]
    noisy = noise.corrupt_objects(mask, noise.ObjectNoise(0.0, 0.0, 1.0), seed=0, key="a")
    rates = noise.noise_rates(mask, noisy)
    assert rates["removed"] == 0 and rates["added"] == 0
    assert rates["pixel_error"] > 0.01  # every outline moved by at least one pixel


def test_clean_level_is_identity_and_ignore_is_kept() -> None:
    mask = rect_masks(1)[0]
    mask[:5] = 255
    assert np.array_equal(noise.corrupt_objects(mask, noise.NOISE_LEVELS["clean"], key="x"), mask)
    noisy = noise.corrupt_objects(mask, noise.NOISE_LEVELS["L3"], key="x")
    assert (noisy[:5] == 255).all()


def test_noise_is_per_file_deterministic_and_order_free() -> None:
    masks = rect_masks(4)
    spec = noise.NOISE_LEVELS["L2"]
    forward = [noise.corrupt_objects(m, spec, seed=1, key=f"k{i}") for i, m in enumerate(masks)]
    backward = [noise.corrupt_objects(masks[i], spec, seed=1, key=f"k{i}") for i in (3, 2, 1, 0)]
    for a, b in zip(forward, backward[::-1], strict=True):
        assert np.array_equal(a, b)
    other = noise.corrupt_objects(masks[0], spec, seed=2, key="k0")
    assert not np.array_equal(forward[0], other)


def test_misregistration_shifts_and_marks_unknown_strip() -> None:
    mask = rect_masks(1)[0]
    shifted, (dy, dx) = noise.misregister(mask, 4, seed=0, key="t")
    assert max(abs(dy), abs(dx)) <= 4
    h, w = mask.shape
    core = shifted[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
    assert np.array_equal(core, mask[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)])
    assert (shifted == 255).sum() == h * w - core.size


@pytest.mark.parametrize("kind", ["dilate", "erode", "affine"])
def test_jsrt_noise_reaches_beta(kind: str) -> None:
    mask = np.zeros((96, 96), dtype=np.int64)
    mask[20:70, 30:75] = 1
    noisy = noise.corrupt_jsrt(mask, 0.5, seed=0, key="m", kind=kind)  # type: ignore[arg-type]
    changed = (noisy != mask).sum() / mask.sum()
    assert 0.45 <= changed <= 0.75


def test_jsrt_subset_fraction_and_seed() -> None:
    keys = [f"f{i:03d}" for i in range(100)]
    chosen = noise.select_jsrt_subset(keys, 0.3, seed=0)
    assert len(chosen) == 30
    assert chosen == noise.select_jsrt_subset(list(reversed(keys)), 0.3, seed=0)
    assert chosen != noise.select_jsrt_subset(keys, 0.3, seed=1)


def test_bad_probabilities_refused() -> None:
    with pytest.raises(InputError, match="p_remove"):
        noise.ObjectNoise(1.5, 0.0, 0.0)
