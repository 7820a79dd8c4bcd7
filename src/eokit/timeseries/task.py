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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from eokit.core.errors import DataError, InputError
from eokit.core.types import IGNORE_INDEX
from eokit.timeseries.data import SeriesData, SeriesDataset, check_labels
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


class SeriesDataModule(L.LightningDataModule):
    """Train/val loaders over in-memory datasets (shuffled with a seeded generator)."""

    def __init__(self, train: torch.utils.data.Dataset[Any], val: torch.utils.data.Dataset[Any]
                 | None, *, batch_size: int, seed: int = 0) -> None:
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size = batch_size
        self.seed = seed

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled training batches."""
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          generator=generator, drop_last=False)

    def val_dataloader(self) -> DataLoader[Any] | list[Any]:
        """Validation batches (empty list when there is no validation set)."""
        if self.val_set is None or len(self.val_set) == 0:  # type: ignore[arg-type]
            return []
        return DataLoader(self.val_set, batch_size=self.batch_size)


def _make_pretrain_task(model: PixelSeriesTransformer, lr: float, weight_decay: float) -> Any:
    base = _base_task()

    class PretrainTask(base):  # type: ignore[misc, valid-type]
        """Next-token Huber pretraining of :class:`PixelSeriesTransformer`."""

        def __init__(self) -> None:
            super().__init__(lr=lr, weight_decay=weight_decay, scheduler="cosine")
            self.model = model
            self.tokens_seen = 0

        def shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
            if stage == "train":
                self.tokens_seen += int(batch["series"].shape[0] * batch["series"].shape[1])
            return self.model.next_token_loss(batch["series"], batch["doy"], batch["valid"])

    return PretrainTask()


def _make_head_task(head: nn.Module, loss_fn: LossFn, lr: float, weight_decay: float) -> Any:
    base = _base_task()

    class HeadTask(base):  # type: ignore[misc, valid-type]
        """Trains only a head on cached backbone features."""

        def __init__(self) -> None:
            super().__init__(lr=lr, weight_decay=weight_decay)
            self.head = head
            self.tokens_seen = 0

        def shared_step(self, batch: Sequence[torch.Tensor], stage: str) -> torch.Tensor:
            features, target = batch
            if stage == "train":
                self.tokens_seen += int(features.shape[0] * features.shape[1])
            return loss_fn(self.head(features), target)

    return HeadTask()


def _make_full_task(model: FineTunedSeriesModel, loss_fn: LossFn, lr: float,
                    weight_decay: float) -> Any:
    base = _base_task()

    class FineTuneTask(base):  # type: ignore[misc, valid-type]
        """Trains head + whatever backbone parameters are trainable (LoRA or from scratch)."""

        def __init__(self) -> None:
            super().__init__(lr=lr, weight_decay=weight_decay)
            self.model = model
            self.tokens_seen = 0

        def shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
            if stage == "train":
                self.tokens_seen += int(batch["series"].shape[0] * batch["series"].shape[1])
            out = self.model(batch["series"], batch["doy"], batch["valid"])
            return loss_fn(out, batch["target"])

    return FineTuneTask()


def _fit(task: Any, datamodule: L.LightningDataModule, out_dir: Path, *, epochs: int, seed: int,
         progress: bool, trainer_overrides: dict[str, Any] | None,
         checkpoint_every_epoch: bool = True) -> None:
    from eokit.core.train import fit

    extra: dict[str, Any] = {}
    if not checkpoint_every_epoch:
        # Short head-only runs: a checkpoint per epoch costs more than the epoch itself.
        extra["checkpoint_every_n_steps"] = 10**9
    fit(task, datamodule, out_dir, seed=seed, trainer_overrides=trainer_overrides,
        max_epochs=epochs, progress=progress, enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=5, **extra)


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
    seed: int = 0,
    progress: bool = True,
    trainer_overrides: dict[str, Any] | None = None,
) -> tuple[PixelSeriesTransformer, ComputeAccount]:
    """Pretrain a backbone by next-token prediction on unlabelled pixel series.

    Args:
        data: Pixel series (labels, if any, are ignored).
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
        seed: Seed for the subset, split, init and shuffling.
        progress: Show the Lightning progress bar.
        trainer_overrides: Extra ``lightning.Trainer`` arguments.

    Returns:
        (backbone in eval mode, compute account of this phase).
    """
    from eokit.core.train import seed_everything

    seed_everything(seed)
    usable = np.nonzero(data.valid.sum(axis=1) >= 2)[0]
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
    model.set_scaling(train.series, train.valid)
    task = _make_pretrain_task(model, lr, weight_decay)
    datamodule = SeriesDataModule(SeriesDataset(train),
                                  SeriesDataset(data.subset(val_idx)) if n_val else None,
                                  batch_size=batch_size, seed=seed)
    start = time.perf_counter()
    _fit(task, datamodule, Path(out_dir), epochs=epochs, seed=seed, progress=progress,
         trainer_overrides=trainer_overrides)
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
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                               weight=weights, ignore_index=IGNORE_INDEX)

    return loss


def _regression_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Output (B, T, 1): the value is read at the last date (the whole series seen).
    return F.mse_loss(output[:, -1, 0], target)


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
    lora_rank: int = 4,
    label_dates: str = "all",
    balance_classes: bool = True,
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
        lora_rank: LoRA rank (``mode="lora"``).
        label_dates: Static class labels supervise ``"all"`` dates or only the ``"last"``.
        balance_classes: Inverse-frequency class weights in the loss.
        seed: Seed.
        progress: Show the progress bar.
        trainer_overrides: Extra ``lightning.Trainer`` arguments.

    Returns:
        (fine-tuned model in eval mode, compute account of this phase).
    """
    from eokit.core.train import seed_everything

    seed_everything(seed)
    if mode not in ("head", "lora", "full"):
        raise InputError(f"must be head, lora or full, got {mode!r}", parameter="mode")
    if len(data) == 0:
        raise DataError("no labelled pixel to fine-tune on")
    targets = np.asarray(targets)
    if targets.shape[0] != len(data):
        raise InputError(f"{targets.shape[0]} targets for {len(data)} pixels", parameter="targets")
    if data.n_bands != backbone.config.in_bands:
        raise InputError(f"has {data.n_bands} bands but the backbone was pretrained on "
                         f"{backbone.config.in_bands}", parameter="series")
    if task == "classification":
        if not class_names:
            raise InputError("classification needs class names", parameter="class_names")
        check_labels(targets, class_names, source="targets")
        y = per_date_targets(targets, data.n_dates, label_dates=label_dates)
        model = FineTunedSeriesModel(backbone, len(class_names), task=task,
                                     class_names=list(class_names), hidden=hidden,
                                     memory=memory)
        counts = np.bincount(y[y != IGNORE_INDEX].ravel(), minlength=len(class_names))
        weights = None
        if balance_classes:
            weights = torch.as_tensor(counts.sum() / np.maximum(counts, 1) / len(class_names),
                                      dtype=torch.float32)
        loss_fn = _classification_loss(weights)
        y_tensor = torch.as_tensor(y)
    elif task == "regression":
        values = targets.astype(np.float32)
        if values.ndim != 1 or not np.isfinite(values).all():
            raise InputError("regression targets must be (N,) finite values", parameter="targets")
        model = FineTunedSeriesModel(backbone, 1, task=task, hidden=hidden, memory=memory)
        model.target_mean.fill_(float(values.mean()))
        model.target_std.fill_(float(values.std() + 1e-6))
        y_tensor = torch.as_tensor((values - values.mean()) / (values.std() + 1e-6))
        loss_fn = _regression_loss
    else:
        raise InputError(f"must be classification or regression, got {task!r}", parameter="task")

    config = backbone.config
    fwd = forward_flops_per_token(config, data.n_dates)
    account = ComputeAccount(f"finetuning ({mode})", pixels=len(data), epochs=epochs)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    head_params = sum(p.numel() for p in model.head.parameters())
    if mode == "head":
        backbone.requires_grad_(False)
        backbone.eval()
        features = _features(model, data, 1024)
        account.add(len(data) * data.n_dates, fwd * len(data) * data.n_dates)
        lt = _make_head_task(model.head, loss_fn, lr, weight_decay)
        dm = SeriesDataModule(TensorDataset(features, y_tensor), None, batch_size=batch_size,
                              seed=seed)
        _fit(lt, dm, out_dir, epochs=epochs, seed=seed, progress=progress,
             trainer_overrides=trainer_overrides, checkpoint_every_epoch=False)
        account.add(0, 6.0 * head_params * lt.tokens_seen)
    else:
        if mode == "lora":
            from eokit.core.adapters import apply_lora

            backbone.requires_grad_(False)
            model.backbone = apply_lora(  # type: ignore[assignment]
                backbone, list(LORA_TARGETS), r=lora_rank, alpha=2 * lora_rank)
            model.head.requires_grad_(True)
        dataset = SeriesDataset(data, y_tensor.numpy())
        lt = _make_full_task(model, loss_fn, lr, weight_decay)
        dm = SeriesDataModule(dataset, None, batch_size=batch_size, seed=seed)
        _fit(lt, dm, out_dir, epochs=epochs, seed=seed, progress=progress,
             trainer_overrides=trainer_overrides)
        # Backward through the backbone costs about twice its forward, trainable or not.
        account.add(lt.tokens_seen, (3.0 * fwd + 6.0 * head_params) * lt.tokens_seen)
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
    series, doy, valid = data.tensors()
    parts = [model.predict(series[i:i + batch_size], doy[i:i + batch_size],
                           valid[i:i + batch_size]).numpy()
             for i in _batches(len(data), batch_size, progress, "predict")]
    out = np.concatenate(parts).astype(np.float32)
    out[~data.has_observation] = np.nan
    return out


@torch.no_grad()
def embed_series(backbone: PixelSeriesTransformer, data: SeriesData, *, batch_size: int = 4096,
                 progress: bool = False) -> np.ndarray:
    """(N, D) pixel embeddings (NaN rows for pixels without a valid observation)."""
    _check_bands(backbone, data)
    series, doy, valid = data.tensors()
    parts = [backbone.embed(series[i:i + batch_size], doy[i:i + batch_size],
                            valid[i:i + batch_size]).numpy()
             for i in _batches(len(data), batch_size, progress, "embed")]
    out = np.concatenate(parts)
    out[~data.has_observation] = np.nan
    return out


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
    series, doy, valid = data.tensors()
    if step_days is None and data.dates is not None and data.n_dates >= 2:
        gaps = np.diff(data.dates.astype("datetime64[D]")).astype(np.int64)
        step_days = float(max(1, int(np.median(gaps))))
    parts = []
    for i in _batches(len(data), batch_size, progress, "forecast"):
        values, _ = backbone.forecast(series[i:i + batch_size], doy[i:i + batch_size],
                                      valid[i:i + batch_size], n_steps, step_days=step_days)
        parts.append(values.numpy())
    out = np.concatenate(parts).astype(np.float32)
    out[~data.has_observation] = np.nan
    future = None
    if data.dates is not None and step_days is not None:
        last = data.dates[-1].astype("datetime64[D]")
        future = last + (np.arange(1, n_steps + 1) * int(round(step_days))).astype(
            "timedelta64[D]")
    return out, future


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
) -> tuple[np.ndarray, np.ndarray]:
    """First date each pixel becomes forest and first date it stops being forest.

    The forest state is read at valid dates only; a change counts when ``persistence``
    consecutive valid dates agree, and it is dated at the first of them. The state before index
    ``warmup`` (short causal prefix) only sets the initial state.

    Args:
        forest_probability: (N, T) probability of forest per date (NaN allowed).
        valid: (N, T) bool.
        threshold: Forest when probability >= threshold.
        persistence: Consecutive valid dates needed to confirm a change.
        warmup: Dates at the start where no change is recorded.

    Returns:
        (becomes_forest (N,), stops_forest (N,)) date indices, -1 where no such change.
    """
    prob = np.nan_to_num(np.asarray(forest_probability, dtype=np.float32), nan=0.0)
    valid = np.asarray(valid, dtype=bool)
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
