"""Detection and grounding on the real samples: DOTA v1 (two images) and DIOR-RSVG (one expression).

The shared samples are tiny, so this is a plumbing-and-sanity check on real pixels, not a
benchmark of published numbers:

* **DOTA, held-out image** (``/work/shared/data/grounding/dota_v1_sample``: P0706, 531 ships and
  5 harbours; P1888, 50 large and 14 small vehicles; the five label-only files are skipped).
  The detector trains on 256 px windows of one image and is scored on the other, both ways.
  The two images share no class, so the held-out image's classes are asked for by *name*
  only (open set): this measures transfer to unseen names, which the text-conditioned
  detector is not expected to manage from one image.
* **DOTA, held-out region**: the same two images with their bottom third held out (a box goes
  to the side holding its centre, boxes cut by the border are clipped and kept when half of
  them is on their side); train on the top two thirds of both, score on the bottom thirds.
  Image-disjoint it is not (that is the setting above); it shows what the detector learns
  from real pixels of the classes it is asked for.
* **DIOR-RSVG** (``dior_rsvg_sample``: image 00001, "A green and brown golf field"): the
  region-trained detector's top box for the name "golf field" (zero-shot: no golf field was
  ever seen) against the whole-image box, by IoU with the target. One expression: qualitative.

COCO mAP@0.5 and mAP@[.5:.95] (maxDets 1000, axis-aligned enclosing boxes of the DOTA polygons),
three seeds (weights and order), EfficientNet-Lite0 ImageNet encoder, MiniLM text encoder.
Skips cleanly (exit 0, nothing written) when the data are absent.

    python benchmarks/grounding_real.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, seed_all, write_results  # noqa: E402

NAME = "grounding_real"
DATA = Path("/work/shared/data/grounding")
DOTA = DATA / "dota_v1_sample" / "example"
DIOR = DATA / "dior_rsvg_sample"


def _scale(quick: bool) -> dict[str, Any]:
    if quick:
        return {"quick": True, "seeds": 1, "size": 128, "det_epochs": 1, "pretrained": False,
                "dim": 32, "held_out_fraction": 1 / 3}
    return {"quick": False, "seeds": 3, "size": 256, "det_epochs": 6, "pretrained": True,
            "dim": 128, "held_out_fraction": 1 / 3}


def _region(item: Any, pixels: np.ndarray, part: str, fraction: float) -> Any:
    """The top (``train``) or bottom (``test``) part of an item, boxes by centre, clipped."""
    from eokit.grounding.dataset import ImageItem

    h = pixels.shape[1]
    cut = int(round(h * (1 - fraction)))
    r0, r1 = (0, cut) if part == "train" else (cut, h)
    centre = (item.boxes[:, 1] + item.boxes[:, 3]) / 2
    keep = (centre >= r0) & (centre < r1)
    boxes = item.boxes[keep].copy()
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], r0, r1) - r0
    return ImageItem(item.image, boxes.astype(np.float32),
                     [n for n, k in zip(item.labels, keep, strict=True) if k],
                     array=np.ascontiguousarray(pixels[:, r0:r1]))


def _fit(items: list[Any], cfg: dict[str, Any], seed: int, text: Any, folder: Path) -> Any:
    from eokit.grounding.pipeline import fit_items, load_model

    summary = fit_items(folder, items, size=cfg["size"], view="tile", seed=seed,
                        det_epochs=cfg["det_epochs"], pretrained=cfg["pretrained"],
                        dim=cfg["dim"], text=text)
    return load_model(folder, text=text), summary


def _score(model: Any, items: list[Any], cfg: dict[str, Any]) -> dict[str, Any]:
    from eokit.grounding.evaluate import evaluate_items

    metrics, _ = evaluate_items(model, items, tile=cfg["size"], overlap=cfg["size"] // 4,
                                max_detections=1000)
    det = metrics["detection"]
    return {"mAP@0.5": det["mAP@0.5"], "mAP@[.5:.95]": det["mAP@[.5:.95]"],
            "per_class_AP@[.5:.95]": det.get("per_class"), "objects": int(sum(
                len(i.labels) for i in items))}


def run_seed(seed: int, cfg: dict[str, Any], text: Any, tmp: Path) -> dict[str, Any]:
    import torch

    from eokit.grounding.dataset import encoder_array, load_images
    from eokit.grounding.pipeline import detect_array

    seed_all(seed)
    items = load_images(DOTA, "dota")
    by_name = {i.image.stem: i for i in items}
    out: dict[str, Any] = {"seed": seed}
    start = time.perf_counter()
    for train_name, test_name in (("P0706", "P1888"), ("P1888", "P0706")):
        model, fit = _fit([by_name[train_name]], cfg, seed, text, tmp / f"{seed}_{train_name}")
        out[f"held_out_image_{test_name}"] = {
            "train": train_name, "train_classes": fit["classes"],
            "test_classes": sorted(set(by_name[test_name].labels)),
            **_score(model, [by_name[test_name]], cfg),
            "train_seconds": round(fit["detector_fit"]["seconds"], 1)}
    pixels = {name: encoder_array(item.image) for name, item in by_name.items()}
    fraction = cfg["held_out_fraction"]
    train = [_region(by_name[n], pixels[n], "train", fraction) for n in sorted(by_name)]
    test = [_region(by_name[n], pixels[n], "test", fraction) for n in sorted(by_name)]
    model, fit = _fit(train, cfg, seed, text, tmp / f"{seed}_region")
    out["held_out_region"] = {"train_classes": fit["classes"], **_score(model, test, cfg),
                              "train_seconds": round(fit["detector_fit"]["seconds"], 1)}
    # DIOR-RSVG: zero-shot named-class box vs the whole image
    dior = load_images(DIOR, "dior-rsvg")[0]
    image = encoder_array(dior.image)
    target = torch.as_tensor(dior.boxes[dior.targets[0]])[None]
    dets = detect_array(model, image, ["golf field"], tile=cfg["size"],
                        overlap=cfg["size"] // 4, score_threshold=0.0)
    from eokit.grounding.boxes import elementwise_iou

    h, w = image.shape[-2:]
    whole = torch.tensor([[0.0, 0.0, float(w), float(h)]])
    top = dets["boxes"][:1] if len(dets["boxes"]) else whole
    out["dior_rsvg"] = {"expression": dior.expressions[0],
                        "named_class_box": [round(float(v), 1) for v in top[0]],
                        "named_class_iou": round(float(elementwise_iou(top, target)[0]), 4),
                        "named_class_score": round(float(dets["scores"][0]), 4)
                        if len(dets["scores"]) else None,
                        "whole_image_iou": round(float(elementwise_iou(whole, target)[0]), 4)}
    out["seconds"] = round(time.perf_counter() - start, 1)
    if seed == cfg.get("figure_seed", seed):
        out["_figure"] = {"region_model": model, "test": test, "dior": (image, dior, top)}
    return out


def _mean(runs: list[dict[str, Any]], key: str, metric: str) -> dict[str, float]:
    values = [100 * r[key][metric] for r in runs]
    return {"mean": round(float(np.mean(values)), 2), "std": round(float(np.std(values)), 2)}


def _figure(fig_data: dict[str, Any], cfg: dict[str, Any]) -> Any:
    from matplotlib.figure import Figure

    from eokit.grounding.pipeline import detect_array
    from eokit.grounding.report import _box, _rgb

    model, test = fig_data["region_model"], fig_data["test"]
    fig = Figure(figsize=(15, 5.4))
    for k, item in enumerate(test):
        ax = fig.add_subplot(1, 3, k + 1)
        ax.imshow(_rgb(item.array))
        names = sorted(set(item.labels))
        dets = detect_array(model, item.array, names, tile=cfg["size"],
                            overlap=cfg["size"] // 4, score_threshold=0.3)
        for box in item.boxes:
            _box(ax, box, "#ffffff", 0.8)
        for box in dets["boxes"]:
            _box(ax, box.tolist(), "#ff3030", 1.0)
        ax.set_title(f"{item.image.stem} held-out bottom third: {len(item.labels)} true (white), "
                     f"{len(dets['boxes'])} detected (red, score >= 0.3)", fontsize=8)
        ax.axis("off")
    image, dior, top = fig_data["dior"]
    ax = fig.add_subplot(1, 3, 3)
    ax.imshow(_rgb(image))
    _box(ax, dior.boxes[0], "#ffffff", 2.0, "target")
    _box(ax, top[0].tolist(), "#ffd400", 2.0, "top 'golf field' box")
    ax.set_title(f"DIOR-RSVG 00001: \u201c{dior.expressions[0]}\u201d (zero-shot)", fontsize=8)
    ax.axis("off")
    fig.suptitle("Real samples: region-held-out DOTA detection and a zero-shot DIOR-RSVG query "
                 "(seed 0)", fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    if not (DOTA / "labelTxt").is_dir() or not (DIOR / "Annotations").is_dir():
        print(f"{NAME}: real samples not found under {DATA}; skipped (nothing written)")
        return
    import torch

    torch.set_num_threads(2)
    from eokit.core.encoders import build_text_encoder
    from eokit.grounding.train import TextCache

    cfg = _scale(args.quick)
    cfg["figure_seed"] = args.seed
    text = TextCache(build_text_encoder("minilm_l6"))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_seed(args.seed + s, cfg, text, Path(tmp)) for s in range(cfg["seeds"])]
        figure = _figure(runs[0].pop("_figure"), cfg)
    for run in runs:
        run.pop("_figure", None)
    summary = {key: {m: _mean(runs, key, m) for m in ("mAP@0.5", "mAP@[.5:.95]")}
               for key in ("held_out_image_P1888", "held_out_image_P0706", "held_out_region")}
    summary["dior_rsvg_named_class_iou"] = _mean(runs, "dior_rsvg", "named_class_iou")
    summary["dior_rsvg_whole_image_iou"] = _mean(runs, "dior_rsvg", "whole_image_iou")
    region = summary["held_out_region"]["mAP@0.5"]["mean"]
    notes = [
        "Held-out image: the two DOTA images share no class, so the test classes are asked "
        "for by name only (open set). mAP@0.5 on P1888 (vehicles, detector trained on P0706 "
        f"ships) {summary['held_out_image_P1888']['mAP@0.5']['mean']:.2f} %, on P0706 (ships, "
        f"trained on P1888 vehicles) {summary['held_out_image_P0706']['mAP@0.5']['mean']:.2f} "
        "%" + (": one training image does not teach unseen names." if max(
            summary["held_out_image_P1888"]["mAP@0.5"]["mean"],
            summary["held_out_image_P0706"]["mAP@0.5"]["mean"]) < 5 else "."),
        f"Held-out region (bottom third of both images, classes seen): mAP@0.5 {region:.2f} %, "
        f"mAP@[.5:.95] {summary['held_out_region']['mAP@[.5:.95]']['mean']:.2f} % (mean of "
        f"{cfg['seeds']} seeds); not image-disjoint: the same scenes, other pixels.",
        "DIOR-RSVG: one expression, zero-shot (golf fields never trained): IoU of the top "
        f"'golf field' box {summary['dior_rsvg_named_class_iou']['mean'] / 100:.3f} vs the "
        f"whole image {summary['dior_rsvg_whole_image_iou']['mean'] / 100:.3f}"
        + (" (below the whole-image answer)" if summary["dior_rsvg_named_class_iou"]["mean"]
           < summary["dior_rsvg_whole_image_iou"]["mean"] else "") + ". Qualitative only.",
        "Boxes are the axis-aligned enclosing boxes of DOTA's oriented polygons; DOTA's own "
        "benchmark scores oriented boxes, so these numbers are not comparable to it.",
        "No target was set for these samples; they check the real-data path end to end.",
    ]
    for note in notes:
        print(note)
    write_results(NAME, {"quick": args.quick, "config": cfg, "summary": summary,
                         "notes": notes, "runs": runs,
                         "seconds": round(time.perf_counter() - start, 1)},
                  figure, out_dir=args.out)


if __name__ == "__main__":
    main()
