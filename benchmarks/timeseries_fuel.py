"""Live fuel moisture regression on Presto's pixel series (S1 + S2 + ERA5 + SRTM, 3 months).

The given site-wise split (``is_test.npy``) is used as is. The backbone is pretrained by
next-token prediction on the training samples' inputs only (no targets, no test inputs), then
fine-tuned for regression. The eokit configuration (losses, learning rates, fine-tuning modes,
ensemble sizes) was chosen by ``timeseries_fuel_screen.py`` on a 5-fold cross-validation over the
TRAINING sites only; here the test split is scored once for it: the mean prediction of a
frozen-backbone head ensemble (Dargana) and a full fine-tuning ensemble (backbone at a tenth of
the head's learning rate), both with a Huber loss. The previous release's head (MSE) runs in the
same job for comparison. A random forest on the flattened inputs is the peer baseline (context
only, never combined with eokit); ridge regression on the same flattened inputs is the linear
floor every learned model must clear, and the command line's own fine-tuning defaults (one
seed, every training sample) run on the same backbone to show what a user gets without the
screened configuration. Reported: test RMSE against Presto's published fine-tuned RMSE 25.28
(and its RF 23.84, LinReg 28.20; arXiv 2304.14065, Table 10).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Timer, parse_args, seed_all, write_results  # noqa: E402

DATA = Path("/work/shared/data/timeseries/presto_npy/fuel_moisture")
#: Head features: [h_t, mean over the 3 months] plus the scaled inputs of all 3 months.
HEAD = {"pooling": "mean", "input_lags": 3, "lag_days": 25.0}
#: The eokit configuration, chosen on a 5-fold cross-validation over the TRAINING sites
#: (timeseries_fuel_screen.py; the test split is not read there): every weight fine-tuned, the
#: backbone at a tenth of the head's learning rate, Huber loss, mean prediction of N_SELECTED seeds.
SELECTED = {"mode": "full", "lr": 1e-3, "epochs": 60, "patience": 8, "loss": "huber",
            "backbone_lr_scale": 0.1}
N_SELECTED = 6
#: Run in the same job for comparison (not selected): the head with the same loss, and the
#: previous release's configuration (MSE head, 5 seeds).
HEAD_HUBER = {"mode": "head", "lr": 3e-3, "epochs": 300, "patience": 20, "loss": "huber"}
PREVIOUS = {"mode": "head", "lr": 3e-3, "epochs": 300, "patience": 20}
SELECTED_ROW = "eokit full fine-tuning, Huber, backbone lr x0.1 (selected)"
#: ``eokit timeseries finetune --task regression`` with every option at its default (head, MSE,
#: lr 3e-3, 60 epochs, patience 10, 20 % of the training sites for early stopping, 12 lags of
#: 30 days), on the benchmark's backbone: what the command gives before any tuning.
CLI_DEFAULTS = {"mode": "head", "lr": 3e-3, "epochs": 60, "patience": 10, "val_fraction": 0.2,
                "input_lags": 12, "lag_days": 30.0, "pooling": "mean"}
CLI_ROW = "eokit CLI defaults (head, MSE, 1 seed)"
RIDGE_ROW = "ridge regression (flattened inputs)"
PUBLISHED = {"Presto-FT": 25.28, "RF (Presto paper)": 23.84, "LinReg (Presto paper)": 28.20}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    seed_all(args.seed)
    local = Path(__file__).resolve().parents[2] / "shared" / "data" / "timeseries" / \
        "presto_npy" / "fuel_moisture"
    root = local if local.is_dir() else DATA
    if not root.is_dir():
        print(f"skipped: {root} not found")
        return
    import copy

    import torch

    # One thread: on a shared 2-core machine a second thread mostly waits (10x slower here).
    torch.set_num_threads(1)
    from eokit.core.metrics import regression_metrics
    from eokit.timeseries.baselines import linear_model, random_forest
    from eokit.timeseries.data import read_presto_npy
    from eokit.timeseries.task import compute_summary, finetune, predict_series, pretrain

    quick = args.quick
    t_start = time.perf_counter()
    data = read_presto_npy(root)
    is_test = np.asarray(data.extra["is_test"]).astype(bool)
    train_idx, test_idx = np.nonzero(~is_test)[0], np.nonzero(is_test)[0]
    train, test = data.subset(train_idx), data.subset(test_idx)
    work = Path(tempfile.mkdtemp(prefix="ts_fuel_"))
    epochs = 2 if quick else 30
    with Timer() as t_pre:
        # No temporal crops: 3 tokens per sample and per-sample dates (no calendar shortcut).
        backbone, pre_account = pretrain(train, work / "pre", size="small", epochs=epochs,
                                         batch_size=64, lr=2e-3, seed=args.seed, progress=False,
                                         config_overrides={"dropout": 0.1}, augment=False)
    results: dict[str, dict[str, float]] = {}
    spread: dict[str, dict[str, object]] = {}
    accounts = {}
    test_predictions: dict[str, np.ndarray] = {}
    timings = {"pretrain": t_pre.seconds}
    # Early stopping on whole sites (samples sharing coordinates) of the training split.
    latlon = np.round(np.asarray(train.extra["latlon"]), 3)
    sites = np.unique(latlon, axis=0, return_inverse=True)[1].reshape(-1)

    def members(options: dict[str, object], n_seeds: int, name: str,
                head: dict[str, object] | None = None) -> list[np.ndarray]:
        head = HEAD if head is None else head
        predictions = []
        per_seed = []
        method_seeds = [args.seed + k for k in range(1 if quick else n_seeds)]
        with Timer() as t:
            for seed in method_seeds:
                kwargs = dict(options)
                if quick:
                    kwargs["epochs"] = 3
                kwargs.setdefault("val_fraction", 0.15)
                model, account = finetune(
                    copy.deepcopy(backbone), train, train.targets,
                    work / f"ft_{name.replace(' ', '_')}_{seed}", task="regression",
                    batch_size=64, seed=seed, progress=False,
                    val_groups=sites, **head, **kwargs)
                prediction = predict_series(model, test)[:, -1]
                predictions.append(prediction)
                per_seed.append(regression_metrics(prediction, test.targets)["rmse"])
                accounts.setdefault(name, []).append(compute_summary(pre_account, account))
        test_predictions[name] = np.mean(predictions, axis=0)
        results[name] = regression_metrics(test_predictions[name], test.targets)
        spread[name] = {"seeds": method_seeds, "rmse_per_seed": per_seed,
                        "rmse_mean": float(np.mean(per_seed)),
                        "rmse_std": float(np.std(per_seed)),
                        "ensemble": f"mean prediction of {len(method_seeds)} seeds"}
        timings[f"finetune {name}"] = t.seconds
        return predictions

    members(SELECTED, N_SELECTED, SELECTED_ROW)
    members(HEAD_HUBER, 5, "eokit frozen backbone + head, Huber (not selected)")
    members(PREVIOUS, 5, "eokit previous head (MSE)")
    members(CLI_DEFAULTS, 1, CLI_ROW, head={})
    with Timer() as t_rf:
        rf = random_forest(300 if not quick else 50, args.seed, regression=True)
        rf.fit(train.series.reshape(len(train), -1), train.targets)
        rf_prediction = rf.predict(test.series.reshape(len(test), -1))
        results["random forest (flattened inputs)"] = regression_metrics(rf_prediction,
                                                                         test.targets)
        test_predictions["random forest (flattened inputs)"] = rf_prediction
    timings["random_forest"] = t_rf.seconds
    with Timer() as t_ridge:
        ridge = linear_model(regression=True)
        ridge.fit(train.series.reshape(len(train), -1), train.targets)
        ridge_prediction = ridge.predict(test.series.reshape(len(test), -1))
        results[RIDGE_ROW] = regression_metrics(ridge_prediction, test.targets)
        test_predictions[RIDGE_ROW] = ridge_prediction
    timings["ridge"] = t_ridge.seconds
    ridge_alpha = float(ridge[-1].alpha_)
    mean_rmse = float(np.sqrt(np.mean((test.targets - train.targets.mean()) ** 2)))
    # How precisely 735 test samples from a few dozen sites pin an RMSE down: resample whole
    # test sites (seeded bootstrap) and take the 2.5/97.5 percentiles.
    test_sites = np.unique(np.round(np.asarray(test.extra["latlon"]), 3), axis=0,
                           return_inverse=True)[1].reshape(-1)
    rng = np.random.default_rng(args.seed)
    draws = [np.concatenate([np.nonzero(test_sites == k)[0] for k in rng.choice(
        test_sites.max() + 1, test_sites.max() + 1)]) for _ in range(1000)]
    uncertainty = {name: [float(v) for v in np.percentile(
        [np.sqrt(np.mean((pred[d] - test.targets[d]) ** 2)) for d in draws], [2.5, 97.5])]
        for name, pred in test_predictions.items()}
    timings["total"] = time.perf_counter() - t_start
    best = SELECTED_ROW  # fixed before the test split was scored (no pick among test rows)
    screen_file = Path(__file__).resolve().parent / "results" / "timeseries_fuel_screen.json"
    screening: dict[str, object] = {"file": screen_file.name}
    if screen_file.is_file():
        screen = json.loads(screen_file.read_text())
        screening.update(protocol=screen["protocol"], cv_rmse={
            name: {"seeds": row["seeds"], "ensemble": round(row["cv_rmse_ensemble"], 3),
                   "single_seed_mean": round(row["cv_rmse_seed_mean"], 3)}
            for name, row in screen["screened"].items()},
            combinations={k: round(v["cv_rmse"], 3) for k, v in screen["combinations"].items()})
    repeat_file = screen_file.with_name("timeseries_fuel_screen_folds1.json")
    if repeat_file.is_file():
        repeat = json.loads(repeat_file.read_text())
        screening["second_partition"] = {
            "file": repeat_file.name, "protocol": repeat["protocol"],
            "cv_rmse": {name: round(row["cv_rmse_ensemble"], 3)
                        for name, row in repeat["screened"].items()}}
    payload = {
        "quick": quick,
        "seed": args.seed,
        "data": str(root),
        "setup": {"train_samples": int(train_idx.size), "test_samples": int(test_idx.size),
                  "dates_per_sample": data.n_dates, "channels": data.band_names,
                  "pretraining": f"small model, {epochs} epochs, training inputs only",
                  "head_features": HEAD,
                  "early_stopping": "15 % of the training sites as validation, best epoch kept",
                  "ensembles": "eokit rows are the mean prediction of several fine-tuning seeds "
                               "(same backbone); per-seed RMSE in seed_spread"},
        "selection": {
            "rule": "the configuration with the lowest cross-validated RMSE of its seed ensemble "
                    "over the training sites; ensemble size where that curve was still falling "
                    "and the benchmark stays within about 15 minutes; the test split is scored "
                    "once for it",
            "selected": {"row": SELECTED_ROW, "finetune": SELECTED, "seeds": N_SELECTED},
            "screening": screening},
        "results": results,
        "seed_spread": spread,
        "rmse_site_bootstrap_95": uncertainty,
        "published_rmse": PUBLISHED,
        "target": {"presto_ft_rmse": 25.28, "best": best, "rmse": results[best]["rmse"],
                   "beats_presto": bool(results[best]["rmse"] < 25.28)},
        "linear_floor": {
            "ridge_rmse": results[RIDGE_ROW]["rmse"], "ridge_alpha": ridge_alpha,
            "training_mean_rmse": mean_rmse,
            "cli_defaults": {"finetune": CLI_DEFAULTS, "rmse": results[CLI_ROW]["rmse"],
                             "beats_ridge": bool(results[CLI_ROW]["rmse"]
                                                 < results[RIDGE_ROW]["rmse"])},
            "selected_beats_ridge": bool(results[best]["rmse"] < results[RIDGE_ROW]["rmse"])},
        "compute": accounts,
        "timings_s": timings,
        "loadavg": list(os.getloadavg()),
        "notes": [f"{k}: RMSE {v['rmse']:.2f}, MAE {v['mae']:.2f}, R2 {v['r2']:.3f}"
                  for k, v in results.items()]
        + [f"{k}: per-seed RMSE {v['rmse_mean']:.2f} +- {v['rmse_std']:.2f} "
           f"(seeds {v['seeds']}); the row above is their mean prediction"
           for k, v in spread.items()]
        + [f"Test-site bootstrap (1000 draws of the {test_sites.max() + 1} test sites): 95 % "
           f"interval of the selected row's RMSE {uncertainty[best][0]:.2f}-"
           f"{uncertainty[best][1]:.2f}; differences of a few tenths between rows, or to "
           "25.28, are well inside the noise of this test split."]
        + ["Selection: every eokit choice (fine-tuning mode, learning rates, loss, head size, "
           "regularisation, pretraining size/length, ensemble size) was screened on a 5-fold "
           "GroupKFold over the 101 TRAINING sites (timeseries_fuel_screen.py, CV RMSE per "
           "configuration in selection.screening); the selected row was fixed before this run "
           "and is the only one compared with the target. The other eokit rows are reported "
           "for context, not picked from.",
           "Screening outcome: hyper-parameters of the frozen-backbone head (learning rate, "
           "width, dropout/weight decay, Huber vs MSE, tiny/longer pretraining) moved the CV "
           "RMSE by less than the seed-to-seed spread; fine-tuning every weight with the "
           "backbone at 0.1x the head's learning rate and a Huber loss had the lowest CV RMSE "
           "(CV RMSE 29.67 with 6 seeds against 30.62 for the previous head with 4 and 30.27 "
           "for the Huber head with 8); its seed-ensemble curve fell until 3-4 seeds and was "
           "flat after, a head ensemble flattened after 2-3 seeds (same frozen features). LoRA "
           "and full fine-tuning at the head's learning rate were not better than the head.",
           "A second partition of the training sites into folds (run after the selection, "
           "not used for it; selection.screening.second_partition) keeps the selected "
           "configuration first among the eokit ones but moves every CV RMSE by 1-3 and puts "
           "the random forest last instead of first: site composition dominates these scores.",
           "The Huber head row (not selected: 0.6 worse than the selected configuration in "
           "cross-validation) happens to score below 25.28 on the test split; quoting it as the "
           "result would be choosing on the test split, so it is not.",
           "Three monthly tokens per sample give next-token pretraining little to learn; "
           "Presto was pretrained on a global dataset, here only on 1.5 k training samples.",
           "The head sees the backbone's pooled states AND the scaled inputs of the 3 months "
           "(input_lags=3); with only 3 tokens per sample the model is close to an MLP on the "
           "inputs. The random forest is context only and never combined with eokit rows."],
    }
    floor = payload["linear_floor"]
    payload["notes"].append(
        f"Linear floor: ridge regression on the standardised, flattened inputs (alpha "
        f"{ridge_alpha:g} by leave-one-out) scores RMSE {floor['ridge_rmse']:.2f}; predicting "
        f"the training mean scores {mean_rmse:.2f}. The selected eokit configuration "
        + ("beats" if floor["selected_beats_ridge"] else "does NOT beat")
        + f" ridge ({results[best]['rmse']:.2f}); the command line's finetune defaults on the "
        f"same backbone (one seed, every training sample) score {results[CLI_ROW]['rmse']:.2f}, "
        + ("below ridge." if floor["cli_defaults"]["beats_ridge"] else
           "NOT below ridge: use the screened recipe (docs/timeseries.md)."))
    if not payload["target"]["beats_presto"]:
        payload["notes"].append(f"Selected eokit RMSE {results[best]['rmse']:.2f} does NOT "
                                "beat Presto's published 25.28.")
    else:
        per_seed = spread[best]["rmse_per_seed"]
        payload["notes"].append(
            f"Selected eokit RMSE {results[best]['rmse']:.2f} beats Presto's published 25.28 "
            f"as a {N_SELECTED}-seed ensemble; single seeds range "
            f"{min(per_seed):.2f}-{max(per_seed):.2f}"
            + (" (not every seed alone beats it)." if max(per_seed) >= 25.28 else "."))
    fig = _figure(results, spread, uncertainty)
    json_path, png_path = write_results("timeseries_fuel", payload, fig, out_dir=args.out)
    print(json_path, png_path)


def _figure(results, spread, uncertainty):  # noqa: ANN001, ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    names = list(results) + list(PUBLISHED)
    values = [results[n]["rmse"] for n in results] + list(PUBLISHED.values())
    colours = ["#2a7" if n.startswith("eokit") else "#888" for n in results] + \
        ["#c84"] * len(PUBLISHED)
    ax.barh(names, values, color=colours)
    right_end = []
    for y, (name, v) in enumerate(zip(names, values, strict=True)):
        right = max([v, *spread.get(name, {}).get("rmse_per_seed", []),
                     *uncertainty.get(name, [])])
        right_end.append(right)
        ax.text(right + 0.3, y, f"{v:.2f}", va="center", fontsize=8)
    ax.set_xlim(20, max(right_end) + 2)
    for y, name in enumerate(names):
        if name in spread and len(spread[name]["rmse_per_seed"]) > 1:
            seeds = spread[name]["rmse_per_seed"]
            ax.plot(seeds, [y] * len(seeds), "k|", ms=10,
                    label="single fine-tuning seeds" if y == 0 else None)
        if name in uncertainty:
            ax.plot(uncertainty[name], [y - 0.3] * 2, color="#444", lw=1,
                    label="95 % interval, bootstrap over test sites" if y == 0 else None)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, ncol=2)
    ax.axvline(25.28, color="#c84", ls=":")
    ax.set_xlabel("test RMSE, live fuel moisture (%)  (lower is better)")
    ax.set_title("Fuel moisture: eokit (green; bar = mean of seeds' predictions), RF and "
                 "ridge here (grey), published (orange)", fontsize=9)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
