"""Training engine: Lightning base task, DDP-aware sampler, trainer factory, resume, configs.

Every trained capability subclasses :class:`BaseTask` and trains through :func:`fit`, which gives
the same behaviour everywhere: CPU by default, seeded, CSV + TensorBoard logs and
``checkpoints/last.ckpt`` under ``out_dir``, resume from that file, and ``--trainer.*`` overrides
for GPUs and clusters (``--trainer.accelerator gpu --trainer.devices 4 --trainer.num_nodes 2
--trainer.strategy ddp``).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from eokit.core.errors import ConfigError, InputError
from eokit.core.raster import atomic_write

logger = logging.getLogger(__name__)

__all__ = [
    "TRAINER_CONTEXT_SETTINGS",
    "BaseTask",
    "DistributedAwareSampler",
    "KeepBest",
    "SimpleDataModule",
    "fit",
    "fit_interruptible",
    "instantiate",
    "last_checkpoint",
    "load_checkpoint",
    "load_weights",
    "load_yaml_config",
    "make_loader",
    "make_trainer",
    "parse_trainer_overrides",
    "resume_position",
    "set_aside_checkpoints",
    "save_weights",
    "seed_everything",
]

#: click ``context_settings`` for commands that accept ``--trainer.*`` overrides (read ``ctx.args``
#: and pass them to :func:`parse_trainer_overrides`).
TRAINER_CONTEXT_SETTINGS: dict[str, Any] = {
    "ignore_unknown_options": True,
    "allow_extra_args": True,
}

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
#: Subfolder of the checkpoint folder where a fresh run moves an earlier run's checkpoints.
PREVIOUS_RUN_DIR = "previous"


# --------------------------------------------------------------------------------------------------
# seeding
# --------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, torch and (via Lightning) DataLoader workers for reproducible runs."""
    L.seed_everything(int(seed), workers=True, verbose=False)


# --------------------------------------------------------------------------------------------------
# sampler and data helpers
# --------------------------------------------------------------------------------------------------
def _distributed_info(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """World size and rank: explicit, else torch.distributed, else WORLD_SIZE/RANK, else 1/0."""
    dist = torch.distributed
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        if initialised:
            num_replicas = dist.get_world_size()
        else:
            num_replicas = int(os.environ.get("WORLD_SIZE", "1"))
    if rank is None:
        if initialised:
            rank = dist.get_rank()
        else:
            rank = int(os.environ.get("RANK", "0"))
    if num_replicas < 1:
        raise InputError(f"world size must be >= 1, got {num_replicas}", parameter="num_replicas")
    if not 0 <= rank < num_replicas:
        raise InputError(f"rank {rank} outside 0..{num_replicas - 1}", parameter="rank")
    return num_replicas, rank


class DistributedAwareSampler(DistributedSampler):  # type: ignore[type-arg]
    """Rank-, world-size- and epoch-aware sampler that also works without ``torch.distributed``.

    Each epoch draws one permutation from ``seed + epoch`` (identical on every rank), pads it by
    repeating its start to a multiple of the world size (unless ``drop_last``), and gives rank ``r``
    the indices ``r, r + W, r + 2W, ...``: ranks see disjoint samples that together cover the
    dataset. Lightning calls :meth:`set_epoch` every epoch and leaves the sampler alone (it is a
    ``DistributedSampler``), so a DDP run never shards twice.

    Args:
        dataset: A sized dataset or its length.
        num_replicas: World size; default from ``torch.distributed`` if initialised, else the
            ``WORLD_SIZE`` environment variable, else 1.
        rank: This process's rank; default as for ``num_replicas`` (``RANK``, else 0).
        shuffle: Shuffle per epoch (deterministically).
        seed: Base seed of the per-epoch permutation.
        drop_last: Drop the tail instead of padding (ranks then see fewer samples each).
        num_samples: Samples per epoch over all ranks (default: dataset length). More than the
            dataset length cycles through fresh permutations (random-window datasets).
    """

    def __init__(
        self,
        dataset: Sized | int,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_samples: int | None = None,
    ) -> None:
        # DistributedSampler.__init__ insists on an initialised process group; set state directly.
        self.dataset_length = int(dataset) if isinstance(dataset, int) else len(dataset)
        if self.dataset_length < 1:
            raise InputError("dataset is empty", parameter="dataset")
        self.num_replicas, self.rank = _distributed_info(num_replicas, rank)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0
        self.epoch_size = int(num_samples) if num_samples is not None else self.dataset_length
        if self.epoch_size < 1:
            raise InputError(f"num_samples must be >= 1, got {num_samples}",
                             parameter="num_samples")
        if drop_last:
            self.num_samples = self.epoch_size // self.num_replicas
        else:
            self.num_samples = math.ceil(self.epoch_size / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self.dataset = dataset  # type: ignore[assignment]
        self._resume: tuple[int, int] | None = None

    def epoch_indices(self) -> list[int]:
        """All ranks' indices for the current epoch (before sharding), length ``total_size``."""
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order: list[int] = []
        while len(order) < max(self.epoch_size, self.total_size):
            if self.shuffle:
                order.extend(torch.randperm(self.dataset_length, generator=g).tolist())
            else:
                order.extend(range(self.dataset_length))
        order = order[: self.epoch_size]
        if len(order) < self.total_size:  # pad by repeating the start (DistributedSampler rule)
            order = (order * math.ceil(self.total_size / len(order)))[: self.total_size]
        return order[: self.total_size]

    def __iter__(self) -> Iterator[int]:
        """Yield this rank's indices for the current epoch (minus a pending resume skip)."""
        indices = self.epoch_indices()[self.rank : self.total_size : self.num_replicas]
        if self._resume is not None and self._resume[0] == self.epoch:
            indices = indices[self._resume[1]:]
            self._resume = None
        return iter(indices)

    def resume_within_epoch(self, epoch: int, samples: int) -> None:
        """Skip this rank's first ``samples`` indices the next time ``epoch`` is iterated (once).

        A run resumed from a mid-epoch checkpoint then sees the rest of that epoch's permutation
        instead of its start again. ``__len__`` keeps the full epoch length (Lightning counts the
        resumed epoch's remaining batches from its restored progress).
        """
        if samples < 0:
            raise InputError(f"must be >= 0, got {samples}", parameter="samples")
        self._resume = (int(epoch), int(samples)) if samples else None

    def __len__(self) -> int:
        """Number of indices this rank yields per epoch."""
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (changes the permutation identically on every rank)."""
        self.epoch = int(epoch)


def make_loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    drop_last: bool = False,
    num_samples: int | None = None,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """DataLoader over ``dataset`` with a :class:`DistributedAwareSampler` (DDP-ready, seeded).

    Args:
        dataset: Map-style dataset.
        batch_size: Samples per batch per process.
        shuffle: Shuffle per epoch.
        seed: Sampler seed.
        num_workers: Worker processes (0 = main process; each worker is seeded from ``seed``).
        collate_fn: Batch collation (default: torch's).
        drop_last: Drop incomplete last batch and sampler tail.
        num_samples: Samples per epoch over all ranks (see :class:`DistributedAwareSampler`).
        pin_memory: Pin host memory (useful on GPUs).

    Returns:
        The loader.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}", parameter="batch_size")
    sampler = DistributedAwareSampler(
        dataset,  # type: ignore[arg-type]
        shuffle=shuffle, seed=seed, drop_last=drop_last, num_samples=num_samples,
    )
    worker_init_fn = None
    if num_workers > 0:
        from lightning.fabric.utilities.seed import pl_worker_init_function

        worker_init_fn = pl_worker_init_function
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=drop_last,
        pin_memory=pin_memory,
        worker_init_fn=worker_init_fn,
        persistent_workers=num_workers > 0,
    )


class SimpleDataModule(L.LightningDataModule):
    """LightningDataModule over ready-made datasets, with DDP-aware seeded samplers.

    Args:
        train: Training dataset.
        val: Validation dataset (optional).
        test: Test dataset (optional).
        batch_size: Samples per batch per process.
        num_workers: DataLoader workers.
        seed: Sampler seed (train shuffles per epoch; val/test keep order).
        collate_fn: Batch collation.
        num_samples: Training samples per epoch (default: dataset length).
    """

    def __init__(
        self,
        train: Dataset[Any],
        val: Dataset[Any] | None = None,
        test: Dataset[Any] | None = None,
        *,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        num_samples: int | None = None,
    ) -> None:
        super().__init__()
        self.train_set, self.val_set, self.test_set = train, val, test
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.collate_fn = collate_fn
        self.num_samples = num_samples
        #: Epoch of the training sampler when its loader is built (:func:`fit` sets it on resume:
        #: Lightning starts a loader's worker processes before it calls ``set_epoch``).
        self.start_epoch = 0
        #: Batches of ``start_epoch`` already trained (a mid-epoch checkpoint; :func:`fit` sets
        #: it): the training sampler skips them.
        self.start_batch = 0

    def _loader(self, dataset: Dataset[Any], *, train: bool) -> DataLoader[Any]:
        loader = make_loader(
            dataset, batch_size=self.batch_size, shuffle=train, seed=self.seed,
            num_workers=self.num_workers, collate_fn=self.collate_fn,
            num_samples=self.num_samples if train else None,
        )
        if train and isinstance(loader.sampler, DistributedAwareSampler):
            loader.sampler.set_epoch(self.start_epoch)
            loader.sampler.resume_within_epoch(self.start_epoch,
                                               self.start_batch * self.batch_size)
        return loader

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled, rank-sharded training loader."""
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader[Any] | list[Any]:
        """Ordered, rank-sharded validation loader (empty list when there is no validation set)."""
        return [] if self.val_set is None else self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader[Any] | list[Any]:
        """Ordered, rank-sharded test loader (empty list when there is no test set)."""
        return [] if self.test_set is None else self._loader(self.test_set, train=False)


# --------------------------------------------------------------------------------------------------
# base task
# --------------------------------------------------------------------------------------------------
def _checkpoint_safe(value: Any) -> tuple[bool, Any]:
    """Return (ok, value) where value loads under ``torch.load(weights_only=True)``."""
    if value is None or isinstance(value, bool | int | float | str):
        return True, value
    if isinstance(value, Path):
        return True, str(value)
    if isinstance(value, np.generic) and value.ndim == 0:
        return _checkpoint_safe(value.item())
    if isinstance(value, list | tuple):
        items = [_checkpoint_safe(v) for v in value]
        if all(ok for ok, _ in items):
            return True, type(value)(v for _, v in items)
        return False, None
    if isinstance(value, Mapping):
        pairs = {k: _checkpoint_safe(v) for k, v in value.items()}
        if all(isinstance(k, str) and ok for k, (ok, _) in pairs.items()):
            return True, {k: v for k, (_, v) in pairs.items()}
    return False, None


class BaseTask(L.LightningModule):
    """Base LightningModule for every trained capability.

    Subclasses build their networks in ``__init__`` (after ``super().__init__(...)``) and implement
    :meth:`shared_step`. The base records every constructor argument of the subclass that a
    ``weights_only`` checkpoint can hold as hyper-parameters (modules and other objects are
    skipped), logs ``<stage>/loss``, and builds AdamW over the *trainable* parameters only
    (frozen adapter bases stay frozen) with an optional warm-up and cosine schedule.

    Args:
        lr: Learning rate.
        weight_decay: AdamW weight decay.
        scheduler: ``"cosine"`` (per step, to zero at the end of training) or ``None`` (constant).
        warmup_steps: Linear warm-up steps before the schedule.
    """

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: str | None = None,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise InputError(f"learning rate must be > 0, got {lr}", parameter="lr")
        if scheduler not in (None, "cosine"):
            raise InputError(f"scheduler must be 'cosine' or None, got {scheduler!r}",
                             parameter="scheduler")
        frame = inspect.currentframe()
        init_args = self._collect_init_args(frame.f_back if frame is not None else None)
        init_args.update(lr=lr, weight_decay=weight_decay, scheduler=scheduler,
                         warmup_steps=warmup_steps)
        safe: dict[str, Any] = {}
        for key, value in init_args.items():
            ok, converted = _checkpoint_safe(value)
            if ok:
                safe[key] = converted
            else:
                logger.debug("hyper-parameter %s (%s) not stored in checkpoints", key,
                             type(value).__name__)
        self.save_hyperparameters(safe)
        self.lr = lr
        self.weight_decay = weight_decay
        self.scheduler = scheduler
        self.warmup_steps = warmup_steps

    def _collect_init_args(self, frame: Any) -> dict[str, Any]:
        """Arguments of the ``__init__`` calls of this object's subclasses (most specific wins)."""
        args: dict[str, Any] = {}
        levels = []
        while frame is not None and frame.f_code.co_name == "__init__" and \
                frame.f_locals.get("self") is self:
            info = inspect.getargvalues(frame)
            level = {name: info.locals[name] for name in info.args[1:] if name in info.locals}
            if info.keywords and isinstance(info.locals.get(info.keywords), dict):
                level.update(info.locals[info.keywords])
            levels.append(level)
            frame = frame.f_back
        for level in levels:  # base-most first, so subclass values override
            args.update(level)
        for name in ("self", "__class__"):
            args.pop(name, None)
        return args

    def shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        """Return the loss of one batch for ``stage`` ("train", "val", "test"); log extras here."""
        raise NotImplementedError(f"{type(self).__name__} must implement shared_step")

    @staticmethod
    def _batch_size(batch: Any) -> int | None:
        if isinstance(batch, torch.Tensor):
            return int(batch.shape[0])
        if isinstance(batch, Mapping):
            for value in batch.values():
                if isinstance(value, torch.Tensor) and value.ndim > 0:
                    return int(value.shape[0])
        if isinstance(batch, list | tuple) and batch:
            return BaseTask._batch_size(batch[0])
        return None

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        loss = self.shared_step(batch, stage)
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=stage == "train", on_epoch=True,
                 batch_size=self._batch_size(batch), sync_dist=stage != "train")
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Loss of one training batch (logged as ``train/loss``)."""
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Loss of one validation batch (logged as ``val/loss``)."""
        return self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Loss of one test batch (logged as ``test/loss``)."""
        return self._step(batch, "test")

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates (``requires_grad``)."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        """AdamW over trainable parameters; optional warm-up + cosine schedule stepped per batch."""
        params = self.trainable_parameters()
        if not params:
            raise ConfigError(f"{type(self).__name__} has no trainable parameters")
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler is None and self.warmup_steps <= 0:
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(0, self.warmup_steps)
        cosine = self.scheduler == "cosine"

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            if not cosine:
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


# --------------------------------------------------------------------------------------------------
# trainer
# --------------------------------------------------------------------------------------------------
class KeepBest(Callback):
    """Early stopping on ``val/loss`` that restores the best weights of ``module`` at the end.

    Args:
        module: The module whose weights are kept (head, or the whole fine-tuned model).
        patience: Validation epochs without improvement before training stops.
    """

    def __init__(self, module: nn.Module, patience: int) -> None:
        super().__init__()
        self.module = module
        self.patience = patience
        self.best = float("inf")
        self.best_epoch = -1
        self.wait = 0
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Remember the weights when the validation loss improves; stop after ``patience``."""
        value = trainer.callback_metrics.get("val/loss")
        if value is None:
            return
        loss = float(value)
        if loss < self.best - 1e-6:
            self.best, self.best_epoch, self.wait = loss, trainer.current_epoch, 0
            self.state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.should_stop = True

    def restore(self) -> None:
        """Load the best weights back (no-op when validation never ran)."""
        if self.state is not None:
            self.module.load_state_dict(self.state)


def _trainer_parameters() -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(L.Trainer.__init__).parameters)
    params.pop("self", None)
    return params


#: Options of :func:`make_trainer` itself that ``--trainer.<option>`` may set besides Lightning's.
_EOKIT_TRAINER_OPTIONS = ("checkpoint_every_n_steps",)


def _check_trainer_keys(keys: Sequence[str], source: str) -> None:
    check_keys(keys, _trainer_parameters(), source, what="Trainer option")


def check_trainer_options(keys: Iterable[str], source: str) -> None:
    """ConfigError for a name that is neither a Lightning Trainer option nor one of eokit's."""
    _check_trainer_keys([k for k in keys if k not in _EOKIT_TRAINER_OPTIONS], source)


class _NoAdverts(logging.Filter):
    """Drops Lightning's promotion of its cloud logger (shown on every Trainer)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage().lower()


def route_lightning_logs() -> None:
    """One handler for Lightning's messages, and no adverts.

    ``import lightning`` attaches its own console handler that also propagates, so under an
    application that configured logging (the eokit CLI) every message printed twice. When the
    root logger has handlers, Lightning's console handlers are removed and its messages go
    through the application's; otherwise Lightning keeps its own single handler.
    """
    root_has_handlers = logging.getLogger().hasHandlers()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        package = logging.getLogger(name)
        if root_has_handlers:
            for handler in list(package.handlers):
                if type(handler) is logging.StreamHandler:
                    package.removeHandler(handler)
            package.propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        source = logging.getLogger(name)
        if not any(isinstance(f, _NoAdverts) for f in source.filters):
            source.addFilter(_NoAdverts())


def make_trainer(
    out_dir: str | Path,
    *,
    max_epochs: int | None = 10,
    max_steps: int = -1,
    accelerator: str = "cpu",
    devices: int | str | list[int] = 1,
    precision: str | int | None = None,
    progress: bool = True,
    log_every_n_steps: int = 10,
    callbacks: Sequence[Callback] | None = None,
    checkpoint_every_n_steps: int | None = None,
    monitor: str | None = None,
    mode: str = "min",
    **overrides: Any,
) -> L.Trainer:
    """Build a Lightning Trainer with eokit defaults.

    Logs go to ``out_dir/logs`` (CSV, ``metrics.csv``) and ``out_dir/tb`` (TensorBoard); checkpoints
    to ``out_dir/checkpoints`` with ``last.ckpt`` always current.

    Args:
        out_dir: Run folder (created).
        max_epochs: Epoch limit.
        max_steps: Optimiser-step limit (-1: none).
        accelerator: ``"cpu"``, ``"gpu"``, ``"auto"``...
        devices: Devices per node.
        precision: Lightning precision (``"bf16-mixed"``, ``"16-mixed"``...); None = 32-bit.
        progress: Show Lightning's progress bar.
        log_every_n_steps: Logging interval.
        callbacks: Extra callbacks.
        checkpoint_every_n_steps: Also checkpoint every N optimiser steps (default: every epoch).
        monitor: Metric for keeping the best checkpoint (e.g. ``"val/loss"``); None keeps the
            latest.
        mode: ``"min"`` or ``"max"`` for ``monitor``.
        **overrides: Any other ``lightning.Trainer`` argument (``strategy``, ``num_nodes``...).

    Returns:
        The trainer.

    Raises:
        ConfigError: an override is not a Trainer argument.
    """
    _check_trainer_keys(list(overrides), "trainer options")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create run folder ({err.strerror})", path=out) from err
    checkpoint = ModelCheckpoint(
        dirpath=out / CHECKPOINT_DIR,
        filename="{epoch}-{step}",
        save_last=True,
        save_top_k=1,
        monitor=monitor,
        mode=mode,
        every_n_train_steps=checkpoint_every_n_steps,
    )
    all_callbacks: list[Callback] = [checkpoint, *(callbacks or [])]
    extra_callbacks = overrides.pop("callbacks", None)
    if extra_callbacks:
        all_callbacks.extend(extra_callbacks)
    loggers: Any = overrides.pop("logger", None)
    if loggers is None:
        loggers = [
            CSVLogger(out, name="logs"),
            TensorBoardLogger(out, name="tb", default_hp_metric=False),
        ]
    kwargs: dict[str, Any] = {
        "default_root_dir": str(out),
        "max_epochs": max_epochs,
        "max_steps": max_steps,
        "accelerator": accelerator,
        "devices": devices,
        "enable_progress_bar": progress,
        "log_every_n_steps": log_every_n_steps,
        "callbacks": all_callbacks,
        "logger": loggers,
    }
    if precision is not None:
        kwargs["precision"] = precision
    kwargs.update(overrides)
    route_lightning_logs()
    logger.info("trainer: accelerator=%s devices=%s max_epochs=%s max_steps=%s out=%s",
                kwargs["accelerator"], kwargs["devices"], kwargs["max_epochs"],
                kwargs["max_steps"], out)
    return L.Trainer(**kwargs)


def last_checkpoint(out_dir: str | Path) -> Path | None:
    """Return ``out_dir/checkpoints/last.ckpt`` if it exists."""
    path = Path(out_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT
    return path if path.is_file() else None


def set_aside_checkpoints(out_dir: str | Path) -> Path | None:
    """Move an earlier run's checkpoints out of the way of a fresh run in the same folder.

    Without this, a run started without ``resume`` in a used folder would leave the old
    ``last.ckpt`` (and the old best checkpoint) beside its own until its first save: an
    interruption before that point, or a later ``--resume``, would then pick up the *earlier*
    run. The files go to ``checkpoints/previous/`` (replacing what an even earlier run left
    there), so nothing is lost by forgetting ``--resume`` once.

    Args:
        out_dir: Run folder.

    Returns:
        The folder the checkpoints were moved to, or None when there were none.
    """
    import shutil

    directory = Path(out_dir) / CHECKPOINT_DIR
    old = sorted(directory.glob("*.ckpt")) if directory.is_dir() else []
    if not old:
        return None
    target = directory / PREVIOUS_RUN_DIR
    try:
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for path in old:
            path.replace(target / path.name)
    except OSError as err:
        raise InputError(f"cannot set aside the earlier run's checkpoints ({err.strerror})",
                         path=directory) from err
    logger.warning("%s held %d checkpoint(s) of an earlier run; moved them to %s (pass "
                   "--resume to continue a run instead of starting afresh)",
                   directory, len(old), target)
    return target


def resume_position(path: str | Path) -> tuple[int, int]:
    """(epoch, batches of it already trained) where a run resumed from ``path`` goes on.

    The batch count is non-zero for a checkpoint written within an epoch
    (``checkpoint_every_n_steps``): Lightning restores its progress and trains only the remaining
    batches of that epoch, but a plain data loader would start the epoch's order again (its first
    batches seen twice, its last ones never); :class:`SimpleDataModule` skips them instead.
    The epoch matters too: Lightning creates the first resumed epoch's data iterator (and starts
    its worker processes, which copy the datasets) before any hook of that epoch runs, so
    epoch-dependent sampling and augmentation must be told it before ``Trainer.fit``. Read with
    ``weights_only=True``.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is one clear error
        raise InputError(f"cannot read checkpoint: {error}".splitlines()[0], path=path) from None
    try:
        loop = checkpoint["loops"]["fit_loop"]
        epochs = loop["epoch_progress"]["current"]
        epoch = int(epochs["processed"])
    except (KeyError, TypeError):
        return int(checkpoint.get("epoch", -1)) + 1, 0
    try:
        batches = loop["epoch_loop.batch_progress"]
        in_progress = int(epochs["started"]) > epoch
        done = int(batches["current"]["processed"]) if in_progress else 0
    except (KeyError, TypeError):
        return epoch, 0
    if done and batches.get("is_last_batch"):
        # Written after the epoch's last batch, before its end: the next epoch comes next.
        return epoch + 1, 0
    return epoch, done


@contextlib.contextmanager
def skipped_batches_resumed(active: bool) -> Iterator[None]:
    """Silence Lightning's caution about a mid-epoch checkpoint when ``active``.

    Used when the sampler skips the batches already trained; the caution assumes the epoch's
    order restarts.
    """
    with warnings.catch_warnings():
        if active:
            warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended "
                                    "before the epoch ended")
        yield


class _InterruptCheckpoint(Callback):
    """On Ctrl-C or SIGTERM, save the exact training state as ``last.ckpt`` (atomically)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.signal: str | None = None
        self.saved: Path | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException):
            self.signal = "SIGTERM"
        elif isinstance(exception, KeyboardInterrupt):
            self.signal = "SIGINT"
        else:
            return
        if trainer.global_step == 0 and trainer.current_epoch == 0:
            return  # nothing trained yet: keep whatever checkpoint there was
        target = self.directory / LAST_CHECKPOINT
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with atomic_write(target) as tmp:
                trainer.save_checkpoint(tmp, weights_only=False)
            self.saved = target
        except Exception as error:  # noqa: BLE001 (a full disk must not hide the interruption)
            logger.error("could not save the interrupted state to %s: %s", target, error)


def fit_interruptible(trainer: L.Trainer, task: L.LightningModule, *args: Any,
                      resume_hint: str, **kwargs: Any) -> None:
    """``trainer.fit`` that turns Ctrl-C / SIGTERM into :class:`Interrupted` with a checkpoint.

    Lightning stops on either signal but exits 1 after Ctrl-C and 0 after SIGTERM, with no
    checkpoint of the steps since the last save. Here the state at the interruption is written
    to ``<checkpoint dir>/last.ckpt`` and the error says how to resume (exit 130 / 143).

    Args:
        trainer: The trainer (its ``ModelCheckpoint`` folder receives the checkpoint).
        task: The LightningModule.
        *args: Passed to ``trainer.fit``.
        resume_hint: The command that resumes the run.
        **kwargs: Passed to ``trainer.fit``.
    """
    from eokit.core.errors import Interrupted

    saver_dir = Path(getattr(trainer.checkpoint_callback, "dirpath", None)
                     or Path(trainer.default_root_dir) / CHECKPOINT_DIR)
    saver = _InterruptCheckpoint(saver_dir)
    callbacks: list[Callback] = trainer.callbacks  # type: ignore[attr-defined]
    callbacks.append(saver)
    try:
        trainer.fit(task, *args, **kwargs)
    except SystemExit:
        if saver.signal is None:
            raise
    finally:
        callbacks.remove(saver)
    if saver.signal is None and not trainer.interrupted:
        return
    kept = saver.saved or last_checkpoint(saver_dir.parent)
    where = f"state kept in {kept}" if kept else "nothing trained yet, no checkpoint"
    signal_name = saver.signal or "a signal"
    raise Interrupted(f"training stopped by {signal_name} at epoch {trainer.current_epoch}, "
                      f"step {trainer.global_step}; {where}; resume with: {resume_hint}",
                      exit_code=143 if signal_name == "SIGTERM" else 130)


def fit(
    task: L.LightningModule,
    datamodule: L.LightningDataModule,
    out_dir: str | Path,
    *,
    resume: bool = False,
    seed: int = 0,
    trainer_overrides: dict[str, Any] | None = None,
    resume_hint: str | None = None,
    **trainer_kwargs: Any,
) -> L.Trainer:
    """Seed, build the trainer and fit; with ``resume`` continue from ``out_dir``'s last checkpoint.

    The checkpoint is read with ``weights_only=True`` (no arbitrary unpickling). Resuming restores
    weights, optimiser and scheduler state, epoch and ``global_step``; the run then goes on to the
    same ``max_epochs``/``max_steps``.

    Args:
        task: The LightningModule (usually a :class:`BaseTask`).
        datamodule: Its data.
        out_dir: Run folder (logs, checkpoints).
        resume: Continue from ``out_dir/checkpoints/last.ckpt`` when it exists (else start fresh).
        seed: Global seed.
        trainer_overrides: Options from the command line (:func:`parse_trainer_overrides`); they win
            over ``trainer_kwargs``.
        resume_hint: Command that resumes this run, shown when Ctrl-C or SIGTERM stops it
            (:func:`fit_interruptible`; default: "the same command with --resume").
        **trainer_kwargs: Arguments of :func:`make_trainer` set by the capability.

    Returns:
        The fitted trainer (``trainer.callback_metrics``, ``trainer.global_step``...).
    """
    seed_everything(seed)
    kwargs = {**trainer_kwargs, **(trainer_overrides or {})}
    if not resume:
        set_aside_checkpoints(out_dir)
    trainer = make_trainer(out_dir, **kwargs)
    ckpt_path: Path | None = None
    if resume:
        ckpt_path = last_checkpoint(out_dir)
        if ckpt_path is None:
            logger.warning("resume requested but %s has no %s/%s; starting from scratch",
                           out_dir, CHECKPOINT_DIR, LAST_CHECKPOINT)
        else:
            logger.info("resuming from %s", ckpt_path)
            if isinstance(datamodule, SimpleDataModule):
                datamodule.start_epoch, datamodule.start_batch = resume_position(ckpt_path)
                if datamodule.start_batch:
                    logger.info("resuming within epoch %d after %d batches (the sampler skips "
                                "them)", datamodule.start_epoch, datamodule.start_batch)
    with skipped_batches_resumed(isinstance(datamodule, SimpleDataModule)
                                 and datamodule.start_batch > 0):
        try:
            fit_interruptible(trainer, task, datamodule=datamodule,
                              ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True,
                              resume_hint=resume_hint or "the same command with --resume")
        except RuntimeError as error:
            if ckpt_path is None or "Error(s) in loading state_dict" not in str(error):
                raise
            first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()),
                         str(error).splitlines()[0])
            if len(first) > 160:
                first = first[:160] + "..."
            raise InputError("checkpoint does not fit this model (resumed with other settings?): "
                             f"{first}", path=ckpt_path) from None
    return trainer


# --------------------------------------------------------------------------------------------------
# command-line overrides and YAML configs
# --------------------------------------------------------------------------------------------------
def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_trainer_overrides(args: Sequence[str]) -> dict[str, Any]:
    """Turn ``["--trainer.max_epochs", "3", "--trainer.accelerator=gpu"]`` into Trainer kwargs.

    Values are parsed as YAML scalars/lists (``3`` -> int, ``true`` -> bool, ``null`` -> None,
    ``[0,1]`` -> list); a flag with no value (``--trainer.fast_dev_run``) means True.

    Args:
        args: Extra command-line tokens (e.g. click's ``ctx.args``).

    Returns:
        ``{option: value}`` for ``lightning.Trainer`` (and ``checkpoint_every_n_steps``, an
        option of :func:`make_trainer`: also checkpoint every N optimiser steps).

    Raises:
        ConfigError: a token is not a ``--trainer.*`` option, or the option is not a Trainer
            argument.
    """
    out: dict[str, Any] = {}
    tokens = list(args)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--trainer."):
            raise ConfigError(
                f"unexpected argument {token!r} (expected --trainer.<option> <value>)"
            )
        key = token[len("--trainer."):]
        if "=" in key:
            key, raw = key.split("=", 1)
            value = _parse_value(raw)
            i += 1
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            value = _parse_value(tokens[i + 1])
            i += 2
        else:
            value = True
            i += 1
        if not key:
            raise ConfigError(f"empty Trainer option in {token!r}")
        check_trainer_options([key], f"--trainer.{key}")
        out[key] = value
    return out


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict.

    Raises:
        InputError: the file is missing or is not valid YAML.
        ConfigError: the top level is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("config file not found" if not path.exists() else "not a file", path=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise InputError(f"invalid YAML ({str(err).splitlines()[0]})", path=path) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _import_class(class_path: str) -> type:
    module_name, _, attr = class_path.rpartition(".")
    if not module_name:
        raise ConfigError(f"class_path {class_path!r} must be a dotted import path")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"class_path {class_path!r}: cannot import {module_name} ({err})"
        ) from err
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise ConfigError(f"class_path {class_path!r}: {module_name} has no class {attr!r}")
    return cls


def instantiate(
    spec: Mapping[str, Any], *, expected: type | None = None, **extra_init_args: Any
) -> Any:
    """Build an object from a LightningCLI-style ``{"class_path": ..., "init_args": {...}}``.

    Nested values of the same form in ``init_args`` are instantiated first (no registry: classes
    are named by import path).

    Args:
        spec: The mapping (e.g. ``load_yaml_config(p)["model"]``).
        expected: Required base class of the result.
        **extra_init_args: Arguments added to (and overriding) ``init_args``.

    Returns:
        The new object.

    Raises:
        ConfigError: missing ``class_path``, import failure, wrong base class, bad arguments.
    """
    if not isinstance(spec, Mapping) or "class_path" not in spec:
        raise ConfigError(f"expected a mapping with 'class_path', got {spec!r:.80}")
    unknown = set(spec) - {"class_path", "init_args"}
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)} beside class_path/init_args")
    cls = _import_class(str(spec["class_path"]))
    if expected is not None and not issubclass(cls, expected):
        raise ConfigError(
            f"class_path {spec['class_path']!r} is not a {expected.__module__}.{expected.__name__}"
        )
    init_args = dict(spec.get("init_args") or {})
    for key, value in init_args.items():
        if isinstance(value, Mapping) and "class_path" in value:
            init_args[key] = instantiate(value)
    init_args.update(extra_init_args)
    check_arguments(cls, init_args, str(spec["class_path"]))
    return cls(**init_args)


def check_keys(keys: Iterable[str], known: Iterable[str], source: str, *,
               what: str = "key") -> None:
    """ConfigError naming the ``keys`` not in ``known`` and the closest known one."""
    known = list(known)
    unknown = sorted(set(keys) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        names = repr(unknown[0]) if len(unknown) == 1 else str(unknown)
        raise ConfigError(f"{source}: unknown {what}{'s' if len(unknown) > 1 else ''} "
                          f"{names}{hint}")


def check_arguments(func: Callable[..., Any], kwargs: Mapping[str, Any], source: str) -> None:
    """ConfigError unless ``func(**kwargs)`` binds: unknown names (closest hint) or missing ones."""
    signature = inspect.signature(func)
    if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        check_keys(kwargs, [n for n, p in signature.parameters.items()
                            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)], source,
                   what="argument")
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{source}: {err}") from err


# --------------------------------------------------------------------------------------------------
# weights and checkpoints
# --------------------------------------------------------------------------------------------------
def save_weights(
    model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Save a model's state dict to safetensors (atomic; tied weights stored once).

    Args:
        model: The module.
        path: Output ``.safetensors`` path.
        metadata: Extra ``str -> str`` metadata (e.g. class names, band order).

    Returns:
        The written path.
    """
    from safetensors.torch import save_model

    path = Path(path)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    with atomic_write(path) as tmp:
        save_model(model, str(tmp), metadata=meta)
    return path


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> dict[str, str]:
    """Load safetensors weights into ``model`` and return the file's metadata.

    Raises:
        InputError: missing/corrupt file, or (``strict``) missing/unexpected/mis-shaped tensors.
    """
    from safetensors import safe_open
    from safetensors.torch import load_model

    path = Path(path)
    if not path.is_file():
        raise InputError("weights file not found" if not path.exists() else "not a file", path=path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        missing, unexpected = load_model(model, str(path), strict=strict)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise InputError(f"weights do not fit {type(model).__name__}: {first}", path=path) from err
    except Exception as err:  # safetensors' own header/format errors
        raise InputError(f"not a readable safetensors file ({err})", path=path) from err
    if missing or unexpected:
        logger.warning("%s: %d missing and %d unexpected tensors", path, len(missing),
                       len(unexpected))
    return meta


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a Lightning/torch checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    Raises:
        InputError: missing file, or a file that is not a safe (weights-only) checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint not found" if not path.exists() else "not a file", path=path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (corrupt zip), EOFError...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"not a weights-only checkpoint ({first})", path=path) from err
    if not isinstance(data, dict):
        raise InputError(f"checkpoint holds a {type(data).__name__}, expected a dict", path=path)
    return data
