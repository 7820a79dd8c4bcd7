"""Training task on core.train, datasets of tiles or cached encoder features, and inference.

Training scores each pixel against the *seen* classes only; pixels of unseen classes (and the
dataset's ignore pixels) are ignored, so nothing about an unseen class is learnt from its pixels.
With locked encoders (the default) the encoder outputs of every tile can be computed once
(:func:`encode_dataset`) and the task trained on them: the same loss and optimiser, no encoder
forward per step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from eokit.core.errors import InputError
from eokit.core.metrics import ConfusionMatrix
from eokit.core.train import BaseTask
from eokit.core.types import IGNORE_INDEX
from eokit.openvocab.model import (
    ClosedSetSegmenter,
    Encoded,
    OpenVocabSegmenter,
    openvocab_loss,
    seen_unseen_scores,
)

logger = logging.getLogger(__name__)

__all__ = ["ClosedSetTask", "EncodedDataset", "OpenVocabTask", "TileDataset", "encode_dataset",
           "evaluate_segmenter", "fit_task", "remap_labels"]


def remap_labels(label: np.ndarray, mapping: Sequence[int]) -> np.ndarray:
    """Relabel with ``mapping[old] = new`` (IGNORE_INDEX drops a class); 255 stays ignored."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    lut[: len(mapping)] = np.asarray(mapping, dtype=np.int64)
    lab = np.asarray(label)
    if lab.min(initial=0) < 0 or lab.max(initial=0) > 255:
        raise InputError("label values must lie in 0..255", parameter="label")
    return lut[lab.astype(np.int64)]


class TileDataset(Dataset[dict[str, Tensor]]):
    """(image, label) tiles as ``{"image", "mask", "index"}`` with labels remapped."""

    def __init__(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                 mapping: Sequence[int] | None = None, *, augment: bool = False,
                 seed: int = 0) -> None:
        if len(images) != len(labels):
            raise InputError("one label per image", parameter="labels")
        self.images = [np.ascontiguousarray(i, dtype=np.float32) for i in images]
        self.labels = [np.asarray(lbl, dtype=np.int64) if mapping is None
                       else remap_labels(lbl, mapping) for lbl in labels]
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image, label = self.images[index], self.labels[index]
        if self.augment:
            k = int(self.rng.integers(4)) if image.shape[-1] == image.shape[-2] else 0
            image, label = np.rot90(image, k, (-2, -1)), np.rot90(label, k, (-2, -1))
            if self.rng.random() < 0.5:
                image, label = image[..., ::-1], label[..., ::-1]
        return {"image": torch.from_numpy(np.ascontiguousarray(image)),
                "mask": torch.from_numpy(np.ascontiguousarray(label)),
                "index": torch.tensor(index)}


class EncodedDataset(Dataset[dict[str, Any]]):
    """Cached encoder outputs (half precision) with remapped labels, for locked encoders."""

    def __init__(self, encoded: Encoded, labels: Tensor, rotations: int | None = None) -> None:
        self.encoded = encoded if rotations is None else Encoded(
            encoded.dense[:, :rotations], encoded.skips, encoded.guidance,
            encoded.global_feature)
        self.labels = labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        e = self.encoded
        item: dict[str, Any] = {"dense": e.dense[index], "mask": self.labels[index]}
        for i, skip in enumerate(e.skips):
            item[f"skip{i}"] = skip[index]
        if e.guidance is not None:
            item["guidance"] = e.guidance[index]
        return item


def _encoded_from_batch(batch: dict[str, Any]) -> Encoded:
    skips = []
    while f"skip{len(skips)}" in batch:
        skips.append(batch[f"skip{len(skips)}"].float())
    guidance = batch.get("guidance")
    return Encoded(batch["dense"].float(), skips,
                   None if guidance is None else guidance.float())


@torch.no_grad()
def encode_dataset(model: OpenVocabSegmenter, images: Sequence[np.ndarray], *,
                   batch_size: int = 8) -> Encoded:
    """Encoder outputs of every tile (half precision), for training with locked encoders."""
    if model.train_encoder:
        raise InputError("features can only be cached for locked encoders",
                         parameter="train_encoder")
    if model.stem is not None:
        raise InputError("this encoder has no skip maps to cache (the stem is learnt)",
                         parameter="encoder")
    model.eval()
    parts: list[Encoded] = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.stack(images[start:start + batch_size]).astype(np.float32))
        parts.append(model.encode(x).half())
    return Encoded(torch.cat([p.dense for p in parts]),
                   [torch.cat([p.skips[i] for p in parts]) for i in range(len(parts[0].skips))],
                   None if parts[0].guidance is None
                   else torch.cat([p.guidance for p in parts if p.guidance is not None]))


class OpenVocabTask(BaseTask):
    """Train an :class:`OpenVocabSegmenter` against fixed (locked-text) class embeddings.

    Args:
        model: The segmenter.
        text: (K_seen, P, D) prompt embeddings of the training classes.
        bp_weight: Weight of the back-projection loss.
        lr, weight_decay, scheduler, warmup_steps: Optimiser (see :class:`BaseTask`).
        image_size: (H, W) of the training tiles (for cached-feature batches).
    """

    text: Tensor

    def __init__(self, model: OpenVocabSegmenter, text: Tensor, *, bp_weight: float = 0.5,
                 lr: float = 1e-3, weight_decay: float = 1e-4, scheduler: str | None = "cosine",
                 warmup_steps: int = 0, image_size: Sequence[int] = (0, 0)) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, scheduler=scheduler,
                         warmup_steps=warmup_steps)
        if bp_weight < 0:
            raise InputError(f"must be >= 0, got {bp_weight}", parameter="bp_weight")
        self.model = model
        self.register_buffer("text", text.detach().float().clone(), persistent=False)
        self.bp_weight = float(bp_weight)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self._val_cm = ConfusionMatrix(int(text.shape[0]))

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and auxiliary outputs of an image batch or a cached-feature batch."""
        if "dense" in batch:
            size = self.image_size if min(self.image_size) > 0 else tuple(batch["mask"].shape[-2:])
            return self.model.forward_encoded(_encoded_from_batch(batch), self.text, size,
                                              return_aux=True)
        return self.model(batch["image"], self.text, return_aux=True)  # type: ignore[no-any-return]

    def shared_step(self, batch: dict[str, Any], stage: str) -> Tensor:
        """Masked cross-entropy over the seen classes plus the back-projection loss."""
        logits, aux = self(batch)
        losses = openvocab_loss(logits, batch["mask"], aux, bp_weight=self.bp_weight)
        if stage != "train":
            self._val_cm.update(logits.argmax(1).cpu().numpy(), batch["mask"].cpu().numpy())
        else:
            self.log("train/bp", losses["bp"].detach(), on_step=False, on_epoch=True,
                     batch_size=logits.shape[0])
        return losses["loss"]

    def on_validation_epoch_end(self) -> None:
        """Seen-class mIoU of the validation tiles from one confusion matrix."""
        if self._val_cm.total:
            self._val_cm.sync()
            miou = self._val_cm.compute()["mean_iou"]
            self.log("val/miou", float(miou) if math.isfinite(miou) else 0.0)
        self._val_cm.reset()


class ClosedSetTask(BaseTask):
    """Supervised closed-set head on all classes (the upper bound)."""

    def __init__(self, model: ClosedSetSegmenter, *, lr: float = 1e-3,
                 weight_decay: float = 1e-4, scheduler: str | None = "cosine") -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, scheduler=scheduler)
        self.model = model

    def shared_step(self, batch: dict[str, Any], stage: str) -> Tensor:
        """Masked cross-entropy over all classes."""
        if "dense" in batch:
            enc = _encoded_from_batch(batch)
            logits = self.model.forward_features(enc.dense[:, 0], enc.skips[-1:],
                                                 tuple(batch["mask"].shape[-2:]))
        else:
            logits = self.model(batch["image"])
        return openvocab_loss(logits, batch["mask"])["loss"]


def fit_task(task: BaseTask, train: Dataset[Any], val: Dataset[Any] | None, out_dir: str | Path,
             *, max_epochs: int, batch_size: int = 4, seed: int = 0, resume: bool = False,
             progress: bool = False, trainer_overrides: dict[str, Any] | None = None) -> Any:
    """Train on the project's Lightning engine (checkpoints, resume, Ctrl-C)."""
    from eokit.core.train import SimpleDataModule, fit

    data = SimpleDataModule(train, val, batch_size=batch_size, seed=seed)
    return fit(task, data, out_dir, resume=resume, seed=seed, max_epochs=max_epochs,
               progress=progress, trainer_overrides=trainer_overrides,
               log_every_n_steps=1, enable_model_summary=False)


@torch.no_grad()
def evaluate_segmenter(predict: Any, items: Sequence[Any], num_classes: int,
                       seen: Sequence[int], unseen: Sequence[int], *,
                       batch_size: int = 4) -> tuple[dict[str, Any], ConfusionMatrix]:
    """Seen/unseen/h-mIoU of ``predict`` (batch -> (B, K, H, W) scores) over items.

    ``items`` are dicts with ``image`` or cached features and ``mask`` in the full class space;
    one confusion matrix accumulates every pixel.
    """
    cm = ConfusionMatrix(num_classes)
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        batch = {k: torch.stack([c[k] for c in chunk]) for k in chunk[0]}
        scores = predict(batch)
        cm.update(scores.argmax(1).cpu().numpy(), batch["mask"].cpu().numpy())
    return seen_unseen_scores(cm, seen, unseen), cm
