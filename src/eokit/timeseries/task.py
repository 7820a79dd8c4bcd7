"""Pretraining (next-token), Dargana fine-tuning, batched inference and change dating.

Pretraining and fine-tuning run through Lightning (``eokit.core.train``). Head-only fine-tuning
freezes the backbone, computes its per-date prefix features ONCE for the labelled pixels and
trains only the MLP head on them, which is what makes it a few percent of the pretraining compute;
LoRA fine-tuning (``mode="lora"``) trains low-rank updates of the attention and MLP layers too.
Every phase records tokens processed and an estimated FLOP count (:class:`ComputeAccount`).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from eokit.core.errors import DataError, InputError
from eokit.core.types import IGNORE_INDEX
from eokit.timeseries.data import (
    SeriesData,
    SeriesDataset,
    check_informative,
    check_labels,
    check_two_classes,
    warn_if_single_date,
)
from eokit.timeseries.model import (
    ComputeAccount,
    FineTunedSeriesModel,
    PixelSeriesTransformer,
    SeriesModelConfig,
    forward_flops_per_token,
)

logger = logging.getLogger(__name__)

#: Modules LoRA adapts in the backbone.
LORA_TARGETS = ("qkv", "proj", "fc1", "fc2")

#: A training loss: (model output, target) -> scalar tensor.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# -- Lightning pieces ---------------------------------------------------------------------------
def _base_task() -> type:
    from eokit.core.train import BaseTask

    return BaseTask


def augment_series(series: torch.Tensor, doy: torch.Tensor, valid: torch.Tensor, *,
                   max_crop: float, drop: float, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random temporal crop (same start for the batch) and random extra invalid dates.

    Pixels of one raster share their dates, so without cropping the learned position of a token
    is a proxy for its calendar date in the pretraining scene, which does not transfer to a scene
    with another revisit. Dropping dates at random mimics other cloud patterns.

    Args:
        series: (B, T, C) raw bands.
        doy: (B, T) day of year.
        valid: (B, T) bool.
        max_crop: Largest share of leading dates removed (start drawn uniformly).
        drop: Probability that a valid date is made invalid.
        generator: Random generator (None: the global one, seeded by ``seed_everything``).
    """
    length = series.shape[1]
    start = int(torch.randint(0, int(max_crop * length) + 1, (1,), generator=generator))
    start = min(start, max(length - 2, 0))
    series, doy, valid = series[:, start:], doy[:, start:], valid[:, start:]
    if drop > 0:
        # Drawn on the CPU (the generator's device), then moved next to the batch.
        keep = (torch.rand(valid.shape, generator=generator) >= drop).to(valid.device)
        valid = valid.to(torch.bool) & keep
    return series, doy, valid


def _make_pretrain_task(model: PixelSeriesTransformer, lr: float, weight_decay: float,
                        augment: bool) -> Any:
    base = _base_task()

    class PretrainTask(base):  # type: ignore[misc, valid-type]
        """Next-token Huber pretraining of :class:`PixelSeriesTransformer`."""

        def __init__(self) -> None:
            super().__init__(lr=lr, weight_decay=weight_decay, scheduler="cosine")
            self.model = model
            self.tokens_seen = 0

        def shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
            series, doy, valid = batch["series"], batch["doy"], batch["valid"]
            if stage == "train":
                if augment:
                    series, doy, valid = augment_series(series, doy, valid, max_crop=0.5,
                                                        drop=0.1)
                self.tokens_seen += int(series.shape[0] * series.shape[1])
            return self.model.next_token_loss(series, doy, valid)

        def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            # A resumed run's compute account covers the tokens before the interruption too.
            checkpoint["eokit_tokens_seen"] = self.tokens_seen

        def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            self.tokens_seen = int(checkpoint.get("eokit_tokens_seen", 0))

    return PretrainTask()


def _make_head_task(head: nn.Module, loss_fn: LossFn, lr: float, weight_decay: float) -> Any:
    base = _base_task()

    class HeadTask(base):  # type: ignore[misc, valid-type]
        """Trains only a head on cached backbone features."""

        def __init__(self) -> None:
            super().__init__(lr=lr, weight_decay=weight_decay)
            self.head = head
            self.tokens_seen = 0
            self.val_tokens_seen = 0

        def shared_step(self, batch: Sequence[torch.Tensor], stage: str) -> torch.Tensor:
            features, target = batch
            tokens = int(features.shape[0] * features.shape[1])
            if stage == "train":
                self.tokens_seen += tokens
            else:
                self.val_tokens_seen += tokens
            return loss_fn(self.head(features), target)

    return HeadTask()


def _make_full_task(model: FineTunedSeriesModel, loss_fn: LossFn, lr: float,
                    weight_decay: float, backbone_lr_scale: float = 1.0) -> Any:
    base = _base_task()

    class FineTuneTask(base):  # type: ignore[misc, valid-type]
        """Trains head + whatever backbone parameters are trainable (LoRA or from scratch)."""

        def __init__(self) -> None:
            super().__init__(lr=lr, weight_decay=weight_decay)
            self.model = model
            self.tokens_seen = 0
            self.val_tokens_seen = 0

        def trainable_parameters(self) -> list[Any]:
            # Two AdamW groups: the head at ``lr``, the backbone at ``lr * backbone_lr_scale``
            # (the schedule scales both alike).
            head = [p for p in self.model.head.parameters() if p.requires_grad]
            body = [p for p in self.model.backbone.parameters() if p.requires_grad]
            if backbone_lr_scale == 1.0 or not body:
                return head + body
            return [{"params": head},
                    {"params": body, "lr": lr * backbone_lr_scale}]

        def shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
            tokens = int(batch["series"].shape[0] * batch["series"].shape[1])
            if stage == "train":
                self.tokens_seen += tokens
            else:
                self.val_tokens_seen += tokens
            out = self.model(batch["series"], batch["doy"], batch["valid"])
            return loss_fn(out, batch["target"])

    return FineTuneTask()


def _datamodule(train: torch.utils.data.Dataset[Any], val: torch.utils.data.Dataset[Any] | None,
                *, batch_size: int, seed: int) -> L.LightningDataModule:
    """In-memory train/val data: per-epoch seeded, rank-sharded order that resumes exactly."""
    from eokit.core.train import SimpleDataModule

    return SimpleDataModule(train, val, batch_size=batch_size, seed=seed)


def _fit(task: Any, datamodule: L.LightningDataModule, out_dir: Path, *, epochs: int, seed: int,
         progress: bool, trainer_overrides: dict[str, Any] | None,
         checkpoint_every_epoch: bool = True, callbacks: list[L.Callback] | None = None,
         resume: bool = False) -> None:
    from eokit.core.train import fit

    extra: dict[str, Any] = {}
    if not checkpoint_every_epoch:
        # Short head-only runs: a checkpoint per epoch costs more than the epoch itself.
        extra["checkpoint_every_n_steps"] = 10**9
    if callbacks:
        extra["callbacks"] = callbacks
    fit(task, datamodule, out_dir, resume=resume, seed=seed, trainer_overrides=trainer_overrides,
        max_epochs=epochs, progress=progress, enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=5, **extra)


def validation_split(n: int, *, fraction: float, groups: np.ndarray | None = None,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split ``n`` labelled pixels into (train, validation) indices.

    With ``groups`` (e.g. spatial block ids of the pixels) whole groups go to validation, so the
    validation pixels are spatially held out from the training pixels.

    Returns:
        (train indices, validation indices); validation is empty when ``fraction`` is 0 or there
        are too few pixels (< 10) or groups (< 2).
    """
    if not 0 <= fraction < 1:
        raise InputError(f"must be in [0, 1), got {fraction}", parameter="val_fraction")
    everything = np.arange(n)
    if fraction == 0 or n < 10:
        return everything, everything[:0]
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(n)
        n_val = max(1, int(round(fraction * n)))
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise InputError(f"must have one group per labelled pixel ({n}), got {groups.shape}",
                         parameter="val_groups")
    unique = rng.permutation(np.unique(groups))
    if unique.size < 2:
        return everything, everything[:0]
    chosen: list[Any] = []
    count = 0
    for group in unique[:-1]:
        if count >= fraction * n:
            break
        chosen.append(group)
        count += int((groups == group).sum())
    is_val = np.isin(groups, chosen)
    return everything[~is_val], everything[is_val]


# -- pretraining --------------------------------------------------------------------------------
def pretrain(
    data: SeriesData,
    out_dir: str | Path,
    *,
    size: str = "small",
    config_overrides: dict[str, Any] | None = None,
    config: SeriesModelConfig | None = None,
    epochs: int = 5,
    batch_size: int = 256,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    max_pixels: int | None = None,
    val_fraction: float = 0.05,
    augment: bool = True,
    seed: int = 0,
    progress: bool = True,
    trainer_overrides: dict[str, Any] | None = None,
    resume: bool = False,
) -> tuple[PixelSeriesTransformer, ComputeAccount]:
    """Pretrain a backbone by next-token prediction on unlabelled pixel series.

    Args:
        data: Pixel series (labels, if any, are ignored). Samples flagged in
            ``data.extra["is_test"]`` (Presto exports' ``is_test.npy``) are left out, so a
            test split's inputs never reach pretraining.
        out_dir: Lightning logs and checkpoints go here.
        size: Named size (:data:`~eokit.timeseries.model.MODEL_SIZES`).
        config_overrides: Fields of :class:`SeriesModelConfig` to override.
        config: A full architecture instead of ``size`` (its ``in_bands`` must match the data).
        epochs: Passes over the pixels.
        batch_size: Pixels per batch.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        max_pixels: Random subset of pixels to use (None: all with >= 2 valid dates).
        val_fraction: Pixels held out for the validation loss.
        augment: Random temporal crops (up to half the series) and 10 % extra dropped dates per
            training batch (:func:`augment_series`), so the model cannot use a token's position
            as a proxy for the pretraining scene's calendar.
        seed: Seed for the subset, split, init and shuffling.
        progress: Show the Lightning progress bar.
        trainer_overrides: Extra ``lightning.Trainer`` arguments.
        resume: Continue from ``out_dir/checkpoints/last.ckpt`` (same data and settings):
            weights, optimiser, schedule and the sample order of the interrupted epoch are
            restored (:func:`eokit.core.train.fit`); the random crops are drawn afresh.

    Returns:
        (backbone in eval mode, compute account of this phase; its tokens and FLOPs include
        the steps before a resume, its seconds are this call's).
    """
    from eokit.core.train import seed_everything

    _check_at_least(epochs=(epochs, 1), max_pixels=(max_pixels, 2))
    seed_everything(seed)
    enough = data.valid.sum(axis=1) >= 2
    if "is_test" in data.extra:
        # A test split's inputs must not shape the backbone its scores are later read from.
        is_test = np.asarray(data.extra["is_test"]).astype(bool).reshape(-1)
        if is_test.shape != (len(data),):
            raise InputError(f"is_test has {is_test.size} entries for {len(data)} samples",
                             parameter="is_test")
        logger.info("pretraining on the %d training samples only (%d test samples held out by "
                    "is_test)", int((~is_test).sum()), int(is_test.sum()))
        enough &= ~is_test
    usable = np.nonzero(enough)[0]
    if usable.size < 2:
        raise DataError(f"{data.source}: fewer than 2 pixels with >= 2 valid dates to pretrain on")
    rng = np.random.default_rng(seed)
    if max_pixels is not None and usable.size > max_pixels:
        usable = np.sort(rng.choice(usable, max_pixels, replace=False))
    order = rng.permutation(usable)
    n_val = int(round(val_fraction * order.size)) if order.size >= 20 else 0
    train_idx, val_idx = np.sort(order[n_val:]), np.sort(order[:n_val])
    overrides = {"max_len": max(256, data.n_dates), "band_names": list(data.band_names),
                 **(config_overrides or {})}
    if config is None:
        config = SeriesModelConfig.from_size(size, data.n_bands, **overrides)
    elif config.in_bands != data.n_bands:
        raise InputError(f"config has in_bands={config.in_bands} but the data have "
                         f"{data.n_bands} bands", parameter="config")
    if config.band_names is None:
        config.band_names = list(data.band_names)
    model = PixelSeriesTransformer(config)
    train = data.subset(train_idx)
    check_informative(train, what="pretrain on")
    model.set_scaling(train.series, train.valid)
    task = _make_pretrain_task(model, lr, weight_decay, augment)
    datamodule = _datamodule(SeriesDataset(train),
                             SeriesDataset(data.subset(val_idx)) if n_val else None,
                             batch_size=batch_size, seed=seed)
    start = time.perf_counter()
    _fit(task, datamodule, Path(out_dir), epochs=epochs, seed=seed, progress=progress,
         trainer_overrides=trainer_overrides, resume=resume)
    account = ComputeAccount("pretraining", pixels=int(train_idx.size), epochs=epochs)
    account.add(task.tokens_seen, 3.0 * forward_flops_per_token(config, data.n_dates)
                * task.tokens_seen)
    account.seconds = time.perf_counter() - start
    logger.info("pretraining: %d pixels, %.3g tokens, %.3g FLOPs, %.1f s", account.pixels,
                account.tokens, account.flops, account.seconds)
    model.eval()
    return model, account


# -- fine-tuning --------------------------------------------------------------------------------
def per_date_targets(targets: np.ndarray, n_dates: int, *, label_dates: str = "all"
                     ) -> np.ndarray:
    """Class targets (N,) or (N, T) -> (N, T); static labels go to every date or the last one."""
    targets = np.asarray(targets)
    if targets.ndim == 2:
        return targets.astype(np.int64)
    if label_dates not in ("all", "last"):
        raise InputError(f"must be 'all' or 'last', got {label_dates!r}", parameter="label_dates")
    out = np.full((targets.shape[0], n_dates), IGNORE_INDEX, dtype=np.int64)
    if label_dates == "all":
        out[:] = targets[:, None]
    else:
        out[:, -1] = targets
    return out


def _classification_loss(weights: torch.Tensor | None) -> LossFn:
    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # The class weights follow the logits to whatever device the trainer put them on.
        weight = None if weights is None else weights.to(logits.device, torch.float32)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1),
                               weight=weight, ignore_index=IGNORE_INDEX)

    return loss


#: Regression losses (on standardised targets).
REGRESSION_LOSSES = ("mse", "huber")


def _regression_loss(kind: str = "mse", delta: float = 1.0) -> LossFn:
    """Loss on the last date's output (B, T, 1) against standardised targets (B,).

    ``"huber"`` is quadratic within ``delta`` target standard deviations and linear beyond, so a
    few extreme labels pull the fit less than under ``"mse"``.
    """
    if kind not in REGRESSION_LOSSES:
        raise InputError(f"must be one of {REGRESSION_LOSSES}, got {kind!r}", parameter="loss")
    if delta <= 0:
        raise InputError(f"must be > 0, got {delta}", parameter="huber_delta")

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # The value is read at the last date (the whole series seen).
        if kind == "huber":
            return F.huber_loss(output[:, -1, 0], target, delta=delta)
        return F.mse_loss(output[:, -1, 0], target)

    return loss


@torch.no_grad()
def _features(model: FineTunedSeriesModel, data: SeriesData, batch_size: int) -> torch.Tensor:
    series, doy, valid = data.tensors()
    chunks = [model.features(series[i:i + batch_size], doy[i:i + batch_size],
                             valid[i:i + batch_size]) for i in range(0, len(data), batch_size)]
    return torch.cat(chunks)


def finetune(
    backbone: PixelSeriesTransformer,
    data: SeriesData,
    targets: np.ndarray,
    out_dir: str | Path,
    *,
    task: str = "classification",
    class_names: Sequence[str] | None = None,
    mode: str = "head",
    epochs: int = 60,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-3,
    hidden: int = 64,
    memory: float | None = None,
    pooling: str = "mean",
    input_lags: int = 12,
    lag_days: float = 30.0,
    dropout: float = 0.1,
    residuals: bool = False,
    lora_rank: int = 4,
    backbone_lr_scale: float = 1.0,
    loss: str = "mse",
    huber_delta: float = 1.0,
    label_dates: str = "all",
    balance_classes: bool = True,
    val_fraction: float = 0.2,
    val_groups: np.ndarray | None = None,
    patience: int = 10,
    refit: bool = True,
    seed: int = 0,
    progress: bool = True,
    trainer_overrides: dict[str, Any] | None = None,
) -> tuple[FineTunedSeriesModel, ComputeAccount]:
    """Fine-tune a pretrained backbone on labelled pixels (Dargana).

    Args:
        backbone: Pretrained backbone (not modified in ``mode="head"``: bit-identical after).
        data: The labelled pixels' series.
        targets: Classification: (N,) class ids or (N, T) per-date ids, 255 = unlabelled.
            Regression: (N,) values.
        out_dir: Lightning logs go here.
        task: ``"classification"`` or ``"regression"``.
        class_names: Class names (classification; defines K).
        mode: ``"head"`` (frozen backbone, cached features), ``"lora"`` (LoRA on the backbone) or
            ``"full"`` (every weight trains; used for the from-scratch baseline).
        epochs: Passes over the labelled pixels.
        batch_size: Pixels per batch.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        hidden: Head width.
        memory: Per-date prefix summary: None = mean of all dates so far; k = moving average
            over about the last k valid dates (faster reaction to changes).
        pooling: ``"mean"`` ([h_t, summary]) or ``"stats"`` (also running mean/max/min).
        input_lags: Lagged scaled input tokens for the head (0: none); see
            :mod:`eokit.timeseries.features`.
        lag_days: Spacing of the input lags in days.
        dropout: Head dropout.
        residuals: Give the head the backbone's forecast residuals and their moving average.
        lora_rank: LoRA rank (``mode="lora"``).
        backbone_lr_scale: ``mode="lora"``/``"full"``: the backbone's trainable weights learn at
            ``lr * backbone_lr_scale`` while the new head learns at ``lr`` (e.g. 0.1 to adapt a
            pretrained backbone gently).
        loss: Regression loss on the standardised targets: ``"mse"`` or ``"huber"``.
        huber_delta: Where the Huber loss turns linear, in target standard deviations.
        label_dates: Static class labels supervise ``"all"`` dates or only the ``"last"``.
        balance_classes: Inverse-frequency class weights in the loss.
        val_fraction: Share of the labelled pixels held out for early stopping (0: none, train
            for ``epochs``; also none with fewer than 10 labelled pixels). The best validation
            epoch's weights are kept (or re-trained on all pixels, see ``refit``).
        val_groups: Group id per labelled pixel (e.g. spatial block); validation takes whole
            groups so it is spatially held out.
        patience: Validation epochs without improvement before stopping.
        refit: Head mode with validation: after early stopping, train the head again from its
            initial weights on ALL labelled pixels for the best number of epochs (with a few
            hundred labels, holding 20 % out of the final model costs more than it gains).
        seed: Seed.
        progress: Show the progress bar.
        trainer_overrides: Extra ``lightning.Trainer`` arguments.

    Returns:
        (fine-tuned model in eval mode, compute account of this phase).
    """
    from eokit.core.train import KeepBest, seed_everything

    _check_at_least(epochs=(epochs, 1))
    seed_everything(seed)
    if mode not in ("head", "lora", "full"):
        raise InputError(f"must be head, lora or full, got {mode!r}", parameter="mode")
    if backbone_lr_scale <= 0:
        raise InputError(f"must be > 0, got {backbone_lr_scale}", parameter="backbone_lr_scale")
    if len(data) == 0:
        raise DataError("no labelled pixel to fine-tune on")
    targets = np.asarray(targets)
    if targets.shape[0] != len(data):
        raise InputError(f"{targets.shape[0]} targets for {len(data)} pixels", parameter="targets")
    if data.n_bands != backbone.config.in_bands:
        raise InputError(f"has {data.n_bands} bands but the backbone was pretrained on "
                         f"{backbone.config.in_bands}", parameter="series")
    check_informative(data, what="fine-tune on")
    warn_if_single_date(data)
    if task == "classification":
        if not class_names:
            raise InputError("classification needs class names", parameter="class_names")
        check_class_names(class_names)
        check_labels(targets, class_names, source="targets")
        check_two_classes(targets, class_names, source="targets")
        head_options: dict[str, Any] = {"memory": memory, "pooling": pooling,
                                        "input_lags": input_lags, "lag_days": lag_days,
                                        "dropout": dropout, "residuals": residuals}
        y = per_date_targets(targets, data.n_dates, label_dates=label_dates)
        model = FineTunedSeriesModel(backbone, len(class_names), task=task,
                                     class_names=list(class_names), hidden=hidden,
                                     **head_options)
        counts = np.bincount(y[y != IGNORE_INDEX].ravel(), minlength=len(class_names))
        weights = None
        if balance_classes:
            weights = torch.as_tensor(counts.sum() / np.maximum(counts, 1) / len(class_names),
                                      dtype=torch.float32)
        loss_fn = _classification_loss(weights)
        y_tensor = torch.as_tensor(y)
    elif task == "regression":
        head_options = {"memory": memory, "pooling": pooling, "input_lags": input_lags,
                        "lag_days": lag_days, "dropout": dropout, "residuals": residuals}
        values = targets.astype(np.float32)
        if values.ndim != 1 or not np.isfinite(values).all():
            raise InputError("regression targets must be (N,) finite values", parameter="targets")
        if values.size and values.min() == values.max():
            raise InputError(f"all {values.size} training targets equal {values[0]:g}: "
                             "nothing to regress", parameter="targets")
        model = FineTunedSeriesModel(backbone, 1, task=task, hidden=hidden, **head_options)
        model.target_mean.fill_(float(values.mean()))
        model.target_std.fill_(float(values.std() + 1e-6))
        y_tensor = torch.as_tensor((values - values.mean()) / (values.std() + 1e-6))
        loss_fn = _regression_loss(loss, huber_delta)
    else:
        raise InputError(f"must be classification or regression, got {task!r}", parameter="task")

    config = backbone.config
    fwd = forward_flops_per_token(config, data.n_dates)
    account = ComputeAccount(f"finetuning ({mode})", pixels=len(data), epochs=epochs)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    head_params = sum(p.numel() for p in model.head.parameters())
    train_idx, val_idx = validation_split(len(data), fraction=val_fraction, groups=val_groups,
                                          seed=seed)
    train_t, val_t = torch.as_tensor(train_idx), torch.as_tensor(val_idx)
    if mode == "head":
        backbone.requires_grad_(False)
        backbone.eval()
        features = _features(model, data, 1024)
        account.add(len(data) * data.n_dates, fwd * len(data) * data.n_dates)
        initial = {k: v.clone() for k, v in model.head.state_dict().items()}
        model.head.fit_standardisation(features[train_t])
        lt = _make_head_task(model.head, loss_fn, lr, weight_decay)
        keep = KeepBest(model.head, patience) if val_idx.size else None
        dm = _datamodule(TensorDataset(features[train_t], y_tensor[train_t]),
                         TensorDataset(features[val_t], y_tensor[val_t]) if keep else None,
                         batch_size=batch_size, seed=seed)
        _fit(lt, dm, out_dir, epochs=epochs, seed=seed, progress=progress,
             trainer_overrides=trainer_overrides, checkpoint_every_epoch=False,
             callbacks=[keep] if keep else None)
        account.add(0, 6.0 * head_params * lt.tokens_seen + 2.0 * head_params
                    * lt.val_tokens_seen)
        if keep is not None and refit and keep.best_epoch >= 0:
            best_epochs = keep.best_epoch + 1
            logger.info("refit on all %d labelled pixels for %d epochs", len(data), best_epochs)
            model.head.load_state_dict(initial)
            model.head.fit_standardisation(features)
            lt = _make_head_task(model.head, loss_fn, lr, weight_decay)
            dm = _datamodule(TensorDataset(features, y_tensor), None, batch_size=batch_size,
                             seed=seed)
            _fit(lt, dm, out_dir, epochs=best_epochs, seed=seed, progress=progress,
                 trainer_overrides=trainer_overrides, checkpoint_every_epoch=False)
            account.add(0, 6.0 * head_params * lt.tokens_seen)
            keep = None  # the refitted head is the final one
    else:
        if mode == "lora":
            from eokit.core.adapters import apply_lora

            backbone.requires_grad_(False)
            model.backbone = apply_lora(  # type: ignore[assignment]
                backbone, list(LORA_TARGETS), r=lora_rank, alpha=2 * lora_rank)
            model.head.requires_grad_(True)
        else:
            # A backbone frozen in place by an earlier head-only run must train again here.
            backbone.requires_grad_(True)
        # Standardise the head's inputs with the (initial) features of the training pixels.
        train_data = data.subset(train_idx)
        model.head.fit_standardisation(_features(model, train_data, 1024))
        account.add(len(train_data) * data.n_dates, fwd * len(train_data) * data.n_dates)
        y_np = y_tensor.numpy()
        lt = _make_full_task(model, loss_fn, lr, weight_decay, backbone_lr_scale)
        keep = KeepBest(model, patience) if val_idx.size else None
        dm = _datamodule(SeriesDataset(train_data, y_np[train_idx]),
                         SeriesDataset(data.subset(val_idx), y_np[val_idx]) if keep else None,
                         batch_size=batch_size, seed=seed)
        _fit(lt, dm, out_dir, epochs=epochs, seed=seed, progress=progress,
             trainer_overrides=trainer_overrides, callbacks=[keep] if keep else None)
        # Backward through the backbone costs about twice its forward, trainable or not.
        account.add(lt.tokens_seen + lt.val_tokens_seen,
                    (3.0 * fwd + 6.0 * head_params) * lt.tokens_seen
                    + (fwd + 2.0 * head_params) * lt.val_tokens_seen)
    if keep is not None:
        keep.restore()
        logger.info("early stopping: best validation loss %.4f at epoch %d", keep.best,
                    keep.best_epoch)
    account.seconds = time.perf_counter() - start
    logger.info("%s: %d pixels, %.3g tokens, %.3g FLOPs, %.1f s", account.phase, account.pixels,
                account.tokens, account.flops, account.seconds)
    model.eval()
    return model, account


def compute_summary(pretraining: dict[str, Any] | ComputeAccount | None,
                    finetuning: ComputeAccount) -> dict[str, Any]:
    """Fine-tuning vs pretraining compute (tokens, FLOPs, ratios) for metadata and reports."""
    fine = finetuning.as_dict()
    pre = pretraining.as_dict() if isinstance(pretraining, ComputeAccount) else pretraining
    summary: dict[str, Any] = {"finetuning": fine, "pretraining": pre}
    if pre and pre.get("flops"):
        summary["flops_ratio"] = fine["flops"] / pre["flops"]
        summary["tokens_ratio"] = fine["tokens"] / max(pre["tokens"], 1)
        summary["pixel_ratio"] = fine["pixels"] / max(pre["pixels"], 1)
    return summary


# -- inference ------------------------------------------------------------------------------
def _device_of(module: nn.Module) -> torch.device:
    """The device of a model's weights (inference inputs are moved there)."""
    return next(module.parameters()).device


def _on(device: torch.device, series: torch.Tensor, doy: torch.Tensor, valid: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return series.to(device), doy.to(device), valid.to(device)


def _batches(n: int, batch_size: int, progress: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    starts = range(0, n, batch_size)
    return tqdm(starts, desc=desc, disable=not progress or n <= batch_size, leave=False)


@torch.no_grad()
def predict_series(model: FineTunedSeriesModel, data: SeriesData, *, batch_size: int = 2048,
                   progress: bool = False) -> np.ndarray:
    """Per-date predictions: (N, T, K) probabilities or (N, T) values.

    Pixels without any valid observation get NaN (callers write nodata there).
    """
    _check_bands(model.backbone, data)
    device = _device_of(model)
    series, doy, valid = data.tensors()
    parts = [model.predict(*_on(device, series[i:i + batch_size], doy[i:i + batch_size],
                                valid[i:i + batch_size])).float().cpu().numpy()
             for i in _batches(len(data), batch_size, progress, "predict")]
    out = np.concatenate(parts).astype(np.float32)
    out[~data.has_observation] = np.nan
    return out


@torch.no_grad()
def embed_series(backbone: PixelSeriesTransformer, data: SeriesData, *, batch_size: int = 4096,
                 progress: bool = False, dtype: str | None = None, workers: int = 1) -> np.ndarray:
    """(N, D) pixel embeddings (NaN rows for pixels without a valid observation).

    ``dtype="bfloat16"`` and ``workers`` are passed to :meth:`PixelSeriesTransformer.embed`.
    """
    _check_bands(backbone, data)
    device = _device_of(backbone)
    series, doy, valid = data.tensors()
    parts = [backbone.embed(*_on(device, series[i:i + batch_size], doy[i:i + batch_size],
                                 valid[i:i + batch_size]), dtype=dtype, workers=workers
                            ).float().cpu().numpy()
             for i in _batches(len(data), batch_size, progress, "embed")]
    out = np.concatenate(parts)
    out[~data.has_observation] = np.nan
    return out


@torch.no_grad()
def forecast_residual_series(backbone: PixelSeriesTransformer, data: SeriesData, *,
                             batch_size: int = 2048, progress: bool = False) -> np.ndarray:
    """(N, T) one-step forecast residual of every date.

    See :meth:`PixelSeriesTransformer.forecast_residual`. NaN at the first date and wherever a
    date has no valid observation.
    """
    _check_bands(backbone, data)
    device = _device_of(backbone)
    series, doy, valid = data.tensors()
    parts = [backbone.forecast_residual(*_on(device, series[i:i + batch_size],
                                             doy[i:i + batch_size], valid[i:i + batch_size])
                                        ).cpu().numpy()
             for i in _batches(len(data), batch_size, progress, "forecast residual")]
    return np.concatenate(parts).astype(np.float32)


@torch.no_grad()
def forecast_series(backbone: PixelSeriesTransformer, data: SeriesData, n_steps: int, *,
                    step_days: float | None = None, batch_size: int = 2048,
                    progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Forecast ``n_steps`` dates after the last one for every pixel.

    Returns:
        (forecast (N, n_steps, C) raw bands, NaN where a pixel had no valid observation;
        future dates (n_steps,) datetime64[D] when the data have shared dates, else None).
    """
    _check_bands(backbone, data)
    if step_days is None and data.n_dates < 2:
        raise InputError(f"{data.source or 'input'} has a single date, so no revisit interval "
                         "to step by: give the days between future dates", parameter="step_days")
    series, doy, valid = data.tensors()
    if step_days is None and data.dates is not None and data.n_dates >= 2:
        gaps = np.diff(data.dates.astype("datetime64[D]")).astype(np.int64)
        step_days = float(max(1, int(np.median(gaps))))
    parts = []
    device = _device_of(backbone)
    for i in _batches(len(data), batch_size, progress, "forecast"):
        values, _ = backbone.forecast(*_on(device, series[i:i + batch_size],
                                           doy[i:i + batch_size], valid[i:i + batch_size]),
                                      n_steps, step_days=step_days)
        parts.append(values.float().cpu().numpy())
    out = np.concatenate(parts).astype(np.float32)
    out[~data.has_observation] = np.nan
    future = None
    if data.dates is not None and step_days is not None:
        last = data.dates[-1].astype("datetime64[D]")
        future = last + (np.arange(1, n_steps + 1) * int(round(step_days))).astype(
            "timedelta64[D]")
    return out, future


def check_class_names(class_names: Sequence[str]) -> None:
    """InputError unless the class names are non-empty strings, each used once."""
    names = [str(c).strip() for c in class_names]
    if "" in names or len(set(names)) != len(names):
        raise InputError(f"class names must be non-empty and unique, got {list(class_names)}",
                         parameter="class_names")


def _check_at_least(**values: tuple[int | None, int]) -> None:
    """InputError naming the first integer argument below its minimum (None: not set)."""
    for name, (value, least) in values.items():
        if value is not None and (int(value) != value or value < least):
            raise InputError(f"must be an integer >= {least}, got {value}", parameter=name)


def _check_bands(backbone: PixelSeriesTransformer, data: SeriesData) -> None:
    expected = backbone.config.in_bands
    if data.n_bands != expected:
        names = backbone.config.band_names
        raise InputError(
            f"{data.source or 'input'} has {data.n_bands} bands but the model expects {expected}"
            + (f" ({', '.join(names)})" if names else ""), parameter="input")


# -- change dating --------------------------------------------------------------------------
def forest_change_dates(
    forest_probability: np.ndarray,
    valid: np.ndarray,
    *,
    threshold: float = 0.5,
    persistence: int = 2,
    warmup: int = 0,
    smooth: int = 1,
    hysteresis: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """First date each pixel becomes forest and first date it stops being forest.

    The forest probability is read at valid dates only, optionally smoothed by a running median
    over ``smooth`` valid dates centred on each date (maps are made after the fact, so the
    smoothing may look ahead; a centred median keeps a step where it is). The state switches to
    forest when the probability reaches ``threshold + hysteresis`` and back to non-forest when it
    falls below ``threshold - hysteresis`` (a band against flicker); a change counts when
    ``persistence`` consecutive valid dates agree, and it is dated at the first of them. The
    state before index ``warmup`` (short causal prefix) only sets the initial state.

    Args:
        forest_probability: (N, T) probability of forest per date (NaN allowed).
        valid: (N, T) bool.
        threshold: Forest when probability >= threshold (centre of the hysteresis band).
        persistence: Consecutive valid dates needed to confirm a change.
        warmup: Dates at the start where no change is recorded.
        smooth: Window (valid dates, odd) of the centred running median; 1 = none.
        hysteresis: Half-width of the band around ``threshold``.

    Returns:
        (becomes_forest (N,), stops_forest (N,)) date indices, -1 where no such change.
    """
    if smooth < 1:
        raise InputError(f"must be >= 1, got {smooth}", parameter="smooth")
    if not 0 <= hysteresis < min(threshold, 1 - threshold) + 1e-9:
        raise InputError(f"must be in [0, {min(threshold, 1 - threshold)}), got {hysteresis}",
                         parameter="hysteresis")
    valid = np.asarray(valid, dtype=bool)
    prob = np.nan_to_num(np.asarray(forest_probability, dtype=np.float32), nan=0.0)
    if smooth > 1:
        prob = smooth_valid(prob, valid, smooth)
    n, t = prob.shape
    state = np.full(n, -1, dtype=np.int8)  # -1 unknown, 0 non-forest, 1 forest
    run = np.zeros(n, dtype=np.int32)
    candidate = np.zeros(n, dtype=np.int64)
    becomes = np.full(n, -1, dtype=np.int64)
    stops = np.full(n, -1, dtype=np.int64)
    for k in range(t):
        seen = valid[:, k]
        now = (prob[:, k] >= threshold).astype(np.int8)
        unknown = seen & (state < 0)
        state[unknown] = now[unknown]
        if hysteresis > 0:
            # Inside the band the pixel keeps its current state.
            inside = np.abs(prob[:, k] - threshold) < hysteresis
            now = np.where(inside & (state >= 0), state, now).astype(np.int8)
        differs = seen & (state >= 0) & (now != state) & ~unknown
        same = seen & (now == state) & ~unknown
        run[same] = 0
        start = differs & (run == 0)
        candidate[start] = k
        run[differs] += 1
        confirmed = differs & (run >= persistence)
        if k < warmup:
            confirmed_quiet = confirmed
            state[confirmed_quiet] = now[confirmed_quiet]
            run[confirmed_quiet] = 0
            continue
        to_forest = confirmed & (now == 1) & (becomes < 0)
        to_open = confirmed & (now == 0) & (stops < 0)
        becomes[to_forest] = candidate[to_forest]
        stops[to_open] = candidate[to_open]
        state[confirmed] = now[confirmed]
        run[confirmed] = 0
    return becomes, stops



def peak_departure(score: np.ndarray, dates: np.ndarray, *, warmup_days: float = 180.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's largest forecast residual and its date: an abrupt-change map without labels.

    Dates within ``warmup_days`` of the first are skipped (the forecast has little context there).

    Args:
        score: (N, T) forecast residual (:func:`forecast_residual_series`), NaN = no observation.
        dates: (T,) increasing datetime64 dates.
        warmup_days: Days at the start not searched.

    Returns:
        (peak (N,) float32, NaN where no date qualifies; index (N,) int64, -1 there).
    """
    score = np.asarray(score, dtype=np.float32)
    days = np.asarray(dates).astype("datetime64[D]").astype(np.int64)
    if score.ndim != 2 or days.shape != (score.shape[1],):
        raise InputError(f"score {score.shape} must be (pixels, {days.shape[0]} dates)",
                         parameter="score")
    if not warmup_days >= 0:
        raise InputError(f"must be >= 0, got {warmup_days}", parameter="warmup_days")
    usable = np.isfinite(score) & (days[None] >= days[0] + warmup_days)
    index = np.argmax(np.where(usable, score, -np.inf), axis=1)
    found = usable.any(axis=1)
    peak = np.where(found, score[np.arange(score.shape[0]), index], np.nan).astype(np.float32)
    return peak, np.where(found, index, -1).astype(np.int64)


def refine_change_dates(detected: np.ndarray, score: np.ndarray, dates: np.ndarray, *,
                        window_days: float = 365.0) -> np.ndarray:
    """Move each detected change to the date that departs most from the model's forecast.

    A classifier confirms a change only once its features have seen enough of the new state
    (for a late-summer clear-cut, often the next spring); the backbone's one-step forecast
    residual (:meth:`PixelSeriesTransformer.forecast_residual`) peaks on the first date observed
    after an abrupt change. For every pixel with a detection this returns the date, among the
    dates within ``window_days`` up to and including the detection, with the largest residual.

    Args:
        detected: (N,) date indices of detected changes, -1 where none.
        score: (N, T) forecast residual, NaN where a date has no valid observation.
        dates: (T,) increasing datetime64 dates.
        window_days: How far before the detection the change may have happened.

    Returns:
        (N,) date indices; -1 where nothing was detected; the detection itself where the window
        holds no valid date.
    """
    detected = np.asarray(detected, dtype=np.int64)
    score = np.asarray(score, dtype=np.float32)
    if score.ndim != 2 or score.shape[0] != detected.shape[0]:
        raise InputError(f"score {score.shape} must be (pixels, dates) for {detected.shape[0]} "
                         "pixels", parameter="score")
    days = np.asarray(dates).astype("datetime64[D]").astype(np.int64)
    if days.shape != (score.shape[1],):
        raise InputError(f"{days.shape[0]} dates for {score.shape[1]} score columns",
                         parameter="dates")
    if not window_days > 0:
        raise InputError(f"must be > 0, got {window_days}", parameter="window_days")
    found = detected >= 0
    end = days[np.clip(detected, 0, None)][:, None]
    inside = (days[None] <= end) & (days[None] > end - window_days) & np.isfinite(score)
    best = np.argmax(np.where(inside, score, -np.inf), axis=1)
    return np.where(found & inside.any(axis=1), best, detected)

def smooth_valid(values: np.ndarray, valid: np.ndarray, window: int) -> np.ndarray:
    """Centred running median of (N, T) ``values`` over each row's valid dates.

    Invalid dates keep their value; near the ends the window is truncated.

    Args:
        values: (N, T) float.
        valid: (N, T) bool.
        window: Number of valid dates in the window.
    """
    values = np.asarray(values, dtype=np.float32)
    n, t = values.shape
    half = window // 2
    # Pack each row's valid values to the left (stable order), NaN after them.
    order = np.argsort(~valid, axis=1, kind="stable")
    packed = np.take_along_axis(np.where(valid, values, np.nan), order, axis=1)
    padded = np.pad(packed, ((0, 0), (half, half)), constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1, axis=1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows past the last valid
        smoothed = np.nanmedian(windows, axis=-1)
    out = values.copy()
    rows = np.repeat(np.arange(n), t).reshape(n, t)
    back = np.where(valid, smoothed[rows, np.argsort(order, axis=1)], values)
    out[:] = back
    return out

