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
import re
import time
from collections.abc import Iterable, Sequence
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
    "ADAPTER_FORMAT",
    "MODEL_FORMAT",
    "change_loss",
    "change_probabilities",
    "choose_threshold",
    "closest_domain",
    "change_metrics",
    "evaluate",
    "load_domain_adapter",
    "load_model",
    "positive_weight",
    "prepare_adapt",
    "save_domain_adapter",
    "save_model",
    "train_steps",
]

MODEL_FORMAT = "eokit.change.canet/1"
#: Adapter-only files: tensor names carry no domain index, so any number of adapters trained
#: separately on one shared model can be stacked onto it.
ADAPTER_FORMAT = "eokit.change.adapter/2"
_DOMAIN_KEY = re.compile(r"(^|\.)(adapters|icms|heads|bns|loras)\.(\d+)\.")


# ----------------------------------------------------------------------------------- losses
def change_loss(
    logits: torch.Tensor,
    mask: torch.Tensor,
    *,
    dice_weight: float = 1.0,
    pos_weight: float | None = None,
) -> torch.Tensor:
    """BCE-with-logits + soft Dice on the change class; pixels labelled 255 are ignored.

    Args:
        logits: (B, 1, H, W) change logits.
        mask: (B, H, W) int64 with 0/1 and 255 = ignore.
        dice_weight: Weight of the Dice term.
        pos_weight: Weight of change pixels in the BCE term (None = 1); see
            :func:`positive_weight` for a value derived from a dataset's labels.
    """
    logits = logits[:, 0]
    keep = mask != IGNORE_INDEX
    if not keep.any():
        return logits.sum() * 0.0
    target = (mask == 1).float()
    weight = None
    if pos_weight is not None and pos_weight != 1.0:
        weight = torch.tensor(float(pos_weight), dtype=logits.dtype, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits[keep], target[keep], pos_weight=weight)
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


def positive_weight(dataset: Any, *, max_weight: float = 10.0) -> float:
    """BCE weight of change pixels for a dataset: sqrt(no-change / change), clipped to [1, max].

    Sparse-change datasets (a few buildings per tile) otherwise drive the model to "no change";
    the square root keeps the weight moderate (Dice already balances part of it).
    """
    change = 0
    total = 0
    for index in range(len(dataset)):
        sample = dataset.load(index) if hasattr(dataset, "load") else dataset[index]
        mask = np.asarray(sample["mask"]) if sample.get("mask") is not None else None
        if mask is None:
            continue
        change += int((mask == 1).sum())
        total += int((mask != IGNORE_INDEX).sum())
    if change == 0:
        return 1.0
    return float(np.clip(np.sqrt((total - change) / change), 1.0, max_weight))


@torch.no_grad()
def _probability(model: CANet, batch: dict[str, Any]) -> torch.Tensor:
    """(B, H, W) change probability on the CPU, computed on the device the model is on."""
    device = next(model.parameters()).device
    logits = model(batch["image_a"].to(device), batch["image_b"].to(device))
    return torch.sigmoid(logits.float())[:, 0].cpu()


@torch.no_grad()
def change_probabilities(
    model: CANet, dataset: Any, *, domain: str | int, batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Change probabilities and labels of every labelled, valid pixel of ``dataset``.

    Returns:
        ``(probability, label)``: 1-D float32 and int64 arrays of equal length.
    """
    from torch.utils.data import DataLoader

    from eokit.change.data import collate_pairs

    was_training = model.training
    model.eval()
    model.set_domain(domain)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_pairs)
    probabilities, labels = [], []
    try:
        for batch in loader:
            probability = _probability(model, batch)
            keep = batch["valid"] & (batch["mask"] != IGNORE_INDEX)
            probabilities.append(probability[keep].numpy())
            labels.append(batch["mask"][keep].numpy())
    finally:
        model.train(was_training)
    return np.concatenate(probabilities), np.concatenate(labels)


def choose_threshold(
    model: CANet,
    dataset: Any,
    *,
    domain: str | int,
    candidates: Sequence[float] | None = None,
    batch_size: int = 8,
) -> float:
    """Decision threshold that maximises change F1 on a labelled dataset (the training pairs).

    The result is stored per dataset (``model.thresholds``, model and adapter files) and used by
    ``predict``/``evaluate`` unless a threshold is given. Pass un-augmented pairs.

    Args:
        model: Trained model.
        dataset: Labelled pairs of the dataset (training labels; never the test set).
        domain: Dataset name or index.
        candidates: Thresholds to try (default 0.05, 0.10, ..., 0.95).
        batch_size: Pairs per forward pass.
    """
    grid = np.asarray(candidates if candidates is not None else np.arange(1, 20) / 20.0)
    probability, label = change_probabilities(model, dataset, domain=domain,
                                              batch_size=batch_size)
    positive = label == 1
    if not positive.any():
        return 0.5
    best, best_f1 = 0.5, -1.0
    # Ties go to the candidate closest to 0.5 (the untuned default).
    for threshold in sorted(grid.tolist(), key=lambda t: abs(t - 0.5)):
        predicted = probability > threshold
        tp = int((predicted & positive).sum())
        f1 = 2 * tp / max(int(predicted.sum()) + int(positive.sum()), 1)
        if f1 > best_f1 + 1e-12:
            best, best_f1 = float(threshold), f1
    return best


def closest_domain(model: CANet, dataset: Any, *, batch_size: int = 8) -> str:
    """The known dataset whose BN/adapters/head agree best (change F1) with a new dataset's labels.

    A good ``init_from`` for :func:`prepare_adapt`: a new dataset that labels, say, vegetation
    and water change starts from the dataset whose label policy is closest. Uses only the
    labels passed in (the new dataset's training pairs).
    """
    scores = {}
    for name in list(model.domains):
        scores[name] = evaluate(model, dataset, domain=name, batch_size=batch_size)["f1"]
    best = max(scores, key=lambda n: -1.0 if np.isnan(scores[n]) else scores[n])
    logger.info("closest known dataset: %s (training-label F1 %s)", best,
                ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    return best


@torch.no_grad()
def evaluate(
    model: CANet,
    dataset: Any,
    *,
    domain: str | int,
    batch_size: int = 8,
    threshold: float | None = 0.5,
) -> dict[str, float]:
    """Global change metrics of ``model`` on a labelled pair dataset.

    Args:
        model: Trained model.
        dataset: A ``ChangeDataset`` (or any dataset of ``PairSample`` dicts of equal size).
        domain: Dataset name/index whose BN, adapters and head are used.
        batch_size: Pairs per forward pass.
        threshold: Probability above which a pixel is change; None = the dataset's stored
            threshold (``model.thresholds``, chosen on its training labels) or 0.5.
    """
    from torch.utils.data import DataLoader

    from eokit.change.data import collate_pairs

    if threshold is not None and not 0.0 < threshold < 1.0:
        raise InputError(f"must be between 0 and 1, got {threshold}", parameter="threshold")
    was_training = model.training
    model.eval()
    model.set_domain(domain)
    if threshold is None:
        threshold = model.threshold_of(domain)
    matrix = ConfusionMatrix(2, ignore_index=IGNORE_INDEX)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_pairs)
    try:
        for batch in loader:
            probability = _probability(model, batch)
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
    placement: str | None = None,
) -> dict[str, Any]:
    """Get ``model`` ready to learn ``domain`` alone: add it if new, freeze everything else.

    Trainable (``placement``, see ``CANet.domain_parameter_patterns``): ``"all"`` (default) the
    dataset's adapters, ICMs, head and BN affine parameters; ``"decoder"`` (same as
    ``encoder_bn_affine=False``) all but the encoder/fusion BN affine parameters; ``"finest"``
    the finest adapter, ICM, last BN of that block and the head. BNs of the dataset whose
    affine is frozen still re-estimate their statistics (AdaBN), with no gradient through the
    layers before them: cheaper steps, at some cost in quality with many labels (measured in
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
    model.adapting_domain = domain
    freeze_all_but(model, model.domain_parameter_patterns(domain, encoder_bn=encoder_bn_affine,
                                                          placement=placement))
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
    """Put BatchNorm layers whose parameters are frozen in eval mode (keep their statistics).

    Exception: the BNs of the dataset being adapted (``model.adapting_domain``, set by
    :func:`prepare_adapt`) stay in train mode even where their affine parameters are frozen,
    so their per-dataset statistics are re-estimated on the new data (AdaBN) without any
    gradient through the layers before them.
    """
    own = None
    adapting = getattr(model, "adapting_domain", None)
    if isinstance(model, CANet) and adapting is not None and adapting in model.domains:
        own = re.compile(rf"(^|\.)bns\.{model.domains.index(adapting)}$")
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                if own is not None and own.search(name):
                    continue
                module.eval()


def train_steps(
    model: CANet,
    batches: Iterable[dict[str, Any]],
    *,
    steps: int,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    dice_weight: float = 1.0,
    pos_weight: float | dict[int, float] | None = None,
    progress: bool = False,
    log_every: int = 0,
) -> dict[str, float]:
    """Plain training loop (AdamW over trainable parameters) for ``steps`` batches.

    ``log_every`` > 0 logs the step, mean loss, elapsed time and an estimate of the time left
    every that many steps (long runs show progress without a terminal bar).

    ``batches`` is cycled; each batch selects its domain. ``pos_weight``: see
    :func:`change_loss` (one float, or a dict domain index -> weight). Used by the demo and
    benchmarks, where building a Lightning trainer per configuration would dominate the run time.

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
        weight = (pos_weight.get(int(batch["domain"])) if isinstance(pos_weight, dict)
                  else pos_weight)
        loss = change_loss(logits, batch["mask"], dice_weight=dice_weight, pos_weight=weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        step_seconds.append(time.perf_counter() - tick)
        if bar is not None:
            bar.update(1)
        done = len(losses)
        if log_every > 0 and (done % log_every == 0 or done == steps):
            elapsed = time.perf_counter() - start
            logger.info("train step %d/%d: loss %.4f, %.0f s elapsed, about %.0f s left", done,
                        steps, float(np.mean(losses[-log_every:])), elapsed,
                        elapsed / done * (steps - done))
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
    """Endless batches; each pass over a loader is a new epoch (order and augmentations)."""
    from eokit.change.data import set_loader_epoch

    epoch = 0
    while True:
        set_loader_epoch(batches, epoch)
        epoch += 1
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
        "thresholds": json.dumps(model.thresholds),
        **(extra or {}),
    }
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from eokit.core.weights import read_safetensors

    return read_safetensors(path, what="checkpoint")


def load_model(path: str | Path) -> CANet:
    """Rebuild a model saved by :func:`save_model` (weights only, never unpickled)."""
    path = Path(path)
    metadata, tensors = _read_safetensors(path)
    if metadata.get("format") != MODEL_FORMAT:
        if "domain_index" in metadata or metadata.get("format") == ADAPTER_FORMAT:
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
    model.thresholds = {str(k): float(v)
                        for k, v in json.loads(metadata.get("thresholds", "{}")).items()}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise InputError(f"weights do not fit the recorded model ({error})", path=path) from None
    model.eval()
    return model


def _canonical(name: str) -> str:
    """State-dict key with its domain index replaced by ``*`` (index-free adapter keys)."""
    return _DOMAIN_KEY.sub(lambda m: f"{m.group(1)}{m.group(2)}.*.", name)


def _domain_state(model: CANet, index: int) -> dict[str, torch.Tensor]:
    """One dataset's parameters and buffers, keyed by their index-free names."""
    regexes = [re.compile(p) for p in model.domain_parameter_patterns(index)]
    out = {}
    for name, tensor in model.state_dict().items():
        if any(r.search(name) for r in regexes):
            out[_canonical(name)] = tensor
    return out


def save_domain_adapter(model: CANet, domain: str, path: str | Path) -> Path:
    """Save one dataset's adapters, ICM, BN, head and threshold (adapter-only safetensors).

    Tensor names carry no domain index and the file records a fingerprint of the shared
    weights only, so adapters trained separately on the same shared model can all be loaded
    onto it (:func:`load_domain_adapter`), whatever other datasets it holds.
    """
    from safetensors.torch import save_file

    from eokit.core.raster import atomic_write

    path = Path(path)
    if not path.parent.is_dir():
        raise InputError("output folder does not exist", path=path.parent)
    index = model.domain_index(domain)
    name = model.domains[index]
    tensors = {k: v.detach().cpu().contiguous().clone()
               for k, v in _domain_state(model, index).items()}
    metadata = {
        "format": ADAPTER_FORMAT,
        "domain": name,
        "config": json.dumps(model.base_config, sort_keys=True),
        "shared_fingerprint": model.shared_fingerprint(),
        "base_domains": json.dumps(model.domains),
        "output_gated": "1" if name in model.output_gated else "0",
    }
    if name in model.thresholds:
        metadata["threshold"] = repr(float(model.thresholds[name]))
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    logger.info("saved adapter of %s (%d tensors) to %s", name, len(tensors), path)
    return path


def load_domain_adapter(
    model: CANet, path: str | Path, *, name: str | None = None, replace: bool = False
) -> str:
    """Add a dataset from an adapter file to the shared model it was trained on.

    Any number of adapter files trained separately (each ``adapt`` run on the same shared
    model) can be loaded one after the other; ``model.set_domain(name)`` then switches.

    Args:
        model: The shared model (``load_model``), possibly holding other adapters already.
        path: File from :func:`save_domain_adapter`.
        name: Load the dataset under this name instead of the recorded one.
        replace: Overwrite a dataset of the same name (otherwise a name clash is an error).

    Returns:
        The dataset name.

    Raises:
        InputError: not an adapter file, saved for another shared model (architecture or
            weights fingerprint), or a dataset of that name already exists. Nothing is changed
            in ``model`` when an error is raised.
    """
    path = Path(path)
    metadata, tensors = _read_safetensors(path)
    if metadata.get("format") != ADAPTER_FORMAT:
        if "domain_index" in metadata:
            return _load_indexed_adapter(model, path, metadata)
        raise InputError("not a change-adapter file (no domain metadata)", path=path)
    domain = name or metadata["domain"]
    config = json.loads(metadata.get("config", "{}"))
    if config != json.loads(json.dumps(model.base_config)):
        raise InputError(
            f"adapter was saved for another model architecture ({config}); this model is "
            f"{model.base_config}",
            path=path,
        )
    expected, actual = metadata.get("shared_fingerprint"), model.shared_fingerprint()
    if expected != actual:
        raise InputError(
            f"adapter belongs to another base model (shared-weights fingerprint {expected}, "
            f"this model {actual}); load the base model it was adapted from",
            path=path,
        )
    if domain in model.domains and not replace:
        raise InputError(
            f"dataset {domain!r} is already in this model ({', '.join(model.domains)}); load "
            f"the adapter under another name (--adapter NAME={path.name})",
            path=path,
        )
    template = _domain_state(model, 0)
    if set(template) != set(tensors):
        extra = sorted(set(tensors) ^ set(template))
        raise InputError(f"adapter tensors do not fit this model (first: {extra[0]!r})",
                         path=path)
    bad = [k for k, v in tensors.items() if tuple(v.shape) != tuple(template[k].shape)]
    if bad:
        raise InputError(f"shape mismatch for {bad[0]!r}; adapter saved for another model",
                         path=path)
    index = model.domains.index(domain) if domain in model.domains else model.add_domain(domain)
    state = _domain_state(model, index)
    with torch.no_grad():
        for key, value in tensors.items():
            state[key].copy_(value.to(dtype=state[key].dtype))
    if metadata.get("output_gated") == "1":
        model.output_gated.add(domain)
    else:
        model.output_gated.discard(domain)
    if "threshold" in metadata:
        model.thresholds[domain] = float(metadata["threshold"])
    logger.info("loaded adapter %s as dataset %s", path, domain)
    return domain


def _load_indexed_adapter(model: CANet, path: Path, metadata: dict[str, str]) -> str:
    """Files of the first adapter format (index-bound tensor names, whole-model fingerprint)."""
    from eokit.core.adapters import load_adapter

    domain = metadata["domain"]
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
