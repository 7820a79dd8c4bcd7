"""Visual-grounding and detection metrics at the dataset level.

Grounding (one predicted box per expression, as in RSVG / MB-ORES tables):

* ``Pr@t``: share of expressions whose predicted box has IoU >= t with the target, for
  t in 0.5, 0.6, 0.7, 0.8, 0.9;
* ``meanIoU``: mean of the per-expression IoUs;
* ``cumIoU``: sum of intersections / sum of unions over the whole set (large objects weigh more).

Detection: COCO mean average precision at IoU 0.5 (``mAP@0.5``) and averaged over IoU
0.50:0.05:0.95 (``mAP@[.5:.95]``), from torchmetrics' ``MeanAveragePrecision`` on the pycocotools
(or faster-coco-eval) backend, so the numbers are those of the COCO evaluator
(101-point interpolated precision, area ranges, ``max_detections`` per image).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from eokit.core.errors import InputError
from eokit.grounding.boxes import box_area

logger = logging.getLogger(__name__)

__all__ = ["PR_THRESHOLDS", "detection_map", "grounding_metrics"]

#: IoU thresholds of the ``Pr@t`` columns.
PR_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)


def _boxes(value: Any, name: str) -> torch.Tensor:
    boxes = torch.as_tensor(np.asarray(value, dtype=np.float64)
                            if not isinstance(value, torch.Tensor) else value).double()
    if boxes.numel() == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputError(f"expected (N, 4) xyxy boxes, got shape {tuple(boxes.shape)}",
                         parameter=name)
    if not torch.isfinite(boxes).all():
        raise InputError("holds non-finite coordinates", parameter=name)
    return boxes


def grounding_metrics(predicted: Any, target: Any, *,
                      thresholds: Sequence[float] = PR_THRESHOLDS) -> dict[str, float]:
    """Pr@t, meanIoU and cumIoU of one predicted box per expression.

    Args:
        predicted: (N, 4) xyxy predicted boxes (pixels), one per expression.
        target: (N, 4) xyxy target boxes, in the same order.
        thresholds: IoU thresholds of the ``Pr@t`` entries.

    Returns:
        ``{"Pr@0.5": ..., ..., "Pr@0.9": ..., "meanIoU": ..., "cumIoU": ..., "count": N}``,
        shares in [0, 1]. A degenerate predicted box counts as IoU 0.

    Raises:
        InputError: shapes that differ or are not (N, 4), no expressions, or a threshold
            outside (0, 1].
    """
    pred, gt = _boxes(predicted, "predicted"), _boxes(target, "target")
    if pred.shape != gt.shape:
        raise InputError(f"{pred.shape[0]} predicted boxes for {gt.shape[0]} targets",
                         parameter="predicted")
    if pred.shape[0] == 0:
        raise InputError("no expressions to score", parameter="target")
    if any(not 0 < t <= 1 for t in thresholds):
        raise InputError(f"must be in (0, 1], got {list(thresholds)}", parameter="thresholds")
    top_left = torch.maximum(pred[:, :2], gt[:, :2])
    bottom_right = torch.minimum(pred[:, 2:], gt[:, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=1)
    union = box_area(pred) + box_area(gt) - intersection
    iou = torch.where(union > 0, intersection / union.clamp(min=1e-12),
                      torch.zeros_like(union))
    out = {f"Pr@{t:g}": float((iou >= t).double().mean()) for t in thresholds}
    out["meanIoU"] = float(iou.mean())
    out["cumIoU"] = float(intersection.sum() / union.sum().clamp(min=1e-12))
    out["count"] = float(pred.shape[0])
    return out


def _backend() -> Literal["pycocotools", "faster_coco_eval"]:
    if importlib.util.find_spec("pycocotools") is not None:
        return "pycocotools"
    if importlib.util.find_spec("faster_coco_eval") is not None:
        return "faster_coco_eval"
    raise InputError("mAP needs pycocotools (pip install pycocotools) or faster-coco-eval",
                     parameter="backend")


def _label_ids(items: Sequence[Mapping[str, Any]], vocabulary: dict[str, int],
               what: str) -> list[torch.Tensor]:
    """Class ids per item; class names are numbered in order of first appearance."""
    out = []
    for number, item in enumerate(items):
        labels = item.get("labels", [])
        if isinstance(labels, torch.Tensor | np.ndarray):
            out.append(torch.as_tensor(labels, dtype=torch.long).reshape(-1))
            continue
        labels = list(labels)
        names = [isinstance(label, str) for label in labels]
        if any(names) and not all(names):
            raise InputError(f"item {number} mixes class names and class ids", parameter=what)
        ids = ([vocabulary.setdefault(label, len(vocabulary)) for label in labels] if any(names)
               else [int(label) for label in labels])
        out.append(torch.tensor(ids, dtype=torch.long))
    return out


def detection_map(predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]],
                  *, max_detections: int = 100, class_metrics: bool = False) -> dict[str, Any]:
    """COCO mAP@0.5 and mAP@[.5:.95] of detections against ground truth.

    Args:
        predictions: One dict per image: ``boxes`` (N, 4) xyxy pixels, ``scores`` (N,),
            ``labels`` (N,) class ids or class names.
        targets: One dict per image, in the same order: ``boxes`` (M, 4), ``labels`` (M,).
        max_detections: Detections kept per image (highest scores), the COCO ``maxDets``; dense
            remote-sensing scenes (DOTA) need more than COCO's 100.
        class_metrics: Also return per-class AP (``per_class``: {label: AP@[.5:.95]}).

    Returns:
        ``{"mAP@0.5", "mAP@0.75", "mAP@[.5:.95]", "mAR@max"}`` (floats; -1 where undefined, e.g.
        no ground truth), plus ``per_class`` when asked.

    Raises:
        InputError: a different number of prediction and target images, malformed boxes, or
            neither pycocotools nor faster-coco-eval installed.
    """
    from torchmetrics.detection import MeanAveragePrecision

    if len(predictions) != len(targets):
        raise InputError(f"{len(predictions)} prediction images for {len(targets)} target "
                         "images", parameter="predictions")
    if max_detections < 1:
        raise InputError(f"must be >= 1, got {max_detections}", parameter="max_detections")
    vocabulary: dict[str, int] = {}
    target_labels = _label_ids(targets, vocabulary, "targets")
    pred_labels = _label_ids(predictions, vocabulary, "predictions")
    preds, gts = [], []
    for number, (pred, gt) in enumerate(zip(predictions, targets, strict=True)):
        boxes = _boxes(pred.get("boxes", []), f"predictions[{number}].boxes").float()
        scores = torch.as_tensor(pred.get("scores", []), dtype=torch.float32).reshape(-1)
        if not boxes.shape[0] == scores.shape[0] == pred_labels[number].shape[0]:
            raise InputError(f"image {number}: {boxes.shape[0]} boxes, {scores.shape[0]} scores, "
                             f"{pred_labels[number].shape[0]} labels", parameter="predictions")
        gt_boxes = _boxes(gt.get("boxes", []), f"targets[{number}].boxes").float()
        if gt_boxes.shape[0] != target_labels[number].shape[0]:
            raise InputError(f"image {number}: {gt_boxes.shape[0]} boxes, "
                             f"{target_labels[number].shape[0]} labels", parameter="targets")
        preds.append({"boxes": boxes, "scores": scores, "labels": pred_labels[number]})
        gts.append({"boxes": gt_boxes, "labels": target_labels[number]})
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend=_backend(),
                                  max_detection_thresholds=[1, 10, int(max_detections)],
                                  class_metrics=class_metrics, extended_summary=True)
    metric.warn_on_many_detections = False  # said once below, in the log, with the fix
    crowded = sum(p["boxes"].shape[0] > max_detections for p in preds)
    if crowded:
        logger.info("%d image(s) hold more than max_detections=%d detections; the lowest-scored "
                    "are ignored, as COCO does (raise max_detections for dense scenes)",
                    crowded, max_detections)
    metric.update(preds, gts)
    result = metric.compute()
    # COCO's summary takes mAP@[.5:.95] at maxDets=100 whatever maxDets holds (-1 otherwise);
    # the same mean over the evaluator's precision table at our max_detections avoids that.
    precision = result["precision"][:, :, :, 0, -1]  # (IoU, recall, class) at area "all"
    out: dict[str, Any] = {
        "mAP@0.5": float(result["map_50"]),
        "mAP@0.75": float(result["map_75"]),
        "mAP@[.5:.95]": _valid_mean(precision),
        "mAR@max": float(result[f"mar_{int(max_detections)}"]),
    }
    if class_metrics:
        names = {i: name for name, i in vocabulary.items()}
        classes = result["classes"].reshape(-1).tolist()
        out["per_class"] = {names.get(int(c), int(c)): _valid_mean(precision[:, :, k])
                            for k, c in enumerate(classes)}
    return out


def _valid_mean(values: torch.Tensor) -> float:
    """Mean of the entries COCO counts (> -1), or -1 when there are none."""
    valid = values[values > -1]
    return float(valid.double().mean()) if valid.numel() else -1.0
