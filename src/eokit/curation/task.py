"""Curation pipelines behind the commands: cluster an embedding file, sample a curated subset."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eokit.core.errors import InputError
from eokit.curation.kmeans import (
    DEFAULT_CHUNK_ROWS,
    Backend,
    EmbeddingSource,
    HierarchicalClusters,
    ResampleStrategy,
    hierarchical_kmeans,
    load_clusters,
)
from eokit.curation.sampling import (
    SampleStrategy,
    check_keep,
    kept_cluster_sizes,
    kept_overlap,
    sample_clusters,
    size_statistics,
)

logger = logging.getLogger(__name__)

__all__ = ["cluster_embeddings", "parse_levels", "read_image_list", "sample_subset"]


def parse_levels(text: str) -> list[int]:
    """``"1000,100,10"`` -> ``[1000, 100, 10]``.

    Raises:
        InputError: not a comma-separated list of integers.
    """
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise InputError(f"expected comma-separated cluster counts like 1000,100,10, got "
                         f"{text!r}", parameter="levels") from None
    if not values:
        raise InputError("give at least one level, e.g. 1000,100,10", parameter="levels")
    return values


def read_image_list(images: str | Path, count: int) -> list[Path]:
    """Images in embedding-row order: a folder (sorted names) or a text file of paths.

    Raises:
        InputError: the number of images differs from the number of embeddings.
    """
    from eokit.curation.data import list_imagettes

    source = Path(images)
    if source.is_dir():
        paths = list_imagettes(source)
    elif source.is_file():
        lines = source.read_text(encoding="utf-8").splitlines()
        paths = [(source.parent / line.strip()) if not Path(line.strip()).is_absolute()
                 else Path(line.strip()) for line in lines if line.strip()]
    else:
        raise InputError("image folder or list not found", path=source)
    if len(paths) != count:
        raise InputError(f"{len(paths)} images for {count} embeddings (rows and images must "
                         "match one to one, in order)", path=source)
    return paths


def cluster_embeddings(
    embeddings: str | Path | np.ndarray,
    out_dir: str | Path,
    levels: Sequence[int],
    *,
    iterations: int = 20,
    resample_steps: int | Sequence[int] = 3,
    sample_size: int | Sequence[int] | None = None,
    strategy: ResampleStrategy = "closest",
    seed: int = 0,
    backend: Backend = "auto",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    images: str | Path | Sequence[Path] | None = None,
    client: Any | None = None,
    report: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Fit hierarchical k-means on an embedding file; write assignments, CSV sizes and a report.

    Outputs in ``out_dir``: ``assign_level{l}.npy`` (cluster of every row per level),
    ``centroids_level{l}.npy``, ``tree_level{l}.npy``, ``distance_level1.npy``,
    ``cluster_sizes.csv``, ``clusters.json`` and ``report.html``.

    Returns:
        Summary: output paths, levels, sizes spread, resampling changes, seconds.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("output exists and is not a folder", path=out)
    image_paths: list[Path] | None = None
    if images is not None:
        count = len(EmbeddingSource.open(embeddings))
        image_paths = (list(images) if isinstance(images, list | tuple)
                       else read_image_list(images, count))  # type: ignore[arg-type]
    clusters = hierarchical_kmeans(
        embeddings, levels, iterations=iterations, resample_steps=resample_steps,
        sample_size=sample_size, strategy=strategy, seed=seed, backend=backend,
        chunk_rows=chunk_rows, out_dir=out, client=client)
    if image_paths is not None:
        clusters.meta["images"] = [str(p) for p in image_paths]
        _rewrite_meta(clusters, out)
    sizes_csv = out / "cluster_sizes.csv"
    _write_sizes_csv(clusters, sizes_csv)
    stats = size_statistics(clusters)
    summary: dict[str, Any] = {
        "folder": str(out),
        "assignments": [str(out / f"assign_level{i}.npy")
                        for i in range(1, len(clusters.levels) + 1)],
        "cluster_sizes_csv": str(sizes_csv),
        "n_points": clusters.n_points, "dim": clusters.dim, "levels": clusters.meta["levels"],
        "backend": clusters.meta["backend"], "seconds": clusters.meta["seconds"],
        "size_statistics": stats,
        "changed_per_round": clusters.meta["changed_per_round"],
    }
    if report:
        summary["report"] = str(_cluster_report(clusters, out, stats, image_paths, command))
    return summary


def _rewrite_meta(clusters: HierarchicalClusters, out: Path) -> None:
    from eokit.core.raster import atomic_write

    with atomic_write(out / "clusters.json") as tmp:
        Path(tmp).write_text(json.dumps(clusters.meta, indent=1) + "\n", encoding="utf-8")


def _write_sizes_csv(clusters: HierarchicalClusters, path: Path,
                     kept: np.ndarray | None = None) -> None:
    from eokit.core.raster import atomic_write

    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        header = ["level", "cluster", "size", "parent"] + (["kept"] if kept is not None else [])
        writer.writerow(header)
        for number, level in enumerate(clusters.levels, start=1):
            parents = (clusters.tree(number + 1) if number < len(clusters.levels)
                       else np.full(level.k, -1))
            kept_sizes = kept_cluster_sizes(clusters, kept, number) if kept is not None else None
            for cluster in range(level.k):
                row = [number, cluster, int(level.sizes[cluster]), int(parents[cluster])]
                if kept_sizes is not None:
                    row.append(int(kept_sizes[cluster]))
                writer.writerow(row)


def _rank_size_figure(clusters: HierarchicalClusters, kept: np.ndarray | None) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(clusters.levels)
    fig, axes = plt.subplots(1, count, figsize=(4.2 * count, 3.4), squeeze=False)
    for number, ax in enumerate(axes[0], start=1):
        sizes = np.sort(clusters.levels[number - 1].sizes)[::-1]
        ax.loglog(np.arange(1, len(sizes) + 1), np.maximum(sizes, 0.8), "o-", ms=3,
                  label="all points")
        if kept is not None:
            kept_sizes = np.sort(kept_cluster_sizes(clusters, kept, number))[::-1]
            ax.loglog(np.arange(1, len(kept_sizes) + 1), np.maximum(kept_sizes, 0.8), "s-",
                      ms=3, label="kept")
        ax.set_xlabel("cluster rank")
        ax.set_ylabel("points in cluster")
        ax.set_title(f"level {number} (k={len(sizes)})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _thumbnail(path: Path, size: int = 72) -> np.ndarray:
    import cv2

    from eokit.curation.data import read_imagette

    image = read_imagette(path)
    low, high = np.percentile(image, [2, 98])
    image = np.clip((image - low) / max(high - low, 1e-6), 0, 1)
    scale = size / max(image.shape)
    shape = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return np.asarray(cv2.resize(image, shape, interpolation=cv2.INTER_AREA))


def _mosaic_figure(clusters: HierarchicalClusters, images: Sequence[Path],
                   per_cluster: int = 6, rows: int = 8) -> Any:
    """Examples closest to the centroid of the largest and smallest level-1 clusters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    level = clusters.levels[0]
    labels = np.asarray(level.parent)
    distances = np.asarray(level.distances)
    nonempty = np.flatnonzero(level.sizes > 0)
    ordered = nonempty[np.argsort(-level.sizes[nonempty], kind="stable")]
    half = max(1, rows // 2)
    chosen = list(ordered[:half]) + [c for c in ordered[::-1][:half] if c not in ordered[:half]]
    fig, axes = plt.subplots(len(chosen), per_cluster, figsize=(1.3 * per_cluster,
                                                                 1.3 * len(chosen)),
                             squeeze=False)
    for row, cluster in enumerate(chosen):
        members = np.flatnonzero(labels == cluster)
        members = members[np.argsort(distances[members], kind="stable")][:per_cluster]
        for col in range(per_cluster):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col < len(members):
                ax.imshow(_thumbnail(Path(images[members[col]])), cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
            if col == 0:
                ax.set_ylabel(f"#{cluster}\nn={int(level.sizes[cluster])}", fontsize=7)
    fig.suptitle("Level-1 clusters: largest (top) and smallest (bottom), closest to centroid "
                 "first", fontsize=8)
    fig.tight_layout()
    return fig


def _cluster_report(clusters: HierarchicalClusters, out: Path, stats: list[dict[str, Any]],
                    images: Sequence[Path] | None, command: str | None) -> Path:
    from eokit.core.report import Report

    report = Report("eokit curation cluster", command=command)
    meta = clusters.meta
    report.section(
        "Hierarchical k-means",
        f"{clusters.n_points} embeddings of dimension {clusters.dim}, levels "
        f"{meta['levels']} ({meta['backend']} nearest-centroid search, "
        f"{'dask cluster' if meta['distributed'] else 'one process'}, chunks of "
        f"{meta['chunk_rows']} rows), {meta['seconds']:.1f} s. Each level ran "
        f"{meta['iterations']} Lloyd iterations and {meta['resample_steps']} resampling rounds "
        f"({meta['strategy']} points per cluster: {meta['sample_size']}). Entropy is the "
        "Shannon entropy of the cluster sizes over log(k): 1 means all clusters equal.")
    report.table(stats, caption="Cluster-size spread per level")
    report.figure(_rank_size_figure(clusters, None), caption="Rank-size plot of the clusters")
    rounds = [{"level": i + 1, **{f"round {j + 1}": v for j, v in enumerate(changes)}}
              for i, changes in enumerate(meta["changed_per_round"]) if changes]
    if rounds:
        report.table(rounds, caption="Fraction of points that changed cluster in each "
                     "resampling round (falls as the centroids settle)")
    if images is not None:
        report.figure(_mosaic_figure(clusters, images), caption="Examples per cluster")
    report.provenance(seed=int(meta["seed"]), config=meta | {"sizes": "(see CSV)"},
                      inputs={"embeddings": meta["source"]} if meta["source"] else None)
    return report.write(out / "report.html")


def sample_subset(
    clusters_dir: str | Path,
    keep: float,
    *,
    strategy: SampleStrategy = "balanced",
    seed: int = 0,
    out_dir: str | Path | None = None,
    previous: str | Path | None = None,
    report: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Draw a curated subset from a clusters folder; write kept indices, stats and a report.

    Outputs in ``out_dir`` (default ``<clusters>/sample-<strategy>-<keep>``):
    ``kept_indices.npy`` (sorted int64 row numbers), ``kept_indices.csv``, ``sample.json``,
    ``cluster_sizes.csv`` (with a ``kept`` column) and ``report.html``.

    Args:
        clusters_dir: Folder written by :func:`cluster_embeddings`.
        keep: Fraction of the points kept, in (0, 1].
        strategy: ``balanced``, ``closest`` or ``random`` (see
            :func:`eokit.curation.sampling.sample_clusters`).
        seed: Seed of the draws.
        out_dir: Output folder.
        previous: ``kept_indices.npy`` of an earlier round: its overlap with this one is reported.
        report: Write ``report.html``.
        command: Command line recorded in the report.

    Returns:
        Summary: paths, kept count, size statistics before/after, overlap with ``previous``.
    """
    from eokit.core.raster import atomic_write, check_output_path

    keep = check_keep(keep)
    clusters = load_clusters(clusters_dir)
    out = Path(out_dir) if out_dir is not None else \
        Path(clusters_dir) / f"sample-{strategy}-{keep:g}"
    check_output_path(out / "sample.json")
    previous_kept: np.ndarray | None = None
    if previous is not None:
        previous_kept = _read_kept(previous, clusters.n_points)
    kept = sample_clusters(clusters, keep, strategy, seed)
    stats = size_statistics(clusters, kept)
    with atomic_write(out / "kept_indices.npy") as tmp:
        np.save(tmp, kept, allow_pickle=False)
    with atomic_write(out / "kept_indices.csv") as tmp:
        Path(tmp).write_text("index\n" + "\n".join(map(str, kept.tolist())) + "\n",
                             encoding="utf-8")
    _write_sizes_csv(clusters, out / "cluster_sizes.csv", kept)
    summary: dict[str, Any] = {
        "folder": str(out), "kept_indices": str(out / "kept_indices.npy"),
        "kept": int(len(kept)), "n_points": clusters.n_points, "keep": keep,
        "strategy": strategy, "seed": seed, "size_statistics": stats,
    }
    if previous_kept is not None:
        summary["overlap_with_previous"] = kept_overlap([previous_kept, kept])[0]
    with atomic_write(out / "sample.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    if report:
        summary["report"] = str(_sample_report(clusters, kept, out, summary, command))
    return summary


def _read_kept(path: str | Path, n_points: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise InputError("kept-indices file not found", path=path)
    try:
        kept = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise InputError(f"not a readable .npy array ({error})", path=path) from None
    if kept.ndim != 1 or not np.issubdtype(kept.dtype, np.integer):
        raise InputError("expected a 1-D integer array of row numbers", path=path)
    if len(kept) and (kept.min() < 0 or kept.max() >= n_points):
        raise InputError(f"row numbers outside 0..{n_points - 1}", path=path)
    return np.unique(kept)


def _sample_report(clusters: HierarchicalClusters, kept: np.ndarray, out: Path,
                   summary: dict[str, Any], command: str | None) -> Path:
    from eokit.core.report import Report

    report = Report("eokit curation sample", command=command)
    report.section(
        "Curated subset",
        f"Kept {summary['kept']} of {summary['n_points']} points ({100 * summary['keep']:.1f} %) "
        f"with the `{summary['strategy']}` strategy. `balanced` splits the budget evenly over "
        "the top-level clusters, then over each cluster's children down to level 1, taking "
        "random points there; `closest` takes the points closest to their level-1 centroid "
        "instead; `random` ignores the clusters. A higher kept entropy and a lower kept Gini "
        "mean a flatter cluster-size distribution.")
    report.table(summary["size_statistics"], caption="Cluster-size spread before (all) and "
                 "after (kept)")
    if "overlap_with_previous" in summary:
        report.text(f"Jaccard overlap with the previous round's kept set: "
                    f"{summary['overlap_with_previous']:.3f}.")
    report.figure(_rank_size_figure(clusters, kept), caption="Cluster sizes before and after")
    report.provenance(seed=int(summary["seed"]),
                      config={k: summary[k] for k in ("keep", "strategy", "seed")},
                      inputs={"clusters": Path(clusters.folder or ".") / "clusters.json"})
    return report.write(out / "report.html")
