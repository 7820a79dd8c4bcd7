"""Variational-EM training task on core.train, and evaluation helpers, for noisy labels."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from eokit.core.errors import InputError
from eokit.core.metrics import ConfusionMatrix
from eokit.core.train import BaseTask
from eokit.core.types import IGNORE_INDEX
from eokit.noisy.kms import check_rho, noisy_label_expected_log_lik, sample_kms
from eokit.noisy.model import LOSSES, ConfusionLoss, UNet, baseline_loss
from eokit.noisy.store import SOFTPLUS_ONE, PosteriorStore, apply_op, random_ops

logger = logging.getLogger(__name__)

__all__ = ["NoisySegTask", "evaluate_model", "predict_array"]


class NoisySegTask(BaseTask):
    """Segmentation from noisy labels; ``loss="kms"`` is the spatially correlated Bayesian model.

    With ``kms`` each batch runs one M-step (an optimiser step on the network, the posterior
    frozen) and ``estep`` Adam steps on the batch's per-image posterior parameters (the network
    frozen): variational EM. Validation logs ``val/iou`` (foreground IoU for K = 2, mean IoU
    otherwise) from one confusion matrix over the whole split, against ``clean`` labels when
    the samples carry them, else against the (noisy) ``mask``.

    Args:
        num_classes: Classes K (>= 2).
        in_chans: Image bands.
        encoder: Encoder name (see :class:`UNet`).
        pretrained: Encoder weights (False / True = catalogue / local file).
        loss: One of ``kms``, ``ce``, ``smooth``, ``gce``, ``confusion``.
        num_images: Training tiles (``kms`` only: size of the posterior store).
        tile_shape: (H, W) of the training tiles (``kms`` only).
        fingerprint: Training-set fingerprint stored with the posterior (resume check).
        rho: Prior and posterior correlation (published: 0.75), in [0, 1).
        rho_post: Posterior correlation (default: ``rho``).
        mu: Prior mean of the error logit (published: -2).
        sigma: Prior standard deviation (published: softplus(1) = 1.313).
        m_init: Initial posterior mean (published: -5).
        estep: E-step Adam steps per batch (published: 10).
        estep_lr: E-step learning rate (published: 0.1).
        augment: Random flips/rotations (applied to the posterior too).
        smoothing: Label-smoothing factor of ``smooth``.
        gce_q: Exponent of ``gce``.
        lr: Network learning rate.
        weight_decay: Network weight decay.
        scheduler: ``"cosine"`` or None.
        warmup_steps: Warm-up steps.
        frozen_bn: Freeze the encoder's BatchNorm (see :class:`UNet`).
        store_dir: Memory-map the posterior store in this folder (None: in memory).
        seed: Seed of the augmentation and posterior-noise draws (offset by the rank under
            DDP; the stream's state is saved in checkpoints).
    """

    def __init__(self, num_classes: int = 2, *, in_chans: int = 3,
                 encoder: str = "efficientnet_lite0", pretrained: bool | str = False,
                 loss: str = "kms", num_images: int = 0, tile_shape: Sequence[int] = (0, 0),
                 fingerprint: str = "", rho: float = 0.75, rho_post: float | None = None,
                 mu: float = -2.0, sigma: float = SOFTPLUS_ONE, m_init: float = -5.0,
                 estep: int = 10, estep_lr: float = 0.1, augment: bool = True,
                 smoothing: float = 0.1, gce_q: float = 0.7, lr: float = 1e-3,
                 weight_decay: float = 0.0, scheduler: str | None = None,
                 warmup_steps: int = 0, frozen_bn: bool = False,
                 store_dir: str | None = None, seed: int = 0) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, scheduler=scheduler,
                         warmup_steps=warmup_steps)
        if loss not in LOSSES:
            raise InputError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}",
                             parameter="loss")
        self.rho = check_rho(rho)
        self.rho_post = check_rho(self.rho if rho_post is None else rho_post, "rho_post")
        if sigma <= 0:
            raise InputError(f"must be > 0, got {sigma}", parameter="sigma")
        if estep < 0 or estep_lr <= 0:
            raise InputError("estep must be >= 0 and estep_lr > 0", parameter="estep")
        self.automatic_optimization = False
        self.model = UNet(num_classes, in_chans=in_chans, encoder=encoder, pretrained=pretrained,
                          frozen_bn=frozen_bn)
        self.num_classes = num_classes
        self.loss_name = loss
        self.mu, self.sigma, self.estep, self.estep_lr = mu, sigma, estep, estep_lr
        self.augment = augment
        self.smoothing, self.gce_q = smoothing, gce_q
        self.fingerprint = fingerprint
        self.confusion = ConfusionLoss(num_classes) if loss == "confusion" else None
        self.store: PosteriorStore | None = None
        if loss == "kms":
            shape = (int(tile_shape[0]), int(tile_shape[1]))
            if num_images < 1 or min(shape) < 1:
                raise InputError("the kms loss needs num_images and tile_shape of the training "
                                 "set", parameter="num_images")
            self.store = PosteriorStore(num_images, shape, m_init=m_init,
                                        fingerprint=fingerprint, storage_dir=store_dir)
        self._val_cm = ConfusionMatrix(num_classes)
        self.seed = int(seed)
        self._noise = torch.Generator().manual_seed(self.seed)

    def forward(self, image: Tensor) -> Tensor:
        """(B, C, H, W) 0-1 image -> (B, K, H, W) logits."""
        return self.model(image)  # type: ignore[no-any-return]

    def setup(self, stage: str) -> None:
        """Give every DDP rank its own draw stream."""
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            self._noise.manual_seed(self.seed + 1_000_003 * trainer.global_rank)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the draw stream, so a resumed run continues it."""
        checkpoint["noise_generator"] = self._noise.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint whose posterior store belongs to another training set."""
        state = checkpoint.get("noise_generator")
        if state is not None and (self._trainer is None or self._trainer.world_size <= 1):
            self._noise.set_state(state)
        if self.store is None:
            return
        stored = checkpoint.get("state_dict", {}).get("store.fingerprint")
        if stored is not None:
            text = bytes(stored.tolist()).decode("ascii").rstrip("\0")
            if text and self.fingerprint and text != self.fingerprint:
                raise InputError(f"posterior store belongs to another training set ({text} != "
                                 f"{self.fingerprint}); start a new run folder",
                                 parameter="resume")

    def _augment(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, list[int]]:
        image, mask = batch["image"], batch["mask"]
        n = image.shape[0]
        if not self.augment:
            return image, mask, [0] * n
        ops = random_ops(n, image.shape[-1] == image.shape[-2], self._noise)
        image = torch.stack([apply_op(image[i], op) for i, op in enumerate(ops)])
        mask = torch.stack([apply_op(mask[i], op) for i, op in enumerate(ops)])
        return image, mask, ops

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """One M-step on the network and, for ``kms``, the batch's E-step."""
        optimizer = self.optimizers()
        image, mask, ops = self._augment(batch)
        valid = mask != IGNORE_INDEX
        logits = self.model(image)
        if self.store is None:
            loss = baseline_loss(self.loss_name, logits, mask, smoothing=self.smoothing,
                                 gce_q=self.gce_q, confusion=self.confusion)
        else:
            indices = batch["index"].cpu()
            with torch.no_grad():
                m, g = self.store.get(indices, ops)
                draws = sample_kms((len(ops), *self.store.shape), self.rho_post,
                                   generator=self._noise)
                z = torch.stack([apply_op(d, op) for d, op in zip(draws, ops, strict=True)])
            eta = (m + g * z).to(logits.device)
            lik = noisy_label_expected_log_lik(torch.log_softmax(logits, 1), mask, eta, valid)
            loss = -lik.sum() / valid.sum().clamp(min=1)
        optimizer.zero_grad()  # type: ignore[union-attr]
        self.manual_backward(loss)
        optimizer.step()  # type: ignore[union-attr]
        schedulers = self.lr_schedulers()
        if schedulers is not None:
            schedulers.step()  # type: ignore[union-attr]
        if self.store is not None and self.estep:
            with torch.no_grad():
                log_probs = torch.log_softmax(logits.detach(), 1).cpu()
            elbo = self.store.e_step(indices, ops, log_probs, mask.cpu(), valid.cpu(),
                                     steps=self.estep, lr=self.estep_lr, mu=self.mu,
                                     sigma=self.sigma, rho_prior=self.rho,
                                     rho_post=self.rho_post, generator=self._noise)
            self._sync_store(indices)
            self.log("train/elbo", elbo.mean(), on_step=True, on_epoch=True,
                     batch_size=len(indices))
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=image.shape[0])
        return loss.detach()

    def _sync_store(self, indices: Tensor) -> None:
        """Share this batch's posterior update with every rank.

        Each image has one owner per step; without this a rank would see stale parameters
        after the sampler reshuffles.
        """
        if self.store is None or self.trainer.world_size <= 1:
            return
        gathered_idx = torch.as_tensor(self.all_gather(indices.to(self.device))).reshape(-1).cpu()
        for name, value in self.store.state_of(indices).items():
            gathered = torch.as_tensor(self.all_gather(value.to(self.device))).cpu()
            self.store.write_state(gathered_idx, {name: gathered.reshape(-1, *value.shape[1:])})

    def configure_optimizers(self) -> Any:
        """Adam(W) over the network (and the confusion matrix); the posterior has its own Adam."""
        return super().configure_optimizers()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Network parameters (plus the confusion baseline's matrix)."""
        return [p for p in self.parameters() if p.requires_grad]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """CE on the observed labels; the confusion matrix against clean labels when known."""
        logits = self.model(batch["image"])
        target = batch.get("clean", batch["mask"])
        loss = F.cross_entropy(logits, batch["mask"], ignore_index=IGNORE_INDEX)
        self._val_cm.update(logits.argmax(1).cpu().numpy(), target.cpu().numpy())
        self.log("val/loss", loss, on_epoch=True, batch_size=logits.shape[0], sync_dist=True)
        return loss

    def on_validation_epoch_end(self) -> None:
        """Dataset-level IoU from the epoch's confusion matrix."""
        if self._val_cm.total:
            self._val_cm.sync()
            scores = self._val_cm.compute()
            iou = scores["iou"][1] if self.num_classes == 2 else scores["mean_iou"]
            self.log("val/iou", float(iou) if math.isfinite(iou) else 0.0, sync_dist=False)
        self._val_cm.reset()


@torch.no_grad()
def predict_array(model: UNet, image: np.ndarray, *, batch_size: int = 4) -> np.ndarray:
    """Class probabilities (K, H, W) of one (C, H, W) 0-1 image (sizes multiple of 32)."""
    model.eval()
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    return torch.softmax(model(tensor), 1)[0].numpy()


@torch.no_grad()
def evaluate_model(model: UNet, samples: Sequence[dict[str, Any]], *,
                   target_key: str = "clean", batch_size: int = 8) -> dict[str, Any]:
    """Dataset-level metrics of ``model`` on samples (one confusion matrix over all pixels).

    Returns:
        ``iou`` / ``f1`` / ``precision`` / ``recall`` of the foreground (class 1; K = 2), the
        per-class lists, ``mean_iou`` over all classes, ``oa`` and pixel count ``n``.
    """
    model.eval()
    cm = ConfusionMatrix(model.num_classes)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        image = torch.stack([s["image"] for s in chunk])
        target = torch.stack([s.get(target_key, s["mask"]) for s in chunk])
        cm.update(model(image).argmax(1).numpy(), target.numpy())
    scores = cm.compute()
    fg = 1 if model.num_classes == 2 else None
    result: dict[str, Any] = {"mean_iou": scores["mean_iou"], "oa": scores["oa"],
                              "n": scores["n"], "per_class_iou": scores["iou"]}
    if fg is not None:
        for name in ("iou", "f1", "precision", "recall"):
            result[name] = scores[name][fg]
    return result


def store_error_map(task: NoisySegTask, index: int) -> np.ndarray:
    """Posterior label-error probability (H, W) of training tile ``index``."""
    if task.store is None:
        raise InputError("only the kms loss has a label-error map", parameter="loss")
    return task.store.error_probability(index).numpy()


def fit_noisy(task: NoisySegTask, train: Any, val: Any, out_dir: str | Path, *,
              max_epochs: int, batch_size: int = 8, seed: int = 0, resume: bool = False,
              progress: bool = False, trainer_overrides: dict[str, Any] | None = None,
              callbacks: Sequence[Any] = ()) -> Any:
    """Train ``task`` on the project's Lightning engine (checkpoints, resume, Ctrl-C)."""
    from eokit.core.train import SimpleDataModule, fit

    data = SimpleDataModule(train, val, batch_size=batch_size, seed=seed)
    return fit(task, data, out_dir, resume=resume, seed=seed, max_epochs=max_epochs,
               progress=progress, trainer_overrides=trainer_overrides,
               callbacks=list(callbacks), log_every_n_steps=1, enable_model_summary=False)


__all__ += ["fit_noisy", "store_error_map"]
