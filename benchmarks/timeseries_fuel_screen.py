"""Configuration screening for the fuel moisture benchmark: K-fold over the TRAINING sites only.

Every choice of ``timeseries_fuel.py`` (fine-tuning mode, learning rates, loss, head, ensemble
size) is made here, never on the test split. The training samples are split into ``--folds``
groups of whole sites (GroupKFold); for each fold a backbone is pretrained on the other folds'
inputs only (as the benchmark pretrains on the training inputs only), fine-tuned on their labels
(early stopping on 15 % of their sites, as in the benchmark) and scored on the held-out fold.
The out-of-fold predictions of every (configuration, seed) are kept, so ensembles of seeds are
scored too. The test split is never read.

Writes ``benchmarks/results/timeseries_fuel_screen.json`` + ``.png``. Run a subset with
``--configs a,b`` (results merge into the JSON, so configurations can be added run by run).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_common_args, seed_all, write_results  # noqa: E402

DATA = Path("/work/shared/data/timeseries/presto_npy/fuel_moisture")
BASE_HEAD: dict[str, Any] = {"pooling": "mean", "input_lags": 3, "lag_days": 25.0}
#: Pretraining settings (as in timeseries_fuel.py unless a configuration overrides them).
PRETRAIN: dict[str, Any] = {"size": "small", "epochs": 30, "lr": 2e-3, "dropout": 0.1}
#: name -> fine-tuning keyword arguments (``pretrain``: overrides of PRETRAIN).
_HEAD: dict[str, Any] = {"mode": "head", "lr": 3e-3, "epochs": 300, "patience": 20}
_FULL: dict[str, Any] = {"mode": "full", "lr": 1e-3, "epochs": 60, "patience": 8}
CONFIGS: dict[str, dict[str, Any]] = {
    "head": {**_HEAD},
    "head huber": {**_HEAD, "loss": "huber"},
    "head lr1e-3": {**_HEAD, "lr": 1e-3},
    "head lr3e-4": {**_HEAD, "lr": 3e-4},
    "head wd1e-2 drop0.3": {**_HEAD, "weight_decay": 1e-2, "dropout": 0.3},
    "head hidden128": {**_HEAD, "hidden": 128},
    "head hidden256 drop0.3": {**_HEAD, "hidden": 256, "dropout": 0.3},
    "head tiny backbone": {**_HEAD, "pretrain": {"size": "tiny"}},
    "head pretrain 60 epochs": {**_HEAD, "pretrain": {"epochs": 60}},
    "head huber lr1e-3": {**_HEAD, "loss": "huber", "lr": 1e-3},
    "head huber lr1e-3 member backbones": {**_HEAD, "loss": "huber", "lr": 1e-3,
                                           "pretrain": {"member_seed": True}},
    "lora": {"mode": "lora", "lr": 1e-3, "epochs": 60, "patience": 8},
    "lora bb-lr x0.3": {"mode": "lora", "lr": 1e-3, "epochs": 60, "patience": 8,
                        "backbone_lr_scale": 0.3},
    "full": {**_FULL},
    "full bb-lr x0.1": {**_FULL, "backbone_lr_scale": 0.1},
    "full bb-lr x0.3": {**_FULL, "backbone_lr_scale": 0.3},
    "full bb-lr x0.1 huber": {**_FULL, "backbone_lr_scale": 0.1, "loss": "huber"},
    # Context only (not an eokit configuration, never combined with one).
    "random forest (reference)": {"mode": "random_forest"},
}

#: Fine-tuning seeds each configuration was screened with (more for the cheap head and for the
#: leading candidates, to see where the seed-ensemble curve flattens).
SEEDS: dict[str, list[int]] = {name: [0, 1] for name in CONFIGS}
SEEDS.update({name: [0, 1, 2, 3] for name in (
    "head", "head lr1e-3", "head lr3e-4", "head wd1e-2 drop0.3", "head hidden128",
    "head huber lr1e-3", "head huber lr1e-3 member backbones")})
SEEDS.update({"head huber": list(range(8)), "full bb-lr x0.1 huber": list(range(6))})

#: The configuration timeseries_fuel.py uses (lowest CV RMSE of its seed ensemble).
SELECTED = "full bb-lr x0.1 huber"

#: Ensembles of configurations: the mean of each configuration's seed-mean prediction.
COMBINATIONS: dict[str, list[str]] = {
    "head huber + full bb-lr x0.1 huber": ["head huber", "full bb-lr x0.1 huber"],
    "head + full bb-lr x0.1": ["head", "full bb-lr x0.1"],
    "head huber + head lr1e-3": ["head huber", "head lr1e-3"],
}


def _sites(latlon: np.ndarray) -> np.ndarray:
    return np.unique(np.round(latlon, 3), axis=0, return_inverse=True)[1].reshape(-1)


def main() -> None:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", default=None,
                        help="fine-tuning seeds, e.g. 0,1 (default: SEEDS of each configuration)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir())
                        / "eokit_fuel_screen", help="backbones and out-of-fold predictions")
    parser.add_argument("--fold-seed", type=int, default=None,
                        help="shuffle the sites into folds with this seed (default: GroupKFold's "
                             "own deterministic partition, the one the selection used)")
    args = parser.parse_args()
    seed_all(args.seed)
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found")
        return
    import torch

    torch.set_num_threads(1)
    from sklearn.model_selection import GroupKFold

    from eokit.timeseries.baselines import random_forest
    from eokit.timeseries.data import read_presto_npy
    from eokit.timeseries.model import PixelSeriesTransformer
    from eokit.timeseries.task import finetune, predict_series, pretrain

    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configurations {unknown}; known: {list(CONFIGS)}")
    chosen_seeds = None if args.seeds is None else [int(s) for s in args.seeds.split(",")]
    data = read_presto_npy(DATA)
    train = data.subset(np.nonzero(~np.asarray(data.extra["is_test"]).astype(bool))[0])
    del data  # the test split is not used below
    sites = _sites(np.asarray(train.extra["latlon"]))
    if args.fold_seed is None:
        splitter = GroupKFold(n_splits=args.folds)
        cache = args.cache
    else:  # another partition of the sites into folds (stability of the ranking)
        splitter = GroupKFold(n_splits=args.folds, shuffle=True, random_state=args.fold_seed)
        cache = args.cache / f"folds{args.fold_seed}"
    folds = list(splitter.split(np.zeros(len(train)), groups=sites))
    cache.mkdir(parents=True, exist_ok=True)
    targets = np.asarray(train.targets, dtype=np.float64)
    work = Path(tempfile.mkdtemp(prefix="ts_fuel_screen_"))

    def backbone_for(fold: int, fit_idx: np.ndarray, settings: dict[str, Any], seed: int
                     ) -> PixelSeriesTransformer:
        key = "_".join(f"{k}{v}" for k, v in sorted(settings.items()))
        path = cache / f"backbone_fold{fold}_{key}_seed{seed}.pt"
        if path.is_file():
            return torch.load(path, weights_only=False)  # type: ignore[no-any-return]
        backbone, _ = pretrain(train.subset(fit_idx), work / f"pre{fold}", size=settings["size"],
                               epochs=settings["epochs"], batch_size=64, lr=settings["lr"],
                               seed=seed, progress=False,
                               config_overrides={"dropout": settings["dropout"]}, augment=False)
        torch.save(backbone, path)
        return backbone

    for name in names:
        options = dict(CONFIGS[name])
        settings = {**PRETRAIN, **options.pop("pretrain", {})}
        # member_seed: every ensemble member pretrains its own backbone (seeded by the member).
        member_seed = bool(settings.pop("member_seed", False))
        head = {**BASE_HEAD, **options.pop("head", {})}
        options.setdefault("batch_size", 64)
        for seed in SEEDS[name] if chosen_seeds is None else chosen_seeds:
            oof_path = cache / f"oof_{name.replace(' ', '_')}_seed{seed}.npy"
            if oof_path.is_file():
                continue
            oof = np.full(len(train), np.nan)
            start = time.perf_counter()
            for fold, (fit_idx, held_idx) in enumerate(folds):
                if options["mode"] == "random_forest":
                    rf = random_forest(300, seed, regression=True)
                    rf.fit(train.series[fit_idx].reshape(fit_idx.size, -1), targets[fit_idx])
                    oof[held_idx] = rf.predict(train.series[held_idx].reshape(held_idx.size, -1))
                    continue
                backbone = backbone_for(fold, fit_idx, settings,
                                        seed if member_seed else args.seed)
                fit = train.subset(fit_idx)
                model, _ = finetune(copy.deepcopy(backbone), fit, fit.targets,
                                    work / f"ft{fold}", task="regression",
                                    seed=seed, progress=False, val_fraction=0.15,
                                    val_groups=sites[fit_idx], **head, **options)
                oof[held_idx] = predict_series(model, train.subset(held_idx))[:, -1]
            rmse = float(np.sqrt(np.mean((oof - targets) ** 2)))
            print(f"{name} seed {seed}: CV RMSE {rmse:.3f} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
            np.save(oof_path, oof)
    _summarise(cache, targets, folds, args)


def _summarise(cache: Path, targets: np.ndarray, folds: list[Any], args: Any) -> None:
    rows: dict[str, dict[str, Any]] = {}
    for name in CONFIGS:
        preds = [np.load(p) for p in sorted(cache.glob(f"oof_{name.replace(' ', '_')}_seed*.npy"))]
        if not preds:
            continue
        single = [float(np.sqrt(np.mean((p - targets) ** 2))) for p in preds]
        ensemble = float(np.sqrt(np.mean((np.mean(preds, axis=0) - targets) ** 2)))
        per_fold = [float(np.sqrt(np.mean((np.mean(preds, axis=0)[h] - targets[h]) ** 2)))
                    for _, h in folds]
        rows[name] = {"config": CONFIGS[name], "seeds": len(preds), "cv_rmse_per_seed": single,
                      "cv_rmse_seed_mean": float(np.mean(single)),
                      "cv_rmse_ensemble": ensemble, "cv_rmse_per_fold_ensemble": per_fold}
    if not rows:
        return
    for name, row in rows.items():
        # Ensemble size: RMSE of the mean of the first k seeds, k = 1 .. all.
        preds = [np.load(p) for p in sorted(cache.glob(f"oof_{name.replace(' ', '_')}_seed*.npy"))]
        row["cv_rmse_first_k_seeds"] = [
            float(np.sqrt(np.mean((np.mean(preds[:k], axis=0) - targets) ** 2)))
            for k in range(1, len(preds) + 1)]
    combined: dict[str, dict[str, Any]] = {}
    for name, parts in COMBINATIONS.items():
        if not all(p in rows for p in parts):
            continue
        means = [np.mean([np.load(f) for f in cache.glob(f"oof_{p.replace(' ', '_')}_seed*.npy")],
                         axis=0) for p in parts]
        combined[name] = {
            "configs": parts, "seeds": {p: rows[p]["seeds"] for p in parts},
            "cv_rmse": float(np.sqrt(np.mean((np.mean(means, axis=0) - targets) ** 2)))}
    payload = {
        "protocol": f"{args.folds}-fold GroupKFold over the training sites (test split never "
                    "read); one backbone per fold pretrained on that fold's training inputs; "
                    "fine-tuning early-stops on 15 % of the fold's training sites; RMSE pooled "
                    "over the out-of-fold predictions",
        "pretraining": PRETRAIN, "base_head": BASE_HEAD, "seed": args.seed,
        "selected": {"config": SELECTED, "seeds": len(SEEDS[SELECTED]),
                     "why": "lowest CV RMSE of its seed ensemble; the curve over the number of "
                            "seeds (cv_rmse_first_k_seeds) is flat from 3-4 seeds on, so the "
                            "benchmark uses all 6 screened seeds"},
        "screened": rows,
        "combinations": combined,
        "notes": [f"{k}: CV RMSE ensemble of {v['seeds']} seeds {v['cv_rmse_ensemble']:.2f}, "
                  f"single seeds {v['cv_rmse_seed_mean']:.2f}" for k, v in rows.items()]
        + [f"{k}: CV RMSE {v['cv_rmse']:.2f} (mean of the configurations' seed ensembles)"
           for k, v in combined.items()],
    }
    for name, row in sorted(rows.items(), key=lambda kv: kv[1]["cv_rmse_ensemble"]):
        print(f"{row['cv_rmse_ensemble']:7.3f} {row['cv_rmse_seed_mean']:7.3f}  {name}")
    for name, row in combined.items():
        print(f"{row['cv_rmse']:7.3f}          {name}")
    name = "timeseries_fuel_screen" + ("" if args.fold_seed is None
                                       else f"_folds{args.fold_seed}")
    if args.fold_seed is not None:
        payload["protocol"] += f"; sites shuffled into folds with seed {args.fold_seed} (a second "
        payload["protocol"] += "partition, to see whether the ranking holds; not used to select)"
        payload.pop("selected")
    partition = "" if args.fold_seed is None else f", sites shuffled (seed {args.fold_seed})"
    write_results(name, payload, _figure(rows, partition), out_dir=args.out)


def _figure(rows: dict[str, dict[str, Any]], partition: str = "") -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(rows, key=lambda n: -rows[n]["cv_rmse_ensemble"])
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(order) + 1.4))
    labels = [f"{n} ({rows[n]['seeds']} seeds)" for n in order]
    ax.barh(labels, [rows[n]["cv_rmse_ensemble"] for n in order],
            color=["#888" if n.startswith("random") else "#2a7" for n in order])
    for y, name in enumerate(order):
        ax.plot(rows[name]["cv_rmse_per_seed"], [y] * rows[name]["seeds"], "k|", ms=10)
        ax.text(rows[name]["cv_rmse_ensemble"] - 0.05, y, f"{rows[name]['cv_rmse_ensemble']:.2f}",
                va="center", ha="right", fontsize=8, color="white")
    low = min(min(r["cv_rmse_per_seed"]) for r in rows.values())
    ax.set_xlim(low - 2, max(max(r["cv_rmse_per_seed"]) for r in rows.values()) + 1)
    ax.set_xlabel("cross-validated RMSE over training sites (bar: seed ensemble; |: single seeds)")
    ax.set_title("Fuel moisture configuration screening, 5-fold CV over training sites"
                 f"{partition} (grey: context only)", fontsize=9)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
