"""Out-of-core hierarchical k-means with resampling refinement (after Vo et al. 2024).

Level 1 clusters the embeddings, level ``l`` clusters the centroids of level ``l - 1``. Every
level starts from k-means++ (scikit-learn's ``kmeans_plusplus`` on a random sample), runs Lloyd
iterations, then several *resampling* rounds: each cluster contributes only its ``sample_size``
points closest to its centroid (or random ones), k-means is re-run on that balanced union, and
every point is re-assigned. Dense regions then stop attracting most centroids, which is what
makes the clusters useful for balanced sampling.

Embeddings are read in row chunks from an :class:`EmbeddingSource` (a memory-mapped ``.npy`` or
an in-memory array), so the working memory is ``chunk_rows x (dim + k)`` floats plus the
per-point outputs, which go to memory-mapped files when an output folder is given. The chunk
work (nearest centroid by faiss when installed, else scikit-learn; float64 accumulation) runs
serially or, given a ``dask.distributed`` client, as one task per chunk on the cluster.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from eokit.core.errors import DataError, InputError

logger = logging.getLogger(__name__)

__all__ = [
    "EmbeddingSource",
    "HierarchicalClusters",
    "KMeansLevel",
    "available_backend",
    "check_levels",
    "hierarchical_kmeans",
    "load_clusters",
    "nearest_centroid",
]

Backend = Literal["auto", "faiss", "sklearn"]
ResampleStrategy = Literal["closest", "random"]

#: Rows read per chunk by default (128-d float32: 32 MiB).
DEFAULT_CHUNK_ROWS = 65536
CLUSTERS_META = "clusters.json"


def available_backend(backend: Backend = "auto") -> Literal["faiss", "sklearn"]:
    """The nearest-centroid backend to use: faiss when installed (or asked), else scikit-learn.

    Raises:
        InputError: ``faiss`` was asked for but is not installed.
    """
    if backend == "sklearn":
        return "sklearn"
    try:
        import faiss  # noqa: F401
    except ImportError:
        if backend == "faiss":
            raise InputError("faiss is not installed (pip install 'eokit[curation]')",
                             parameter="backend") from None
        return "sklearn"
    return "faiss"


def nearest_centroid(x: np.ndarray, centroids: np.ndarray,
                     backend: Literal["faiss", "sklearn"]) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centroid of every row and its squared L2 distance.

    Args:
        x: ``(n, d)`` float32 points.
        centroids: ``(k, d)`` float32 centroids.
        backend: ``"faiss"`` (exact ``IndexFlatL2``) or ``"sklearn"``.

    Returns:
        ``(labels (n,) int64, squared distances (n,) float32)``.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    if backend == "faiss":
        import faiss

        index = faiss.IndexFlatL2(centroids.shape[1])
        index.add(centroids)
        distances, labels = index.search(x, 1)
        return labels[:, 0].astype(np.int64), np.maximum(distances[:, 0], 0.0)
    from sklearn.metrics import pairwise_distances_argmin_min

    labels, distances = pairwise_distances_argmin_min(x, centroids, metric="euclidean")
    return labels.astype(np.int64), (distances.astype(np.float32) ** 2)


# --------------------------------------------------------------------------------------------------
# embedding sources
# --------------------------------------------------------------------------------------------------
@dataclass
class EmbeddingSource:
    """Row-chunked read access to an ``(N, D)`` embedding matrix that may not fit in memory.

    A source built from a path reopens the file memory-mapped wherever it is read, so it can be
    sent to ``dask.distributed`` workers; one built from an array keeps the array.

    Attributes:
        path: The ``.npy`` file, or None for an in-memory array.
        array: The in-memory array, or None.
        chunk_rows: Rows per chunk.
    """

    path: Path | None = None
    array: np.ndarray | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    _shape: tuple[int, int] = field(default=(0, 0), init=False)

    def __post_init__(self) -> None:
        if self.chunk_rows < 1:
            raise InputError(f"must be >= 1, got {self.chunk_rows}", parameter="chunk_rows")
        data = self._open()
        where = self.where()
        if data.ndim != 2:
            raise InputError(f"embeddings must be a 2-D (N, D) array, got shape {data.shape}",
                             **where)
        if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
            raise InputError(f"embeddings must be numeric, got dtype {data.dtype}",
                             **where)
        self._shape = (int(data.shape[0]), int(data.shape[1]))

    @classmethod
    def open(cls, embeddings: str | Path | np.ndarray,
             chunk_rows: int = DEFAULT_CHUNK_ROWS) -> EmbeddingSource:
        """Source over a ``.npy`` path (memory-mapped) or an array.

        Raises:
            InputError: missing file, not a ``.npy`` array, not 2-D, not numeric.
        """
        if isinstance(embeddings, np.ndarray):
            return cls(array=embeddings, chunk_rows=chunk_rows)
        path = Path(embeddings)
        if not path.is_file():
            raise InputError("embeddings file not found" if not path.exists() else "not a file",
                             path=path)
        return cls(path=path, chunk_rows=chunk_rows)

    def _open(self) -> np.ndarray:
        if self.array is not None:
            return self.array
        assert self.path is not None
        try:
            data: np.ndarray = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as error:
            raise InputError(f"not a readable .npy array ({str(error).splitlines()[0]})",
                             path=self.path) from None
        return data

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, D)``."""
        return self._shape

    def __len__(self) -> int:
        return self._shape[0]

    def chunks(self) -> list[tuple[int, int]]:
        """``[(start, stop), ...]`` row ranges covering the matrix."""
        n = self._shape[0]
        return [(s, min(n, s + self.chunk_rows)) for s in range(0, n, self.chunk_rows)]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a float32 array (a copy: the file mapping is released)."""
        return np.array(self._open()[start:stop], dtype=np.float32, copy=True)

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Rows at ``indices`` in sorted order as float32 (read chunk by chunk)."""
        indices = np.sort(np.asarray(indices, dtype=np.int64))
        out = np.empty((len(indices), self._shape[1]), dtype=np.float32)
        for start, stop in self.chunks():
            lo, hi = np.searchsorted(indices, [start, stop])
            if hi > lo:
                # A fresh mapping per chunk: pages the kernel maps around scattered reads
                # (fault-around) then stay resident for one chunk only, not for the whole file.
                out[lo:hi] = self._open()[indices[lo:hi]]
        return out

    def where(self) -> dict[str, Any]:
        """``InputError`` keyword naming this source (its path, else the parameter)."""
        return {"path": self.path} if self.path is not None else {"parameter": "embeddings"}


def _map_chunks(func: Callable[..., Any], source: EmbeddingSource, args: tuple[Any, ...],
                client: Any | None) -> Iterable[Any]:
    """Results of ``func(source, start, stop, *args)`` over every chunk (serial or on dask)."""
    ranges = source.chunks()
    if client is None:
        for start, stop in ranges:
            yield func(source, start, stop, *args)
        return
    # The per-pass arguments (centroids) are small: they travel with each task.
    futures = [client.submit(_call_chunk, func, source, start, stop, args, pure=False)
               for start, stop in ranges]
    from dask.distributed import as_completed

    for future in as_completed(futures):  # type: ignore[no-untyped-call]
        yield future.result()


def _call_chunk(func: Callable[..., Any], source: EmbeddingSource, start: int, stop: int,
                args: tuple[Any, ...] | None) -> Any:
    return func(source, start, stop, *(args or ()))


def _check_chunk(source: EmbeddingSource, start: int, stop: int) -> tuple[int, int]:
    """(first non-finite row or -1, rows in the chunk)."""
    x = source.read(start, stop)
    bad = ~np.isfinite(x).all(axis=1)
    return (start + int(np.argmax(bad)) if bad.any() else -1), stop - start


def _lloyd_chunk(source: EmbeddingSource, start: int, stop: int, centroids: np.ndarray,
                 backend: Literal["faiss", "sklearn"]) -> tuple[np.ndarray, np.ndarray, float]:
    x = source.read(start, stop)
    labels, distances = nearest_centroid(x, centroids, backend)
    sums = _cluster_sums(labels, x, len(centroids))
    counts = np.bincount(labels, minlength=len(centroids)).astype(np.int64)
    return sums, counts, float(distances.astype(np.float64).sum())


def _cluster_sums(labels: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """``(k, D)`` float64 sum of the rows of each cluster (a sparse one-hot product)."""
    from scipy import sparse

    onehot = sparse.csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))),
                               shape=(k, len(labels)))
    return np.asarray(onehot @ x.astype(np.float64))


def _assign_chunk(source: EmbeddingSource, start: int, stop: int, centroids: np.ndarray,
                  backend: Literal["faiss", "sklearn"]) -> tuple[int, np.ndarray, np.ndarray]:
    labels, distances = nearest_centroid(source.read(start, stop), centroids, backend)
    return start, labels.astype(np.int32), distances


# --------------------------------------------------------------------------------------------------
# per-cluster selection (bounded memory)
# --------------------------------------------------------------------------------------------------
def select_per_cluster(labels: np.ndarray, keys: np.ndarray, indices: np.ndarray,
                       quota: np.ndarray) -> np.ndarray:
    """Positions (into the inputs) of the ``quota[c]`` smallest ``keys`` of every cluster ``c``.

    Ties break by index, so the result is deterministic.
    """
    order = np.lexsort((indices, keys, labels))
    sorted_labels = labels[order]
    first = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.arange(len(order)) - first
    selected: np.ndarray = order[rank < quota[sorted_labels]]
    return selected


class _TopPerCluster:
    """Running ``quota[c]`` smallest keys per cluster over a stream of chunks."""

    def __init__(self, quota: np.ndarray) -> None:
        self.quota = quota.astype(np.int64)
        self.labels = np.empty(0, dtype=np.int64)
        self.keys = np.empty(0, dtype=np.float64)
        self.indices = np.empty(0, dtype=np.int64)

    def add(self, labels: np.ndarray, keys: np.ndarray, indices: np.ndarray) -> None:
        labels = np.concatenate([self.labels, labels.astype(np.int64)])
        keys = np.concatenate([self.keys, keys.astype(np.float64)])
        indices = np.concatenate([self.indices, indices.astype(np.int64)])
        keep = select_per_cluster(labels, keys, indices, self.quota)
        self.labels, self.keys, self.indices = labels[keep], keys[keep], indices[keep]


def _random_keys(seed: int, indices: np.ndarray) -> np.ndarray:
    """Reproducible uniform keys per point index, independent of chunking."""
    # A hash of (seed, index): the same point gets the same key whatever the chunk size.
    offset = np.uint64((int(seed) * 0x9E3779B97F4A7C15) % 2**64)
    mixed = indices.astype(np.uint64) + offset
    mixed ^= mixed >> np.uint64(33)
    mixed *= np.uint64(0xFF51AFD7ED558CCD)
    mixed ^= mixed >> np.uint64(33)
    mixed *= np.uint64(0xC4CEB9FE1A85EC53)
    mixed ^= mixed >> np.uint64(33)
    return (mixed >> np.uint64(11)).astype(np.float64) / float(2**53)


# --------------------------------------------------------------------------------------------------
# one level
# --------------------------------------------------------------------------------------------------
@dataclass
class KMeansLevel:
    """One level of the hierarchy.

    Attributes:
        k: Number of clusters.
        centroids: ``(k, D)`` float32.
        parent: For level >= 2, ``(k_prev,)`` int: the cluster of every level-(l-1) centroid; for
            level 1, the ``(N,)`` assignment of every embedding (possibly memory-mapped).
        distances: Squared distance of every member to its centroid, same length as ``parent``.
        sizes: ``(k,)`` number of *embeddings* under each cluster.
        inertia: Sum of squared distances of the level's points to their centroids.
        changed: Fraction of the level's points that changed cluster in each resampling round.
    """

    k: int
    centroids: np.ndarray
    parent: np.ndarray
    distances: np.ndarray
    sizes: np.ndarray
    inertia: float
    changed: list[float]


def _kmeanspp(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import kmeans_plusplus

    centres, _ = kmeans_plusplus(x.astype(np.float32), k, random_state=seed)
    return np.asarray(centres, dtype=np.float32)


def _random_rows(n: int, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if count >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=count, replace=False)).astype(np.int64)


def _lloyd(source: EmbeddingSource, centroids: np.ndarray, iterations: int,
           backend: Literal["faiss", "sklearn"], client: Any | None, reseed: np.ndarray,
           rng: np.random.Generator, tol: float = 1e-6) -> tuple[np.ndarray, float]:
    """Full-batch Lloyd iterations streamed over the source's chunks (float64 sums)."""
    previous = math.inf
    inertia = math.inf
    for _ in range(iterations):
        sums = np.zeros(centroids.shape, dtype=np.float64)
        counts = np.zeros(len(centroids), dtype=np.int64)
        inertia = 0.0
        for chunk_sums, chunk_counts, chunk_inertia in _map_chunks(
                _lloyd_chunk, source, (centroids, backend), client):
            sums += chunk_sums
            counts += chunk_counts
            inertia += chunk_inertia
        nonempty = counts > 0
        centroids = centroids.copy()
        centroids[nonempty] = (sums[nonempty] / counts[nonempty, None]).astype(np.float32)
        empty = np.flatnonzero(~nonempty)
        if len(empty):
            # Re-seed empty clusters on sample points far from their centroid (standard fix).
            _, far = nearest_centroid(reseed, centroids, backend)
            candidates = np.argsort(-far)[: max(len(empty) * 4, len(empty))]
            centroids[empty] = reseed[rng.choice(candidates, size=len(empty), replace=False)]
        if previous < math.inf and abs(previous - inertia) <= tol * max(previous, 1e-12) \
                and not len(empty):
            break
        previous = inertia
    return centroids, inertia


def _fit_level(source: EmbeddingSource, k: int, *, iterations: int, resample_steps: int,
               sample_size: int, strategy: ResampleStrategy, seed: int,
               backend: Literal["faiss", "sklearn"], client: Any | None,
               init_sample: int, parent_out: np.ndarray, distance_out: np.ndarray,
               weights: np.ndarray | None, level: int, fit_points: int | None) -> KMeansLevel:
    full = source
    if fit_points is not None and len(source) > fit_points:
        # Fit on a random subset held in memory, then assign every point in one streamed pass.
        rows = _random_rows(len(source), fit_points, seed + 1)
        source = EmbeddingSource(array=full.take(rows), chunk_rows=full.chunk_rows)
        fit_parent = np.zeros(len(source), dtype=np.int32)
        fit_distance = np.zeros(len(source), dtype=np.float32)
        logger.info("level %d: fitting on %d of %d points", level, len(source), len(full))
    else:
        fit_parent, fit_distance = parent_out, distance_out
    centroids, changed = _fit_centroids(
        source, k, iterations=iterations, resample_steps=resample_steps,
        sample_size=sample_size, strategy=strategy, seed=seed, backend=backend,
        client=client if source is full else None, init_sample=init_sample,
        parent_out=fit_parent, distance_out=fit_distance, level=level)
    if source is not full:
        _assign_all(full, centroids, backend, client, parent_out, distance_out)
    inertia = sum(float(np.asarray(distance_out[s:e], dtype=np.float64).sum())
                  for s, e in full.chunks())
    labels_all = np.asarray(parent_out)
    if weights is None:
        sizes = np.zeros(k, dtype=np.int64)
        for s, e in full.chunks():
            sizes += np.bincount(np.asarray(labels_all[s:e], dtype=np.int64), minlength=k)
    else:
        sizes = np.bincount(labels_all.astype(np.int64), weights=weights, minlength=k)
        sizes = np.rint(sizes).astype(np.int64)
    return KMeansLevel(k=k, centroids=centroids, parent=parent_out, distances=distance_out,
                       sizes=sizes, inertia=inertia, changed=changed)


def _fit_centroids(source: EmbeddingSource, k: int, *, iterations: int, resample_steps: int,
                   sample_size: int, strategy: ResampleStrategy, seed: int,
                   backend: Literal["faiss", "sklearn"], client: Any | None,
                   init_sample: int, parent_out: np.ndarray, distance_out: np.ndarray,
                   level: int) -> tuple[np.ndarray, list[float]]:
    n, _ = source.shape
    rng = np.random.default_rng(seed)
    sample_rows = _random_rows(n, max(init_sample, k), seed)
    sample = source.take(sample_rows)
    centroids = _kmeanspp(sample, k, seed)
    centroids, inertia = _lloyd(source, centroids, iterations, backend, client, sample, rng)
    _assign_all(source, centroids, backend, client, parent_out, distance_out)
    changed: list[float] = []
    for step in range(resample_steps):
        quota = np.full(k, sample_size, dtype=np.int64)
        chosen = _TopPerCluster(quota)
        for start in range(0, n, source.chunk_rows):
            stop = min(n, start + source.chunk_rows)
            idx = np.arange(start, stop, dtype=np.int64)
            labels = np.asarray(parent_out[start:stop], dtype=np.int64)
            keys = (np.asarray(distance_out[start:stop], dtype=np.float64)
                    if strategy == "closest" else _random_keys(seed * 1000 + step, idx))
            chosen.add(labels, keys, idx)
        resampled = EmbeddingSource(array=source.take(chosen.indices),
                                    chunk_rows=source.chunk_rows)
        centroids, _ = _lloyd(resampled, centroids, iterations, backend, None,
                              sample, rng)
        moved = _assign_all(source, centroids, backend, client, parent_out, distance_out)
        changed.append(moved / n)
        logger.info("level %d (k=%d) resampling round %d/%d: %.2f%% of points changed cluster",
                    level, k, step + 1, resample_steps, 100 * moved / n)
    return centroids, changed


def _assign_all(source: EmbeddingSource, centroids: np.ndarray,
                backend: Literal["faiss", "sklearn"], client: Any | None,
                labels_out: np.ndarray, distances_out: np.ndarray) -> int:
    """Write every point's nearest centroid and distance; return how many changed cluster."""
    moved = 0
    for start, labels, distances in _map_chunks(_assign_chunk, source, (centroids, backend),
                                                client):
        stop = start + len(labels)
        old = np.asarray(labels_out[start:stop]).copy()
        labels_out[start:stop] = labels
        distances_out[start:stop] = distances
        moved += int((old != labels).sum())
    return moved


# --------------------------------------------------------------------------------------------------
# the hierarchy
# --------------------------------------------------------------------------------------------------
@dataclass
class HierarchicalClusters:
    """A fitted hierarchy of k-means levels over ``N`` embeddings.

    Attributes:
        levels: Level 1 first.
        n_points: ``N``.
        dim: Embedding dimension.
        meta: Settings and timings (what ``clusters.json`` holds).
        folder: Where the arrays are stored, if saved.
    """

    levels: list[KMeansLevel]
    n_points: int
    dim: int
    meta: dict[str, Any]
    folder: Path | None = None

    def assignments(self, level: int) -> np.ndarray:
        """Cluster of every embedding at ``level`` (1-based), ``(N,)`` int32."""
        if not 1 <= level <= len(self.levels):
            raise InputError(f"level {level} outside 1..{len(self.levels)}", parameter="level")
        labels = np.asarray(self.levels[0].parent, dtype=np.int32)
        for upper in self.levels[1:level]:
            labels = np.asarray(upper.parent, dtype=np.int32)[labels]
        return labels

    def tree(self, level: int) -> np.ndarray:
        """For ``level >= 2``: the level-``level`` cluster of every level-(level-1) cluster."""
        if not 2 <= level <= len(self.levels):
            raise InputError(f"level {level} outside 2..{len(self.levels)}", parameter="level")
        return np.asarray(self.levels[level - 1].parent, dtype=np.int64)


def check_levels(levels: Sequence[int], n_points: int) -> list[int]:
    """Validate a level list: positive, strictly shrinking, first level <= number of points.

    Raises:
        InputError: empty, non-positive, growing or too many clusters.
    """
    values = [int(v) for v in levels]
    if not values:
        raise InputError("give at least one level, e.g. 1000,100,10", parameter="levels")
    if any(v < 1 for v in values):
        raise InputError(f"cluster counts must be >= 1, got {values}", parameter="levels")
    for upper, lower in zip(values, values[1:], strict=False):
        if lower >= upper:
            raise InputError(f"levels must shrink (each level clusters the previous centroids), "
                             f"got {values}", parameter="levels")
    if values[0] > n_points:
        raise InputError(f"{values[0]} clusters for {n_points} points: more clusters than points",
                         parameter="levels")
    return values


def _per_level(value: int | Sequence[int], count: int, name: str) -> list[int]:
    values = [int(value)] * count if isinstance(value, int) else [int(v) for v in value]
    if len(values) != count:
        raise InputError(f"give one value per level ({count}), got {len(values)}",
                         parameter=name)
    if any(v < 0 for v in values):
        raise InputError(f"must be >= 0, got {values}", parameter=name)
    return values


def hierarchical_kmeans(
    embeddings: str | Path | np.ndarray | EmbeddingSource,
    levels: Sequence[int],
    *,
    iterations: int = 20,
    resample_steps: int | Sequence[int] = 3,
    sample_size: int | Sequence[int] | None = None,
    strategy: ResampleStrategy = "closest",
    seed: int = 0,
    backend: Backend = "auto",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    init_sample: int = 20000,
    fit_points: int | None = None,
    out_dir: str | Path | None = None,
    client: Any | None = None,
) -> HierarchicalClusters:
    """Fit hierarchical k-means; with ``out_dir`` the per-point arrays are memory-mapped files.

    Args:
        embeddings: ``(N, D)`` array, ``.npy`` path (memory-mapped) or source.
        levels: Clusters per level, strictly shrinking (``[1000, 100, 10]``).
        iterations: Lloyd iterations per k-means run.
        resample_steps: Resampling-refinement rounds, one value or one per level.
        sample_size: Points each cluster contributes to a resampling round, one value or one
            per level (default: ``max(2, round(N_level / k / 2))``, half the mean cluster size).
        strategy: Which points a cluster contributes: ``closest`` to its centroid or ``random``.
        seed: Seed of the k-means++ sample, initialisation and random keys.
        backend: ``auto`` (faiss when installed), ``faiss`` or ``sklearn``.
        chunk_rows: Rows per chunk of level 1 (bounds the working memory).
        init_sample: Points the k-means++ initialisation looks at (at least ``k``).
        fit_points: Fit level 1 on at most this many random points held in memory, then
            assign all points in one streamed pass (None: every Lloyd iteration streams all
            points). For archives where a full pass per iteration is too slow.
        out_dir: Folder for ``assign_level*.npy``, ``distance_level1.npy``, ``centroids_*``.
        client: A ``dask.distributed.Client``: level-1 chunk passes run as its tasks (the
            embeddings must then be a ``.npy`` path every worker can read).

    Returns:
        The hierarchy (saved to ``out_dir`` when given).

    Raises:
        InputError: bad levels or parameters, non-finite embedding rows, unreadable file.
    """
    started = time.perf_counter()
    source = embeddings if isinstance(embeddings, EmbeddingSource) else \
        EmbeddingSource.open(embeddings, chunk_rows=chunk_rows)
    n, dim = source.shape
    if n < 1 or dim < 1:
        raise InputError(f"no embeddings (shape {source.shape})", **source.where())
    ks = check_levels(levels, n)
    if fit_points is not None and fit_points < ks[0]:
        raise InputError(f"must be >= the level-1 cluster count {ks[0]}, got {fit_points}",
                         parameter="fit_points")
    if iterations < 1:
        raise InputError(f"must be >= 1, got {iterations}", parameter="iterations")
    if strategy not in ("closest", "random"):
        raise InputError(f"must be 'closest' or 'random', got {strategy!r}",
                         parameter="strategy")
    steps = _per_level(resample_steps, len(ks), "resample_steps")
    if client is not None and source.path is None:
        raise InputError("a dask cluster needs the embeddings as a .npy path its workers can "
                         "read", parameter="client")
    chosen_backend = available_backend(backend)
    for first_bad, _ in _map_chunks(_check_chunk, source, (), client):
        if first_bad >= 0:
            raise InputError(f"row {first_bad} holds NaN or infinite values; drop or fix such "
                             "rows first", **source.where())
    counts_prev = [n] + ks[:-1]
    sizes_arg = sample_size if sample_size is not None else \
        [max(2, round(c / k / 2)) for c, k in zip(counts_prev, ks, strict=True)]
    sizes = _per_level(sizes_arg, len(ks), "sample_size")
    if any(s < 1 for s, r in zip(sizes, steps, strict=True) if r > 0):
        raise InputError("must be >= 1 where resampling runs", parameter="sample_size")
    folder = Path(out_dir) if out_dir is not None else None
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"cannot create the output folder ({error.strerror})",
                             path=folder) from None
    try:
        return _fit_hierarchy(source, ks, steps, sizes, folder, iterations=iterations,
                              strategy=strategy, seed=seed, backend=chosen_backend,
                              client=client, init_sample=init_sample, started=started,
                              fit_points=fit_points)
    except BaseException:
        if folder is not None:  # nothing half-written stays behind
            for name in (".assign_level1.npy.tmp", ".distance_level1.npy.tmp"):
                (folder / name).unlink(missing_ok=True)
        raise


def _fit_hierarchy(source: EmbeddingSource, ks: list[int], steps: list[int], sizes: list[int],
                   folder: Path | None, *, iterations: int, strategy: ResampleStrategy,
                   seed: int, backend: Literal["faiss", "sklearn"], client: Any | None,
                   init_sample: int, started: float,
                   fit_points: int | None) -> HierarchicalClusters:
    n, dim = source.shape
    chunk_rows = source.chunk_rows
    chosen_backend = backend
    logger.info("hierarchical k-means: N=%d D=%d levels=%s backend=%s chunks=%d", n, dim, ks,
                chosen_backend, len(source.chunks()))
    fitted: list[KMeansLevel] = []
    level_source = source
    weights: np.ndarray | None = None
    for number, (k, step_count, size) in enumerate(zip(ks, steps, sizes, strict=True), start=1):
        count = len(level_source)
        if k > count:
            raise InputError(f"level {number} asks for {k} clusters of {count} points",
                             parameter="levels")
        if folder is not None and number == 1:
            from numpy.lib.format import open_memmap

            parent: np.ndarray = open_memmap(folder / ".assign_level1.npy.tmp", mode="w+",
                                             dtype=np.int32, shape=(count,))
            distance: np.ndarray = open_memmap(folder / ".distance_level1.npy.tmp", mode="w+",
                                   dtype=np.float32, shape=(count,))
        else:
            parent = np.zeros(count, dtype=np.int32)
            distance = np.zeros(count, dtype=np.float32)
        level_started = time.perf_counter()
        result = _fit_level(
            level_source, k, iterations=iterations, resample_steps=step_count,
            sample_size=size, strategy=strategy, seed=seed + 7919 * number,
            backend=chosen_backend, client=client if number == 1 else None,
            init_sample=init_sample, parent_out=parent, distance_out=distance,
            weights=weights, level=number, fit_points=fit_points if number == 1 else None)
        empty = int((result.sizes == 0).sum())
        if empty:
            logger.warning("level %d: %d of %d clusters are empty", number, empty, k)
        logger.info("level %d: k=%d in %.1f s, largest cluster %d, smallest %d", number, k,
                    time.perf_counter() - level_started, int(result.sizes.max()),
                    int(result.sizes.min()))
        fitted.append(result)
        weights = result.sizes.astype(np.float64)
        level_source = EmbeddingSource(array=result.centroids, chunk_rows=chunk_rows)
    meta = {
        "n_points": n, "dim": dim, "levels": ks, "iterations": iterations,
        "resample_steps": steps, "sample_size": sizes, "strategy": strategy, "seed": seed,
        "backend": chosen_backend, "chunk_rows": source.chunk_rows,
        "distributed": client is not None, "fit_points": fit_points,
        "source": str(source.path) if source.path is not None else None,
        "seconds": round(time.perf_counter() - started, 3),
        "sizes": [lv.sizes.tolist() for lv in fitted],
        "inertia": [lv.inertia for lv in fitted],
        "changed_per_round": [lv.changed for lv in fitted],
    }
    clusters = HierarchicalClusters(levels=fitted, n_points=n, dim=dim, meta=meta)
    if folder is not None:
        _save(clusters, folder)
    return clusters


def _save(clusters: HierarchicalClusters, folder: Path) -> None:
    """Write the arrays and ``clusters.json`` (temporary names renamed at the end)."""
    import os

    from numpy.lib.format import open_memmap

    from eokit.core.raster import atomic_write

    first = clusters.levels[0]
    for array in (first.parent, first.distances):
        if isinstance(array, np.memmap):
            array.flush()
    for number, level in enumerate(clusters.levels, start=1):
        with atomic_write(folder / f"centroids_level{number}.npy") as tmp:
            np.save(tmp, level.centroids, allow_pickle=False)
        if number >= 2:
            with atomic_write(folder / f"tree_level{number}.npy") as tmp:
                np.save(tmp, np.asarray(level.parent, dtype=np.int32), allow_pickle=False)
    # Per-level assignments of every embedding, composed chunk by chunk.
    n = clusters.n_points
    rows = int(clusters.meta["chunk_rows"])
    labels1 = first.parent
    trees = [np.asarray(lv.parent, dtype=np.int32) for lv in clusters.levels[1:]]
    for number in range(2, len(clusters.levels) + 1):
        tmp_path = folder / f".assign_level{number}.npy.tmp"
        out = open_memmap(tmp_path, mode="w+", dtype=np.int32, shape=(n,))
        for start in range(0, n, rows):
            labels = np.asarray(labels1[start:start + rows], dtype=np.int32)
            for tree in trees[: number - 1]:
                labels = tree[labels]
            out[start:start + rows] = labels
        out.flush()
        del out
        os.replace(tmp_path, folder / f"assign_level{number}.npy")
    if isinstance(first.parent, np.memmap):
        src_assign = Path(str(first.parent.filename))
        src_dist = Path(str(first.distances.filename))  # type: ignore[attr-defined]
        os.replace(src_assign, folder / "assign_level1.npy")
        os.replace(src_dist, folder / "distance_level1.npy")
        first.parent = np.load(folder / "assign_level1.npy", mmap_mode="r")
        first.distances = np.load(folder / "distance_level1.npy", mmap_mode="r")
    else:
        for name, array in (("assign_level1.npy", first.parent),
                            ("distance_level1.npy", first.distances)):
            with atomic_write(folder / name) as tmp:
                np.save(tmp, np.asarray(array), allow_pickle=False)
    with atomic_write(folder / CLUSTERS_META) as tmp:
        Path(tmp).write_text(json.dumps(clusters.meta, indent=1) + "\n", encoding="utf-8")
    clusters.folder = folder


def load_clusters(folder: str | Path) -> HierarchicalClusters:
    """Open a folder written by :func:`hierarchical_kmeans` (per-point arrays memory-mapped).

    Raises:
        InputError: not a clusters folder, or a file is missing or inconsistent.
    """
    folder = Path(folder)
    meta_path = folder / CLUSTERS_META
    if not meta_path.is_file():
        raise InputError(f"not a clusters folder (no {CLUSTERS_META}); run 'eokit curation "
                         "cluster' first", path=folder)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        ks = [int(k) for k in meta["levels"]]
        n = int(meta["n_points"])
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"unreadable ({error})", path=meta_path) from None
    levels: list[KMeansLevel] = []
    for number, k in enumerate(ks, start=1):
        try:
            centroids = np.load(folder / f"centroids_level{number}.npy", allow_pickle=False)
            if number == 1:
                parent = np.load(folder / "assign_level1.npy", mmap_mode="r",
                                 allow_pickle=False)
                distances = np.load(folder / "distance_level1.npy", mmap_mode="r",
                                    allow_pickle=False)
                expected = n
            else:
                parent = np.load(folder / f"tree_level{number}.npy", allow_pickle=False)
                distances = np.zeros(len(parent), dtype=np.float32)
                expected = ks[number - 2]
        except (OSError, ValueError) as error:
            raise InputError(f"missing or unreadable level-{number} array "
                             f"({str(error).splitlines()[0]})", path=folder) from None
        if len(parent) != expected or centroids.shape[0] != k:
            raise DataError(f"{folder}: level {number} arrays do not match clusters.json")
        sizes = np.asarray(meta["sizes"][number - 1], dtype=np.int64)
        levels.append(KMeansLevel(k=k, centroids=centroids, parent=parent, distances=distances,
                                  sizes=sizes, inertia=float(meta["inertia"][number - 1]),
                                  changed=list(meta["changed_per_round"][number - 1])))
    return HierarchicalClusters(levels=levels, n_points=n, dim=int(meta["dim"]), meta=meta,
                                folder=folder)
