"""Spatial block train/val/test split with a buffer so neighbouring pixels never leak across splits.

Random pixel or chip splits over-estimate accuracy on spatially autocorrelated Earth-observation
data (Roberts et al. 2017, "Cross-validation strategies for data with temporal, spatial,
hierarchical, or phylogenetic structure"; Ploton et al. 2020). Here whole square blocks are
assigned to splits, and a buffer of dropped pixels separates blocks of different splits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from eokit.core.errors import InputError

logger = logging.getLogger(__name__)

#: Value of pixels dropped by the buffer.
BUFFER = -1
#: Names of the splits 0, 1, 2.
SPLIT_NAMES = ("train", "val", "test")


def _block_counts(n_blocks: int, fractions: Sequence[float]) -> list[int]:
    """Blocks per split by largest remainder; every non-zero fraction gets at least one block."""
    raw = [f * n_blocks for f in fractions]
    counts = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in order[: n_blocks - sum(counts)]:
        counts[i] += 1
    for i, fraction in enumerate(fractions):
        if fraction > 0 and counts[i] == 0:
            donor = max(range(len(counts)), key=lambda j: counts[j])
            counts[donor] -= 1
            counts[i] += 1
    return counts


def split_counts(n_items: int, fractions: Sequence[float]) -> list[int]:
    """Items per split for ``fractions`` of ``n_items``, by largest remainder.

    Every non-zero fraction gets at least one item (callers check that ``n_items`` is at least
    the number of non-zero fractions). Shared by the block split here and by image-level splits.
    """
    return _block_counts(n_items, fractions)


def spatial_block_split(
    height: int,
    width: int,
    *,
    block: int,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    buffer: int = 0,
) -> np.ndarray:
    """Assign square blocks of a raster to train/val/test and drop a buffer between splits.

    Blocks of ``block`` x ``block`` pixels (smaller at the right/bottom edge) are shuffled with
    ``seed`` and assigned to splits in proportion to ``fractions`` (counted in blocks). A pixel is
    dropped (-1) when a pixel of another split lies within ``ceil(buffer / 2)`` pixels
    (Chebyshev distance), which guarantees that every kept pixel is more than ``buffer`` pixels
    (Chebyshev, hence also Euclidean) away from every kept pixel of another split.

    Args:
        height: Raster height in pixels.
        width: Raster width in pixels.
        block: Block size in pixels (choose it larger than the spatial autocorrelation range and
            than the training chip size).
        fractions: Share of blocks per split (train, val, test); must sum to 1.
        seed: Random seed of the block assignment.
        buffer: Minimum gap in pixels between splits (e.g. the model's receptive-field radius
            or chip size).

    Returns:
        (H, W) int8 array: 0 = train, 1 = val, 2 = test, -1 = dropped buffer pixel.

    Raises:
        InputError: on non-positive sizes, a negative buffer, fractions that do not sum to 1,
            or fewer blocks than splits.
    """
    if height < 1 or width < 1:
        raise InputError(f"raster size must be positive, got {width}x{height}", parameter="shape")
    if int(block) != block or block < 1:
        raise InputError(f"must be a positive integer, got {block}", parameter="block")
    if int(buffer) != buffer or buffer < 0:
        raise InputError(f"must be a non-negative integer, got {buffer}", parameter="buffer")
    fractions = [float(f) for f in fractions]
    if (
        not fractions
        or len(fractions) > 127
        or any(f < 0 or not math.isfinite(f) for f in fractions)
    ):
        raise InputError(f"need non-negative shares, got {fractions}", parameter="fractions")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise InputError(f"must sum to 1, got {sum(fractions):g}", parameter="fractions")
    rows, cols = math.ceil(height / block), math.ceil(width / block)
    n_blocks = rows * cols
    needed = sum(f > 0 for f in fractions)
    if n_blocks < needed:
        raise InputError(
            f"only {n_blocks} block(s) of {block} px fit in {width}x{height} px but {needed} "
            "splits need one each; use a smaller block",
            parameter="block",
        )
    counts = _block_counts(n_blocks, fractions)
    flat = np.repeat(np.arange(len(fractions), dtype=np.int8), counts)
    assignment = np.random.default_rng(seed).permutation(flat).reshape(rows, cols)
    labels = np.repeat(np.repeat(assignment, block, axis=0), block, axis=1)[:height, :width]
    labels = np.ascontiguousarray(labels)
    radius = math.ceil(buffer / 2)
    if radius > 0:
        from scipy.ndimage import maximum_filter, minimum_filter

        size = 2 * radius + 1
        # a pixel is dropped when its neighbourhood holds any other label: max != min
        high = maximum_filter(labels, size=size, mode="nearest")
        low = minimum_filter(labels, size=size, mode="nearest")
        labels = np.where(high != low, np.int8(BUFFER), labels).astype(np.int8)
    kept = [int((labels == i).sum()) for i in range(len(fractions))]
    logger.debug("spatial block split: %d blocks, pixels per split %s", n_blocks, kept)
    for i, fraction in enumerate(fractions):
        if fraction > 0 and kept[i] == 0:
            name = SPLIT_NAMES[i] if i < len(SPLIT_NAMES) else str(i)
            raise InputError(
                f"the {name} split lost every pixel to the buffer; use a larger block or a "
                "smaller buffer",
                parameter="buffer",
            )
    return labels


def windows_by_split(
    split_map: np.ndarray, windows: Sequence[tuple[int, int, int, int]]
) -> dict[int, list[tuple[int, int, int, int]]]:
    """Group (row_off, col_off, height, width) windows by the split that holds all their pixels.

    Windows that straddle two splits or touch buffer pixels are left out, so chips sampled from
    the result never mix splits.

    Args:
        split_map: Output of :func:`spatial_block_split`.
        windows: Windows, e.g. from :func:`eokit.core.tiling.plan_windows`.

    Returns:
        {split id: [windows]} for every split id present in ``split_map``.
    """
    groups: dict[int, list[tuple[int, int, int, int]]] = {
        int(s): [] for s in np.unique(split_map) if s >= 0
    }
    for window in windows:
        r, c, h, w = window
        patch = split_map[r : r + h, c : c + w]
        first = int(patch.flat[0])
        if first >= 0 and (patch == first).all():
            groups[first].append(window)
    return groups
