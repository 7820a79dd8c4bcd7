"""Inference cost of the open-vocabulary segmenter: seconds per 1024^2 tile by classes, rotations.

One forward pass (encoders + aggregation + decoder, under ``torch.inference_mode``) of a
1024 x 1024 RGB tile, batch 1, one torch thread, the embedded encoder pair (EfficientNet-Lite0;
weights do not change the cost, so random ones are used) at the ``small`` size the simulator
benchmark trains. Grid: 1 / 8 / 32 classes x 1 / 4 rotations; the median of ``repeats`` runs after
one warm-up run. The text side is not timed (class embeddings are computed once per class list).

    python benchmarks/openvocab_cost.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, peak_rss_mb, seed_all, write_results  # noqa: E402

NAME = "openvocab_cost"


def _scale(quick: bool) -> dict[str, Any]:
    if quick:
        return {"quick": True, "size": 256, "classes": [1, 8], "rotations": [1, 4], "repeats": 1}
    return {"quick": False, "size": 1024, "classes": [1, 8, 32], "rotations": [1, 4],
            "repeats": 3}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    import torch

    from eokit.core.encoders import build_image_encoder
    from eokit.openvocab.model import OpenVocabSegmenter
    from eokit.openvocab.pipeline import SIZES

    torch.set_num_threads(1)
    seed_all(args.seed)
    cfg = _scale(args.quick)
    encoder = build_image_encoder("efficientnet_lite0", pretrained=False, frozen_bn=True)
    image = torch.rand(1, 3, cfg["size"], cfg["size"])
    rows = []
    for rotations in cfg["rotations"]:
        angles = (0, 90, 180, 270)[:rotations]
        model = OpenVocabSegmenter(encoder, 384, 6, rotations=angles, **SIZES["small"]).eval()
        for k in cfg["classes"]:
            text = torch.nn.functional.normalize(torch.randn(k, 6, 384), dim=-1)
            times = []
            with torch.inference_mode():
                model(image, text)  # warm-up
                for _ in range(cfg["repeats"]):
                    t = time.perf_counter()
                    model(image, text)
                    times.append(time.perf_counter() - t)
            rows.append({"rotations": rotations, "classes": k,
                         "seconds_per_tile": float(np.median(times)), "runs": times})
            print(rows[-1], flush=True)
    by = {(r["rotations"], r["classes"]): r["seconds_per_tile"] for r in rows}
    kmax, kmin = max(cfg["classes"]), min(cfg["classes"])
    notes = [
        f"4 rotations cost {by[(4, kmin)] / by[(1, kmin)]:.2f}x one rotation at {kmin} class(es) "
        f"and {by[(4, kmax)] / by[(1, kmax)]:.2f}x at {kmax}",
        f"{kmax} classes cost {by[(4, kmax)] / by[(4, kmin)]:.2f}x {kmin} class(es) with 4 "
        "rotations (the aggregation and decoder run once per class)",
    ]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for rotations in cfg["rotations"]:
        ks = cfg["classes"]
        ax.plot(ks, [by[(rotations, k)] for k in ks], "o-", label=f"{rotations} rotation(s)")
    ax.set_xlabel("classes scored")
    ax.set_ylabel(f"seconds per {cfg['size']}² tile (1 thread)")
    ax.set_xscale("log", base=2)
    ax.set_title("Open-vocabulary inference cost")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    payload = {"config": cfg, "rows": rows, "notes": notes, "peak_rss_mb": peak_rss_mb()}
    json_path, _ = write_results(NAME, payload, fig, out_dir=args.out)
    for line in notes:
        print(line)
    print(json_path)


if __name__ == "__main__":
    main()
