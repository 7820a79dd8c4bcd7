"""DINO pretraining on core.train with dynamic curation rounds (OceanSAR-1 style).

After ``warmup_epochs`` on all the data, every ``period_epochs`` the EMA teacher embeds a random
``subset_for_embedding`` of the images, hierarchical k-means clusters those embeddings, and a
``keep_fraction`` of the whole dataset is drawn from them balanced over the clusters; training
goes on over that subset until the next round. The kept subset is part of the checkpoint, so a
resumed run trains on the same subset.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader

from eokit.core.errors import InputError
from eokit.core.train import BaseTask, DistributedAwareSampler
from eokit.curation.data import ImagetteDataset, MultiCrop, collate_views
from eokit.curation.model import DINOHead, DINONet, build_backbone, feature_dim

logger = logging.getLogger(__name__)

__all__ = [
    "CurationCallback",
    "CurationDataModule",
    "CurationSchedule",
    "DINOLoss",
    "DINOTask",
    "DynamicCurationSampler",
    "embed_images",
]


@dataclass(frozen=True)
class CurationSchedule:
    """When and how the training set is re-curated.

    Attributes:
        warmup_epochs: Epochs on all the data before the first round (T_w).
        period_epochs: Epochs between rounds (T_s).
        keep_fraction: Fraction of the dataset trained on after a round (rho), in (0, 1].
        levels: Clusters per hierarchical k-means level (capped at what the subset allows).
        resample_steps: Resampling-refinement rounds per level.
        strategy: ``balanced``, ``closest`` or ``random`` (uniform pruning, the baseline).
        subset_for_embedding: Fraction of the dataset the teacher embeds each round
            (>= keep_fraction).
        enabled: False trains on everything (no rounds).
    """

    warmup_epochs: int = 2
    period_epochs: int = 2
    keep_fraction: float = 0.5
    levels: tuple[int, ...] = (32, 8)
    resample_steps: int = 2
    strategy: str = "balanced"
    subset_for_embedding: float = 1.0
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.warmup_epochs < 0 or self.period_epochs < 1:
            raise InputError("warmup_epochs >= 0 and period_epochs >= 1 required",
                             parameter="schedule")
        if not 0 < self.keep_fraction <= 1:
            raise InputError(f"keep fraction must lie in (0, 1], got {self.keep_fraction}",
                             parameter="keep_fraction")
        if not self.keep_fraction <= self.subset_for_embedding <= 1:
            raise InputError("subset_for_embedding must lie in [keep_fraction, 1]",
                             parameter="subset_for_embedding")
        if self.strategy not in ("balanced", "closest", "random"):
            raise InputError(f"unknown strategy {self.strategy!r}", parameter="strategy")
        levels = [int(v) for v in self.levels]
        if not levels or any(b >= a for a, b in zip(levels, levels[1:], strict=False)) \
                or levels[-1] < 1:
            raise InputError(f"levels must be positive and shrink, got {levels}",
                             parameter="levels")

    def is_round(self, epoch: int) -> bool:
        """Whether a curation round runs before ``epoch`` (0-based)."""
        return self.enabled and epoch >= self.warmup_epochs and \
            (epoch - self.warmup_epochs) % self.period_epochs == 0


class DynamicCurationSampler(DistributedAwareSampler):
    """Rank- and epoch-aware sampler over the current curated subset (all indices before any).

    Each epoch draws one permutation of the subset from ``seed + epoch`` (the same on every
    rank), pads it to a multiple of the world size and gives rank ``r`` every ``W``-th index from
    ``r``: ranks see disjoint parts of the subset.

    Args:
        dataset_length: Size of the whole dataset.
        subset: Indices currently trained on (None: all).
        **kwargs: ``num_replicas``, ``rank``, ``seed``, ``shuffle``, ``drop_last``.
    """

    def __init__(self, dataset_length: int, subset: Sequence[int] | np.ndarray | None = None,
                 **kwargs: Any) -> None:
        self.full_length = int(dataset_length)
        self.subset = self._check(subset)
        super().__init__(len(self.subset) if self.subset is not None else self.full_length,
                         **kwargs)

    def _check(self, subset: Sequence[int] | np.ndarray | None) -> np.ndarray | None:
        if subset is None:
            return None
        values = np.unique(np.asarray(subset, dtype=np.int64))
        if len(values) == 0 or values[0] < 0 or values[-1] >= self.full_length:
            raise InputError(f"subset indices must be non-empty and in 0..{self.full_length - 1}",
                             parameter="subset")
        return values

    def epoch_indices(self) -> list[int]:
        """All ranks' indices for this epoch, as dataset indices."""
        positions = super().epoch_indices()
        if self.subset is None:
            return positions
        mapped: list[int] = self.subset[np.asarray(positions, dtype=np.int64)].tolist()
        return mapped


class DINOLoss(nn.Module):
    """Cross-entropy between sharpened, centred teacher outputs and student outputs.

    Args:
        out_dim: Prototype count.
        student_temperature: Student softmax temperature.
        teacher_temperature: Teacher temperature after warm-up (sharpening).
        warmup_teacher_temperature: Teacher temperature at the start.
        warmup_epochs: Epochs of linear teacher-temperature warm-up.
        center_momentum: EMA momentum of the centre (centring prevents collapse onto one
            prototype, sharpening onto the uniform distribution).
    """

    def __init__(self, out_dim: int, student_temperature: float = 0.1,
                 teacher_temperature: float = 0.04, warmup_teacher_temperature: float = 0.04,
                 warmup_epochs: int = 0, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.warmup_teacher_temperature = warmup_teacher_temperature
        self.warmup_epochs = warmup_epochs
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature_at(self, epoch: int) -> float:
        """Teacher temperature of an epoch (linear warm-up)."""
        if epoch >= self.warmup_epochs or self.warmup_epochs == 0:
            return self.teacher_temperature
        t = epoch / self.warmup_epochs
        return self.warmup_teacher_temperature + t * (self.teacher_temperature
                                                      - self.warmup_teacher_temperature)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, n_views: int,
                epoch: int) -> torch.Tensor:
        """Loss of ``student`` (all views) against ``teacher`` (the 2 global views)."""
        student_out = (student / self.student_temperature).chunk(n_views)
        temperature = self.teacher_temperature_at(epoch)
        center: torch.Tensor = self.center  # type: ignore[assignment]
        teacher_out = F.softmax((teacher - center) / temperature, dim=-1).detach().chunk(2)
        total = student.new_zeros(())
        terms = 0
        for t_index, t in enumerate(teacher_out):
            for s_index, s in enumerate(student_out):
                if s_index == t_index:
                    continue  # a view is not its own target
                total = total + torch.sum(-t * F.log_softmax(s, dim=-1), dim=-1).mean()
                terms += 1
        self.update_center(teacher)
        return total / max(terms, 1)

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """EMA of the teacher's batch mean (averaged over ranks under DDP)."""
        batch_center = teacher.sum(dim=0, keepdim=True)
        count = torch.tensor(float(len(teacher)), device=teacher.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch_center)
            torch.distributed.all_reduce(count)
        batch_center = batch_center / count
        center: torch.Tensor = self.center  # type: ignore[assignment]
        center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))


class DINOTask(BaseTask):
    """DINO self-distillation: the student learns to match the EMA teacher across crops.

    Args:
        backbone: timm model name.
        in_chans: Input channels.
        out_dim: Prototypes of the head.
        hidden_dim: Head MLP width.
        bottleneck_dim: Head bottleneck.
        teacher_momentum: EMA momentum at the start (cosine schedule to 1 at the end).
        student_temperature: Student temperature.
        teacher_temperature: Teacher temperature after warm-up.
        warmup_teacher_temperature: Teacher temperature at the start.
        teacher_temperature_epochs: Teacher-temperature warm-up epochs.
        lr: Learning rate.
        weight_decay: AdamW weight decay.
    """

    def __init__(self, backbone: str = "test_resnet", in_chans: int = 1, out_dim: int = 512,
                 hidden_dim: int = 256, bottleneck_dim: int = 64,
                 teacher_momentum: float = 0.99, student_temperature: float = 0.1,
                 teacher_temperature: float = 0.04, warmup_teacher_temperature: float = 0.04,
                 teacher_temperature_epochs: int = 0, lr: float = 1e-3,
                 weight_decay: float = 0.04) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay)
        if not 0 <= teacher_momentum < 1:
            raise InputError(f"must lie in [0, 1), got {teacher_momentum}",
                             parameter="teacher_momentum")
        body = build_backbone(backbone, in_chans=in_chans)
        head = DINOHead(feature_dim(body), out_dim, hidden_dim, bottleneck_dim)
        self.student = DINONet(body, head)
        self.teacher = copy.deepcopy(self.student)
        for parameter in self.teacher.parameters():
            parameter.requires_grad = False
        self.teacher_momentum = teacher_momentum
        self.criterion = DINOLoss(out_dim, student_temperature, teacher_temperature,
                                  warmup_teacher_temperature, teacher_temperature_epochs)
        #: Images processed by the student so far (one per sample, not per view).
        self.images_seen = 0

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The student only (the teacher follows by EMA)."""
        return [p for p in self.student.parameters() if p.requires_grad]

    def shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        """DINO loss of a batch of multi-crop views."""
        views: list[torch.Tensor] = batch["views"]
        with torch.no_grad():
            teacher = self.teacher(views[:2])
        student = self.student(views)
        loss: torch.Tensor = self.criterion(student, teacher, len(views),
                                            int(self.current_epoch))
        if stage == "train":
            self.images_seen += int(views[0].shape[0])
            self.log("train/images_seen", float(self.images_seen), on_step=False,
                     on_epoch=True, reduce_fx="max")
        return loss

    def momentum_at(self) -> float:
        """EMA momentum now: cosine from ``teacher_momentum`` to 1 over the run."""
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer else 1
        progress = min(1.0, self.global_step / total)
        return 1.0 - (1.0 - self.teacher_momentum) * (math.cos(math.pi * progress) + 1) / 2

    @torch.no_grad()
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """EMA update of the teacher."""
        m = self.momentum_at()
        for teacher_p, student_p in zip(self.teacher.parameters(), self.student.parameters(),
                                        strict=True):
            teacher_p.mul_(m).add_(student_p.detach(), alpha=1 - m)
        for teacher_b, student_b in zip(self.teacher.buffers(), self.student.buffers(),
                                        strict=True):
            teacher_b.copy_(student_b)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the images-seen counter."""
        checkpoint["images_seen"] = int(self.images_seen)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the images-seen counter."""
        self.images_seen = int(checkpoint.get("images_seen", 0))


@torch.no_grad()
def embed_images(backbone: nn.Module, images: torch.Tensor | np.ndarray,
                 batch_size: int = 256) -> np.ndarray:
    """Pooled features ``(N, D)`` float32 of ``(N, C, H, W)`` images (eval mode, no grad)."""
    tensor = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images)
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    out = [backbone(tensor[i:i + batch_size].to(device)).float().cpu()
           for i in range(0, len(tensor), batch_size)]
    backbone.train(was_training)
    return torch.cat(out).numpy().astype(np.float32)


class CurationDataModule(L.LightningDataModule):
    """Multi-crop training data over the current curated subset (rebuilt every epoch).

    Args:
        dataset: The imagette dataset (with a :class:`MultiCrop` transform).
        batch_size: Samples per batch per process.
        seed: Sampler seed.
        num_workers: DataLoader workers.
    """

    def __init__(self, dataset: ImagetteDataset, *, batch_size: int = 32, seed: int = 0,
                 num_workers: int = 0) -> None:
        super().__init__()
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.subset: np.ndarray | None = None
        self.start_epoch = 0

    def train_dataloader(self) -> DataLoader[Any]:
        """Loader over the subset; the sampler is re-made each epoch (rounds change it)."""
        sampler = DynamicCurationSampler(len(self.dataset), self.subset, seed=self.seed,
                                         drop_last=False)
        trainer = getattr(self, "trainer", None)
        epoch = trainer.current_epoch if trainer is not None else self.start_epoch
        sampler.set_epoch(epoch)
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler,
                          collate_fn=collate_views, num_workers=self.num_workers)


@dataclass
class CurationRound:
    """What one curation round did (logged and checkpointed)."""

    epoch: int
    embedded: int
    kept: int
    seconds: float
    top_entropy_all: float
    top_entropy_kept: float
    overlap_with_previous: float | None
    class_counts: list[int] = field(default_factory=list)


class CurationCallback(Callback):
    """Runs the curation rounds of a :class:`CurationSchedule` between epochs.

    At the end of epoch ``e``, when a round is due before ``e + 1``, the teacher backbone embeds
    a random subset, hierarchical k-means clusters it and the datamodule's subset is replaced.
    The subset and the round log are part of the checkpoint (``state_dict``).

    Args:
        schedule: The schedule.
        datamodule: The data (its ``subset`` is set).
        seed: Seed of the embedding subset and sampling draws.
        labels: Optional class labels of the dataset (only logged: class counts per round).
        embedder: Optional fixed embedding function ``images -> (N, D)`` used instead of the
            teacher (e.g. a pretrained ImageNet encoder).
    """

    def __init__(self, schedule: CurationSchedule, datamodule: CurationDataModule, *,
                 seed: int = 0, labels: np.ndarray | None = None,
                 embedder: Any | None = None) -> None:
        self.schedule = schedule
        self.datamodule = datamodule
        self.seed = seed
        self.labels = labels
        self.embedder = embedder
        self.rounds: list[CurationRound] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Curate for the next epoch when the schedule says so."""
        next_epoch = trainer.current_epoch + 1
        if trainer.max_epochs is not None and next_epoch >= trainer.max_epochs:
            return
        if self.schedule.is_round(next_epoch):
            assert isinstance(pl_module, DINOTask)
            self.run_round(pl_module, next_epoch)

    def run_round(self, task: DINOTask, epoch: int) -> np.ndarray:
        """One round: embed, cluster, sample; sets and returns the new subset."""
        from eokit.curation.kmeans import hierarchical_kmeans
        from eokit.curation.sampling import kept_overlap, sample_clusters, size_statistics

        started = time.perf_counter()
        dataset = self.datamodule.dataset
        n = len(dataset)
        rng = np.random.default_rng(self.seed * 1009 + epoch)
        count = max(1, round(self.schedule.subset_for_embedding * n))
        embedded = np.sort(rng.choice(n, size=count, replace=False))
        images = dataset.images[torch.as_tensor(embedded)]
        if self.embedder is not None:
            features = np.asarray(self.embedder(images), dtype=np.float32)
        else:
            features = embed_images(task.teacher.backbone, images)
        levels = [min(k, max(1, count // (2 ** i * 4))) for i, k in
                  enumerate(self.schedule.levels)]
        levels = [k for i, k in enumerate(levels) if i == 0 or k < levels[i - 1]]
        budget = max(1, round(self.schedule.keep_fraction * n))
        keep_within = min(1.0, budget / count)
        if self.schedule.strategy == "random":
            kept_local = np.sort(rng.choice(count, size=round(keep_within * count),
                                            replace=False))
            stats = [{"entropy_all": float("nan"), "entropy_kept": float("nan")}]
        else:
            clusters = hierarchical_kmeans(features, levels, iterations=15,
                                           resample_steps=self.schedule.resample_steps,
                                           seed=self.seed + epoch)
            kept_local = sample_clusters(clusters, keep_within,
                                         self.schedule.strategy,  # type: ignore[arg-type]
                                         seed=self.seed + epoch)
            stats = size_statistics(clusters, kept_local)
        subset = embedded[kept_local]
        previous = self.datamodule.subset
        overlap = kept_overlap([previous, subset])[0] if previous is not None else None
        self.datamodule.subset = subset
        counts = (np.bincount(self.labels[subset], minlength=int(self.labels.max()) + 1).tolist()
                  if self.labels is not None else [])
        record = CurationRound(
            epoch=epoch, embedded=int(count), kept=int(len(subset)),
            seconds=round(time.perf_counter() - started, 2),
            top_entropy_all=float(stats[-1]["entropy_all"]),
            top_entropy_kept=float(stats[-1]["entropy_kept"]),
            overlap_with_previous=overlap, class_counts=counts)
        self.rounds.append(record)
        logger.info("curation round before epoch %d: kept %d of %d (embedded %d, levels %s), "
                    "overlap with previous %s, %.1f s", epoch, len(subset), n, count, levels,
                    "-" if overlap is None else f"{overlap:.3f}", record.seconds)
        return subset

    def state_dict(self) -> dict[str, Any]:
        """Subset and round log (``torch.load(weights_only=True)``-safe types)."""
        subset = self.datamodule.subset
        return {
            "subset": torch.as_tensor(subset) if subset is not None else None,
            "rounds": [asdict(r) for r in self.rounds],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the subset (the resumed epoch trains on it) and the log."""
        subset = state_dict.get("subset")
        self.datamodule.subset = None if subset is None else np.asarray(subset, dtype=np.int64)
        self.rounds = [CurationRound(**r) for r in state_dict.get("rounds", [])]


def build_pretraining(images: np.ndarray, *, schedule: CurationSchedule,
                      multicrop: MultiCrop | None = None, batch_size: int = 32, seed: int = 0,
                      labels: np.ndarray | None = None, embedder: Any | None = None,
                      **task_kwargs: Any) -> tuple[DINOTask, CurationDataModule,
                                                   CurationCallback]:
    """Task, datamodule and curation callback for ``(N, 1, S, S)`` normalised images."""
    torch.manual_seed(seed)
    dataset = ImagetteDataset(images, transform=multicrop or MultiCrop())
    datamodule = CurationDataModule(dataset, batch_size=batch_size, seed=seed)
    callback = CurationCallback(schedule, datamodule, seed=seed, labels=labels,
                                embedder=embedder)
    task = DINOTask(in_chans=int(images.shape[1]), **task_kwargs)
    return task, datamodule, callback


def pretrain(images: np.ndarray, out_dir: str | Path, *, schedule: CurationSchedule,
             epochs: int, batch_size: int = 32, seed: int = 0, resume: bool = False,
             multicrop: MultiCrop | None = None, labels: np.ndarray | None = None,
             embedder: Any | None = None, trainer_overrides: dict[str, Any] | None = None,
             progress: bool = False, **task_kwargs: Any) -> tuple[DINOTask, CurationCallback,
                                                                  L.Trainer]:
    """Train DINO with curation rounds through :func:`eokit.core.train.fit`.

    Returns:
        ``(task, callback, trainer)``; ``callback.rounds`` logs every round.
    """
    from eokit.core.train import fit

    if epochs < 1:
        raise InputError(f"must be >= 1, got {epochs}", parameter="epochs")
    task, datamodule, callback = build_pretraining(
        images, schedule=schedule, multicrop=multicrop, batch_size=batch_size, seed=seed,
        labels=labels, embedder=embedder, **task_kwargs)
    trainer = fit(task, datamodule, out_dir, resume=resume, seed=seed,
                  trainer_overrides=trainer_overrides, max_epochs=epochs,
                  callbacks=[callback], reload_dataloaders_every_n_epochs=1,
                  progress=progress, log_every_n_steps=5,
                  resume_hint="eokit curation pretrain ... --resume")
    return task, callback, trainer
