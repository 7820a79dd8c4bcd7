"""Demo section: simulated Wave-Mode imagettes, a short DINO run with curation rounds, mosaics."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def add_demo_section(report: Any, out_dir: Path, *, quick: bool, seed: int) -> None:
    """Simulate imagettes, pretrain DINO with curation rounds, cluster the embeddings, report.

    Writes under ``out_dir/curation/``: the imagettes (PNG + labels.csv), the pretraining run
    (backbone, checkpoints, rounds), the embeddings and the clusters folder.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eokit.core.synth.sar_wave_mode import SAR_PHENOMENA, sar_wave_mode, write_imagette_folder
    from eokit.curation.data import MultiCrop, Normalisation
    from eokit.curation.sampling import sample_clusters, size_statistics
    from eokit.curation.ssl import CurationSchedule, embed_images, pretrain
    from eokit.curation.task import _mosaic_figure, cluster_embeddings

    started = time.perf_counter()
    out = Path(out_dir) / "curation"
    count, size, epochs = (96, 24, 3) if quick else (400, 32, 6)
    data = sar_wave_mode(count, size=size, seed=seed)
    folder = write_imagette_folder(data, out / "imagettes")
    images = Normalisation.for_kind("sigma0_db").apply(data.images)
    schedule = CurationSchedule(warmup_epochs=1, period_epochs=1 if quick else 2,
                                keep_fraction=0.4, levels=(12, 4) if quick else (32, 8))
    task, callback, _ = pretrain(
        images, out / "run", schedule=schedule, epochs=epochs, batch_size=32, seed=seed,
        multicrop=MultiCrop(size - 8, 12, 2), labels=data.label, out_dim=128)
    features = embed_images(task.teacher.backbone, images)
    np.save(out / "embeddings.npy", features)
    paths = sorted(folder.glob("*.png"))
    summary = cluster_embeddings(out / "embeddings.npy", out / "clusters",
                                 [12, 4] if quick else [32, 8], resample_steps=2, seed=seed,
                                 images=paths, report=False)
    from eokit.curation.kmeans import load_clusters

    clusters = load_clusters(out / "clusters")
    kept = sample_clusters(clusters, 0.3, "balanced", seed=seed)
    stats = size_statistics(clusters, kept)
    random = sample_clusters(clusters, 0.3, "random", seed=seed)
    report.section(
        "SAR pretraining with dynamic curation (DINO, hierarchical k-means)",
        f"{count} simulated Sentinel-1 Wave-Mode-like imagettes ({size} px, ten phenomena with "
        "Zipf frequencies, 30 % near-duplicates). DINO from scratch on one channel for "
        f"{epochs} epochs ({task.images_seen} images processed); after a warm-up epoch the EMA "
        "teacher embeds the images, hierarchical k-means clusters them and 40 % are kept "
        "balanced over the clusters. A demo-sized run on simulated data: "
        "`benchmarks/results/curation_ssl.json` holds the measured comparison with full data "
        "and random pruning.")
    report.table([{k: v for k, v in vars(r).items() if k != "class_counts"}
                  for r in callback.rounds], caption="Curation rounds")
    classes = np.arange(len(SAR_PHENOMENA))
    fig, ax = plt.subplots(figsize=(7, 3))
    width = 0.28
    ax.bar(classes - width, np.bincount(data.label, minlength=10) / count, width, label="all")
    ax.bar(classes, np.bincount(data.label[random], minlength=10) / len(random), width,
           label="random 30 %")
    ax.bar(classes + width, np.bincount(data.label[kept], minlength=10) / len(kept), width,
           label="balanced 30 %")
    ax.set_xticks(classes, [n.replace("_", "\n") for n in SAR_PHENOMENA], fontsize=6)
    ax.set_ylabel("share of images")
    ax.legend(fontsize=7)
    fig.tight_layout()
    report.figure(fig, caption="Class shares before and after sampling from the clusters of "
                  "the pretrained teacher's embeddings")
    report.table(stats, caption="Cluster-size spread before and after balanced sampling")
    report.figure(_mosaic_figure(clusters, paths, per_cluster=6, rows=6),
                  caption="Examples of the largest and smallest clusters")
    logger.info("curation demo done in %.1f s (%s)", time.perf_counter() - started,
                summary["folder"])
