"""Box maths against hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from eokit.core.errors import InputError
from eokit.grounding import boxes as B


def test_format_round_trip_and_hand_values() -> None:
    xywh = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    xyxy = B.xywh_to_xyxy(xywh)
    assert xyxy.tolist() == [[10.0, 20.0, 40.0, 60.0]]
    assert B.xyxy_to_xywh(xyxy).tolist() == xywh.tolist()
    assert B.xyxy_to_cxcywh(xyxy).tolist() == [[25.0, 40.0, 30.0, 40.0]]
    assert B.cxcywh_to_xyxy(B.xyxy_to_cxcywh(xyxy)).tolist() == xyxy.tolist()


def test_iou_and_giou_hand_computed() -> None:
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    # intersection 1, union 7, enclosing 9 -> IoU 1/7, GIoU 1/7 - 2/9
    assert B.box_iou(a, b).item() == pytest.approx(1 / 7)
    assert B.elementwise_iou(a, b).item() == pytest.approx(1 / 7)
    assert B.generalized_box_iou(a, b).item() == pytest.approx(1 / 7 - 2 / 9)
    assert B.elementwise_giou(a, b).item() == pytest.approx(1 / 7 - 2 / 9)
    # disjoint: IoU 0; boxes [0,1]^2 and [2,3]x[0,1]: enclosing 3, union 2 -> GIoU -1/3
    c = torch.tensor([[2.0, 0.0, 3.0, 1.0]])
    d = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert B.elementwise_iou(c, d).item() == 0.0
    assert B.elementwise_giou(c, d).item() == pytest.approx(-1 / 3)
    assert B.elementwise_giou(a, a).item() == pytest.approx(1.0)


def test_dota_polygon_to_box() -> None:
    # a diamond (45-degree square) centred at (10, 10): enclosing box is twice its area
    poly = [10, 0, 20, 10, 10, 20, 0, 10]
    assert B.polygon_to_box(poly).tolist() == [0.0, 0.0, 20.0, 20.0]
    # the DOTA line "1054 1028 1063 1011 1111 1040 1112 1062 ship 1"
    assert B.polygon_to_box([1054, 1028, 1063, 1011, 1111, 1040, 1112, 1062]).tolist() == [
        1054.0, 1011.0, 1112.0, 1062.0]
    with pytest.raises(InputError, match="polygon"):
        B.polygon_to_box([1, 2, 3, 4])


def test_check_boxes_refuses_outside_and_empty() -> None:
    ok = B.check_boxes(torch.tensor([[0.0, 0.0, 100.5, 50.0]]), 50, 100)
    assert ok.tolist() == [[0.0, 0.0, 100.0, 50.0]]
    with pytest.raises(InputError, match="outside"):
        B.check_boxes(torch.tensor([[0.0, 0.0, 140.0, 50.0]]), 50, 100, source="a.xml")
    with pytest.raises(InputError, match="empty"):
        B.check_boxes(torch.tensor([[5.0, 5.0, 5.0, 9.0]]), 50, 100)


def test_batched_nms_per_class() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]],
                         dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 1, 0])
    keep = B.batched_nms(boxes, scores, labels, 0.5)
    assert keep.tolist() == [0, 2, 3]  # box 1 suppressed by box 0; box 2 is another class
