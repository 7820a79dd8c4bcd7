"""Two-stage training of the grounding model on simulated or real records.

Stage 1 trains the text-conditioned detector (:mod:`eokit.grounding.detector`) on boxes with
class names; stage 2 freezes it, turns each image into a graph of its top proposals (cached
once) and trains the MB-ORES head (:mod:`eokit.grounding.mbores`) on referring expressions.
Text embeddings come from a frozen text encoder (MiniLM from the catalogue by default) and are
computed once per class name and per expression.

Images enter the encoders as 0-1 values: simulated reflectance is divided by
:data:`REFLECTANCE_WHITE` (0.3 reflectance maps to 1) and clipped, 8-bit images by 255.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from eokit.core.errors import InputError
from eokit.grounding.detector import (
    TextConditionedDetector,
    class_embeddings,
    decode_detections,
    detection_loss,
    encode_targets,
    proposals,
)
from eokit.grounding.mbores import MBORESHead, grounding_loss

logger = logging.getLogger(__name__)

__all__ = [
    "REFLECTANCE_WHITE",
    "GroundingSample",
    "TextCache",
    "build_nodes",
    "fit_detector",
    "fit_grounder",
    "named_class_baseline",
    "predict_grounding",
    "scene_samples",
    "to_unit",
]

#: Reflectance shown as white when simulated scenes enter the encoders.
REFLECTANCE_WHITE = 0.3


def to_unit(image: np.ndarray) -> np.ndarray:
    """(C, H, W) reflectance or 8-bit values -> float32 0-1 encoder input."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.clip(image.astype(np.float32) / REFLECTANCE_WHITE, 0.0, 1.0)


@dataclass
class GroundingSample:
    """One image with its boxes and referring expressions.

    Attributes:
        image: (C, H, W) float32 0-1 encoder input.
        boxes: (N, 4) xyxy pixel boxes of every labelled object.
        labels: Class name of each box.
        expressions: Referring expressions of the image.
        targets: Index into ``boxes`` of each expression's object.
        kinds: Kind of each expression (attribute, superlative, ordinal, relation).
        complete: Every object of the image is labelled (False: only the expressions' targets).
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: list[str]
    expressions: list[str]
    targets: list[int]
    kinds: list[str]
    complete: bool = True


def scene_samples(scenes: Sequence[Any]) -> list[GroundingSample]:
    """Samples from :class:`eokit.core.synth.objects.ObjectScene` objects."""
    return [GroundingSample(to_unit(s.image), s.boxes(), s.labels(),
                            [e.text for e in s.expressions], [e.target for e in s.expressions],
                            [e.kind for e in s.expressions]) for s in scenes]


class TextCache:
    """Sentence and token embeddings of texts, computed once by a frozen text encoder.

    Args:
        encoder: A :class:`eokit.core.encoders.TextEncoder` (or anything with ``encode`` and
            ``encode_tokens``).
        freeze: Put the encoder in eval mode and freeze its parameters; ``False`` leaves both
            as they are (an encoder that parameter-efficient fine-tuning may train).
    """

    def __init__(self, encoder: Any, *, freeze: bool = True) -> None:
        self.encoder = encoder
        if freeze:
            encoder.eval()
            for p in encoder.parameters():
                p.requires_grad_(False)
        self.dim = int(encoder.dim)
        self._tokens: dict[str, tuple[Tensor, Tensor]] = {}

    def classes(self, names: Sequence[str]) -> Tensor:
        """(K, dim) prompt embeddings of class names."""
        return class_embeddings(self.encoder.encode, names)

    def tokens(self, texts: Sequence[str], batch: int = 64) -> tuple[Tensor, Tensor]:
        """Padded (N, L, dim) token embeddings and (N, L) masks of ``texts``."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._tokens]
        with torch.no_grad():
            for start in range(0, len(missing), batch):
                chunk = missing[start:start + batch]
                hidden, mask = self.encoder.encode_tokens(chunk)
                for i, text in enumerate(chunk):
                    n = int(mask[i].sum())
                    self._tokens[text] = (hidden[i, :n].float().cpu(), mask[i, :n].cpu())
        length = max(len(self._tokens[t][0]) for t in texts)
        out = torch.zeros(len(texts), length, self.dim)
        valid = torch.zeros(len(texts), length, dtype=torch.bool)
        for i, text in enumerate(texts):
            hidden, _ = self._tokens[text]
            out[i, :len(hidden)] = hidden
            valid[i, :len(hidden)] = True
        return out, valid


def _targets(samples: Sequence[GroundingSample], vocab: dict[str, int]) -> list[dict[str, Any]]:
    out = []
    for s in samples:
        keep = [i for i, name in enumerate(s.labels) if name in vocab]
        out.append({"boxes": torch.as_tensor(s.boxes[keep], dtype=torch.float32).reshape(-1, 4),
                    "labels": torch.tensor([vocab[s.labels[i]] for i in keep], dtype=torch.int64),
                    "complete": s.complete})
    return out


def fit_detector(detector: TextConditionedDetector, samples: Sequence[GroundingSample],
                 class_names: Sequence[str], text: TextCache, *, epochs: int = 10,
                 batch_size: int = 8, lr: float = 1e-3, seed: int = 0, flips: bool = True,
                 log_every: int = 20,
                 should_stop: Callable[[], bool] | None = None,
                 on_epoch: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Stage 1: train the detector on the samples' boxes (all images of one size).

    Args:
        detector: The detector (trained in place).
        samples: Training samples.
        class_names: Vocabulary; boxes of other classes are left out.
        text: Text cache for the class-name embeddings.
        epochs: Passes over the samples.
        batch_size: Images per step.
        lr: AdamW learning rate (the encoder gets a tenth of it).
        seed: Order and augmentation seed.
        flips: Random horizontal/vertical flips.
        log_every: Steps between progress lines.
        should_stop: Polled each step; True stops early.
        on_epoch: Called with (epoch, epochs) after each finished epoch (checkpoints).

    Returns:
        ``steps``, ``seconds``, ``final_loss``.
    """
    if not samples:
        raise InputError("no training images", parameter="samples")
    size = samples[0].image.shape[-2:]
    if any(s.image.shape[-2:] != size for s in samples):
        raise InputError("training images must share one size", parameter="samples")
    vocab = {name: i for i, name in enumerate(class_names)}
    emb = text.classes(class_names)
    images = torch.from_numpy(np.stack([s.image for s in samples]))
    targets = _targets(samples, vocab)
    enc_params = list(detector.encoder.parameters())
    enc_ids = {id(p) for p in enc_params}
    rest = [p for p in detector.parameters() if id(p) not in enc_ids]
    optimizer = torch.optim.AdamW([{"params": [p for p in enc_params if p.requires_grad],
                                    "lr": lr * 0.1},
                                   {"params": rest, "lr": lr}], weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, int(np.ceil(len(samples) / batch_size)))
    total = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[lr * 0.1, lr], total_steps=total, pct_start=0.1)
    detector.train()
    start, step, loss_value = time.perf_counter(), 0, float("nan")
    h, w = int(size[0]), int(size[1])
    for epoch in range(epochs):
        order = torch.randperm(len(samples), generator=gen)
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size].tolist()
            x = images[idx].clone()
            batch_t = [{k: (v.clone() if isinstance(v, Tensor) else v)
                        for k, v in targets[i].items()} for i in idx]
            if flips:
                for j, t in enumerate(batch_t):
                    if torch.rand((), generator=gen) < 0.5:
                        x[j] = x[j].flip(-1)
                        bx = t["boxes"]
                        t["boxes"] = torch.stack([w - bx[:, 2], bx[:, 1], w - bx[:, 0],
                                                  bx[:, 3]], 1)
                    if torch.rand((), generator=gen) < 0.5:
                        x[j] = x[j].flip(-2)
                        bx = t["boxes"]
                        t["boxes"] = torch.stack([bx[:, 0], h - bx[:, 3], bx[:, 2],
                                                  h - bx[:, 1]], 1)
            out = detector(x, emb)
            loss = detection_loss(out, encode_targets(batch_t, len(class_names), (h, w),
                                                      detector.stride))
            optimizer.zero_grad()
            loss["loss"].backward()
            torch.nn.utils.clip_grad_norm_(detector.parameters(), 10.0)
            optimizer.step()
            scheduler.step()
            step += 1
            loss_value = float(loss["loss"].detach())
            if log_every and step % log_every == 0:
                elapsed = time.perf_counter() - start
                logger.info("detector step %d/%d loss %.3f (focal %.3f, giou %.3f), %.0f s left",
                            step, total, loss_value, float(loss["focal"]), float(loss["giou"]),
                            elapsed / step * (total - step))
            if should_stop is not None and should_stop():
                break
        if on_epoch is not None:
            detector.eval()
            on_epoch(epoch + 1, epochs)
            detector.train()
    detector.eval()
    return {"steps": step, "seconds": time.perf_counter() - start, "final_loss": loss_value}


@torch.no_grad()
def detect(detector: TextConditionedDetector, samples: Sequence[GroundingSample],
           class_names: Sequence[str], text: TextCache, *, batch_size: int = 8,
           score_threshold: float = 0.05
           ) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
    """Detections and raw outputs' proposals per image (eval mode)."""
    detector.eval()
    emb = text.classes(class_names)
    dets: list[dict[str, Tensor]] = []
    props: list[dict[str, Tensor]] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        x = torch.from_numpy(np.stack([s.image for s in chunk]))
        out = detector(x, emb)
        size = (x.shape[-2], x.shape[-1])
        dets += decode_detections(out, size, detector.stride, score_threshold=score_threshold)
        p = proposals(out, size, detector.stride)
        props += [{k: v[i] for k, v in p.items()} for i in range(len(chunk))]
    return dets, props


def build_nodes(props: Sequence[dict[str, Tensor]], class_emb: Tensor,
                size: tuple[int, int]) -> dict[str, Tensor]:
    """Stack per-image proposals into the head's node tensors (boxes normalised to 0-1).

    The categorical view of a node is the detector's class probabilities (normalised to sum
    to 1) applied to the class-name embeddings.
    """
    h, w = size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    probs = torch.stack([p["class_probs"] for p in props])
    weights = probs / probs.sum(-1, keepdim=True).clamp(min=1e-6)
    return {"features": torch.stack([p["features"] for p in props]),
            "class_embed": weights @ class_emb,
            "boxes": torch.stack([p["boxes"] for p in props]) / scale,
            "pixel_boxes": torch.stack([p["boxes"] for p in props]),
            "scores": torch.stack([p["scores"] for p in props]),
            "mask": torch.stack([p["mask"] for p in props])}


def _expression_rows(samples: Sequence[GroundingSample]) -> list[tuple[int, int]]:
    return [(i, j) for i, s in enumerate(samples) for j in range(len(s.expressions))]


def fit_grounder(head: MBORESHead, samples: Sequence[GroundingSample], nodes: dict[str, Tensor],
                 text: TextCache, *, epochs: int = 30, batch_size: int = 32, lr: float = 5e-4,
                 seed: int = 0, log_every: int = 50,
                 on_epoch: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Stage 2: train the head on every (image, expression) pair, detector frozen (cached nodes).

    Args:
        head: The MB-ORES head (trained in place).
        samples: Samples the nodes were built from (same order).
        nodes: :func:`build_nodes` output for ``samples``.
        text: Text cache for the expressions' tokens.
        epochs: Passes over the pairs.
        batch_size: Pairs per step.
        lr: AdamW learning rate.
        seed: Order seed.
        log_every: Steps between progress lines.
        on_epoch: Called with (epoch, epochs) after each finished epoch (checkpoints).
    """
    rows = _expression_rows(samples)
    if not rows:
        raise InputError("no referring expressions to train on", parameter="samples")
    h, w = samples[0].image.shape[-2:]
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    texts = [samples[i].expressions[j] for i, j in rows]
    tokens, token_mask = text.tokens(texts)
    image_idx = torch.tensor([i for i, _ in rows])
    target = torch.stack([torch.as_tensor(samples[i].boxes[samples[i].targets[j]],
                                          dtype=torch.float32) for i, j in rows]) / scale
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, int(np.ceil(len(rows) / batch_size)))
    total = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total,
                                                    pct_start=0.1)
    head.train()
    start, step, loss_value = time.perf_counter(), 0, float("nan")
    for epoch in range(epochs):
        order = torch.randperm(len(rows), generator=gen)
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            img = image_idx[idx]
            batch_nodes = {k: nodes[k][img] for k in ("features", "class_embed", "boxes", "mask")}
            out = head(batch_nodes, tokens[idx], token_mask[idx])
            loss = grounding_loss(out, target[idx], batch_nodes["boxes"], batch_nodes["mask"])
            optimizer.zero_grad()
            loss["loss"].backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
            step += 1
            loss_value = float(loss["loss"].detach())
            if log_every and step % log_every == 0:
                logger.info("grounding step %d/%d loss %.3f (proposal %.3f, giou %.3f)", step,
                            total, loss_value, float(loss["proposal"]), float(loss["giou"]))
        if on_epoch is not None:
            head.eval()
            on_epoch(epoch + 1, epochs)
            head.train()
    head.eval()
    return {"steps": step, "seconds": time.perf_counter() - start, "final_loss": loss_value,
            "pairs": len(rows)}


@torch.no_grad()
def predict_grounding(head: MBORESHead, samples: Sequence[GroundingSample],
                      nodes: dict[str, Tensor], text: TextCache, *,
                      batch_size: int = 64) -> dict[str, Any]:
    """Answer box (pixels) and proposal probabilities for every (image, expression) pair."""
    head.eval()
    rows = _expression_rows(samples)
    h, w = samples[0].image.shape[-2:]
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    texts = [samples[i].expressions[j] for i, j in rows]
    tokens, token_mask = text.tokens(texts)
    image_idx = torch.tensor([i for i, _ in rows])
    boxes, probs = [], []
    for start in range(0, len(rows), batch_size):
        sl = slice(start, start + batch_size)
        img = image_idx[sl]
        batch_nodes = {k: nodes[k][img] for k in ("features", "class_embed", "boxes", "mask")}
        out = head(batch_nodes, tokens[sl], token_mask[sl])
        boxes.append(out["box"] * scale)
        probs.append(out["probs"])
    target = torch.stack([torch.as_tensor(samples[i].boxes[samples[i].targets[j]],
                                          dtype=torch.float32) for i, j in rows])
    return {"boxes": torch.cat(boxes), "probs": torch.cat(probs), "targets": target,
            "rows": rows, "kinds": [samples[i].kinds[j] for i, j in rows]}


def _named_class(expression: str, class_names: Sequence[str], class_emb: Tensor,
                 text: TextCache) -> int:
    lowered = expression.lower()
    # the first class named in the expression is its head noun ("the ship left of the bridge")
    found = [(lowered.find(n.lower()), -len(n), i) for i, n in enumerate(class_names)
             if n.lower() in lowered]
    if found:
        return min(found)[2]
    sentence = text.encoder.encode([expression]).float()
    return int((F.normalize(sentence, dim=-1) @ F.normalize(class_emb, dim=-1).T).argmax())


@torch.no_grad()
def named_class_baseline(samples: Sequence[GroundingSample],
                         detections: Sequence[dict[str, Tensor]], class_names: Sequence[str],
                         text: TextCache) -> Tensor:
    """The detector's top-scoring box of the class the expression names, per pair (pixels).

    When the detector found no box of that class, its top box of any class; with no box at
    all, the whole image.
    """
    class_emb = text.classes(class_names)
    out = []
    for i, j in _expression_rows(samples):
        det = detections[i]
        k = _named_class(samples[i].expressions[j], class_names, class_emb, text)
        same = det["labels"] == k
        if same.any():
            out.append(det["boxes"][same][det["scores"][same].argmax()])
        elif len(det["scores"]):
            out.append(det["boxes"][det["scores"].argmax()])
        else:
            h, w = samples[i].image.shape[-2:]
            out.append(torch.tensor([0.0, 0.0, float(w), float(h)]))
    return torch.stack(out)
