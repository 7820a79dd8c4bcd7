"""Pixel series embedded per second by the time-series backbone on the CPU (target >= 50 k/s).

Embedding = one forward pass over the series and the mean of the last layer over valid dates.
Measured for the ``tiny`` and ``small`` sizes, series of 24 (two years monthly) and 68 dates
(the TestEOPatch length), 1 and 2 torch threads, batch 4096, in ``torch.inference_mode``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import parse_args, seed_all, write_results  # noqa: E402


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    seed_all(args.seed)
    import torch

    from eokit.timeseries.model import (
        PixelSeriesTransformer,
        SeriesModelConfig,
        forward_flops_per_token,
    )

    budget_s = 1.5 if args.quick else 6.0
    batch = 4096
    rows = []
    for size in ("tiny", "small"):
        for length in (24, 68):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                torch.manual_seed(args.seed)
                model = PixelSeriesTransformer(SeriesModelConfig.from_size(size, 10)).eval()
                series = torch.rand(batch, length, 10)
                doy = (torch.arange(length, dtype=torch.float32) * 15 % 365 + 1)[None].repeat(
                    batch, 1)
                valid = torch.rand(batch, length) > 0.3
                with torch.inference_mode():
                    model.embed(series[:256], doy[:256], valid[:256])  # warm-up
                    done, start = 0, time.perf_counter()
                    while time.perf_counter() - start < budget_s:
                        model.embed(series, doy, valid)
                        done += batch
                    seconds = time.perf_counter() - start
                rate = done / seconds
                flops = forward_flops_per_token(model.config, length) * length
                rows.append({"size": size, "dates": length, "threads": threads,
                             "series_per_s": rate, "gflops_per_s": rate * flops / 1e9,
                             "parameters": int(sum(p.numel() for p in model.parameters()))})
                print(rows[-1])
    small = [r for r in rows if r["size"] == "small"]
    best_small = max(small, key=lambda r: r["series_per_s"])
    payload = {
        "quick": args.quick,
        "seed": args.seed,
        "results": rows,
        "target": {"series_per_s_min": 50_000, "model": "small", "best": best_small,
                   "met": bool(best_small["series_per_s"] >= 50_000)},
        "notes": [
            f"small model, {r['dates']} dates, {r['threads']} thread(s): "
            f"{r['series_per_s']:,.0f} series/s ({r['gflops_per_s']:.1f} GFLOP/s)" for r in small
        ] + ["Measured on a shared machine (other jobs running); FLOP-bound: a series costs "
             "~2 x parameters x dates FLOPs, so 50 k/s for the small model at 68 dates needs "
             "~1 TFLOP/s, beyond 2 CPU cores."],
    }
    if not payload["target"]["met"]:
        payload["notes"].append(
            f"Target 50 k series/s NOT met: best small-model rate "
            f"{best_small['series_per_s']:,.0f}/s ({best_small['dates']} dates).")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    labels = [f"{r['size']}\n{r['dates']} d, {r['threads']} th" for r in rows]
    ax.bar(range(len(rows)), [r["series_per_s"] for r in rows], color=[
        "#2a7" if r["size"] == "small" else "#8bc" for r in rows])
    ax.axhline(50_000, color="#d40", ls=":", label="target 50 k/s (small)")
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("pixel series embedded / s")
    ax.legend()
    fig.tight_layout()
    json_path, png_path = write_results("timeseries_throughput", payload, fig, out_dir=args.out)
    print(json_path, png_path, np.round(best_small["series_per_s"]))


if __name__ == "__main__":
    main()
