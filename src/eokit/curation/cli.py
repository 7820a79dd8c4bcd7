"""``eokit curation``: hierarchical k-means, balanced sampling, DINO pretraining with curation."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

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
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
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
@click.option("--seed", default=0, show_default=True, type=int)
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
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: CLUSTERS_DIR/sample-<strategy>-<keep>).")
@click.option("--previous", type=click.Path(path_type=Path), default=None,
              help="kept_indices.npy of an earlier round (its overlap is reported).")
@click.option("--seed", default=0, show_default=True, type=int)
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


def _echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=1, default=str))
