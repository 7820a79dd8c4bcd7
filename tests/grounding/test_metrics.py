"""Grounding and detection metrics against hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from eokit.core.errors import InputError
from eokit.grounding.metrics import detection_map, grounding_metrics


def test_grounding_metrics_by_hand() -> None:
    target = [[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 10, 20], [20, 20, 30, 30]]
    predicted = [[0, 0, 10, 10],  # IoU 1, intersection 100, union 100
                 [0, 0, 10, 10],  # IoU 50 / 150
                 [0, 0, 10, 10],  # IoU 100 / 200 = 0.5 (counts for Pr@0.5)
                 [0, 0, 10, 10]]  # disjoint: 0 / 200
    out = grounding_metrics(torch.tensor(predicted, dtype=torch.float32), target)
    assert out["Pr@0.5"] == pytest.approx(2 / 4)
    for t in ("0.6", "0.7", "0.8", "0.9"):
        assert out[f"Pr@{t}"] == pytest.approx(1 / 4)
    assert out["meanIoU"] == pytest.approx((1 + 1 / 3 + 0.5 + 0) / 4)
    assert out["cumIoU"] == pytest.approx((100 + 50 + 100 + 0) / (100 + 150 + 200 + 200))
    assert out["count"] == 4


def test_grounding_metrics_edge_cases() -> None:
    # a degenerate prediction scores 0, it does not crash
    out = grounding_metrics([[5, 5, 5, 5]], [[0, 0, 10, 10]])
    assert out["meanIoU"] == 0 and out["Pr@0.5"] == 0
    assert grounding_metrics([[0, 0, 10, 10]], [[0, 0, 10, 10]], thresholds=(0.95,)) == {
        "Pr@0.95": 1.0, "meanIoU": 1.0, "cumIoU": 1.0, "count": 1.0}
    with pytest.raises(InputError, match="2 predicted boxes for 1 targets"):
        grounding_metrics([[0, 0, 1, 1], [0, 0, 1, 1]], [[0, 0, 1, 1]])
    with pytest.raises(InputError, match="no expressions"):
        grounding_metrics([], [])
    with pytest.raises(InputError, match="thresholds"):
        grounding_metrics([[0, 0, 1, 1]], [[0, 0, 1, 1]], thresholds=(0.0,))
    with pytest.raises(InputError, match=r"predicted: expected \(N, 4\)"):
        grounding_metrics([[0, 0, 1]], [[0, 0, 1, 1]])


def test_detection_map_by_hand() -> None:
    pytest.importorskip("pycocotools")
    # IoU 0.62: a hit at thresholds 0.50, 0.55, 0.60 out of ten -> mAP@[.5:.95] = 0.3
    out = detection_map([{"boxes": [[0, 0, 62, 10]], "scores": [0.9], "labels": [1]}],
                        [{"boxes": [[0, 0, 100, 10]], "labels": [1]}])
    assert out["mAP@0.5"] == pytest.approx(1.0)
    assert out["mAP@0.75"] == pytest.approx(0.0)
    assert out["mAP@[.5:.95]"] == pytest.approx(0.3)
    # two objects; the higher-scored detection is a false positive, the second a hit:
    # precision 0.5 up to recall 0.5 -> 51 of the 101 recall points at 0.5
    out = detection_map(
        [{"boxes": [[50, 50, 60, 60], [0, 0, 10, 10]], "scores": [0.9, 0.8],
          "labels": ["ship", "ship"]}],
        [{"boxes": [[0, 0, 10, 10], [100, 100, 110, 110]], "labels": ["ship", "ship"]}],
        class_metrics=True)
    assert out["mAP@0.5"] == pytest.approx(51 * 0.5 / 101)
    assert out["mAP@[.5:.95]"] == pytest.approx(51 * 0.5 / 101)
    assert out["per_class"] == {"ship": pytest.approx(51 * 0.5 / 101)}
    # a class detected perfectly and one never detected: the mean over classes is 0.5
    out = detection_map([{"boxes": [[0, 0, 10, 10]], "scores": [0.7], "labels": ["plane"]}],
                        [{"boxes": [[0, 0, 10, 10], [30, 30, 40, 40]],
                          "labels": ["plane", "tank"]}], class_metrics=True)
    assert out["mAP@0.5"] == pytest.approx(0.5)
    assert out["per_class"] == {"plane": pytest.approx(1.0), "tank": pytest.approx(0.0)}


def test_detection_map_max_detections_and_checks() -> None:
    pytest.importorskip("pycocotools")
    boxes = [[float(10 * i), 0.0, float(10 * i + 8), 8.0] for i in range(150)]
    targets = [{"boxes": boxes, "labels": [0] * 150}]
    predictions = [{"boxes": boxes, "scores": [1.0 - i / 1000 for i in range(150)],
                    "labels": [0] * 150}]
    capped = detection_map(predictions, targets)  # COCO's 100 per image: recall 2/3 at most
    assert capped["mAR@max"] == pytest.approx(100 / 150)
    dense = detection_map(predictions, targets, max_detections=200)
    assert dense["mAP@0.5"] == pytest.approx(1.0) and dense["mAP@[.5:.95]"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="1 prediction images for 2 target images"):
        detection_map(predictions, targets * 2)
    with pytest.raises(InputError, match="mixes class names and class ids"):
        detection_map([{"boxes": [], "scores": [], "labels": []}],
                      [{"boxes": [[0, 0, 1, 1], [0, 0, 2, 2]], "labels": ["a", 1]}])
    with pytest.raises(InputError, match="image 0: 1 boxes, 2 scores"):
        detection_map([{"boxes": [[0, 0, 1, 1]], "scores": [0.5, 0.4], "labels": [0]}],
                      [{"boxes": [[0, 0, 1, 1]], "labels": [0]}])
