"""Dargana on the simulator: pretrain on unlabelled series, fine-tune on < 3 % labelled pixels.

Pretraining scene and test scene are different simulations (other parcels, weather, revisit and
events), so the test is on unseen imagery. Fine-tuning uses < 3 % of the pretraining pixels
(drawn from training blocks of a spatial block split) and is compared with the same architecture
trained from scratch on the same labels and with a random forest on causal per-date features.
Scores: per-class one-vs-rest ROC-AUC / PR-AUC (conifer, broadleaf, none) over every pixel and
date after the first year, and on the last date; event dating (clear-cut, new planting) error.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Timer, add_common_args, seed_all, write_results  # noqa: E402

#: Per-date head features use a moving average over about the last MEMORY valid dates (dynamic
#: maps must react to clear-cuts; the all-dates mean is kept for static labels).
MEMORY = 8


def main() -> None:
    import argparse

    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--epochs", type=int, default=12, help="pretraining epochs")
    args = parser.parse_args()
    seed_all(args.seed)
    import torch

    # One thread: on a shared 2-core machine a second thread mostly waits (10x slower here).
    torch.set_num_threads(1)
    from eokit.core.metrics import binary_ranking_metrics
    from eokit.core.split import spatial_block_split
    from eokit.core.synth.pixel_series import CANOPY_CLASSES, generate_pixel_series
    from eokit.timeseries.baselines import lagged_features, random_forest
    from eokit.timeseries.data import from_scene
    from eokit.timeseries.task import (
        compute_summary,
        finetune,
        forest_change_dates,
        predict_series,
        pretrain,
    )

    quick = args.quick
    size, test_size, years = (32, 24, 2) if quick else (72, 48, 3)
    epochs, model_size = (1, "tiny") if quick else (args.epochs, "small")
    label_fraction = 0.025
    t_start = time.perf_counter()
    scene = generate_pixel_series(size, seed=args.seed, years=years)
    test_scene = generate_pixel_series(test_size, seed=args.seed + 100, years=years)
    data, test = from_scene(scene), from_scene(test_scene)
    work = Path(tempfile.mkdtemp(prefix="ts_canopy_"))

    with Timer() as t_pre:
        backbone, pre_account = pretrain(data, work / "pre", size=model_size, epochs=epochs,
                                         batch_size=128, lr=3e-3, seed=args.seed, progress=False)
    split = spatial_block_split(size, size, block=8, fractions=(0.8, 0.0, 0.2), seed=args.seed)
    pool = np.nonzero(split.reshape(-1) == 0)[0]
    rng = np.random.default_rng(args.seed)
    n_label = int(label_fraction * len(data))
    labelled_idx = np.sort(rng.choice(pool, n_label, replace=False))
    labelled = data.subset(labelled_idx)
    targets = labelled.targets  # (n, T) per-date canopy classes

    results: dict[str, dict[str, object]] = {}
    with Timer() as t_ft:
        dargana, ft_account = finetune(backbone, labelled, targets, work / "ft",
                                       class_names=list(CANOPY_CLASSES), epochs=60 if not quick
                                       else 10, batch_size=16, memory=MEMORY, seed=args.seed,
                                       progress=False)
    compute = compute_summary(pre_account, ft_account)
    with Timer() as t_scratch:
        from eokit.timeseries.model import PixelSeriesTransformer

        scratch_backbone = PixelSeriesTransformer(backbone.config, backbone.band_center,
                                                  backbone.band_half_range)
        scratch, scratch_account = finetune(scratch_backbone, labelled, targets, work / "sc",
                                            class_names=list(CANOPY_CLASSES), mode="full",
                                            epochs=40 if not quick else 5, lr=2e-3, memory=MEMORY,
                                            seed=args.seed, progress=False)
    with Timer() as t_rf:
        feats = lagged_features(labelled)
        forest = random_forest(150 if not quick else 30, args.seed)
        forest.fit(feats.reshape(-1, feats.shape[-1]), targets.reshape(-1))
        test_feats = lagged_features(test)
        rf_probs = forest.predict_proba(test_feats.reshape(-1, test_feats.shape[-1])).reshape(
            len(test), test.n_dates, -1)
        rf_probs[~test.has_observation] = np.nan
    with Timer() as t_pred:
        probs = {"dargana (frozen backbone + head)": predict_series(dargana, test),
                 "same architecture from scratch": predict_series(scratch, test),
                 "random forest (per-date lagged features)": rf_probs}

    # Same scene as pretraining, held-out spatial blocks (as a Dargana-style in-domain check).
    held_out = np.nonzero(split.reshape(-1) == 2)[0]
    in_scene = data.subset(held_out)
    first_year_in = int(np.searchsorted(data.dates, data.dates[0] + np.timedelta64(365, "D")))
    in_scene_probs = {
        "dargana (frozen backbone + head)": predict_series(dargana, in_scene),
        "same architecture from scratch": predict_series(scratch, in_scene),
    }
    rf_in = forest.predict_proba(lagged_features(in_scene).reshape(-1, test_feats.shape[-1]))
    in_scene_probs["random forest (per-date lagged features)"] = rf_in.reshape(
        len(in_scene), in_scene.n_dates, -1)
    in_scene_scores = {}
    for name, p in in_scene_probs.items():
        in_scene_scores[name] = {
            cls: binary_ranking_metrics(p[:, first_year_in:, k],
                                        in_scene.targets[:, first_year_in:] == k)
            for k, cls in enumerate(CANOPY_CLASSES)}

    truth = test.targets  # (N, T)
    first_year = int(np.searchsorted(test.dates, test.dates[0] + np.timedelta64(365, "D")))
    for name, p in probs.items():
        per_class = {}
        for k, cls in enumerate(CANOPY_CLASSES):
            after = binary_ranking_metrics(p[:, first_year:, k], truth[:, first_year:] == k)
            last = binary_ranking_metrics(p[:, -1, k], truth[:, -1] == k)
            per_class[cls] = {"roc_auc_all_dates": after["roc_auc"],
                              "pr_auc_all_dates": after["pr_auc"],
                              "roc_auc_last_date": last["roc_auc"],
                              "pr_auc_last_date": last["pr_auc"]}
        # Hedgerows: thin tree lines, below the size of any labelled parcel sample.
        hedge = test_scene.hedgerow.reshape(-1) & (test_scene.event_type.reshape(-1) == 0)
        forest_prob_last = p[:, -1, 1] + p[:, -1, 2]
        hedge_recall = float(np.nanmean(forest_prob_last[hedge] >= 0.5)) if hedge.any() else None
        # Event dating from per-date forest probability.
        fp = p[:, :, 1] + p[:, :, 2]
        warm = int(np.searchsorted(test.dates, test.dates[0] + np.timedelta64(180, "D")))
        becomes, stops = forest_change_dates(fp, test.valid, persistence=2, warmup=warm)
        event_type = test_scene.event_type.reshape(-1)
        event_day = test_scene.event_date.reshape(-1)
        errors: dict[str, object] = {}
        for code, label, detected in ((1, "clear_cut", stops), (2, "planting", becomes)):
            pix = np.nonzero(event_type == code)[0]
            if pix.size == 0:
                continue
            hit = detected[pix] >= 0
            days = np.abs((test.dates[detected[pix][hit]].astype("datetime64[D]")
                           - event_day[pix][hit]).astype(np.int64))
            errors[label] = {"pixels": int(pix.size), "detected_fraction": float(hit.mean()),
                             "median_abs_error_days": float(np.median(days)) if days.size
                             else None}
        # False alarms: stable pixels with a detected change.
        stable = event_type == 0
        errors["false_change_fraction_stable_pixels"] = float(
            ((becomes[stable] >= 0) | (stops[stable] >= 0)).mean())
        results[name] = {"per_class": per_class, "hedgerow_recall_last_date": hedge_recall,
                         "events": errors,
                         "same_scene_held_out_blocks": {
                             cls: {"roc_auc": v["roc_auc"], "pr_auc": v["pr_auc"]}
                             for cls, v in in_scene_scores[name].items()}}

    payload = {
        "quick": quick,
        "seed": args.seed,
        "setup": {
            "pretraining_scene": f"{size}x{size} px, {data.n_dates} dates over {years} years",
            "test_scene": f"{test_size}x{test_size} px, {test.n_dates} dates (other simulation)",
            "model_size": model_size,
            "head_prefix_memory_valid_dates": MEMORY,
            "pretraining_epochs": epochs,
            "labelled_pixels": int(n_label),
            "labelled_fraction_of_pretraining_pixels": n_label / len(data),
            "parameters": int(sum(p.numel() for p in backbone.parameters())),
            "labels": "per-date canopy class (none/conifer/broadleaf) of the labelled pixels",
            "scored": "unseen scene: all pixels, dates after the first year, and the last date; "
                      "also the pretraining scene's held-out test blocks (20 % of 8 px blocks, "
                      "never labelled) after the first year",
        },
        "compute": {
            **compute,
            "scratch_baseline": scratch_account.as_dict(),
            "finetune_vs_pretrain_flops_percent": 100 * compute["flops_ratio"],
            "target_flops_percent_max": 5.0,
            "target_pixel_percent_max": 3.0,
        },
        "results": results,
        "timings_s": {"pretrain": t_pre.seconds, "finetune": t_ft.seconds,
                      "scratch": t_scratch.seconds, "random_forest": t_rf.seconds,
                      "predict": t_pred.seconds, "total": time.perf_counter() - t_start},
        "reference": "Dargana (Smith et al.): pixel ROC-AUC 0.98, PR-AUC 0.83 on unseen real "
                     "imagery; numbers here are on simulated data and not comparable.",
    }
    notes = []
    d = results["dargana (frozen backbone + head)"]["per_class"]
    s = results["same architecture from scratch"]["per_class"]
    r = results["random forest (per-date lagged features)"]["per_class"]
    for cls in CANOPY_CLASSES:
        notes.append(f"{cls} (unseen scene): ROC-AUC dargana {d[cls]['roc_auc_all_dates']:.3f}, "
                     f"scratch {s[cls]['roc_auc_all_dates']:.3f}, RF "
                     f"{r[cls]['roc_auc_all_dates']:.3f}")
    for cls in CANOPY_CLASSES:
        same = {k: v["same_scene_held_out_blocks"][cls]["roc_auc"] for k, v in results.items()}
        notes.append(f"{cls} (pretraining scene, held-out blocks): ROC-AUC "
                     + ", ".join(f"{k.split(' (')[0]} {v:.3f}" for k, v in same.items()))
    payload["notes"] = notes
    fig = _figure(results, compute, test_scene, probs["dargana (frozen backbone + head)"],
                  test, CANOPY_CLASSES)
    json_path, png_path = write_results("timeseries_canopy", payload, fig, out_dir=args.out)
    print(json_path, png_path)


def _figure(results, compute, scene, probs, test, classes):  # noqa: ANN001, ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(14, 7.5))
    ax = fig.add_subplot(2, 3, 1)
    names = list(results)
    width = 0.25
    for j, name in enumerate(names):
        values = [results[name]["per_class"][c]["roc_auc_all_dates"] for c in classes]
        ax.bar(np.arange(3) + (j - 1) * width, values, width, label=name.split(" (")[0])
    ax.set_xticks(range(3), classes)
    ax.set_ylim(0.5, 1.0)
    ax.set_title("ROC-AUC (unseen scene, dates after year 1)")
    ax.legend(fontsize=7, loc="lower left")
    ax = fig.add_subplot(2, 3, 2)
    for j, name in enumerate(names):
        values = [results[name]["per_class"][c]["pr_auc_all_dates"] for c in classes]
        ax.bar(np.arange(3) + (j - 1) * width, values, width)
    ax.set_xticks(range(3), classes)
    ax.set_ylim(0.0, 1.0)
    ax.set_title("PR-AUC (average precision)")
    ax = fig.add_subplot(2, 3, 3)
    pre, fine = compute["pretraining"], compute["finetuning"]
    ax.bar(["pretraining", "fine-tuning"], [pre["flops"], fine["flops"]], color=["#888", "#2a7"])
    ax.set_yscale("log")
    ax.set_title(f"FLOPs: fine-tuning = {100 * compute['flops_ratio']:.2f} % of pretraining\n"
                 f"labelled pixels = {100 * compute['pixel_ratio']:.2f} % of pretraining pixels",
                 fontsize=9)
    h, w = scene.landcover.shape
    last_truth = scene.canopy[-1]
    pred = np.nanargmax(np.nan_to_num(probs[:, -1, :], nan=-1), axis=1).reshape(h, w)
    cmap = matplotlib.colors.ListedColormap(["#e8e0c0", "#1b5e20", "#8bc34a"])
    for k, (title, img) in enumerate((("truth, last date", last_truth),
                                      ("Dargana map, last date", pred))):
        ax = fig.add_subplot(2, 3, 4 + k)
        ax.imshow(img, cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
    ax = fig.add_subplot(2, 3, 6)
    event = scene.event_type.reshape(-1)
    for code, colour, label in ((1, "#d40", "clear-cut"), (2, "#26a", "planting")):
        pix = np.nonzero(event == code)[0]
        if pix.size:
            fp = probs[pix][:, :, 1] + probs[pix][:, :, 2]
            ax.plot(test.dates.astype("datetime64[D]"), np.nanmean(fp, 0), color=colour,
                    label=f"{label} pixels")
            when = scene.event_date.reshape(-1)[pix]
            ax.axvline(np.sort(when)[len(when) // 2], color=colour, ls=":")
    ax.set_ylabel("mean P(forest)")
    ax.set_title("Event pixels: forest probability over time\n(dotted: median true date)",
                 fontsize=9)
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
