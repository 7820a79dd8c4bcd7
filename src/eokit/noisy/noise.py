"""Seeded label-noise protocols: object-level building noise, JSRT-style outlines, misregistration.

Every generator takes a ``key`` (usually the file name) and derives its random stream from
``(seed, crc32(key))``: the noise of a file does not depend on the order files are visited, on the
process that corrupts it, or on how many DataLoader workers run (each worker of the reference code
drew from the same unseeded global state).
"""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from eokit.core.errors import InputError
from eokit.core.types import IGNORE_INDEX

logger = logging.getLogger(__name__)

__all__ = [
    "NOISE_LEVELS",
    "ObjectNoise",
    "corrupt_jsrt",
    "corrupt_objects",
    "misregister",
    "noise_rng",
    "noise_rates",
    "select_jsrt_subset",
]


@dataclass(frozen=True)
class ObjectNoise:
    """Object-level noise of building masks (per connected component).

    Attributes:
        p_remove: Probability that an object is omitted from the label.
        p_add: Added objects per existing object (number added ~ Binomial(objects, p_add)).
        p_margin: Probability that a kept object's outline is eroded or dilated.
    """

    p_remove: float
    p_add: float
    p_margin: float

    def __post_init__(self) -> None:
        for name in ("p_remove", "p_add", "p_margin"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"must lie in [0, 1], got {value}", parameter=name)


#: Published levels (remove, add, margin): L1 mild, L2 moderate, L3 strong.
NOISE_LEVELS: dict[str, ObjectNoise] = {
    "clean": ObjectNoise(0.0, 0.0, 0.0),
    "L1": ObjectNoise(0.1, 0.0, 0.3),
    "L2": ObjectNoise(0.2, 0.05, 0.5),
    "L3": ObjectNoise(0.3, 0.1, 0.7),
}


def noise_rng(seed: int, key: str) -> np.random.Generator:
    """Random stream of one file: the same (seed, key) always gives the same noise."""
    return np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])


def _square(size: int) -> np.ndarray:
    return np.ones((size, size), dtype=bool)


def _margin_kernel(area: int, rng: np.random.Generator) -> tuple[int, int]:
    """Kernel side and iterations scaled to the object's area.

    Kernel 1 would change nothing (a defect of the reference generator), so the smallest
    kernel is 3 x 3.
    """
    if area < 150:
        return 3, 1
    if area < 400:
        return 3, int(rng.integers(1, 3))
    return int(rng.choice([3, 5])), int(rng.integers(1, 4))


def _check_label(label: np.ndarray) -> np.ndarray:
    if label.ndim != 2:
        raise InputError(f"label must be 2-D (H, W), got shape {label.shape}", parameter="label")
    return label


def corrupt_objects(label: np.ndarray, noise: ObjectNoise, *, seed: int = 0, key: str = "",
                    foreground: int = 1, background: int = 0,
                    ignore_index: int = IGNORE_INDEX,
                    shape_pool: list[np.ndarray] | None = None) -> np.ndarray:
    """Object-level noise: remove objects, add pasted shapes, erode/dilate outlines.

    Args:
        label: (H, W) integer class ids (``ignore_index`` kept as is).
        noise: Probabilities of the three noise types.
        seed: Noise seed.
        key: File key (name) for the per-file random stream.
        foreground: Class id of the objects (buildings).
        background: Class id written where an object is removed or eroded.
        ignore_index: Label value left untouched.
        shape_pool: Binary object masks to paste (default: this label's own objects).

    Returns:
        (H, W) noisy label, same dtype.
    """
    label = _check_label(label)
    rng = noise_rng(seed, key)
    fg = label == foreground
    components, count = ndimage.label(fg, structure=_square(3))
    out = label.copy()
    objects = ndimage.find_objects(components)
    areas: list[int] = []
    for index, box in enumerate(objects, start=1):
        if box is None:
            continue
        own = components == index
        area = int(own.sum())
        areas.append(area)
        if rng.random() < noise.p_remove:
            out[own] = background
            continue
        if rng.random() < noise.p_margin:
            size, iterations = _margin_kernel(area, rng)
            if rng.random() < 0.5:
                grown = ndimage.binary_dilation(own, _square(size), iterations=iterations)
                out[grown & (label != ignore_index) & ~fg] = foreground
            else:
                kept = ndimage.binary_erosion(own, _square(size), iterations=iterations)
                out[own & ~kept] = background
    n_add = int(rng.binomial(count, noise.p_add)) if count else 0
    pool = shape_pool if shape_pool else [
        (components[box] == i) for i, box in enumerate(objects, start=1) if box is not None]
    occupied = (out == foreground) | fg
    height, width = label.shape
    for _ in range(n_add):
        shape = pool[int(rng.integers(len(pool)))]
        shape = np.rot90(shape, int(rng.integers(4)))
        target_area = float(rng.choice(areas)) if areas else 400.0
        scale = math.sqrt(target_area / max(1.0, float(shape.sum())))
        shape = ndimage.zoom(shape.astype(np.float32), scale, order=0) > 0.5
        sh, sw = shape.shape
        if sh == 0 or sw == 0 or sh >= height or sw >= width:
            continue
        for _try in range(100):
            top = int(rng.integers(0, height - sh))
            left = int(rng.integers(0, width - sw))
            window = (slice(top, top + sh), slice(left, left + sw))
            halo = ndimage.binary_dilation(shape, _square(3))
            if not (occupied[window] & halo).any() and \
                    not (label[window][shape] == ignore_index).any():
                out[window][shape] = foreground
                occupied[window] |= shape
                break
    return out


def misregister(label: np.ndarray, max_shift_px: int, *, seed: int = 0, key: str = "",
                ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, tuple[int, int]]:
    """Shift the label by up to ``max_shift_px`` in each axis (labels from another date/orbit).

    The strip uncovered by the shift becomes ``ignore_index``: nothing is known there.

    Returns:
        ``(shifted label, (dy, dx))``.
    """
    label = _check_label(label)
    if max_shift_px < 0:
        raise InputError(f"must be >= 0, got {max_shift_px}", parameter="max_shift_px")
    rng = noise_rng(seed, key)
    dy, dx = (int(v) for v in rng.integers(-max_shift_px, max_shift_px + 1, size=2))
    out = np.full_like(label, ignore_index)
    h, w = label.shape
    src = (slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx)))
    dst = (slice(max(0, dy), h - max(0, -dy)), slice(max(0, dx), w - max(0, -dx)))
    out[dst] = label[src]
    return out, (dy, dx)


def select_jsrt_subset(keys: list[str], alpha: float, *, seed: int = 0) -> set[str]:
    """The fraction ``alpha`` of files to corrupt, from a seeded shuffle of the sorted keys."""
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"must lie in [0, 1], got {alpha}", parameter="alpha")
    ordered = sorted(keys)
    order = np.random.default_rng(int(seed)).permutation(len(ordered))
    return {ordered[i] for i in order[: int(round(alpha * len(ordered)))]}


def _affine_shift(fg: np.ndarray, angle_deg: float, shift: np.ndarray) -> np.ndarray:
    h, w = fg.shape
    theta = math.radians(angle_deg)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    offset = centre - rot @ centre - rot @ shift
    moved = ndimage.affine_transform(fg.astype(np.float32), rot, offset=offset, order=0)
    return np.asarray(moved > 0.5)


def corrupt_jsrt(label: np.ndarray, beta: float, *, seed: int = 0, key: str = "",
                 foreground: int = 1, background: int = 0,
                 kind: Literal["dilate", "erode", "affine"] | None = None,
                 max_rotation_deg: float = 15.0) -> np.ndarray:
    """JSRT-style outline noise: dilate, erode or move the mask until ``beta`` of it changed.

    Args:
        label: (H, W) class ids.
        beta: Target changed area as a fraction of the foreground area.
        seed: Noise seed.
        key: File key.
        foreground: Foreground class id.
        background: Background class id.
        kind: Noise type (default: drawn uniformly per file).
        max_rotation_deg: Rotation bound of the affine type.

    Returns:
        (H, W) noisy label.
    """
    label = _check_label(label)
    if beta < 0:
        raise InputError(f"must be >= 0, got {beta}", parameter="beta")
    rng = noise_rng(seed, key)
    fg = label == foreground
    area = int(fg.sum())
    chosen = kind or str(rng.choice(["dilate", "erode", "affine"]))
    if area == 0 or beta == 0:
        return label.copy()
    target = beta * area
    new = fg
    if chosen in ("dilate", "erode"):
        op = ndimage.binary_dilation if chosen == "dilate" else ndimage.binary_erosion
        for _ in range(max(label.shape)):
            new = op(new, _square(3))
            if (new ^ fg).sum() >= target or not new.any():
                break
    elif chosen == "affine":
        angle = float(rng.uniform(-max_rotation_deg, max_rotation_deg))
        direction = rng.normal(size=2)
        direction /= np.linalg.norm(direction) + 1e-12
        low, high = 0.0, float(max(label.shape))
        for _ in range(20):  # binary search of the shift that reaches the target change
            mid = 0.5 * (low + high)
            if (_affine_shift(fg, angle, direction * mid) ^ fg).sum() < target:
                low = mid
            else:
                high = mid
        new = _affine_shift(fg, angle, direction * high)
    else:
        raise InputError(f"unknown kind {kind!r}; use dilate, erode or affine", parameter="kind")
    out = label.copy()
    out[fg & ~new] = background
    out[new & ~fg & (label == background)] = foreground
    return out


def noise_rates(clean: np.ndarray, noisy: np.ndarray, *, foreground: int = 1,
                ignore_index: int = IGNORE_INDEX) -> dict[str, float]:
    """Realised noise: flipped pixels and removed/added objects.

    Returns:
        ``pixel_error`` (fraction of labelled pixels that differ), ``removed`` (fraction of clean
        objects with no foreground pixel left), ``added`` (noisy objects with no clean pixel per
        clean object), ``objects`` (clean object count).
    """
    valid = (clean != ignore_index) & (noisy != ignore_index)
    pixel_error = float(((clean != noisy) & valid).sum() / max(1, int(valid.sum())))
    clean_fg, noisy_fg = clean == foreground, noisy == foreground
    clean_cc, n_clean = ndimage.label(clean_fg, structure=_square(3))
    noisy_cc, n_noisy = ndimage.label(noisy_fg, structure=_square(3))
    kept = np.unique(clean_cc[noisy_fg & clean_fg])
    removed = n_clean - int((kept > 0).sum())
    touched = np.unique(noisy_cc[noisy_fg & clean_fg])
    added = n_noisy - int((touched > 0).sum())
    return {"pixel_error": pixel_error, "removed": removed / max(1, n_clean),
            "added": added / max(1, n_clean), "objects": float(n_clean)}
