"""Training, adaptation and evaluation of CANet change models (Lightning task + plain helpers).

Two regimes:

* **joint**: every dataset at once; shared weights and all dataset-specific parts train; each
  batch holds one dataset (``DomainGroupedBatchSampler``), so BN statistics stay per dataset.
* **adapt**: a new dataset on a trained model; shared weights frozen; only the new dataset's
  adapters, ICM, BN and head train; the result is saved as a small adapter-only file.

The Lightning task (``eokit.change.lit.ChangeTask``) lives in its own module so that these
helpers import without Lightning.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eokit.change.model import CANet, build_canet
from eokit.core.errors import InputError
from eokit.core.metrics import ConfusionMatrix
from eokit.core.types import IGNORE_INDEX

logger = logging.getLogger(__name__)

__all__ = [
    "MODEL_FORMAT",
    "change_loss",
    "change_metrics",
    "evaluate",
    "load_domain_adapter",
    "load_model",
    "prepare_adapt",
    "save_domain_adapter",
    "save_model",
    "train_steps",
]

MODEL_FORMAT = "eokit.change.canet/1"


# ----------------------------------------------------------------------------------- losses
def change_loss(
    logits: torch.Tensor, mask: torch.Tensor, *, dice_weight: float = 1.0
) -> torch.Tensor:
    """BCE-with-logits + soft Dice on the change class; pixels labelled 255 are ignored.

    Args:
        logits: (B, 1, H, W) change logits.
        mask: (B, H, W) int64 with 0/1 and 255 = ignore.
        dice_weight: Weight of the Dice term.
    """
    logits = logits[:, 0]
    keep = mask != IGNORE_INDEX
    if not keep.any():
        return logits.sum() * 0.0
    target = (mask == 1).float()
    bce = F.binary_cross_entropy_with_logits(logits[keep], target[keep])
    if dice_weight <= 0:
        return bce
    probability = torch.sigmoid(logits) * keep
    target = target * keep
    intersection = (probability * target).sum()
    dice = 1.0 - (2.0 * intersection + 1.0) / (probability.sum() + target.sum() + 1.0)
    return bce + dice_weight * dice


def change_metrics(matrix: ConfusionMatrix) -> dict[str, float]:
    """Change-class precision, recall, F1, IoU plus OA and kappa from a binary confusion matrix."""
    scores = matrix.compute()
    return {
        "precision": float(scores["precision"][1]),
        "recall": float(scores["recall"][1]),
        "f1": float(scores["f1"][1]),
        "iou": float(scores["iou"][1]),
        "oa": float(scores["oa"]),
        "kappa": float(scores["kappa"]),
        "change_pixels": int(scores["support"][1]),
        "pixels": int(np.asarray(matrix.matrix).sum()),
    }


@torch.no_grad()
def evaluate(
    model: CANet,
    dataset: Any,
    *,
    domain: str | int,
    batch_size: int = 8,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Global change metrics of ``model`` on a labelled pair dataset.

    Args:
        model: Trained model.
        dataset: A ``ChangeDataset`` (or any dataset of ``PairSample`` dicts of equal size).
        domain: Dataset name/index whose BN, adapters and head are used.
        batch_size: Pairs per forward pass.
        threshold: Probability above which a pixel is change.
    """
    from torch.utils.data import DataLoader

    from eokit.change.data import collate_pairs

    was_training = model.training
    model.eval()
    model.set_domain(domain)
    matrix = ConfusionMatrix(2, ignore_index=IGNORE_INDEX)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_pairs)
    try:
        for batch in loader:
            probability = torch.sigmoid(model(batch["image_a"], batch["image_b"]))[:, 0]
            prediction = (probability > threshold).long()
            matrix.update(prediction, batch["mask"], valid=batch["valid"])
    finally:
        model.train(was_training)
    return change_metrics(matrix)


# ------------------------------------------------------------------------------ adaptation
def prepare_adapt(
    model: CANet,
    domain: str,
    *,
    init_from: str | int = 0,
    encoder_bn_affine: bool = True,
    icm_output: bool = True,
) -> dict[str, Any]:
    """Get ``model`` ready to learn ``domain`` alone: add it if new, freeze everything else.

    Trainable: the dataset's adapters, ICMs, head and BN affine parameters. With
    ``encoder_bn_affine=False`` only the decoder BNs train their affine parameters while the
    encoder and fusion BNs only re-estimate their per-dataset statistics (train mode): then no
    gradient flows through the encoder, so a step is cheaper, at some cost in quality (see
    ``benchmarks/change_domains.py``). With ``icm_output`` (and an ICM model) the new
    dataset's change probability is also multiplied by its finest ICM, so it can veto change
    types the shared model finds but this dataset does not label.

    Shared BN layers (models built with ``domain_bn=False``) are put in eval mode by
    :func:`train_steps`/``ChangeTask`` so their statistics stay those of the shared model.

    Returns:
        ``trainable_parameter_report`` of the model (``percent`` = the new dataset's share).
    """
    from eokit.core.adapters import freeze_all_but, trainable_parameter_report

    if domain not in model.domains:
        model.add_domain(domain, init_from=init_from)
    if icm_output and model.use_icm:
        model.output_gated.add(domain)
    freeze_all_but(model, model.domain_parameter_patterns(domain, encoder_bn=encoder_bn_affine))
    model.set_domain(domain)
    report = trainable_parameter_report(
        model,
        groups={
            "adapters": r"\.adapters\.",
            "icm": r"\.icms\.",
            "domain_bn": r"\.bns\.",
            "heads": r"\.heads\.",
        },
    )
    logger.info(
        "adapting to %s: %d of %d parameters trainable (%.2f %%)",
        domain, report["trainable"], report["total"], report["percent"],
    )
    return report


def _freeze_shared_bn(model: nn.Module) -> None:
    """Put BatchNorm layers whose parameters are frozen in eval mode (keep their statistics)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()


def train_steps(
    model: CANet,
    batches: Iterable[dict[str, Any]],
    *,
    steps: int,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    dice_weight: float = 1.0,
    progress: bool = False,
) -> dict[str, float]:
    """Plain training loop (AdamW over trainable parameters) for ``steps`` batches.

    ``batches`` is cycled; each batch selects its domain. Used by the demo and benchmarks, where
    building a Lightning trainer per configuration would dominate the run time.

    Returns:
        ``{"steps", "seconds", "seconds_per_step", "median_step_seconds", "final_loss"}``.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError("model has no trainable parameter", parameter="model")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1
    )
    model.train()
    _freeze_shared_bn(model)
    losses: list[float] = []
    step_seconds: list[float] = []
    iterator = _cycle(batches)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="train", leave=False)
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(iterator)
        tick = time.perf_counter()
        model.set_domain(int(batch["domain"]))
        logits = model(batch["image_a"], batch["image_b"])
        loss = change_loss(logits, batch["mask"], dice_weight=dice_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        step_seconds.append(time.perf_counter() - tick)
        if bar is not None:
            bar.update(1)
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    return {
        "steps": steps,
        "seconds": seconds,
        "seconds_per_step": seconds / max(steps, 1),
        # Median of forward+backward+update times: robust to other load on a shared machine.
        "median_step_seconds": float(np.median(step_seconds)) if step_seconds else float("nan"),
        "final_loss": float(np.mean(losses[-10:])) if losses else float("nan"),
    }


def _cycle(batches: Iterable[dict[str, Any]]) -> Any:
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise InputError("no training batch", parameter="batches")


# ------------------------------------------------------------------------------ checkpoints
def save_model(model: CANet, path: str | Path, *, extra: dict[str, str] | None = None) -> Path:
    """Save the whole model (safetensors, atomic) with what is needed to rebuild it."""
    from safetensors.torch import save_file

    from eokit.core.raster import atomic_write

    path = Path(path)
    if not path.parent.is_dir():
        raise InputError("output folder does not exist", path=path.parent)
    metadata = {
        "format": MODEL_FORMAT,
        "config": json.dumps(model.base_config),
        "domains": json.dumps(model.domains),
        "output_gated": json.dumps(sorted(model.output_gated)),
        **(extra or {}),
    }
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    if not path.is_file():
        raise InputError("checkpoint not found", path=path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors raises its own error types
        raise InputError(f"not a readable safetensors file ({error})", path=path) from error
    return metadata, tensors


def load_model(path: str | Path) -> CANet:
    """Rebuild a model saved by :func:`save_model` (weights only, never unpickled)."""
    path = Path(path)
    metadata, tensors = _read_safetensors(path)
    if metadata.get("format") != MODEL_FORMAT:
        if "domain_index" in metadata:
            raise InputError(
                "this is an adapter-only file; pass the shared model as --checkpoint and the "
                "adapter as --adapter",
                path=path,
            )
        raise InputError("not an eokit change model (no model metadata)", path=path)
    config = json.loads(metadata["config"])
    domains = json.loads(metadata["domains"])
    model = build_canet(domains, **{k: v for k, v in config.items()})
    model.output_gated = set(json.loads(metadata.get("output_gated", "[]")))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise InputError(f"weights do not fit the recorded model ({error})", path=path) from None
    model.eval()
    return model


def save_domain_adapter(model: CANet, domain: str, path: str | Path) -> Path:
    """Save one dataset's adapters, ICM, BN and head (adapter-only safetensors)."""
    from eokit.core.adapters import save_adapter

    index = model.domain_index(domain)
    return save_adapter(
        model,
        path,
        include=model.domain_parameter_patterns(index),
        metadata={
            "domain": model.domains[index],
            "domain_index": str(index),
            "domains": json.dumps(model.domains),
            "config": json.dumps(model.base_config),
            "output_gated": "1" if model.domains[index] in model.output_gated else "0",
        },
        hash_base_weights=True,
    )


def load_domain_adapter(model: CANet, path: str | Path) -> str:
    """Load an adapter file onto the shared model it was trained on; returns the dataset name.

    Raises:
        InputError: not an adapter file, or saved for another base model (other architecture
            or other shared weights).
    """
    from eokit.core.adapters import load_adapter

    path = Path(path)
    metadata, _ = _read_safetensors(path)
    domain = metadata.get("domain")
    if domain is None or "domain_index" not in metadata:
        raise InputError("not a change-adapter file (no domain metadata)", path=path)
    index = int(metadata["domain_index"])
    if domain not in model.domains:
        if index != model.num_domains:
            raise InputError(
                f"adapter for {domain!r} was saved for a base model with other datasets "
                f"({metadata.get('domains')}); this model has {model.domains}",
                path=path,
            )
        model.add_domain(domain)
    elif model.domain_index(domain) != index:
        raise InputError(f"dataset {domain!r} sits at another index in this model", path=path)
    load_adapter(model, path, base_fingerprint_check=True)
    if metadata.get("output_gated") == "1":
        model.output_gated.add(domain)
    return domain
