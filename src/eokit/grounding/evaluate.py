"""Dataset-level scores of a saved grounding model: VG metrics, detection mAP, per-expression CSV.

The model runs on every image exactly as ``eokit grounding detect`` / ``ground`` run on one
(:func:`eokit.grounding.pipeline.detect_array`, :func:`~eokit.grounding.pipeline.ground_array`),
so the numbers describe the commands users call. Every result names the split it uses: the split
file and its sha256 when a split folder is given, or "all" (every image of the folder, possibly
including training images, which the output then says).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from eokit.core.errors import InputError
from eokit.grounding.dataset import ImageItem, SplitInfo

logger = logging.getLogger(__name__)

__all__ = ["CSV_FILE", "METRICS_FILE", "evaluate_items", "evaluate_model"]

METRICS_FILE = "metrics.json"
CSV_FILE = "expressions.csv"


def _pixels(item: ImageItem, model: Any) -> Any:
    from eokit.grounding.dataset import encoder_array

    if item.array is not None:
        return item.array
    return encoder_array(item.image, int(model.config["in_chans"]),
                         float(model.config.get("reflectance_white", 0.3)))


def evaluate_items(model: Any, items: Sequence[ImageItem], *, tile: int = 512,
                   overlap: int = 128, max_detections: int = 300,
                   score_threshold: float = 0.05) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Detection and grounding scores of ``model`` on ``items``.

    Returns:
        (metrics, one row per expression: image, expression, kind, target and predicted box,
        IoU, probability of the chosen proposal).
    """
    from eokit.grounding.boxes import elementwise_iou
    from eokit.grounding.metrics import detection_map, grounding_metrics
    from eokit.grounding.pipeline import detect_array, ground_array

    if not items:
        raise InputError("no image to evaluate", parameter="data")
    names = list(model.class_names)
    names += sorted({n for i in items for n in i.labels} - set(names))
    unseen = [n for n in names if n not in model.class_names]
    if unseen:
        logger.warning("classes not in the model's vocabulary are searched by name (open set): "
                       "%s", ", ".join(unseen))
    grounds = bool(model.config.get("head_trained", True))
    predictions, targets, rows = [], [], []
    predicted, wanted = [], []
    start = time.perf_counter()
    for number, item in enumerate(items):
        pixels = _pixels(item, model)
        dets = detect_array(model, pixels, names, tile=tile, overlap=overlap,
                            score_threshold=score_threshold)
        predictions.append({"boxes": dets["boxes"], "scores": dets["scores"],
                            "labels": [names[int(k)] for k in dets["labels"]]})
        targets.append({"boxes": torch.as_tensor(item.boxes).reshape(-1, 4),
                        "labels": list(item.labels)})
        if item.expressions and grounds:
            answer = ground_array(model, pixels, item.expressions, tile=tile, overlap=overlap)
            target = torch.as_tensor(item.boxes[item.targets]).reshape(-1, 4).float()
            iou = elementwise_iou(answer["boxes"], target)
            for j, text in enumerate(item.expressions):
                rows.append({"image": str(item.image), "expression": text,
                             "kind": item.kinds[j] if j < len(item.kinds) else "",
                             "class": item.labels[item.targets[j]],
                             "target_box_px": [round(float(v), 1) for v in target[j]],
                             "predicted_box_px": [round(float(v), 1) for v in answer["boxes"][j]],
                             "iou": round(float(iou[j]), 4),
                             "probability": round(float(answer["probs"][j].max()), 4)})
            predicted.append(answer["boxes"])
            wanted.append(target)
        if (number + 1) % max(1, len(items) // 10) == 0:
            logger.info("evaluated %d/%d images (%.0f s)", number + 1, len(items),
                        time.perf_counter() - start)
    metrics: dict[str, Any] = {"images": len(items),
                               "detection": detection_map(predictions, targets,
                                                          max_detections=max_detections,
                                                          class_metrics=True),
                               "detection_labels_complete": all(i.complete for i in items),
                               "classes_outside_vocabulary": unseen}
    if not metrics["detection_labels_complete"]:
        metrics["detection_note"] = ("the annotations label only some objects per image "
                                     "(referring-expression data): unlabelled objects count "
                                     "as false positives, so mAP is a lower bound")
    if predicted:
        metrics["grounding"] = grounding_metrics(torch.cat(predicted), torch.cat(wanted))
        kinds = sorted({r["kind"] for r in rows if r["kind"]})
        metrics["grounding_meanIoU_by_kind"] = {
            k: round(sum(r["iou"] for r in rows if r["kind"] == k)
                     / sum(r["kind"] == k for r in rows), 4) for k in kinds}
    elif not grounds:
        metrics["grounding"] = None
        metrics["grounding_note"] = "the model's grounding head is untrained (detection data)"
    else:
        metrics["grounding"] = None
        metrics["grounding_note"] = "the data hold no referring expression"
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    return metrics, rows


def _write(out_dir: Path, metrics: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Path]:
    from eokit.core.raster import atomic_write

    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / METRICS_FILE) as tmp:
        Path(tmp).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    columns = ["image", "expression", "kind", "class", "target_box_px", "predicted_box_px",
               "iou", "probability"]
    with atomic_write(out_dir / CSV_FILE) as tmp, open(tmp, "w", newline="",
                                                           encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "target_box_px": " ".join(map(str, row["target_box_px"])),
                             "predicted_box_px": " ".join(map(str, row["predicted_box_px"]))})
    return {"metrics": out_dir / METRICS_FILE, "expressions": out_dir / CSV_FILE}


def evaluate_model(model_dir: str | Path, out_dir: str | Path, *, data: str | Path | None = None,
                   fmt: str | None = None, split_dir: str | Path | None = None,
                   split_name: str = "test", simulate: int | None = None, size: int = 128,
                   seed: int = 0, expression_mix: str = "mixed", tile: int = 512,
                   overlap: int = 128, max_detections: int = 300,
                   model: Any = None) -> dict[str, Any]:
    """Evaluate a saved model on a records folder or on simulated scenes.

    Args:
        model_dir: Model folder (``model.json``, ``model.safetensors``).
        out_dir: Where ``metrics.json`` and ``expressions.csv`` go.
        data: Records folder (or COCO json); with ``fmt``.
        fmt: One of :data:`eokit.grounding.dataset.FORMATS`.
        split_dir: Split folder (``<name>.txt`` in sha256sum format); verified, then only
            images of ``split_name`` are scored. Without it every image is scored.
        split_name: Split to score.
        simulate: Number of simulated scenes instead of ``data``.
        size: Side of the simulated scenes.
        seed: Seed of the simulated scenes (use another than the training seed).
        expression_mix: Expression style of the simulated scenes.
        tile: Window for scenes larger than it.
        overlap: Window overlap.
        max_detections: COCO ``maxDets`` (dense scenes need more than 100).
        model: An already loaded :class:`~eokit.grounding.pipeline.GroundingModel`.

    Returns:
        The metrics (also written), with ``split`` and the output files.
    """
    from eokit.grounding.dataset import assign_split, load_images, simulated_images
    from eokit.grounding.pipeline import load_model

    if (data is None) == (simulate is None):
        raise InputError("give either a records folder (--data with --format) or --simulate",
                         parameter="data")
    model = load_model(model_dir) if model is None else model
    if simulate is not None:
        if simulate < 1:
            raise InputError(f"must be >= 1, got {simulate}", parameter="simulate")
        if size % 32:
            raise InputError(f"must be a multiple of 32, got {size}", parameter="size")
        items = simulated_images(simulate, size, seed, expression_mix)
        split: dict[str, Any] = {"split": "simulated", "scenes": simulate, "size": size,
                                 "seed": seed, "expression_mix": expression_mix}
    else:
        if fmt is None:
            raise InputError("give the dataset format with --data", parameter="format")
        items = load_images(data, fmt)  # type: ignore[arg-type]
        if split_dir is not None:
            groups, info = assign_split(items, split_dir=split_dir)
            if split_name not in groups:
                raise InputError(f"no split {split_name!r} in {split_dir}; it holds "
                                 f"{', '.join(groups)}", parameter="split-name")
            items = groups[split_name]
            info.name = split_name
            if not items:
                raise InputError(f"split {split_name!r} holds none of these images",
                                 parameter="split-name")
        else:
            logger.warning("no split folder given: every image of %s is scored, training "
                           "images included if the model saw them", data)
            info = SplitInfo("all", None, {}, {"all": len(items)}, False)
        split = {"data": str(data), "format": fmt, **info.describe()}
    metrics, rows = evaluate_items(model, items, tile=tile, overlap=overlap,
                                   max_detections=max_detections)
    trained = model.config.get("trained_on")
    metrics = {"model": str(model_dir), "split": split, **metrics,
               "model_trained_on": trained if trained is not None else "simulated scenes"}
    files = _write(Path(out_dir), metrics, rows)
    return {**metrics, "files": {k: str(v) for k, v in files.items()}}
