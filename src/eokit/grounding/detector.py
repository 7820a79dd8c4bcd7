"""Open-set, text-conditioned object detector on the catalogue encoders.

A centre-based (CenterNet/FCOS-style) detector whose class scores are similarities between a
dense image embedding and the embeddings of class *names*, so any vocabulary can be asked for
at inference time:

* image side: a multi-scale encoder (:func:`eokit.core.encoders.build_image_encoder`, the
  ImageNet EfficientNet-Lite by default) and a small top-down pyramid fused at stride 8;
* text side: the sentence embedding of a prompt per class name (``"a satellite image of a
  {name}"``), computed by a frozen text encoder (MiniLM by default) and projected linearly;
* per output cell: ``logit_k = exp(s) * cos(e_cell, t_k) + b``, and the distances from the
  cell centre to the box's four sides (pixels, softplus).

Training targets are per-class Gaussian heat maps at the box centres (the penalty-reduced
focal loss of CenterNet) and L1 + GIoU on the boxes decoded at the cells near each centre.
An image labelled only partially (a referring expression names one object; the others are
unlabelled, not background) contributes its positives and boxes but no negatives
(``complete=False`` in its target), which is the partially supervised framing of MB-ORES.
Oriented boxes are handled as their axis-aligned enclosing boxes (:mod:`eokit.grounding.boxes`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eokit.core.errors import InputError
from eokit.grounding.boxes import batched_nms, clip_boxes, elementwise_giou

logger = logging.getLogger(__name__)

__all__ = [
    "PROMPT",
    "TextConditionedDetector",
    "class_embeddings",
    "decode_detections",
    "detection_loss",
    "encode_targets",
    "proposals",
]

#: Prompt template for class-name embeddings.
PROMPT = "a satellite image of a {}"


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4) or 1, channels)


def _conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), _norm(out_ch),
                         nn.ReLU(inplace=True))


class TextConditionedDetector(nn.Module):
    """Detector whose class scores are image-text similarities.

    Args:
        encoder: Image encoder name (see :func:`eokit.core.encoders.build_image_encoder`).
        pretrained: Encoder weights (False, True = catalogue, or a local file).
        in_chans: Image bands.
        text_dim: Width of the class-name embeddings given to :meth:`forward`.
        dim: Width of the pyramid and the joint embedding.
        frozen_bn: Freeze the encoder's BatchNorm (small batches, pretrained weights).
        image_encoder: A ready encoder instead of ``encoder``/``pretrained`` (any module with
            ``normalize``, ``channels``, ``strides`` and a list-of-maps ``forward``).

    Attributes:
        stride: Output stride of the score and box maps (8).
    """

    stride = 8

    def __init__(self, *, encoder: str = "efficientnet_lite0", pretrained: bool | str = False,
                 in_chans: int = 3, text_dim: int = 384, dim: int = 128,
                 frozen_bn: bool = False, image_encoder: nn.Module | None = None) -> None:
        super().__init__()
        if image_encoder is None:
            from eokit.core.encoders import build_image_encoder

            image_encoder = build_image_encoder(encoder, pretrained=pretrained, in_chans=in_chans,
                                                frozen_bn=frozen_bn)
        self.encoder = image_encoder
        strides = list(image_encoder.strides)  # type: ignore[union-attr]
        channels = list(image_encoder.channels)  # type: ignore[union-attr]
        self.levels = [strides.index(s) for s in (8, 16, 32) if s in strides]
        if not self.levels or strides[self.levels[0]] != self.stride:
            raise InputError(f"the image encoder has no stride-8 map (strides {strides})",
                             parameter="encoder")
        self.lateral = nn.ModuleList(nn.Conv2d(channels[i], dim, 1) for i in self.levels)
        self.smooth = _conv(dim, dim)
        self.cls_tower = nn.Sequential(_conv(dim, dim), _conv(dim, dim))
        self.embed = nn.Conv2d(dim, dim, 1)
        self.box_tower = nn.Sequential(_conv(dim, dim), _conv(dim, dim))
        self.box_out = nn.Conv2d(dim, 4, 3, padding=1)
        self.text_proj = nn.Linear(text_dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-math.log((1 - 0.01) / 0.01)))
        self.dim, self.text_dim = dim, text_dim

    def features(self, image: Tensor) -> Tensor:
        """(B, C, H, W) 0-1 image -> (B, dim, H/8, W/8) fused pyramid features."""
        maps = self.encoder(self.encoder.normalize(image))  # type: ignore[operator]
        out = self.lateral[-1](maps[self.levels[-1]])
        for lateral, level in zip(list(self.lateral)[-2::-1], self.levels[-2::-1], strict=True):
            finer = lateral(maps[level])
            out = finer + F.interpolate(out, size=finer.shape[-2:], mode="nearest")
        return self.smooth(out)  # type: ignore[no-any-return]

    def forward(self, image: Tensor, class_embeddings: Tensor) -> dict[str, Tensor]:
        """Score and box maps for the given class-name embeddings.

        Args:
            image: (B, C, H, W) 0-1 values, H and W multiples of 32.
            class_embeddings: (K, text_dim) one embedding per class name.

        Returns:
            ``logits`` (B, K, h, w), ``ltrb`` (B, 4, h, w) distances in pixels from each cell
            centre to the box sides, ``features`` (B, dim, h, w), ``embedding`` (B, dim, h, w)
            the L2-normalised joint embedding.
        """
        if image.shape[-1] % 32 or image.shape[-2] % 32:
            raise InputError(f"image sides must be multiples of 32, got {tuple(image.shape[-2:])}",
                             parameter="image")
        if class_embeddings.ndim != 2 or class_embeddings.shape[1] != self.text_dim:
            raise InputError(f"expected (K, {self.text_dim}) class embeddings, got "
                             f"{tuple(class_embeddings.shape)}", parameter="class_embeddings")
        feats = self.features(image)
        embedding = F.normalize(self.embed(self.cls_tower(feats)), dim=1)
        text = F.normalize(self.text_proj(class_embeddings.to(feats.dtype)), dim=-1)
        logits = torch.einsum("bdhw,kd->bkhw", embedding, text)
        logits = logits * self.logit_scale.exp().clamp(max=100.0) + self.logit_bias
        ltrb = F.softplus(self.box_out(self.box_tower(feats))) * self.stride
        return {"logits": logits, "ltrb": ltrb, "features": feats, "embedding": embedding}


def _cell_centres(h: int, w: int, stride: int, device: torch.device) -> tuple[Tensor, Tensor]:
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * stride
    return ys, xs


def encode_targets(targets: Sequence[dict[str, Any]], num_classes: int, size: tuple[int, int],
                   stride: int = 8, *, box_cells: float = 0.5) -> dict[str, Tensor]:
    """Heat maps and box targets of a batch.

    Args:
        targets: Per image ``boxes`` (N, 4) xyxy pixels and ``labels`` (N,) class indices;
            optional ``complete`` (default True): every object of the image is labelled.
        num_classes: K.
        size: (H, W) of the images.
        stride: Output stride.
        box_cells: Cells whose heat is at least this value (and lie inside the box) carry a
            box target.

    Returns:
        ``heat`` (B, K, h, w) Gaussian peaks (1 at each centre cell), ``neg_weight`` (B, 1, 1, 1)
        0 for partially labelled images, ``box`` (B, 4, h, w) target xyxy, ``box_weight``
        (B, h, w).
    """
    h, w = size[0] // stride, size[1] // stride
    b = len(targets)
    heat = torch.zeros(b, num_classes, h, w)
    box = torch.zeros(b, 4, h, w)
    box_weight = torch.zeros(b, h, w)
    owner_heat = torch.zeros(b, h, w)
    neg = torch.ones(b, 1, 1, 1)
    ys, xs = _cell_centres(h, w, stride, torch.device("cpu"))
    for i, target in enumerate(targets):
        if not target.get("complete", True):
            neg[i] = 0.0
        boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(target["labels"], dtype=torch.int64).reshape(-1)
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise InputError(f"label index outside 0..{num_classes - 1}", parameter="labels")
        for (x0, y0, x1, y1), k in zip(boxes.tolist(), labels.tolist(), strict=True):
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            sx = max((x1 - x0) / (6.0 * stride), 0.5)
            sy = max((y1 - y0) / (6.0 * stride), 0.5)
            gx = torch.exp(-(((xs - cx) / stride) ** 2) / (2 * sx * sx))
            gy = torch.exp(-(((ys - cy) / stride) ** 2) / (2 * sy * sy))
            g = gy[:, None] * gx[None, :]
            ci = min(int(cy // stride), h - 1)
            cj = min(int(cx // stride), w - 1)
            g[ci, cj] = 1.0
            heat[i, k] = torch.maximum(heat[i, k], g)
            inside = ((xs[None, :] > x0) & (xs[None, :] < x1) & (ys[:, None] > y0)
                      & (ys[:, None] < y1))
            take = ((g >= box_cells) & inside) | (g == 1.0)
            take &= g > owner_heat[i]  # a cell regresses the object whose centre is nearest
            owner_heat[i] = torch.where(take, g, owner_heat[i])
            box[i, :, take] = torch.tensor([x0, y0, x1, y1])[:, None]
            box_weight[i] = torch.where(take, g, box_weight[i])
    return {"heat": heat, "neg_weight": neg, "box": box, "box_weight": box_weight}


def _ltrb_to_xyxy(ltrb: Tensor, stride: int) -> Tensor:
    """(B, 4, h, w) distances -> (B, 4, h, w) xyxy boxes in pixels."""
    h, w = ltrb.shape[-2:]
    ys, xs = _cell_centres(h, w, stride, ltrb.device)
    cx, cy = xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)
    return torch.stack([cx - ltrb[:, 0], cy - ltrb[:, 1], cx + ltrb[:, 2], cy + ltrb[:, 3]], 1)


def detection_loss(out: dict[str, Tensor], encoded: dict[str, Tensor], stride: int = 8, *,
                   box_weight: float = 2.0) -> dict[str, Tensor]:
    """Penalty-reduced focal loss on the heat maps plus L1 + GIoU on the boxes.

    Returns:
        ``loss`` (total) and its parts ``focal``, ``l1``, ``giou``.
    """
    logits = out["logits"]
    heat = encoded["heat"].to(logits.device)
    p = torch.sigmoid(logits.float()).clamp(1e-6, 1 - 1e-6)
    pos = heat.eq(1.0).float()
    n_pos = pos.sum().clamp(min=1.0)
    pos_loss = -(F.logsigmoid(logits.float()) * (1 - p) ** 2 * pos).sum()
    neg_w = (1 - heat) ** 4 * (1 - pos) * encoded["neg_weight"].to(logits.device)
    neg_loss = -(F.logsigmoid(-logits.float()) * p**2 * neg_w).sum()
    focal = (pos_loss + neg_loss) / n_pos
    weight = encoded["box_weight"].to(logits.device)
    mask = weight > 0
    if mask.any():
        pred = _ltrb_to_xyxy(out["ltrb"].float(), stride).permute(0, 2, 3, 1)[mask]
        target = encoded["box"].to(logits.device).permute(0, 2, 3, 1)[mask]
        wts = weight[mask]
        scale = (target[:, 2:] - target[:, :2]).clamp(min=1.0).repeat(1, 2)
        l1 = ((pred - target).abs() / scale).sum(1)
        giou = 1 - elementwise_giou(pred, target)
        l1 = (l1 * wts).sum() / wts.sum()
        giou = (giou * wts).sum() / wts.sum()
    else:
        l1 = giou = logits.sum() * 0.0
    return {"loss": focal + box_weight * (l1 + giou), "focal": focal.detach(),
            "l1": l1.detach(), "giou": giou.detach()}


def _peaks(scores: Tensor) -> Tensor:
    """Keep local maxima of (B, K, h, w) scores over 3 x 3 neighbourhoods (others 0)."""
    pooled = F.max_pool2d(scores, 3, stride=1, padding=1)
    return scores * (pooled == scores)


@torch.no_grad()
def decode_detections(out: dict[str, Tensor], size: tuple[int, int], stride: int = 8, *,
                      score_threshold: float = 0.1, top_k: int = 100,
                      iou_threshold: float = 0.5) -> list[dict[str, Tensor]]:
    """Boxes, scores and labels per image: score-map peaks, then per-class NMS.

    Returns:
        Per image ``boxes`` (N, 4) xyxy pixels clipped to the image, ``scores`` (N,),
        ``labels`` (N,) class indices, ``cells`` (N,) flat cell index of each detection.
    """
    scores = _peaks(torch.sigmoid(out["logits"].float()))
    b, k, h, w = scores.shape
    boxes = _ltrb_to_xyxy(out["ltrb"].float(), stride).flatten(2)  # (B, 4, h*w)
    results = []
    for i in range(b):
        flat = scores[i].flatten()
        n = min(top_k, flat.numel())
        value, index = flat.topk(n)
        keep = value >= score_threshold
        value, index = value[keep], index[keep]
        labels, cells = index // (h * w), index % (h * w)
        bx = clip_boxes(boxes[i][:, cells].T, size[0], size[1])
        ok = (bx[:, 2] > bx[:, 0]) & (bx[:, 3] > bx[:, 1])
        bx, value, labels, cells = bx[ok], value[ok], labels[ok], cells[ok]
        order = batched_nms(bx, value, labels, iou_threshold)
        results.append({"boxes": bx[order], "scores": value[order], "labels": labels[order],
                        "cells": cells[order]})
    return results


@torch.no_grad()
def proposals(out: dict[str, Tensor], size: tuple[int, int], stride: int = 8, *,
              num: int = 16, iou_threshold: float = 0.7) -> dict[str, Tensor]:
    """Class-agnostic top proposals of a batch, padded to ``num`` (for the grounding head).

    Returns:
        ``boxes`` (B, N, 4) xyxy pixels, ``scores`` (B, N), ``labels`` (B, N) best class,
        ``class_probs`` (B, N, K), ``features`` (B, N, dim) pyramid features at each
        proposal's cell, ``mask`` (B, N) True for real proposals.
    """
    logits = out["logits"].float()
    probs = torch.sigmoid(logits)
    best, label = probs.max(1)  # (B, h, w)
    peaks = _peaks(best[:, None])[:, 0]
    b, h, w = best.shape
    boxes = _ltrb_to_xyxy(out["ltrb"].float(), stride).flatten(2)
    feats = out["features"].flatten(2)
    dim, k = feats.shape[1], logits.shape[1]
    res = {"boxes": torch.zeros(b, num, 4), "scores": torch.zeros(b, num),
           "labels": torch.zeros(b, num, dtype=torch.int64),
           "class_probs": torch.zeros(b, num, k), "features": torch.zeros(b, num, dim),
           "mask": torch.zeros(b, num, dtype=torch.bool)}
    for i in range(b):
        value, cells = peaks[i].flatten().topk(min(4 * num, h * w))
        bx = clip_boxes(boxes[i][:, cells].T, size[0], size[1])
        order = batched_nms(bx, value, torch.zeros_like(cells), iou_threshold)[:num]
        n = len(order)
        c = cells[order]
        res["boxes"][i, :n] = bx[order]
        res["scores"][i, :n] = value[order]
        res["labels"][i, :n] = label[i].flatten()[c]
        res["class_probs"][i, :n] = probs[i].flatten(1)[:, c].T
        res["features"][i, :n] = feats[i][:, c].T.cpu()
        res["mask"][i, :n] = True
    return res


def class_embeddings(text_encoder: Callable[[Sequence[str]], Tensor], names: Sequence[str],
                     template: str = PROMPT) -> Tensor:
    """Sentence embeddings of the prompt of each class name, (K, dim), without gradients."""
    clean = [str(n).strip() for n in names]
    if not clean or any(not n for n in clean):
        raise InputError("class names must be non-empty", parameter="classes")
    if len(set(clean)) != len(clean):
        raise InputError("class names must be unique", parameter="classes")
    with torch.no_grad():
        return text_encoder([template.format(n.replace("_", " ")) for n in clean]).float()

