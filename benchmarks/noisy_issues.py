"""Finding the wrong pixels of noisy building labels: kms posterior vs confident learning.

Simulated scenes with L2 object-level noise (the ``noisy_buildings`` data, same seeds). On the
training tiles, whose clean labels are known, every detector is scored against the true label
errors:

* ``kms_posterior``: the posterior error probability of the ``kms`` model (its own answer);
* ``cleanlab_crossval``: confident learning (cleanlab, as it is meant to be used) on
  out-of-sample probabilities of a ``ce`` network from 2-fold cross-validation;
* ``cleanlab_insample``: confident learning on the probabilities of a ``ce`` network trained on
  all tiles (what a user gets without cross-validation: over-confident in the given labels);
* ``ce_disagreement`` / ``kms_disagreement``: 1 - p(given label) of the network.

Continuous scores get AUROC and average precision; every score is also cut to flag exactly as
many pixels as cross-validated cleanlab does, so precision, recall and F1 compare at equal effort.

    python benchmarks/noisy_issues.py [--quick] [--seeds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, seed_all, write_results  # noqa: E402
from noisy_buildings import _datasets, _scale  # noqa: E402


def _train(method: str, train: Any, val: Any, cfg: dict[str, Any], seed: int,
           work: Path) -> Any:
    from eokit.noisy.task import NoisySegTask, fit_noisy

    seed_all(seed)
    task = NoisySegTask(loss=method, num_images=len(train), tile_shape=train.shape, rho=0.75,
                        lr=cfg["lr"], frozen_bn=cfg["frozen_bn"], pretrained=cfg["pretrained"])
    fit_noisy(task, train, val, work, max_epochs=cfg["epochs"], batch_size=cfg["batch"],
              seed=seed, trainer_overrides={"num_sanity_val_steps": 0, "logger": False})
    return task


def _probs(task: Any, items: list[Any]) -> np.ndarray:
    import torch

    from eokit.noisy.task import predict_array

    with torch.no_grad():
        return np.stack([predict_array(task.model, item.image) for item in items])


def _run_seed(seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    import torch
    from sklearn.metrics import average_precision_score, roc_auc_score

    from eokit.core.types import IGNORE_INDEX
    from eokit.noisy.data import TileDataset
    from eokit.noisy.issues import cleanlab_issues, flag_top, issue_agreement
    from eokit.noisy.task import store_error_map

    os.environ.setdefault("EOKIT_OFFLINE", "1")
    torch.set_num_threads(1)
    start = time.perf_counter()
    train, val, _ = _datasets(seed, "L2", cfg)
    items = train.items
    labels = np.stack([item.label for item in items])
    wrong = np.stack([(item.label != item.clean) & (item.label != IGNORE_INDEX)
                      for item in items])
    valid = labels != IGNORE_INDEX
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        kms = _train("kms", train, val, cfg, seed, work / "kms")
        ce = _train("ce", train, val, cfg, seed, work / "ce")
        # 2-fold cross-validation: each tile's probabilities from the network that did not see it
        order = np.random.default_rng(seed).permutation(len(items))
        folds = [order[: len(order) // 2], order[len(order) // 2:]]
        out_of_fold = np.zeros((len(items), 2, *labels.shape[1:]), dtype=np.float32)
        for k, held in enumerate(folds):
            kept = np.setdiff1d(order, held)
            model = _train("ce", TileDataset([items[i] for i in kept]), val, cfg, seed,
                           work / f"fold{k}")
            out_of_fold[held] = _probs(model, [items[i] for i in held])
        ce_probs, kms_probs = _probs(ce, items), _probs(kms, items)
        posterior = np.stack([store_error_map(kms, i) for i in range(len(items))])

    def disagreement(probs: np.ndarray) -> np.ndarray:
        return 1.0 - np.take_along_axis(probs, np.clip(labels, 0, 1)[:, None], 1)[:, 0]

    masks = {"cleanlab_crossval": cleanlab_issues(out_of_fold, labels),
             "cleanlab_insample": cleanlab_issues(ce_probs, labels)}
    scores = {"kms_posterior": posterior, "ce_disagreement": disagreement(ce_probs),
              "kms_disagreement": disagreement(kms_probs),
              "crossval_disagreement": disagreement(out_of_fold)}
    budget = int(masks["cleanlab_crossval"].sum())
    result: dict[str, Any] = {"seed": seed, "tiles": len(items),
                              "error_pixel_fraction": float(wrong[valid].mean()),
                              "flag_budget_pixels": budget,
                              "seconds": time.perf_counter() - start}
    for name, mask in masks.items():
        result[name] = issue_agreement(mask[valid], wrong[valid])
    y = wrong[valid]
    for name, score in scores.items():
        s = score[valid]
        result[name] = {"auroc": float(roc_auc_score(y, s)),
                        "average_precision": float(average_precision_score(y, s)),
                        **issue_agreement(flag_top(s, budget), y)}
    print(f"seed {seed}: error pixels {100 * result['error_pixel_fraction']:.1f} %, "
          f"cleanlab (cv) F1 {result['cleanlab_crossval']['f1']:.3f}, kms posterior F1 "
          f"{result['kms_posterior']['f1']:.3f} at the same count "
          f"({result['seconds']:.0f} s)", flush=True)
    return result


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    names = [k for k, v in runs[0].items() if isinstance(v, dict)]
    out: dict[str, Any] = {}
    for name in names:
        entry: dict[str, Any] = {}
        for metric in ("precision", "recall", "f1", "auroc", "average_precision"):
            values = [r[name][metric] for r in runs if metric in r[name]]
            if values:
                entry[f"{metric}_mean"] = float(np.mean(values))
                entry[f"{metric}_std"] = float(np.std(values))
        out[name] = entry
    return out


def _figure(summary: dict[str, Any]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, ax = plt.subplots(figsize=(9, 4))
    x = np.arange(len(names))
    for offset, metric in ((-0.2, "precision"), (0.0, "recall"), (0.2, "f1")):
        ax.bar(x + offset, [summary[n][f"{metric}_mean"] for n in names], 0.2,
               yerr=[summary[n][f"{metric}_std"] for n in names], capsize=2, label=metric)
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("against the true label errors")
    ax.set_title("label-error detection at the pixel count cross-validated cleanlab flags")
    ax.legend()
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (3; quick 1)")
    parser.add_argument("--workers", type=int, default=3, help="parallel seed processes")
    args = parser.parse_args(argv)
    os.environ.setdefault("EOKIT_OFFLINE", "1")
    cfg = _scale(args.quick)
    seeds = [args.seed + k for k in range(args.seeds or (1 if args.quick else 3))]
    t0 = time.perf_counter()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=max(1, min(args.workers, len(seeds))),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = list(pool.map(_run_seed, seeds, [cfg] * len(seeds)))
    summary = _summary(runs)
    cl, post = summary["cleanlab_crossval"], summary["kms_posterior"]
    targets = {"kms_posterior_f1_minus_cleanlab_crossval_f1": post["f1_mean"] - cl["f1_mean"],
               "kms_posterior_beats_cleanlab": bool(post["f1_mean"] > cl["f1_mean"])}
    notes = ["the data, noise and training settings are those of noisy_buildings (L2, CPU scale)",
             "cleanlab_insample uses probabilities of a network trained on the same tiles; "
             "confident learning assumes out-of-sample probabilities (cleanlab_crossval)",
             "scores other than cleanlab's masks flag exactly as many pixels as "
             "cleanlab_crossval, so F1 compares at equal effort"]
    payload = {"quick": cfg["quick"], "config": cfg, "seeds": seeds, "summary": summary,
               "targets": targets, "notes": notes, "runs": runs,
               "seconds": time.perf_counter() - t0}
    json_path, _ = write_results("noisy_issues", payload, _figure(summary), out_dir=args.out)
    print(f"targets: {targets}")
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
