"""Curation operations described for the agent server: cluster, sample, simulate, embed, probe."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from eokit.core.tools import InputPath, OutputPath, Range, ToolSpec

__all__ = ["TOOLS"]


def curation_cluster(
    embeddings: Annotated[str, InputPath("file")],
    out_dir: Annotated[str, OutputPath("dir")],
    levels: str = "1000,100,10",
    resample_steps: Annotated[int, Range(0, 50)] = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Hierarchical k-means of an (N, D) .npy embedding file, read in chunks.

    Args:
        embeddings: The .npy embedding matrix (memory-mapped).
        out_dir: Folder for the assignments per level, centroids, CSV and report.
        levels: Clusters per level, comma-separated and shrinking.
        resample_steps: Resampling-refinement rounds per level.
        seed: Seed.

    Returns:
        Output paths, cluster-size statistics per level and the run time.
    """
    from eokit.curation.task import cluster_embeddings, parse_levels

    summary = cluster_embeddings(embeddings, out_dir, parse_levels(levels),
                                 resample_steps=resample_steps, seed=seed)
    return {k: summary[k] for k in ("folder", "assignments", "cluster_sizes_csv", "report",
                                    "n_points", "levels", "backend", "seconds",
                                    "size_statistics")}


def curation_sample(
    clusters_dir: Annotated[str, InputPath("dir")],
    keep: Annotated[float, Range(0, 1, exclusive_minimum=True)],
    out_dir: Annotated[str, OutputPath("dir")],
    strategy: Literal["balanced", "closest", "random"] = "balanced",
    seed: int = 0,
) -> dict[str, Any]:
    """Keep a fraction of the points balanced across a cluster hierarchy.

    Args:
        clusters_dir: Folder written by curation_cluster.
        keep: Fraction of the points kept.
        out_dir: Folder for kept_indices.npy, CSV, statistics and report.
        strategy: balanced (random within clusters), closest (to the centroid) or random.
        seed: Seed.

    Returns:
        Paths, kept count and the cluster-size statistics before and after.
    """
    from eokit.curation.task import sample_subset

    summary = sample_subset(clusters_dir, keep, strategy=strategy, seed=seed, out_dir=out_dir)
    return {k: summary[k] for k in ("folder", "kept_indices", "kept", "n_points", "strategy",
                                    "size_statistics", "report")}


def curation_simulate(
    out_dir: Annotated[str, OutputPath("dir")],
    count: Annotated[int, Range(1, 100000)] = 500,
    size: Annotated[int, Range(8, 512)] = 48,
    seed: int = 0,
) -> dict[str, Any]:
    """Simulated Sentinel-1 Wave-Mode imagettes (ten phenomena, Zipf frequencies) as PNGs.

    Args:
        out_dir: Folder for the PNG quick-looks and labels.csv.
        count: Number of imagettes.
        size: Side in pixels.
        seed: Seed.

    Returns:
        The folder, the labels file and the count per class.
    """
    import numpy as np

    from eokit.core.synth.sar_wave_mode import sar_wave_mode, write_imagette_folder

    data = sar_wave_mode(count, size=size, seed=seed)
    folder = write_imagette_folder(data, out_dir)
    counts = np.bincount(data.label, minlength=len(data.class_names)).tolist()
    return {"folder": str(folder), "labels": str(folder / "labels.csv"),
            "class_counts": dict(zip(data.class_names, counts, strict=True))}


def curation_embed(
    model: Annotated[str, InputPath("file")],
    images: Annotated[str, InputPath("dir")],
    output: Annotated[str, OutputPath("file")],
) -> dict[str, Any]:
    """Embed an imagette folder with a backbone from 'eokit curation pretrain'.

    Args:
        model: backbone.safetensors of a pretraining run.
        images: Folder of PNG/GeoTIFF imagettes.
        output: Embeddings .npy to write.

    Returns:
        The embeddings path, the row file list and the shape.
    """
    from eokit.curation.pretraining import embed_folder

    return embed_folder(model, images, output)


def curation_probe(
    embeddings: Annotated[str, InputPath("file")],
    labels: Annotated[str, InputPath("file")],
    test_fraction: Annotated[float, Range(0, 1, exclusive_minimum=True,
                                          exclusive_maximum=True)] = 0.3,
) -> dict[str, Any]:
    """Linear/kNN probes of the class label and ridge probes of numeric targets.

    Args:
        embeddings: The .npy embeddings.
        labels: CSV with filename, label and numeric target columns.
        test_fraction: Share of rows held out.

    Returns:
        Balanced and per-class accuracy per probe, RMSE per numeric target.
    """
    from eokit.curation.pretraining import probe_files

    return probe_files(embeddings, labels, test_fraction=test_fraction)


TOOLS: list[ToolSpec] = [
    ToolSpec("curation_cluster", curation_cluster, effect="long"),
    ToolSpec("curation_sample", curation_sample, effect="write"),
    ToolSpec("curation_simulate", curation_simulate, effect="write"),
    ToolSpec("curation_embed", curation_embed, effect="long"),
    ToolSpec("curation_probe", curation_probe, effect="read"),
]
