"""DINO on simulated Wave-Mode imagettes: full data vs random pruning vs dynamic curation.

The pretraining set is ``sar_wave_mode`` with Zipf class frequencies (pure ocean waves dominate,
icebergs are rarest) and 30 % near-duplicates. Five runs per seed, same backbone (timm
``test_resnet``), crops and optimiser:

- ``full``: all images every epoch for E epochs;
- ``full_equal_images``: all images, fewer epochs, so that it processes about as many images as
  the pruned runs (equal compute);
- ``random``: after a warm-up of T_w epochs, every T_s epochs a uniform random rho of the data;
- ``curated``: the same schedule, the subset drawn balanced over hierarchical k-means clusters of
  the EMA teacher's embeddings (the method);
- ``curated_imagenet``: the same, clusters of a frozen ImageNet EfficientNet-Lite0 (catalogue
  weights) instead of the teacher.

Each trained teacher backbone is probed frozen on a class-balanced labelled set (separate
simulation): linear and kNN balanced accuracy, mean accuracy of the three rarest pretraining
classes, and ridge RMSE of wind speed and significant wave height.

    python benchmarks/curation_ssl.py            # 3 seeds (about 15 minutes on one core)
    python benchmarks/curation_ssl.py --quick    # one tiny seed
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, add_common_args, environment, write_results  # noqa: E402

NAME = "curation_ssl"
METHODS = ("full", "full_equal_images", "random", "curated", "curated_imagenet")


def imagenet_embedder() -> Any:
    """Frozen catalogue EfficientNet-Lite0 features (global-average-pooled last stage)."""
    import torch
    import torch.nn.functional as F

    from eokit.core.encoders import build_image_encoder

    encoder = build_image_encoder("efficientnet_lite0", pretrained=True, in_chans=1)
    encoder.eval()

    @torch.no_grad()
    def embed(images: torch.Tensor) -> np.ndarray:
        out = []
        for start in range(0, len(images), 128):
            x = images[start:start + 128]
            x01 = (x - x.amin()) / (x.amax() - x.amin() + 1e-6)
            x01 = F.interpolate(x01, size=64, mode="bilinear", align_corners=False)
            feats = encoder(encoder.normalize(x01))[-1]
            out.append(feats.mean(dim=(2, 3)).numpy())
        return np.concatenate(out).astype(np.float32)

    return embed


def run_seed(seed: int, quick: bool, log: Any) -> dict[str, Any]:
    import torch

    from eokit.core.synth.sar_wave_mode import SAR_PHENOMENA, sar_wave_mode
    from eokit.curation.data import MultiCrop, Normalisation
    from eokit.curation.probe import classification_probe, regression_probe
    from eokit.curation.ssl import CurationSchedule, embed_images, pretrain

    torch.set_num_threads(1)
    n_train, size = (160, 24) if quick else (600, 32)
    epochs, warmup, period, keep = (4, 1, 1, 0.3) if quick else (8, 2, 2, 0.3)
    levels = (16, 4) if quick else (40, 10)
    norm = Normalisation.for_kind("sigma0_db")
    pool = sar_wave_mode(n_train, size=size, seed=seed, duplicate_fraction=0.3)
    images = norm.apply(pool.images)
    uniform = np.ones(len(SAR_PHENOMENA))
    probe_train = sar_wave_mode(200 if quick else 400, size=size, seed=seed + 1000,
                                class_probabilities=uniform, duplicate_fraction=0.0)
    probe_test = sar_wave_mode(200 if quick else 500, size=size, seed=seed + 2000,
                               class_probabilities=uniform, duplicate_fraction=0.0)
    x_probe_train = norm.apply(probe_train.images)
    x_probe_test = norm.apply(probe_test.images)
    rare = [SAR_PHENOMENA.index(c) for c in SAR_PHENOMENA[-3:]]
    curated_images = warmup * n_train + (epochs - warmup) * round(keep * n_train)
    equal_epochs = max(1, round(curated_images / n_train))
    crop = MultiCrop(global_size=size - 8, local_size=12, local_crops=2)
    embedder = imagenet_embedder()
    results: dict[str, Any] = {"class_counts": np.bincount(pool.label, minlength=10).tolist()}
    for method in METHODS:
        schedule = CurationSchedule(
            warmup_epochs=warmup, period_epochs=period, keep_fraction=keep, levels=levels,
            strategy="random" if method == "random" else "balanced",
            enabled=method in ("random", "curated", "curated_imagenet"))
        run_epochs = equal_epochs if method == "full_equal_images" else epochs
        started = time.perf_counter()
        out = Path(f"/tmp/eokit-curation-ssl/{seed}/{method}")
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        task, callback, _ = pretrain(
            images, out, schedule=schedule, epochs=run_epochs, batch_size=32, seed=seed,
            multicrop=crop, labels=pool.label, lr=2e-3, out_dim=256,
            embedder=embedder if method == "curated_imagenet" else None)
        seconds = time.perf_counter() - started
        backbone = task.teacher.backbone
        f_train = embed_images(backbone, x_probe_train)
        f_test = embed_images(backbone, x_probe_test)
        linear = classification_probe(f_train, probe_train.label, f_test, probe_test.label,
                                      rare_classes=rare, seed=seed)
        knn = classification_probe(f_train, probe_train.label, f_test, probe_test.label,
                                   method="knn", rare_classes=rare)
        wind = regression_probe(f_train, probe_train.wind_speed, f_test, probe_test.wind_speed)
        wave = regression_probe(f_train, probe_train.wave_height, f_test,
                                probe_test.wave_height)
        kept_rare = [int(sum(r.class_counts[c] for c in rare)) for r in callback.rounds]
        results[method] = {
            "epochs": run_epochs, "images_processed": int(task.images_seen),
            "seconds": round(seconds, 1),
            "linear_balanced_accuracy": round(100 * linear["balanced_accuracy"], 2),
            "linear_rare3_accuracy": round(100 * linear["rare_class_accuracy"], 2),
            "knn_balanced_accuracy": round(100 * knn["balanced_accuracy"], 2),
            "knn_rare3_accuracy": round(100 * knn["rare_class_accuracy"], 2),
            "wind_rmse_m_s": round(wind["rmse"], 3), "wave_height_rmse_m": round(wave["rmse"], 3),
            "rounds": [{"epoch": r.epoch, "kept": r.kept, "overlap": r.overlap_with_previous,
                        "top_entropy_kept": r.top_entropy_kept} for r in callback.rounds],
            "rare3_images_kept_per_round": kept_rare,
        }
        log(f"seed {seed} {method}: {results[method]}")
    return results


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("images_processed", "linear_balanced_accuracy", "linear_rare3_accuracy",
            "knn_balanced_accuracy", "knn_rare3_accuracy", "wind_rmse_m_s", "wave_height_rmse_m",
            "seconds")
    summary: dict[str, Any] = {}
    for method in METHODS:
        summary[method] = {}
        for key in keys:
            values = np.array([seed[method][key] for seed in per_seed], dtype=np.float64)
            summary[method][key] = {"mean": round(float(values.mean()), 3),
                                    "std": round(float(values.std()), 3)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    seeds = [args.seed] if args.quick else [args.seed + i for i in range(args.seeds)]
    per_seed = []
    for seed in seeds:
        per_seed.append(run_seed(seed, args.quick, lambda m: print(m, flush=True)))
    summary = summarise(per_seed)
    full, curated = summary["full"], summary["curated"]
    random_ = summary["random"]
    fraction = curated["images_processed"]["mean"] / full["images_processed"]["mean"]
    gap_full = (curated["linear_balanced_accuracy"]["mean"]
                - full["linear_balanced_accuracy"]["mean"])
    gap_rare = curated["linear_rare3_accuracy"]["mean"] - random_["linear_rare3_accuracy"]["mean"]
    targets = {
        "curated_ge_full_with_le_half_images": {
            "images_fraction": round(fraction, 3),
            "linear_accuracy_gap_points": round(gap_full, 2),
            "met": bool(fraction <= 0.5 and gap_full >= 0)},
        "rare3_plus5_vs_random_equal_compute": {
            "gap_points": round(gap_rare, 2), "met": bool(gap_rare >= 5)},
    }
    notes = [
        f"Curated vs full data: {gap_full:+.2f} linear balanced-accuracy points with "
        f"{100 * fraction:.0f} % of the images processed "
        f"({'met' if targets['curated_ge_full_with_le_half_images']['met'] else 'NOT met'}).",
        f"Curated vs random pruning at equal compute, three rarest classes: {gap_rare:+.2f} "
        f"points ({'met' if targets['rare3_plus5_vs_random_equal_compute']['met'] else 'NOT met'}"
        ").",
        "Tiny CPU-sized runs (a test-sized ResNet, a few hundred 32-pixel imagettes, 8 epochs): "
        "they test the mechanism, not the OceanSAR-1 numbers (75.5-83.6 TenGeoP accuracy on "
        "the real archive, model cards).",
    ]
    payload = {"seeds": seeds, "quick": args.quick, "per_seed": per_seed, "summary": summary,
               "targets": targets, "notes": notes, "environment": environment()}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    x = np.arange(len(METHODS))
    for ax, key, label in ((axes[0], "linear_balanced_accuracy", "linear probe bal. acc. (%)"),
                           (axes[1], "linear_rare3_accuracy", "3 rarest classes acc. (%)"),
                           (axes[2], "wave_height_rmse_m", "wave height RMSE (m)")):
        means = [summary[m][key]["mean"] for m in METHODS]
        stds = [summary[m][key]["std"] for m in METHODS]
        ax.bar(x, means, yerr=stds, color=["#777777", "#aaaaaa", "#cc6677", "#4477aa",
                                            "#44aa99"], capsize=3)
        ax.set_xticks(x, [m.replace("_", "\n") for m in METHODS], fontsize=7)
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"DINO on simulated Wave Mode, {len(seeds)} seed(s); images processed: "
                 + ", ".join(f"{m} {summary[m]['images_processed']['mean']:.0f}"
                             for m in METHODS[:4]), fontsize=8)
    fig.tight_layout()
    out = args.out if not args.quick or args.out != RESULTS_DIR else \
        Path("/tmp/eokit-curation-ssl/results")
    json_path, _ = write_results(NAME, payload, fig, out_dir=out)
    print("\n".join(notes))
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
