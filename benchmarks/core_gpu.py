"""The CUDA path of the training engine and of inference, with mixed precision, on one GPU.

Needs a CUDA GPU (``--device cpu`` runs the same code on the CPU as a smoke test; without a
GPU and without that flag the script says so and exits 0). Sections:

1. ``change_lightning``: CANet (resnet18 encoder, 256 px pairs, batch 16) trained through
   Lightning exactly as ``eokit change fit`` builds it (``ChangeTask`` + grouped batches) at
   ``32-true``, ``bf16-mixed`` and ``16-mixed``; median step time, pairs/s, peak GPU memory and
   whether the loss fell.
2. ``change_step_ratio``: the adapter placements' train step relative to full fine-tuning on the
   GPU (the issue's "adapter step <= 0.6x" target), float32 and bfloat16 autocast, for the tiny
   and the resnet18 encoder.
3. ``timeseries_pretrain``: next-token pretraining through Lightning (``pretrain``) of the
   ``small`` and ``large`` (EarthPT-scale, 85 M) backbones at 32-true and bf16-mixed; tokens/s.
4. ``timeseries_embed``: pixel series embedded per second (68 dates, 70 % valid) by the small
   and large backbones, float32 and bfloat16, with the CPU agreement of the embeddings.
5. ``agreement``: CANet change probabilities on the GPU vs the CPU for the same weights.
6. ``cli``: ``eokit change fit`` (bf16-mixed) / ``predict --device``, and ``eokit timeseries
   simulate / pretrain`` (the shipped EarthPT-scale GPU config on one device) / ``finetune`` /
   ``predict --device``, with the GPU maps compared to the CPU maps.

    python benchmarks/core_gpu.py [--quick] [--device cuda|cpu]
    python benchmarks/core_gpu.py --figure-from results/core_gpu.json   # redraw only

The JSON is rewritten after every section, so a run stopped early keeps what it measured
(``--figure-from`` then lists the sections it lacks under ``missing_sections``).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, seed_all, write_results  # noqa: E402

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
NOTES = [
    "Step times are medians after warm-up, synchronised around each step on CUDA.",
    "float32 rows have TF32 off; bf16/16-mixed use Lightning's autocast (16-mixed adds a "
    "gradient scaler).",
    "change_step_ratio: the issue's target is adapter step <= 0.6x the full fine-tuning step; "
    "on a GPU small steps are launch-bound, so the ratio depends on the batch size.",
]
EMBED_DATES = 68
VALID_FRACTION = 0.7


def _sync(torch: Any, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class _StepTimer:
    """Lightning callback: wall time of every training batch (synchronised on CUDA)."""

    def __init__(self, torch: Any, device: str) -> None:
        self.torch, self.device = torch, device
        self.seconds: list[float] = []
        self.losses: list[float] = []
        self._tick = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        _sync(self.torch, self.device)
        self._tick = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, *args: Any) -> None:
        _sync(self.torch, self.device)
        self.seconds.append(time.perf_counter() - self._tick)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss.detach()))


def _timer_callback(torch: Any, device: str) -> Any:
    import lightning

    class Timer(_StepTimer, lightning.Callback):
        pass

    return Timer(torch, device)


def _peak_memory_mb(torch: Any, device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    return float(torch.cuda.max_memory_allocated()) / 2**20


def _reset_peak(torch: Any, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _accelerator(device: str) -> str:
    return "gpu" if device.startswith("cuda") else "cpu"


def change_lightning(torch: Any, device: str, quick: bool, seed: int) -> list[dict[str, Any]]:
    """CANet joint training steps through Lightning at each precision."""
    import lightning
    from torch.utils.data import ConcatDataset, DataLoader

    from eokit.change.data import (
        ChangeDataset,
        DomainGroupedBatchSampler,
        collate_pairs,
        simulated_pairs,
    )
    from eokit.change.lit import ChangeTask
    from eokit.change.model import build_canet

    domains = ["sim_buildings", "sim_landcover", "sim_sensor"]
    size, batch, steps = (64, 4, 6) if quick else (256, 16, 30)
    datasets = [ChangeDataset(simulated_pairs(d, count=batch * 2, size=size, seed=seed + i),
                              domain=i) for i, d in enumerate(domains)]
    rows = []
    for precision in PRECISIONS:
        if precision == "16-mixed" and not device.startswith("cuda"):
            continue
        seed_all(seed)
        model = build_canet(domains, in_channels=6, backbone="resnet18",
                            decoder_channels=(128, 64, 32, 16, 16), lora_rank=8)
        task = ChangeTask(model, mode="joint", lr=1e-3)
        sampler = DomainGroupedBatchSampler([len(d) for d in datasets], batch, seed=seed,
                                            balance=True)
        loader = DataLoader(ConcatDataset(datasets), batch_sampler=sampler,
                            collate_fn=collate_pairs)
        timer = _timer_callback(torch, device)
        _reset_peak(torch, device)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = lightning.Trainer(
                accelerator=_accelerator(device), devices=1, precision=precision,
                max_steps=steps, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False,
                use_distributed_sampler=False, default_root_dir=tmp, callbacks=[timer])
            start = time.perf_counter()
            trainer.fit(task, loader)
            wall = time.perf_counter() - start
        timed = timer.seconds[3:] or timer.seconds
        median = statistics.median(timed)
        losses = timer.losses
        rows.append({
            "precision": precision, "image_px": size, "batch": batch, "steps": len(timer.seconds),
            "median_step_s": median, "pairs_per_s": batch / median, "wall_s": wall,
            "first_loss": float(np.mean(losses[:3])), "last_loss": float(np.mean(losses[-3:])),
            "loss_finite": bool(np.isfinite(losses).all()),
            "peak_memory_mb": _peak_memory_mb(torch, device),
            "parameters": sum(p.numel() for p in model.parameters()),
        })
    return rows


def change_step_ratio(torch: Any, device: str, quick: bool, seed: int) -> list[dict[str, Any]]:
    """Adapter placements vs full fine-tuning, step time on this device."""
    from change_domains import backbone_step_ratios

    rows = []
    settings = [("resnet18-tiny", 64, 8), ("resnet18", 256, 16)]
    if quick:
        settings = [("resnet18-tiny", 32, 2)]
    for backbone, size, batch in settings:
        for name, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
            result = backbone_step_ratios(backbone, size, 4 if quick else 20, seed=seed,
                                          device=device, amp_dtype=dtype, batch=batch)
            rows.append({"dtype": name, **result})
    return rows


def _series(torch: Any, n: int, length: int, bands: int, seed: int) -> Any:
    from eokit.timeseries.data import SeriesData

    rng = np.random.default_rng(seed)
    dates = np.datetime64("2018-01-01") + np.cumsum(rng.integers(3, 12, size=length)).astype(
        "timedelta64[D]")
    doy = ((dates - dates.astype("datetime64[Y]")).astype(int) + 1).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    series = (0.25 + 0.15 * np.sin(2 * np.pi * doy[None, :, None] / 365.0 + phase)
              + rng.normal(0, 0.02, size=(n, length, bands))).astype(np.float32)
    valid = rng.uniform(size=(n, length)) < VALID_FRACTION
    return SeriesData(series=series, valid=valid, doy=doy[None],
                      band_names=[f"b{i}" for i in range(bands)],
                      dates=dates.astype("datetime64[s]"))


def timeseries_pretrain(torch: Any, device: str, quick: bool, seed: int) -> list[dict[str, Any]]:
    """Next-token pretraining tokens/s through Lightning at two precisions."""
    from eokit.timeseries.task import pretrain

    rows = []
    cases = [("small", 20_000, 512), ("large", 8_192, 128)]
    if quick:
        cases = [("tiny", 256, 64)]
    for size, pixels, batch in cases:
        data = _series(torch, pixels, 48, 10, seed)
        for precision in ("32-true", "bf16-mixed"):
            _reset_peak(torch, device)
            with tempfile.TemporaryDirectory() as tmp:
                backbone, account = pretrain(
                    data, tmp, size=size, epochs=1, batch_size=batch, augment=True,
                    seed=seed, progress=False, val_fraction=0.02,
                    trainer_overrides={"accelerator": _accelerator(device), "devices": 1,
                                       "precision": precision, "logger": False})
            rows.append({
                "size": size, "precision": precision, "pixels": pixels, "batch": batch,
                "dates": 48, "tokens": account.tokens, "seconds": account.seconds,
                "tokens_per_s": account.tokens / max(account.seconds, 1e-9),
                "parameters": sum(p.numel() for p in backbone.parameters()),
                "peak_memory_mb": _peak_memory_mb(torch, device),
            })
    return rows


def timeseries_embed(torch: Any, device: str, quick: bool, seed: int) -> list[dict[str, Any]]:
    """Pixel series embedded per second, and agreement with float32 on the CPU."""
    from eokit.timeseries.model import PixelSeriesTransformer, SeriesModelConfig

    rows = []
    cases = [("small", 65_536, 1 << 20), ("large", 16_384, 1 << 18)]
    if quick:
        cases = [("small", 512, 4096)]
    gen = torch.Generator().manual_seed(seed)
    for size, batch, chunk in cases:
        torch.manual_seed(seed)
        model = PixelSeriesTransformer(SeriesModelConfig.from_size(size, 10)).eval()
        model.requires_grad_(False)
        series = torch.rand(batch, EMBED_DATES, 10, generator=gen)
        doy = (torch.arange(EMBED_DATES, dtype=torch.float32) * 15 % 365 + 1)[None].repeat(
            batch, 1)
        valid = torch.rand(batch, EMBED_DATES, generator=gen) < VALID_FRACTION
        check = slice(0, 1024)
        reference = model.embed(series[check], doy[check], valid[check], dtype="float32")
        model.to(device)
        on_device = [t.to(device) for t in (series, doy, valid)]
        for dtype in ("float32", "bfloat16"):
            model.embed(*on_device, dtype=dtype, chunk_tokens=chunk)  # warm-up
            rates = []
            for _ in range(2 if quick else 5):
                _sync(torch, device)
                tick = time.perf_counter()
                out = model.embed(*on_device, dtype=dtype, chunk_tokens=chunk)
                _sync(torch, device)
                rates.append(batch / (time.perf_counter() - tick))
            got = out[check].float().cpu()
            cosine = torch.nn.functional.cosine_similarity(got, reference, dim=1)
            rows.append({
                "size": size, "dtype": dtype, "batch": batch, "dates": EMBED_DATES,
                "chunk_tokens": chunk, "series_per_s": statistics.median(rates),
                "series_per_s_best": max(rates),
                "max_abs_diff_vs_cpu_float32": float((got - reference).abs().max()),
                "cosine_min_vs_cpu_float32": float(cosine.min()),
            })
        model.to("cpu")
    return rows


def agreement(torch: Any, device: str, quick: bool, seed: int) -> dict[str, Any]:
    """Change probabilities of one CANet on this device vs the CPU (eval mode)."""
    from eokit.change.data import ChangeDataset, collate_pairs, simulated_pairs
    from eokit.change.model import build_canet

    seed_all(seed)
    model = build_canet(["a", "b"], in_channels=6, backbone="resnet18",
                        decoder_channels=(128, 64, 32, 16, 16), lora_rank=8).eval()
    model.set_domain("b")
    batch = collate_pairs(list(ChangeDataset(simulated_pairs("sim_sensor", count=4, size=128,
                                                             seed=seed), domain=1)))
    with torch.no_grad():
        cpu = torch.sigmoid(model(batch["image_a"], batch["image_b"]))
        model.to(device)
        out = {}
        for name, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
            with torch.autocast(torch.device(device).type, dtype=dtype,
                                enabled=dtype is not None):
                gpu = torch.sigmoid(model(batch["image_a"].to(device),
                                          batch["image_b"].to(device)).float()).cpu()
            out[name] = {"max_abs_diff": float((gpu - cpu).abs().max()),
                         "binary_agreement": float(((gpu > 0.5) == (cpu > 0.5)).float().mean())}
    model.to("cpu")
    return out


def _cli(args: list[str], log: list[dict[str, Any]]) -> bool:
    """Run ``eokit ARGS`` in a fresh interpreter; record the exit code, time and last line."""
    import subprocess

    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "from eokit.cli import main; main()", *args],
                          capture_output=True, text=True, check=False)
    lines = (done.stdout + done.stderr).strip().splitlines()
    log.append({"command": "eokit " + " ".join(args[:2]), "returncode": done.returncode,
                "seconds": time.perf_counter() - start, "last_line": lines[-1] if lines else ""})
    return done.returncode == 0


def cli_end_to_end(torch: Any, device: str, quick: bool, seed: int) -> dict[str, Any]:
    """The CLI on this device: change fit/predict and time-series pretrain/finetune/predict.

    Training goes to the GPU through ``--trainer.*`` options (the shipped GPU configs, with one
    device), inference through ``--device``; predictions are compared with the CPU's.
    """
    import rasterio

    from eokit.core.raster import write_raster
    from eokit.core.synth.change import change_pair

    root = Path(__file__).resolve().parents[1]
    gpu = device.startswith("cuda")
    trainer = ["--trainer.accelerator", "gpu" if gpu else "cpu", "--trainer.devices", "1",
               "--trainer.enable_progress_bar", "false"]
    log: list[dict[str, Any]] = []
    out: dict[str, Any] = {"commands": log}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # Change detection: joint fit in bf16, predict on a generated pair on both devices.
        if _cli(["change", "fit", "--config", str(root / "configs/change/sim_joint.yaml"),
                 "-o", str(work / "change"), *trainer, "--trainer.precision", "bf16-mixed",
                 "--trainer.max_epochs", "1" if quick else "3"], log):
            pair = change_pair(300, seed=seed, domain="sim_sensor")
            a = write_raster(work / "A.tif", pair.image_a, pair.grid)
            b = write_raster(work / "B.tif", pair.image_b, pair.grid)
            maps = {}
            for where in ("cpu", device):
                folder = work / f"pred_{where.replace(':', '')}"
                if _cli(["change", "predict", str(a), str(b), "--checkpoint",
                         str(work / "change/model.safetensors"), "--domain", "sim_sensor",
                         "-o", str(folder), "--device", where, "--tile", "128",
                         "--overlap", "32"], log):
                    with rasterio.open(folder / "change_probability.tif") as src:
                        maps[where] = src.read(1)
            if len(maps) == 2:
                out["change_probability_max_abs_diff"] = float(
                    np.nanmax(np.abs(maps[device] - maps["cpu"])))
        # Time series: simulate, pretrain with the EarthPT-scale GPU config, finetune, predict.
        sim = work / "sim"
        config = "pretrain_large_gpu.yaml" if gpu else "pretrain_tiny_cpu.yaml"
        if (_cli(["timeseries", "simulate", str(sim), "--size", "24" if quick else "48",
                  "--years", "2", "--seed", str(seed)], log)
                and _cli(["timeseries", "pretrain", str(sim / "stack"), "--out",
                          str(work / "ts"), "--config", str(root / "configs/timeseries" / config),
                          "--epochs", "1", *trainer, "--trainer.strategy", "auto"], log)
                and _cli(["timeseries", "finetune", str(sim / "stack"), "--backbone",
                          str(work / "ts/backbone.safetensors"), "--labels",
                          str(sim / "canopy_last.tif"), "--classes", "none,conifer,broadleaf",
                          "--label-fraction", "0.05", "--epochs", "3",
                          "--out", str(work / "ts/ft"), *trainer], log)):
            probs = {}
            for where in ("cpu", device):
                folder = work / f"maps_{where.replace(':', '')}"
                if _cli(["timeseries", "predict", str(sim / "stack"), "--model",
                         str(work / "ts/ft/model.safetensors"), "--out", str(folder),
                         "--dates", "last", "--device", where], log):
                    probs[where] = np.stack([rasterio.open(f).read() for f in
                                             sorted(folder.glob("probability_*.tif"))])
            if len(probs) == 2:
                out["timeseries_probability_max_abs_diff"] = float(
                    np.abs(probs[device] - probs["cpu"]).max())
    out["all_ok"] = all(entry["returncode"] == 0 for entry in log)
    return out


SECTIONS = ("agreement", "cli", "timeseries_embed", "timeseries_pretrain", "change_lightning",
            "change_step_ratio")


def _measured(result: dict[str, Any], key: str) -> bool:
    return isinstance(result.get(key), list) and bool(result[key])


def _figure(result: dict[str, Any]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(19, 4.4))
    for ax, key in zip(axes, ("change_lightning", "change_step_ratio", "timeseries_pretrain",
                              "timeseries_embed"), strict=True):
        if not _measured(result, key):
            ax.text(0.5, 0.5, f"{key}:\nnot measured in this run", ha="center", va="center")
            ax.set_axis_off()
    if _measured(result, "change_lightning"):
        rows = result["change_lightning"]
        axes[0].bar([r["precision"] for r in rows], [r["pairs_per_s"] for r in rows],
                    color="tab:blue")
        axes[0].set_ylabel("image pairs / s")
        axes[0].set_title(f"CANet resnet18 training, Lightning\n({rows[0]['image_px']} px, batch "
                          f"{rows[0]['batch']})")
    if _measured(result, "change_step_ratio"):
        ratios = result["change_step_ratio"]
        x = np.arange(len(ratios))
        for k, arm in enumerate(("adapt", "adapt_decoder", "adapt_finest")):
            axes[1].bar(x + (k - 1) * 0.27, [r["step_ratio"][arm] for r in ratios], 0.27,
                        label=arm)
        axes[1].axhline(0.6, color="k", ls="--", lw=1, label="target 0.6x")
        axes[1].set_xticks(x, [f"{r['backbone']}\n{r['dtype']}" for r in ratios], fontsize=8)
        axes[1].set_ylabel("step time / full fine-tune step")
        axes[1].set_title("adapter step time ratio")
        axes[1].legend(fontsize=8)
    if _measured(result, "timeseries_pretrain"):
        rows = result["timeseries_pretrain"]
        axes[2].bar([f"{r['size']}\n{r['precision']}" for r in rows],
                    [r["tokens_per_s"] for r in rows], color="tab:orange")
        axes[2].set_yscale("log")
        axes[2].set_ylabel("tokens / s (log)")
        axes[2].set_title("time-series pretraining, Lightning")
    if _measured(result, "timeseries_embed"):
        rows = result["timeseries_embed"]
        axes[3].bar([f"{r['size']}\n{r['dtype']}" for r in rows],
                    [r["series_per_s"] for r in rows], color="tab:green")
        axes[3].set_yscale("log")
        axes[3].set_ylabel("pixel series / s (log)")
        axes[3].set_title(f"time-series embedding ({EMBED_DATES} dates)")
    fig.suptitle(f"eokit on {result['device_name']} (torch {result['torch']})")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke test)")
    parser.add_argument("--figure-from", type=Path, default=None,
                        help="redraw the figure of an earlier run's JSON (measures nothing)")
    args = parser.parse_args(argv)
    if args.figure_from is not None:
        result = json.loads(args.figure_from.read_text())
        result["missing_sections"] = [k for k in SECTIONS if k not in result]
        write_results("core_gpu", {k: v for k, v in result.items() if k != "benchmark"},
                      _figure(result), out_dir=args.out)
        return
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("core_gpu: no CUDA GPU on this machine; nothing measured (use --device cpu for a "
              "smoke run)")
        return
    seed_all(args.seed)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 rows are true float32
    torch.backends.cudnn.allow_tf32 = False
    name = (torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU")
    result: dict[str, Any] = {"quick": args.quick, "seed": args.seed, "device": args.device,
                              "device_name": name, "torch": torch.__version__,
                              "cuda": torch.version.cuda, "timings_s": {}}
    result["notes"] = NOTES
    functions = {"agreement": agreement, "cli": cli_end_to_end,
                 "timeseries_embed": timeseries_embed, "timeseries_pretrain": timeseries_pretrain,
                 "change_lightning": change_lightning, "change_step_ratio": change_step_ratio}
    for key in SECTIONS:
        function = functions[key]
        start = time.perf_counter()
        try:
            result[key] = function(torch, args.device, args.quick, args.seed)
        except Exception as error:  # noqa: BLE001 - recorded, the other sections still run
            result[key] = {"error": f"{type(error).__name__}: {error}"}
        result["timings_s"][key] = time.perf_counter() - start
        print(f"{key}: {result['timings_s'][key]:.1f} s {json.dumps(result[key])[:1500]}",
              flush=True)
        write_results("core_gpu", result, None, out_dir=args.out)  # partial results survive
    result["missing_sections"] = []
    json_path, _ = write_results("core_gpu", result, _figure(result), out_dir=args.out)
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
