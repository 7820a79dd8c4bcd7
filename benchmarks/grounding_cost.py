"""CPU cost of ``detect`` and ``ground``: milliseconds per 800 x 800 image, 1 and 2 torch threads.

The model has the default widths of ``eokit grounding fit`` (EfficientNet-Lite0 detector,
dim 128, MB-ORES head 128 wide with 2 branch and 2 reasoner layers, MiniLM text encoder); its
weights are random (``pretrained=False``), which changes nothing in the arithmetic. Each call is
what the command does after reading the file: :func:`eokit.grounding.pipeline.detect_array`
(class-name embeddings for the 7 simulator classes, windows, decoding, NMS) and
:func:`~eokit.grounding.pipeline.ground_array` (proposals of every window, the expression's
token embeddings, the head), with the text cache emptied before each call so the text encoder
runs as it does in a fresh command. Two window settings: the default ``--tile 512 --overlap 128``
(4 windows on 800 px) and one 800 px window. Three simulated 800 px scenes (seeds), one warm-up
call, then repeats; the median and the spread over all timed calls are reported.

    python benchmarks/grounding_cost.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, peak_rss_mb, seed_all, write_results  # noqa: E402

NAME = "grounding_cost"


def _scale(quick: bool) -> dict[str, Any]:
    if quick:
        return {"quick": True, "size": 256, "tiles": [128, 256], "overlap": 32, "repeats": 1,
                "scenes": 1, "threads": [1]}
    return {"quick": False, "size": 800, "tiles": [512, 800], "overlap": 128, "repeats": 4,
            "scenes": 3, "threads": [1, 2]}


def _model() -> Any:
    from eokit.core.encoders import build_text_encoder
    from eokit.core.synth.objects import OBJECT_CLASSES
    from eokit.grounding.pipeline import GroundingModel, _build
    from eokit.grounding.train import TextCache

    text = TextCache(build_text_encoder("minilm_l6"))
    config = {"encoder": "efficientnet_lite0", "in_chans": 3, "dim": 128, "head_dim": 128,
              "branch_layers": 2, "reasoner_layers": 2, "text_encoder": "minilm_l6",
              "class_names": list(OBJECT_CLASSES), "train_size": 128, "frozen_bn": False,
              "reflectance_white": 0.3, "multi_branch": True, "selection": "soft",
              "input_view": "window", "head_trained": True}
    detector, head = _build(config, text, False)
    return GroundingModel(detector, head, text, list(OBJECT_CLASSES), config)


def _time(call: Any) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000.0


def main(argv: list[str] | None = None) -> None:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    import torch

    from eokit.core.synth.objects import generate_object_scene
    from eokit.grounding.pipeline import detect_array, ground_array
    from eokit.grounding.train import to_unit

    cfg = _scale(args.quick)
    seed_all(args.seed)
    model = _model()
    names = list(model.class_names)
    scenes = [generate_object_scene(cfg["size"], seed=args.seed + s, n_expressions=2)
              for s in range(cfg["scenes"])]
    images = [to_unit(s.image) for s in scenes]
    expressions = [s.expressions[0].text for s in scenes]
    available = len(os.sched_getaffinity(0))
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for threads in cfg["threads"]:
        if threads > available:
            continue
        torch.set_num_threads(threads)
        for tile in cfg["tiles"]:
            for op in ("detect", "ground"):
                def call(i: int, op: str = op, tile: int = tile) -> None:
                    model.text._tokens.clear()
                    if op == "detect":
                        detect_array(model, images[i], names, tile=tile, overlap=cfg["overlap"])
                    else:
                        ground_array(model, images[i], [expressions[i]], tile=tile,
                                     overlap=cfg["overlap"])

                call(0)  # warm-up
                times = [_time(lambda i=i: call(i)) for i in range(len(images))
                         for _ in range(cfg["repeats"])]
                rows.append({"op": op, "threads": threads, "tile": tile,
                             "windows": 1 if tile >= cfg["size"] else len(
                                 list(_windows(cfg["size"], tile, cfg["overlap"]))),
                             "median_ms": round(statistics.median(times), 1),
                             "min_ms": round(min(times), 1), "max_ms": round(max(times), 1),
                             "calls": len(times)})
                print(rows[-1])
    notes = [
        f"CPU ms per {cfg['size']} x {cfg['size']} image, median over {cfg['scenes']} scenes x "
        f"{cfg['repeats']} repeats after a warm-up; the text encoder runs in every call (as in "
        "a fresh command); file reading and GeoJSON writing are not included.",
        "Shared 2-core machine: other jobs may run at the same time, so min_ms is the better "
        "estimate of the unloaded cost and max_ms shows the interference.",
        "No target was set for this cost; it is measured, not judged.",
    ]
    write_results(NAME, {"quick": args.quick, "config": cfg, "rows": rows, "notes": notes,
                         "peak_rss_mb": round(peak_rss_mb(), 1),
                         "seconds": round(time.perf_counter() - start, 1)},
                  _figure(rows, cfg), out_dir=args.out)


def _windows(size: int, tile: int, overlap: int) -> Any:
    from eokit.grounding.pipeline import _windows as windows

    return windows(size, size, tile, overlap)


def _figure(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    labels = [f"{r['op']}\ntile {r['tile']}\n{r['threads']} thr" for r in rows]
    medians = [r["median_ms"] for r in rows]
    errors = [[r["median_ms"] - r["min_ms"] for r in rows],
              [r["max_ms"] - r["median_ms"] for r in rows]]
    colors = ["#1f77b4" if r["op"] == "detect" else "#ff7f0e" for r in rows]
    ax.bar(range(len(rows)), medians, yerr=errors, color=colors, capsize=3)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("ms per image (median, min-max)")
    ax.set_title(f"grounding detect / ground on a {cfg['size']} px image (CPU)")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
