"""Balanced sampling over a cluster hierarchy, and statistics of what a sample keeps.

The budget ``keep x N`` is split over the top-level clusters so that every cluster gets the same
share, capped at its size (the water-filling cut of Vo et al. 2024: the largest ``x`` with
``sum_i min(x, size_i) <= budget``); each cluster's share is split the same way over its children,
down to level 1, where the points are taken at random or closest to the centroid first.
``random`` ignores the clusters (a uniform subset: the baseline).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from eokit.core.errors import InputError
from eokit.curation.kmeans import HierarchicalClusters, _random_keys, _TopPerCluster

logger = logging.getLogger(__name__)

__all__ = [
    "SampleStrategy",
    "balanced_quota",
    "check_keep",
    "hierarchical_quota",
    "kept_overlap",
    "kept_cluster_sizes",
    "normalised_entropy",
    "sample_clusters",
    "size_statistics",
]

SampleStrategy = Literal["balanced", "closest", "random"]
STRATEGIES: tuple[str, ...] = ("balanced", "closest", "random")


def check_keep(keep: float) -> float:
    """Validate a keep fraction in (0, 1].

    Raises:
        InputError: outside (0, 1] or not finite.
    """
    if not (isinstance(keep, int | float) and math.isfinite(keep) and 0 < keep <= 1):
        raise InputError(f"keep fraction must lie in (0, 1], got {keep}", parameter="keep")
    return float(keep)


def balanced_quota(sizes: np.ndarray, budget: int, seed: int = 0) -> np.ndarray:
    """Split ``budget`` over clusters as evenly as their ``sizes`` allow (sums to the budget).

    Every cluster gets ``min(x, size)`` for the largest integer ``x`` that fits; the few points
    left over go one each to randomly chosen clusters that still have room.

    Args:
        sizes: ``(k,)`` points per cluster.
        budget: Points to take, ``0 <= budget <= sizes.sum()``.
        seed: Seed of the left-over draw.

    Returns:
        ``(k,)`` int64 quotas, ``quota <= sizes``, ``quota.sum() == budget``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if not 0 <= budget <= total:
        raise InputError(f"budget {budget} outside 0..{total}", parameter="budget")
    if budget == total:
        return sizes.copy()
    lo, hi = 0, int(sizes.max()) if len(sizes) else 0
    while lo < hi:  # largest x with sum(min(x, size)) <= budget
        mid = (lo + hi + 1) // 2
        if int(np.minimum(sizes, mid).sum()) <= budget:
            lo = mid
        else:
            hi = mid - 1
    quota = np.minimum(sizes, lo)
    left = budget - int(quota.sum())
    if left:
        room = np.flatnonzero(sizes > quota)
        rng = np.random.default_rng(seed)
        quota[rng.choice(room, size=left, replace=False)] += 1
    result: np.ndarray = quota
    return result


def hierarchical_quota(clusters: HierarchicalClusters, budget: int, seed: int = 0) -> np.ndarray:
    """Points to take from every level-1 cluster: balanced at the top, then down each branch."""
    top = len(clusters.levels)
    quota = balanced_quota(clusters.levels[-1].sizes, budget, seed)
    for level in range(top, 1, -1):
        tree = clusters.tree(level)  # level-(level-1) cluster -> its parent at `level`
        child_sizes = clusters.levels[level - 2].sizes
        child_quota = np.zeros(len(tree), dtype=np.int64)
        order = np.argsort(tree, kind="stable")
        bounds = np.searchsorted(tree[order], np.arange(len(quota) + 1))
        for parent, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            children = order[a:b]
            if quota[parent] and len(children):
                child_quota[children] = balanced_quota(child_sizes[children], int(quota[parent]),
                                                       seed + level * 100003 + parent)
        quota = child_quota
    return quota


def sample_clusters(clusters: HierarchicalClusters, keep: float,
                    strategy: SampleStrategy = "balanced", seed: int = 0) -> np.ndarray:
    """Indices of the embeddings a curated subset keeps (sorted, int64).

    Args:
        clusters: The fitted hierarchy.
        keep: Fraction of the points to keep, in (0, 1].
        strategy: ``balanced`` (balanced quotas, random within a cluster), ``closest``
            (balanced quotas, closest to the level-1 centroid first) or ``random`` (uniform).
        seed: Seed of the draws.

    Returns:
        ``round(keep x N)`` sorted indices (at least 1).
    """
    keep = check_keep(keep)
    if strategy not in STRATEGIES:
        raise InputError(f"must be one of {', '.join(STRATEGIES)}, got {strategy!r}",
                         parameter="strategy")
    n = clusters.n_points
    budget = max(1, int(round(keep * n)))
    if strategy == "random":
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(n, size=budget, replace=False)).astype(np.int64)
    quota = hierarchical_quota(clusters, budget, seed)
    labels_all = clusters.levels[0].parent
    distances_all = clusters.levels[0].distances
    chosen = _TopPerCluster(quota)
    rows = int(clusters.meta.get("chunk_rows", 65536))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        idx = np.arange(start, stop, dtype=np.int64)
        labels = np.asarray(labels_all[start:stop], dtype=np.int64)
        keys = (np.asarray(distances_all[start:stop], dtype=np.float64)
                if strategy == "closest" else _random_keys(seed + 17, idx))
        chosen.add(labels, keys, idx)
    kept = np.sort(chosen.indices)
    if len(kept) != budget:  # the quotas never exceed the sizes, so this is a bug
        raise RuntimeError(f"sampled {len(kept)} points instead of {budget}")
    return kept


def normalised_entropy(counts: np.ndarray) -> float:
    """Shannon entropy of a size distribution divided by ``log(k)`` (1 = perfectly even)."""
    counts = np.asarray(counts, dtype=np.float64)
    k = len(counts)
    total = counts.sum()
    if k < 2 or total <= 0:
        return 1.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum() / math.log(k))


def size_statistics(clusters: HierarchicalClusters,
                    kept: np.ndarray | None = None) -> list[dict[str, float | int]]:
    """Per level: cluster-size spread of all points and of ``kept`` (entropy, max/median, Gini)."""
    rows: list[dict[str, float | int]] = []
    for level in range(1, len(clusters.levels) + 1):
        sizes = clusters.levels[level - 1].sizes
        row: dict[str, float | int] = {
            "level": level, "k": int(len(sizes)),
            "entropy_all": round(normalised_entropy(sizes), 4),
            "max_over_median_all": round(float(sizes.max() / max(1.0, np.median(sizes))), 3),
            "gini_all": round(_gini(sizes), 4),
        }
        if kept is not None:
            kept_sizes = kept_cluster_sizes(clusters, kept, level)
            row.update({
                "entropy_kept": round(normalised_entropy(kept_sizes), 4),
                "max_over_median_kept": round(float(kept_sizes.max()
                                                    / max(1.0, np.median(kept_sizes))), 3),
                "gini_kept": round(_gini(kept_sizes), 4),
                "clusters_represented": int((kept_sizes > 0).sum()),
            })
        rows.append(row)
    return rows


def kept_cluster_sizes(clusters: HierarchicalClusters, kept: np.ndarray,
                       level: int) -> np.ndarray:
    """``(k_level,)`` number of kept points per cluster of ``level``."""
    labels = np.asarray(clusters.levels[0].parent)[np.asarray(kept, dtype=np.int64)]
    labels = labels.astype(np.int64)
    for upper in range(2, level + 1):
        labels = clusters.tree(upper)[labels]
    return np.bincount(labels, minlength=clusters.levels[level - 1].k)


def _gini(sizes: np.ndarray) -> float:
    values = np.sort(np.asarray(sizes, dtype=np.float64))
    n = len(values)
    if n < 2 or values.sum() <= 0:
        return 0.0
    cumulative = np.cumsum(values)
    return float((n + 1 - 2 * (cumulative / cumulative[-1]).sum()) / n)


def kept_overlap(rounds: Sequence[np.ndarray]) -> list[float]:
    """Jaccard overlap of each kept set with the previous one (len(rounds) - 1 values)."""
    out: list[float] = []
    for a, b in zip(rounds, rounds[1:], strict=False):
        inter = len(np.intersect1d(a, b, assume_unique=True))
        union = len(a) + len(b) - inter
        out.append(round(inter / union, 4) if union else 1.0)
    return out
