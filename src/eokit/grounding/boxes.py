"""Axis-aligned box maths: formats, IoU/GIoU, DOTA polygons to boxes, clipping and NMS.

Boxes are ``(N, 4)`` float tensors in pixel units. ``xyxy`` is ``(x_min, y_min, x_max, y_max)``
with x to the right and y down (image rows), ``xywh`` is ``(x_min, y_min, width, height)`` (COCO)
and ``cxcywh`` is ``(centre_x, centre_y, width, height)`` (DETR heads, usually normalised to 0-1).
Pairwise IoU, GIoU, format conversion and NMS come from ``torchvision.ops``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import ops

from eokit.core.errors import InputError

__all__ = [
    "batched_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "check_boxes",
    "clip_boxes",
    "cxcywh_to_xyxy",
    "elementwise_giou",
    "elementwise_iou",
    "generalized_box_iou",
    "polygon_to_box",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "xyxy_to_xywh",
]


def box_convert(boxes: torch.Tensor, in_fmt: str, out_fmt: str) -> torch.Tensor:
    """Convert ``(N, 4)`` boxes between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"``."""
    return ops.box_convert(boxes, in_fmt=in_fmt, out_fmt=out_fmt)


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(x, y, w, h)`` -> ``(x_min, y_min, x_max, y_max)``."""
    return ops.box_convert(boxes, in_fmt="xywh", out_fmt="xyxy")


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """``(x_min, y_min, x_max, y_max)`` -> ``(x, y, w, h)``."""
    return ops.box_convert(boxes, in_fmt="xyxy", out_fmt="xywh")


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(cx, cy, w, h)`` -> ``(x_min, y_min, x_max, y_max)``."""
    return ops.box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """``(x_min, y_min, x_max, y_max)`` -> ``(cx, cy, w, h)``."""
    return ops.box_convert(boxes, in_fmt="xyxy", out_fmt="cxcywh")


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area of ``(N, 4)`` xyxy boxes (0 for degenerate ones)."""
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``(N, M)`` of xyxy boxes (torchvision)."""
    return ops.box_iou(a, b)


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise generalised IoU ``(N, M)`` of xyxy boxes, in [-1, 1] (torchvision)."""
    return ops.generalized_box_iou(a, b)


def _intersection_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    top_left = torch.maximum(a[..., :2], b[..., :2])
    bottom_right = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    return inter, union


def elementwise_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """IoU of matching rows ``a[i]`` and ``b[i]`` (``(N,)``), differentiable."""
    inter, union = _intersection_union(a, b)
    return inter / union.clamp(min=eps)


def elementwise_giou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Generalised IoU of matching rows (``(N,)``, in [-1, 1]), differentiable.

    GIoU = IoU - (|C| - |A u B|) / |C| with C the smallest box enclosing both (Rezatofighi et al.
    2019); it stays informative when the boxes do not overlap.
    """
    inter, union = _intersection_union(a, b)
    iou = inter / union.clamp(min=eps)
    enclosing = box_area(torch.cat([torch.minimum(a[..., :2], b[..., :2]),
                                    torch.maximum(a[..., 2:], b[..., 2:])], dim=-1))
    return iou - (enclosing - union) / enclosing.clamp(min=eps)


def polygon_to_box(polygon: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Axis-aligned xyxy box enclosing a polygon (a DOTA oriented box ``x1 y1 ... x4 y4``).

    The oriented box is replaced by the smallest axis-aligned rectangle that contains all its
    corners. For an object rotated by 45 degrees this rectangle is up to twice the object's area,
    so IoU against such boxes is lower than the oriented IoU a DOTA-OBB benchmark reports.

    Args:
        polygon: ``2k`` coordinates ``x1, y1, ..., xk, yk`` (k >= 3) or a ``(..., 2k)`` tensor.

    Returns:
        ``(4,)`` (or ``(..., 4)``) float tensor ``x_min, y_min, x_max, y_max``.
    """
    coords = torch.as_tensor(polygon, dtype=torch.float32)
    if coords.shape[-1] % 2 or coords.shape[-1] < 6:
        raise InputError(f"a polygon needs an even number >= 6 of coordinates, got "
                         f"{coords.shape[-1]}", parameter="polygon")
    points = coords.reshape(*coords.shape[:-1], -1, 2)
    return torch.cat([points.amin(dim=-2), points.amax(dim=-2)], dim=-1)


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Clip xyxy boxes to the image ``[0, width] x [0, height]``."""
    return ops.clip_boxes_to_image(boxes, (int(height), int(width)))


def check_boxes(boxes: torch.Tensor, height: int, width: int, *, source: str = "boxes",
                tolerance_px: float = 1.0) -> torch.Tensor:
    """Refuse boxes that are degenerate or fall outside the image; clip sub-pixel overshoots.

    Args:
        boxes: ``(N, 4)`` xyxy pixel boxes.
        height: Image height in pixels.
        width: Image width in pixels.
        source: What the boxes come from (file name), named in the error.
        tolerance_px: Overshoot beyond the border that is clipped instead of refused (annotation
            tools often write ``x_max = width``, or a pixel more).

    Returns:
        The boxes clipped to the image.

    Raises:
        InputError: a non-finite box, ``x_max <= x_min`` or ``y_max <= y_min``, or a box that
            reaches more than ``tolerance_px`` outside the image.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if boxes.numel() == 0:
        return boxes
    bad = ~torch.isfinite(boxes).all(dim=1)
    bad |= (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bad.any():
        index = int(bad.nonzero()[0])
        raise InputError(f"box {index} {boxes[index].tolist()} is empty or not finite "
                         "(expected x_min < x_max, y_min < y_max)", parameter=source)
    outside = ((boxes[:, 0] < -tolerance_px) | (boxes[:, 1] < -tolerance_px)
               | (boxes[:, 2] > width + tolerance_px) | (boxes[:, 3] > height + tolerance_px))
    if outside.any():
        index = int(outside.nonzero()[0])
        raise InputError(f"box {index} {[round(v, 1) for v in boxes[index].tolist()]} lies outside "
                         f"the {width}x{height} image", parameter=source)
    return clip_boxes(boxes, height, width)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                iou_threshold: float = 0.5) -> torch.Tensor:
    """Indices kept by per-class non-maximum suppression, by decreasing score (torchvision)."""
    if not 0.0 < iou_threshold <= 1.0:
        raise InputError(f"must be in (0, 1], got {iou_threshold}", parameter="iou_threshold")
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    return ops.batched_nms(boxes.float(), scores.float(), labels.long(), float(iou_threshold))
