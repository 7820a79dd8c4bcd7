"""``eokit curation``: hierarchical k-means, balanced sampling, DINO pretraining with curation."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from eokit.core.cliopts import out_option
from eokit.core.errors import InputError

logger = logging.getLogger(__name__)


def _command_line() -> str:
    return "eokit " + " ".join(sys.argv[1:])


@click.group(name="curation")
def curation() -> None:
    """Dataset curation and SAR self-supervised pretraining with dynamic curation rounds."""


@curation.command()
@click.argument("embeddings", type=click.Path(path_type=Path))
@click.option("--levels", default="1000,100,10", show_default=True,
              help="Clusters per level, shrinking (level l clusters the level l-1 centroids).")
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
              help="Output folder (assignments per level, centroids, CSV, report).")
@click.option("--iterations", default=20, show_default=True, type=click.IntRange(min=1),
              help="Lloyd iterations per k-means run.")
@click.option("--resample-steps", default=3, show_default=True, type=click.IntRange(min=0),
              help="Resampling-refinement rounds per level.")
@click.option("--sample-size", type=click.IntRange(min=1), default=None,
              help="Points per cluster in a resampling round (default: half the mean size).")
@click.option("--resample", "strategy", type=click.Choice(["closest", "random"]),
              default="closest", show_default=True,
              help="Which points of a cluster a resampling round uses.")
@click.option("--backend", type=click.Choice(["auto", "faiss", "sklearn"]), default="auto",
              show_default=True, help="Nearest-centroid search (auto: faiss when installed).")
@click.option("--chunk-rows", default=65536, show_default=True, type=click.IntRange(min=1),
              help="Rows read at a time (bounds memory).")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Images of the rows (folder, sorted by name, or a text file of paths): "
                   "the report shows examples per cluster.")
@click.option("--dask", "scheduler", default=None,
              help="Address of a dask.distributed scheduler (tcp://host:8786): the level-1 "
                   "passes run there.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the k-means initialisation and resampling.")
def cluster(embeddings: Path, levels: str, out_dir: Path, iterations: int, resample_steps: int,
            sample_size: int | None, strategy: str, backend: str, chunk_rows: int,
            images: Path | None, scheduler: str | None, seed: int) -> None:
    """Hierarchical k-means of an (N, D) .npy embedding file (memory-mapped, chunked)."""
    from eokit.curation.task import cluster_embeddings, parse_levels

    client = None
    if scheduler:
        from dask.distributed import Client

        try:
            client = Client(scheduler, timeout="10s")  # type: ignore[no-untyped-call]
        except (OSError, TimeoutError) as error:
            raise InputError(f"cannot reach the scheduler ({error})", parameter="dask") from None
    try:
        summary = cluster_embeddings(
            embeddings, out_dir, parse_levels(levels), iterations=iterations,
            resample_steps=resample_steps, sample_size=sample_size,
            strategy=strategy,  # type: ignore[arg-type]
            seed=seed, backend=backend,  # type: ignore[arg-type]
            chunk_rows=chunk_rows, images=images, client=client, command=_command_line())
    finally:
        if client is not None:
            client.close()  # type: ignore[no-untyped-call]
    for row in summary["size_statistics"]:
        click.echo(f"level {row['level']}: k={row['k']}, size entropy {row['entropy_all']:.3f}, "
                   f"largest/median {row['max_over_median_all']:.1f}")
    click.echo(f"Clusters: {summary['folder']} ({summary['seconds']:.1f} s, "
               f"{summary['backend']})")
    click.echo(f"Report:   {summary['report']}")


@curation.command()
@click.argument("clusters_dir", type=click.Path(path_type=Path))
@click.option("--keep", required=True, type=float, help="Fraction of the points kept, in (0, 1].")
@click.option("--strategy", type=click.Choice(["balanced", "closest", "random"]),
              default="balanced", show_default=True,
              help="balanced: even over clusters, random inside; closest: even over clusters, "
                   "closest to the centroid first; random: uniform (baseline).")
@out_option("out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: CLUSTERS_DIR/sample-<strategy>-<keep>).")
@click.option("--previous", type=click.Path(path_type=Path), default=None,
              help="kept_indices.npy of an earlier round (its overlap is reported).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the sampling within clusters.")
def sample(clusters_dir: Path, keep: float, strategy: str, out_dir: Path | None,
           previous: Path | None, seed: int) -> None:
    """Keep a fraction of the points, balanced across the cluster hierarchy."""
    from eokit.curation.task import sample_subset

    summary = sample_subset(clusters_dir, keep, strategy=strategy,  # type: ignore[arg-type]
                            seed=seed, out_dir=out_dir, previous=previous,
                            command=_command_line())
    top = summary["size_statistics"][-1]
    click.echo(f"Kept {summary['kept']} of {summary['n_points']} ({strategy}); top-level size "
               f"entropy {top['entropy_all']:.3f} -> {top['entropy_kept']:.3f}")
    if "overlap_with_previous" in summary:
        click.echo(f"Overlap with the previous round (Jaccard): "
                   f"{summary['overlap_with_previous']:.3f}")
    click.echo(f"Indices: {summary['kept_indices']}")
    click.echo(f"Report:  {summary['report']}")


@curation.command()
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
              help="Output folder (PNG quick-looks + labels.csv).")
@click.option("--count", default=500, show_default=True, type=click.IntRange(min=1),
              help="Number of imagettes.")
@click.option("--size", default=48, show_default=True, type=click.IntRange(min=8),
              help="Side length of each imagette in pixels.")
@click.option("--duplicates", default=0.3, show_default=True, type=click.FloatRange(0, 0.99),
              help="Fraction of near-duplicate imagettes.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
def simulate(out_dir: Path, count: int, size: int, duplicates: float, seed: int) -> None:
    """Simulated Wave-Mode imagettes of the ten TenGeoP phenomena (Zipf frequencies)."""
    import numpy as np

    from eokit.core.synth.sar_wave_mode import sar_wave_mode, write_imagette_folder

    data = sar_wave_mode(count, size=size, seed=seed, duplicate_fraction=duplicates)
    folder = write_imagette_folder(data, out_dir)
    counts = np.bincount(data.label, minlength=len(data.class_names))
    click.echo(f"Wrote {count} imagettes to {folder} (labels.csv); class counts: "
               + ", ".join(f"{n}={c}" for n, c in zip(data.class_names, counts, strict=True)))


# The same settings as core.train.TRAINER_CONTEXT_SETTINGS, without importing torch for --help.
@curation.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("images", type=click.Path(path_type=Path))
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
              help="Run folder (backbone.safetensors, checkpoints, logs, report).")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1),
              help="Training epochs.")
@click.option("--size", type=click.IntRange(min=8), default=None,
              help="Centre-crop size (needed when the imagettes differ in size).")
@click.option("--normalisation", type=click.Choice(["quicklook", "sigma0_db", "sigma0_linear"]),
              default="quicklook", show_default=True, help="What the pixel values are.")
@click.option("--backbone", default="test_resnet", show_default=True,
              help="Any timm model name (resnet50, vit_small_patch16_224 ...).")
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(min=0),
              help="Epochs on all data before the first curation round (T_w).")
@click.option("--period", default=2, show_default=True, type=click.IntRange(min=1),
              help="Epochs between curation rounds (T_s).")
@click.option("--keep", default=0.5, show_default=True, type=float,
              help="Fraction of the data kept by each round (rho).")
@click.option("--levels", default="32,8", show_default=True, help="k-means levels per round.")
@click.option("--strategy", type=click.Choice(["balanced", "closest", "random"]),
              default="balanced", show_default=True,
              help="Curation of the training set between rounds.")
@click.option("--embed-fraction", default=1.0, show_default=True, type=float,
              help="Fraction of the data the teacher embeds each round (>= --keep).")
@click.option("--no-curation", is_flag=True, help="Train on all data every epoch.")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="labels.csv (only to log the class counts each round keeps).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
              help="Images per batch.")
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(min=0,
                                                                             min_open=True),
              help="Learning rate (AdamW).")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/last.ckpt.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of weights, crops and sampling.")
@click.pass_context
def pretrain(ctx: click.Context, images: Path, out_dir: Path, epochs: int, size: int | None,
             normalisation: str, backbone: str, warmup: int, period: int, keep: float,
             levels: str, strategy: str, embed_fraction: float, no_curation: bool,
             labels: Path | None, batch_size: int, lr: float, resume: bool, seed: int) -> None:
    """DINO from scratch on an imagette folder with dynamic curation rounds."""
    from eokit.core.train import parse_trainer_overrides
    from eokit.curation.pretraining import pretrain_folder
    from eokit.curation.sampling import check_keep
    from eokit.curation.ssl import CurationSchedule
    from eokit.curation.task import parse_levels

    overrides = parse_trainer_overrides(ctx.args)
    schedule = CurationSchedule(
        warmup_epochs=warmup, period_epochs=period, keep_fraction=check_keep(keep),
        levels=tuple(parse_levels(levels)), strategy=strategy,
        subset_for_embedding=embed_fraction, enabled=not no_curation)
    summary = pretrain_folder(images, out_dir, schedule=schedule, epochs=epochs, size=size,
                              normalisation=normalisation, backbone=backbone,
                              batch_size=batch_size, seed=seed, resume=resume,
                              trainer_overrides=overrides, labels=labels, lr=lr,
                              command=_command_line())
    for item in summary["rounds"]:
        click.echo(f"round before epoch {item['epoch']}: kept {item['kept']} "
                   f"(overlap with previous {item['overlap_with_previous']})")
    click.echo(f"Backbone: {summary['backbone']} ({summary['images_seen']} images processed)")
    click.echo(f"Report:   {summary['report']}")


@curation.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", type=click.Path(path_type=Path))
@out_option("output", type=click.Path(path_type=Path), required=True,
              help="Embeddings .npy (rows in sorted file-name order; OUTPUT.files.txt lists "
                   "them).")
@click.option("--size", type=click.IntRange(min=8), default=None,
              help="Crop size (default: the one recorded with the model).")
def embed(model: Path, images: Path, output: Path, size: int | None) -> None:
    """Embed an imagette folder with a pretrained backbone (backbone.safetensors)."""
    from eokit.curation.pretraining import embed_folder

    summary = embed_folder(model, images, output, size=size)
    click.echo(f"Embeddings {tuple(summary['shape'])}: {summary['embeddings']}")


@curation.command()
@click.argument("embeddings", type=click.Path(path_type=Path))
@click.argument("labels", type=click.Path(path_type=Path))
@click.option("--test-fraction", default=0.3, show_default=True, type=float,
              help="Share of the labelled embeddings held out for scoring.")
@out_option("output", type=click.Path(path_type=Path), default=None,
              help="Write the scores as JSON.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the train/test split.")
def probe(embeddings: Path, labels: Path, test_fraction: float, output: Path | None,
          seed: int) -> None:
    """Linear and kNN probes (class label) and ridge probes (numeric columns) on embeddings."""
    from eokit.core.raster import atomic_write
    from eokit.curation.pretraining import probe_files

    scores = probe_files(embeddings, labels, test_fraction=test_fraction, seed=seed)
    for name in ("linear", "knn"):
        if name in scores:
            click.echo(f"{name}: balanced accuracy {100 * scores[name]['balanced_accuracy']:.1f} "
                       f"%, accuracy {100 * scores[name]['accuracy']:.1f} %")
    for key, value in scores.items():
        if key.endswith("_ridge"):
            click.echo(f"{key[:-6]}: RMSE {value['rmse']:.3f} (target std "
                       f"{value['target_std']:.3f})")
    if output is not None:
        with atomic_write(output) as tmp:
            Path(tmp).write_text(json.dumps(scores, indent=1) + "\n", encoding="utf-8")
        click.echo(f"Scores: {output}")
