"""Lightning task for CANet: joint multi-dataset training or single-dataset adaptation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning
import numpy as np
import torch

from eokit.change.model import CANet
from eokit.change.task import _freeze_shared_bn, change_loss, change_metrics, prepare_adapt
from eokit.core.errors import InputError
from eokit.core.metrics import ConfusionMatrix
from eokit.core.types import IGNORE_INDEX

logger = logging.getLogger(__name__)

__all__ = ["ChangeTask"]


class ChangeTask(lightning.LightningModule):
    """Lightning task for joint multi-dataset training or single-dataset adaptation.

    Args:
        model: The CANet to train.
        mode: ``"joint"`` (all parameters) or ``"adapt"`` (only ``adapt_domain``'s parameters).
        adapt_domain: Dataset to adapt to (``mode="adapt"``).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        dice_weight: Weight of the Dice loss term.
        pos_weight: BCE weight of change pixels: one number or domain index -> weight.
        placement: Which of the new dataset's parts train in adapt mode (``all``, ``decoder``
            or ``finest``; see ``CANet.domain_parameter_patterns``).
        val_domains: Dataset names of the validation dataloaders, in order.
    """

    def __init__(
        self,
        model: CANet,
        *,
        mode: str = "joint",
        adapt_domain: str | None = None,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        dice_weight: float = 1.0,
        pos_weight: float | dict[int, float] | None = None,
        placement: str | None = None,
        val_domains: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if mode not in ("joint", "adapt"):
            raise InputError(f"unknown mode {mode!r}; use joint or adapt", parameter="mode")
        self.model = model
        self.mode = mode
        self.lr = lr
        self.weight_decay = weight_decay
        self.dice_weight = dice_weight
        self.pos_weight = pos_weight
        self.val_domains = list(val_domains)
        self.adapt_report: dict[str, Any] | None = None
        if mode == "adapt":
            if adapt_domain is None:
                raise InputError("adapt mode needs the new dataset's name", parameter="domain")
            self.adapt_report = prepare_adapt(model, adapt_domain, placement=placement)
        self._matrices: dict[int, ConfusionMatrix] = {}
        self.val_metrics: dict[str, dict[str, float]] = {}

    def on_train_epoch_start(self) -> None:
        """New batch order and augmentations for this epoch; frozen BN statistics stay frozen."""
        from eokit.change.data import set_loader_epoch

        # Runs before Lightning creates this epoch's iterator (epochs > 0).
        set_loader_epoch(self.trainer.train_dataloader, self.current_epoch)
        # Lightning keeps the modes modules had before fit: a model loaded for `adapt` comes in
        # eval mode, and its new dataset's BN statistics would never move.
        self.model.train()
        _freeze_shared_bn(self.model)

    def forward(self, image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
        """Change logits of the active dataset."""
        return self.model(image_a, image_b)  # type: ignore[no-any-return]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One batch of one dataset."""
        self.model.set_domain(int(batch["domain"]))
        logits = self.model(batch["image_a"], batch["image_b"])
        loss = change_loss(logits, batch["mask"], dice_weight=self.dice_weight,
                           pos_weight=self._weight(int(batch["domain"])))
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["mask"].shape[0])
        return loss

    def _weight(self, domain: int) -> float | None:
        if isinstance(self.pos_weight, dict):
            return self.pos_weight.get(domain)
        return self.pos_weight

    def validation_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Accumulate the global confusion matrix of one validation dataset."""
        domain = int(batch["domain"])
        self.model.set_domain(domain)
        logits = self.model(batch["image_a"], batch["image_b"])
        loss = change_loss(logits, batch["mask"], dice_weight=self.dice_weight,
                           pos_weight=self._weight(domain))
        self.log(f"val_loss/{self.model.domains[domain]}", loss,
                 batch_size=batch["mask"].shape[0], add_dataloader_idx=False)
        matrix = self._matrices.setdefault(domain, ConfusionMatrix(2, ignore_index=IGNORE_INDEX))
        matrix.update((logits[:, 0] > 0).long(), batch["mask"], valid=batch["valid"])

    def on_validation_epoch_end(self) -> None:
        """Log per-dataset F1/IoU/kappa and their mean (``val_f1``); not for the sanity check."""
        if self.trainer.sanity_checking:  # two batches: no score anyone should see
            self._matrices = {}
            return
        f1s = []
        for domain, matrix in sorted(self._matrices.items()):
            metrics = change_metrics(matrix)
            name = self.model.domains[domain]
            self.val_metrics[name] = metrics
            for key in ("f1", "iou", "kappa"):
                value = metrics[key]
                self.log(f"val_{key}/{name}", 0.0 if np.isnan(value) else value)
            f1s.append(0.0 if np.isnan(metrics["f1"]) else metrics["f1"])
        if f1s:
            self.log("val_f1", float(np.mean(f1s)), prog_bar=True)
        self._matrices = {}

    def configure_optimizers(self) -> Any:
        """AdamW over the trainable parameters only."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
