"""LST retrieval on held-out TIGR-2000 profiles: every method overall and by water-vapour bin.

Samples: clear-sky TIGR-2000 profiles (RH < 90 % below 300 hPa) × Ts = T_air + U(−5, 15) K ×
ε ~ U(0.90, 1.00) × view zenith U(0, 10)° through the band RT model, with 0.05 K sensor noise;
split 70/15/15 by profile (seed). Methods: JM-SC with published coefficients, JM-SC refit on the
training profiles, RTE inversion with the true atmosphere (upper bound), mono-window (τ(w) and
Ta(T_air) refit), emissivity-corrected BT (no atmospheric correction, what pylandtemp-style tools
give), plain MLP, and the physics-informed network (PIML). Noise sensitivity: w × 0.8 / 1.2 and
ε ± 0.01 on the test inputs. The full run also writes the bundled PIML weights.

Run: python benchmarks/lst_retrieval.py [--quick] (needs ../shared/data/lst; skips cleanly without).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, parse_args, peak_rss_mb, seed_all, write_results  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lst"
if not DATA.exists():
    DATA = Path("/work/shared/data/lst")
BINS = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 99)]
BIN_NAMES = ["<1", "1-2", "2-3", "3-4", ">4"]
WEIGHTS = Path(__file__).resolve().parents[1] / "src/eokit/lst/weights/piml_l8b10.safetensors"


def stats(pred: np.ndarray, truth: np.ndarray, water: np.ndarray) -> dict:
    error = pred.astype(np.float64) - truth
    ok = np.isfinite(error)
    out = {
        "rmse": float(np.sqrt(np.mean(error[ok] ** 2))),
        "mae": float(np.mean(np.abs(error[ok]))),
        "bias": float(np.mean(error[ok])),
        "n": int(ok.sum()),
        "failed": int((~ok).sum()),
        "by_water_vapour": {},
    }
    for name, (lo, hi) in zip(BIN_NAMES, BINS, strict=True):
        sel = ok & (water >= lo) & (water < hi)
        if sel.any():
            out["by_water_vapour"][name] = {
                "rmse": float(np.sqrt(np.mean(error[sel] ** 2))),
                "mae": float(np.mean(np.abs(error[sel]))),
                "bias": float(np.mean(error[sel])),
                "n": int(sel.sum()),
            }
    return out


def main() -> None:
    args = parse_args(__doc__)
    seed_all(args.seed)
    import torch

    torch.set_num_threads(2)
    from eokit.lst.baselines import (
        MonoWindow,
        SingleChannel,
        emissivity_corrected_bt,
        rte_inversion,
    )
    from eokit.lst.data import generate_samples, split_profiles
    from eokit.lst.profiles import read_tigr
    from eokit.lst.task import predict, train_retrieval

    tigr_file = DATA / "tigr2000_v1.2_43lev.dsf"
    if not tigr_file.exists():
        print(f"skipped: {tigr_file} not found")
        return
    profiles = read_tigr(tigr_file)
    clear = profiles.clear_sky_mask()
    profiles = profiles.subset(clear)
    split = split_profiles(len(profiles), seed=args.seed)
    per_profile = 6 if args.quick else 24
    epochs = 3 if args.quick else 40
    with Timer() as t_gen:
        samples = generate_samples(
            profiles, per_profile=per_profile, seed=args.seed, bt_noise_k=0.05
        )
    sample_split = split[samples.profile_index]
    train, val, test = (samples.subset(sample_split == s) for s in range(3))
    a, b = train.arrays, test.arrays
    truth, water = b["surface_temperature"].astype(np.float64), b["water_vapour"]
    sc_pub = SingleChannel()
    sc_refit = SingleChannel.fit(a["water_vapour"], a["tau"], a["up"], a["down"])
    mono = MonoWindow.fit(a["water_vapour"], a["tau"], a["up"], a["air_temperature"])
    results: dict[str, dict] = {}
    timings: dict[str, float] = {}
    preds: dict[str, np.ndarray] = {}

    def run(name, fn):
        with Timer() as t:
            preds[name] = np.asarray(fn(b["radiance"], b["emissivity"], water, b), dtype=np.float64)
        timings[name] = t.seconds
        results[name] = stats(preds[name], truth, water)

    run("jm_sc_published", lambda r, e, w, _: sc_pub(r, e, w))
    run("jm_sc_refit", lambda r, e, w, _: sc_refit(r, e, w))
    run("rte_true_atmosphere", lambda r, e, w, x: rte_inversion(r, e, x["tau"], x["up"], x["down"]))
    run("mono_window_refit", lambda r, e, w, x: mono(r, e, w, x["air_temperature"]))
    run("emissivity_corrected_bt", lambda r, e, w, _: emissivity_corrected_bt(r, e))
    networks = {}
    out_dir = Path(tempfile.mkdtemp(prefix="lst_retrieval_"))
    train_seconds = {}
    for kind in ("mlp", "piml"):
        with Timer() as t_train:
            networks[kind] = train_retrieval(
                train,
                val,
                out_dir / kind,
                kind=kind,
                epochs=epochs,
                seed=args.seed,
                prior=sc_refit.coefficients,
                progress=False,
            )
        train_seconds[kind] = t_train.seconds
        run(kind, lambda r, e, w, x, k=kind: predict(networks[k], test.features()))

    # noise sensitivity: perturbed water vapour and emissivity at the input
    noise: dict[str, dict] = {}
    for label, w_factor, e_shift in (
        ("w_x0.8", 0.8, 0.0),
        ("w_x1.2", 1.2, 0.0),
        ("eps_-0.01", 1.0, -0.01),
        ("eps_+0.01", 1.0, 0.01),
    ):
        w_in = np.clip(water * w_factor, 0, 10).astype(np.float32)
        e_in = np.clip(b["emissivity"] + e_shift, 0.01, 1.0).astype(np.float32)
        feats = test.features().copy()
        feats[:, 1], feats[:, 2] = w_in, e_in
        row = {
            "jm_sc_refit": stats(sc_refit(b["radiance"], e_in, w_in), truth, water)["rmse"],
            "mono_window_refit": stats(
                mono(b["radiance"], e_in, w_in, b["air_temperature"]), truth, water
            )["rmse"],
            "mlp": stats(predict(networks["mlp"], feats), truth, water)["rmse"],
            "piml": stats(predict(networks["piml"], feats), truth, water)["rmse"],
        }
        noise[label] = row

    piml, sc, mlp = results["piml"]["rmse"], results["jm_sc_refit"]["rmse"], results["mlp"]["rmse"]
    gain_sc, gain_mlp = 1 - piml / sc, 1 - piml / mlp
    humid_mae = results["piml"]["by_water_vapour"].get(">4", {}).get("mae", float("nan"))
    targets = {
        "piml_rmse_reduction_vs_sc_refit": {
            "value": gain_sc,
            "target": 0.30,
            "met": gain_sc >= 0.30,
        },
        "piml_rmse_reduction_vs_mlp": {"value": gain_mlp, "target": 0.30, "met": gain_mlp >= 0.30},
        "piml_mae_w_gt_4": {"value": humid_mae, "target": 2.3, "met": humid_mae <= 2.3},
    }
    notes = [
        "Samples come from eokit's own band RT model (fitted to MODTRAN espg month 01 + JM2014 "
        "psi curves); every number is within-simulator, like the paper's TIGR experiments.",
        "rte_true_atmosphere is an upper bound: its residual comes only from sensor noise and "
        "the band-effective vs spectral RTE difference.",
        "jm_sc_published degrades in humid air partly because our simulator is more opaque than "
        "JM2014's MODTRAN set at the same w (see lst_rt_validation psi deviations).",
    ]
    if not targets["piml_rmse_reduction_vs_mlp"]["met"]:
        notes.append(
            f"PIML does NOT reach 30 % lower RMSE than the plain MLP (got {gain_mlp:.1%}): "
            "given the same inputs (BT, w, eps, angle) the MLP learns most of the same "
            "mapping; the physics structure mainly helps against SC."
        )
    if not targets["piml_rmse_reduction_vs_sc_refit"]["met"]:
        notes.append(f"PIML does NOT reach 30 % below refit SC (got {gain_sc:.1%}).")
    if args.quick:
        notes.append("--quick: few samples and epochs; numbers are a smoke test only.")
    elif args.out.resolve() == (Path(__file__).resolve().parent / "results").resolve():
        WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
        from eokit.core.train import save_weights

        save_weights(
            networks["piml"],
            WEIGHTS,
            metadata={
                "kind": "piml",
                "hidden": "64",
                "layers": "3",
                "features": "bt,water_vapour,emissivity,view_zenith",
                "band": "L8_B10",
                "trained_by": "benchmarks/lst_retrieval.py",
                "seed": str(args.seed),
                "test_rmse_k": f"{piml:.3f}",
            },
        )
        notes.append(f"bundled PIML weights written to {WEIGHTS.relative_to(WEIGHTS.parents[3])}")

    payload = {
        "quick": args.quick,
        "seed": args.seed,
        "data": {
            "profiles_total": int(clear.size),
            "profiles_clear_sky": int(clear.sum()),
            "per_profile": per_profile,
            "samples": {"train": len(train), "val": len(val), "test": len(test)},
            "generation_seconds": t_gen.seconds,
        },
        "training": {"epochs": epochs, "seconds": train_seconds},
        "methods": results,
        "noise_sensitivity_rmse": noise,
        "targets": targets,
        "timing_seconds": timings,
        "peak_rss_mb": peak_rss_mb(),
        "refit_sc_coefficients": sc_refit.coefficients.tolist(),
        "notes": notes,
    }
    fig = figure(results, noise, preds, truth, water)
    json_path, _ = write_results("lst_retrieval", payload, fig, out_dir=args.out)
    print(json.dumps({k: round(v["rmse"], 3) for k, v in results.items()}), "->", json_path)


def figure(results, noise, preds, truth, water):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    methods = [m for m in results if m != "rte_true_atmosphere"]
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        values = [results[m]["by_water_vapour"].get(n, {}).get("rmse", np.nan) for n in BIN_NAMES]
        axes[0].bar(np.arange(len(BIN_NAMES)) + i * width, values, width, label=m)
    axes[0].set_xticks(np.arange(len(BIN_NAMES)) + 0.4 - width / 2, BIN_NAMES)
    axes[0].set_xlabel("column water vapour [g cm⁻²]")
    axes[0].set_ylabel("RMSE [K]")
    axes[0].set_title("Held-out TIGR profiles: RMSE by water vapour")
    axes[0].legend(fontsize=7)
    for m, colour in (("jm_sc_refit", "#999999"), ("mlp", "#4f81bd"), ("piml", "#c0504d")):
        axes[1].scatter(water, preds[m] - truth, s=2, alpha=0.3, color=colour, label=m)
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set_xlabel("column water vapour [g cm⁻²]")
    axes[1].set_ylabel("retrieved − true Ts [K]")
    axes[1].set_title("Errors vs water vapour")
    axes[1].legend(markerscale=5, fontsize=8)
    labels = list(noise)
    for i, m in enumerate(["jm_sc_refit", "mono_window_refit", "mlp", "piml"]):
        axes[2].bar(np.arange(len(labels)) + i * 0.2, [noise[k][m] for k in labels], 0.2, label=m)
    axes[2].set_xticks(np.arange(len(labels)) + 0.3, labels)
    axes[2].set_ylabel("RMSE [K]")
    axes[2].set_title("Input-error sensitivity")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
