"""Parameter-efficient adaptation of a grounding model to a new domain (LoRA, BitFit, adapters).

Following Moughnieh et al. ("Efficient Adaptation For Remote Sensing Visual Grounding"), a
model trained on one domain is adapted to another (sensor, resolution, vocabulary, expression
style) by training a small set of parameters: LoRA (HF ``peft``) placed in chosen modules,
BitFit (biases) or bottleneck adapters, all from :mod:`eokit.core.adapters`.

Methods (comma combinations allowed, e.g. ``lora:text,bitfit``):

==================  =========================================================================
``lora:text``       LoRA on the text encoder's self-attention (query, key, value)
``lora:vision``     LoRA on the image encoder's 1x1 (pointwise) convolutions
``lora:fusion``     LoRA on the text-image fusion: the MB-ORES branches' input projections
                    and cross-attention feed-forward layers, the branch fusion MLP, the
                    expression projection and the detector's text projection
``lora:decoder``    LoRA on the object reasoner's feed-forward layers and the score / box
                    heads
``lora:all``        union of the four placements
``bitfit``          every bias
``adapter:R``       residual bottleneck adapters (reduction R) after the image encoder
                    stages, the pyramid output, each MB-ORES branch layer and reasoner layer
``head-only``       detector and grounding output layers only
``full``            every parameter
==================  =========================================================================

:data:`PLACEMENTS` holds the module-selection rule of each placement; the same placement names
map to Grounding DINO's modules in :data:`eokit.grounding.gdino.GDINO_PLACEMENTS`.

Adapter files hold only the trained tensors (safetensors, ``eokit-adapter/1`` metadata) with a
fingerprint of the base model's names, shapes and values: loading one onto another base model
is refused. Several domains' adapters can sit on one base model (:class:`DomainAdapters`):
switch between them, or back to the base, whose outputs are then restored bit for bit.
"""

from __future__ import annotations

import json
import logging
import re
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from eokit.core.adapters import (
    ADAPTER_FORMAT,
    apply_lora,
    base_fingerprint,
    insert_adapters,
    matches_any,
    trainable_parameter_report,
)
from eokit.core.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "LORA_PLACEMENTS",
    "PLACEMENTS",
    "AdaptSpec",
    "DomainAdapters",
    "GroundingStack",
    "adapt",
    "apply_spec",
    "evaluate",
    "load_adapter_file",
    "parse_method",
    "placement_modules",
    "save_adapter_file",
]

LORA_PLACEMENTS = ("text", "vision", "fusion", "decoder")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# --------------------------------------------------------------------------------------------
# the model as one module
# --------------------------------------------------------------------------------------------
class GroundingStack(nn.Module):
    """Detector, MB-ORES head and text encoder as children of one module (names as below).

    ``detector.*`` the text-conditioned detector, ``head.*`` the MB-ORES head, ``text.*`` the
    text encoder (``text.model`` is the transformers BERT-style model).
    """

    def __init__(self, detector: nn.Module, head: nn.Module, text_encoder: nn.Module) -> None:
        super().__init__()
        self.detector, self.head, self.text = detector, head, text_encoder


def _is_pointwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1) \
        and module.groups == 1


#: Placement name -> rule ``(module name, module) -> bool`` on a :class:`GroundingStack`.
#: PyTorch's ``nn.MultiheadAttention`` computes its projections from raw weight tensors and
#: peft's LoRA for it merges and unmerges the update at every call (the frozen weights then
#: drift by rounding), so the fusion and decoder placements take the Linear layers of the same
#: blocks: the branches' input projections and the feed-forward layers after each
#: cross-attention, the reasoner's feed-forward layers.
PLACEMENTS: dict[str, Callable[[str, nn.Module], bool]] = {
    "text": lambda n, m: isinstance(m, nn.Linear) and re.fullmatch(
        r"text\.model\.encoder\.layer\.\d+\.attention\.self\.(query|key|value)", n) is not None,
    "vision": lambda n, m: n.startswith("detector.encoder.") and _is_pointwise(m),
    "fusion": lambda n, m: isinstance(m, nn.Linear) and re.fullmatch(
        r"head\.(visual|spatial|category)\.(proj\.0|layers\.\d+\.ffn\.[03])|head\.fusion\.[03]"
        r"|head\.text\.0|detector\.text_proj", n) is not None,
    "decoder": lambda n, m: isinstance(m, nn.Linear) and re.fullmatch(
        r"head\.reasoner\.layers\.\d+\.linear[12]|head\.score\.1|head\.box_head\.[02]", n)
        is not None,
}

#: Parameters trained by ``head-only``.
HEAD_ONLY = ["detector.embed.*", "detector.box_out.*", "detector.logit_*", "head.score.*",
             "head.box_head.*"]


def placement_modules(model: nn.Module, placement: str,
                      rules: dict[str, Callable[[str, nn.Module], bool]] | None = None
                      ) -> list[str]:
    """Names of the modules a LoRA placement targets (``all``: the union), in model order."""
    rules = PLACEMENTS if rules is None else rules
    wanted = list(rules) if placement == "all" else [placement]
    for p in wanted:
        if p not in rules:
            raise InputError(f"unknown placement {p!r}; use one of {', '.join(rules)} or all",
                             parameter="method")
    names = [n for n, m in model.named_modules()
             if any(rules[p](n, m) for p in wanted) and "lora_" not in n
             and ".base_layer" not in n]
    if not names:
        raise InputError(f"placement {placement!r} matches no module of this model",
                         parameter="method")
    return names


def _adapter_points(stack: GroundingStack) -> list[str]:
    names = []
    for n, _ in stack.named_modules():
        if re.fullmatch(r"detector\.encoder\.body\.blocks\.\d+", n) or n == "detector.smooth" \
                or re.fullmatch(r"head\.(visual|spatial|category)\.layers\.\d+", n) \
                or re.fullmatch(r"head\.reasoner\.layers\.\d+", n):
            names.append(n)
    if not names:
        raise InputError("no module to attach bottleneck adapters to", parameter="method")
    return names


# --------------------------------------------------------------------------------------------
# method specification
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AdaptSpec:
    """A parsed ``--method`` value.

    Attributes:
        lora: LoRA placements (subset of :data:`LORA_PLACEMENTS`).
        bitfit: Train every bias.
        adapter: Bottleneck reduction factor (None: no adapters).
        head_only: Train the output layers.
        full: Train everything.
        rank: LoRA rank.
        alpha: LoRA scaling numerator.
    """

    lora: tuple[str, ...] = ()
    bitfit: bool = False
    adapter: int | None = None
    head_only: bool = False
    full: bool = False
    rank: int = 8
    alpha: int = 16
    text: str = field(default="", compare=False)

    @property
    def trains_text(self) -> bool:
        """Whether any text-encoder parameter is trained (its outputs cannot be cached)."""
        return self.full or self.bitfit or "text" in self.lora


def parse_method(text: str, *, rank: int = 8, alpha: int | None = None) -> AdaptSpec:
    """Parse ``"lora:text,bitfit"``-style method strings (see the module docstring)."""
    parts = [p.strip().lower() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise InputError("give a method, e.g. lora:text", parameter="method")
    lora: list[str] = []
    bitfit = head_only = full = False
    adapter: int | None = None
    for part in parts:
        if part.startswith("lora:"):
            place = part.split(":", 1)[1]
            if place == "all":
                lora.extend(LORA_PLACEMENTS)
            elif place in LORA_PLACEMENTS:
                lora.append(place)
            else:
                raise InputError(f"unknown LoRA placement {place!r}; use "
                                 f"{', '.join(LORA_PLACEMENTS)} or all", parameter="method")
        elif part == "bitfit":
            bitfit = True
        elif part.startswith("adapter"):
            value = part.split(":", 1)[1] if ":" in part else "4"
            if not value.isdigit() or int(value) < 1:
                raise InputError(f"adapter reduction must be a positive integer, got {value!r}",
                                 parameter="method")
            adapter = int(value)
        elif part in ("head-only", "head_only", "head"):
            head_only = True
        elif part == "full":
            full = True
        else:
            raise InputError(f"unknown method {part!r}; use lora:<text|vision|fusion|decoder|all>,"
                             " bitfit, adapter:R, head-only or full", parameter="method")
    if rank < 1:
        raise InputError(f"must be >= 1, got {rank}", parameter="rank")
    return AdaptSpec(lora=tuple(dict.fromkeys(lora)), bitfit=bitfit, adapter=adapter,
                     head_only=head_only, full=full, rank=rank,
                     alpha=2 * rank if alpha is None else alpha, text=",".join(parts))


def _lora_regex(names: Sequence[str]) -> str:
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def apply_spec(stack: nn.Module, spec: AdaptSpec, *, adapter_name: str = "default",
               rules: dict[str, Callable[[str, nn.Module], bool]] | None = None,
               adapter_points: list[str] | None = None) -> list[str]:
    """Apply a method to ``stack`` in place and set which parameters train.

    Args:
        stack: A :class:`GroundingStack` (or, with ``rules``, another model).
        spec: The method.
        adapter_name: peft adapter name of the LoRA layers.
        rules: Placement rules (default :data:`PLACEMENTS`).
        adapter_points: Modules that get bottleneck adapters (default: see module docstring).

    Returns:
        Names of the trainable parameters.
    """
    before = {n: p for n, p in stack.named_parameters()}
    adapter_modules: list[str] = []
    if spec.adapter is not None:
        points = adapter_points if adapter_points is not None else _adapter_points(stack)  # type: ignore[arg-type]
        adapter_modules = insert_adapters(stack, points, reduction=spec.adapter)
    if spec.lora:
        targets: list[str] = []
        for place in spec.lora:
            targets += placement_modules(stack, place, rules)
        apply_lora(stack, _lora_regex(list(dict.fromkeys(targets))), r=spec.rank,
                   alpha=spec.alpha, adapter_name=adapter_name)
    base_ids = {id(p) for p in before.values()}
    train: list[str] = []
    for name, param in stack.named_parameters():
        is_new = id(param) not in base_ids
        keep = spec.full
        if is_new:  # LoRA or adapter parameters of this call (or of an earlier domain)
            keep = (f".{adapter_name}." in name and "lora_" in name) or any(
                name.startswith(a + ".") for a in adapter_modules)
        else:
            if spec.bitfit and name.endswith(".bias"):
                keep = True
            if spec.head_only and matches_any(_canonical(name, adapter_name), HEAD_ONLY):
                keep = True
        param.requires_grad_(keep)
        if keep:
            train.append(name)
    if not train:
        raise InputError(f"method {spec.text!r} trains no parameter of this model",
                         parameter="method")
    return train


def _canonical(key: str, adapter_name: str) -> str:
    """State key as on a model carrying only this adapter, named ``default``, no peft wrapper."""
    key = key.replace(".base_layer", "")
    return re.sub(rf"\.(lora_[AB]|lora_embedding_[AB])\.{re.escape(adapter_name)}(\.|$)",
                  r".\1.default\2", key)


# --------------------------------------------------------------------------------------------
# adapter files
# --------------------------------------------------------------------------------------------
def save_adapter_file(stack: nn.Module, path: str | Path, trainable: Sequence[str], *,
                      spec: AdaptSpec, fingerprint: str, adapter_name: str = "default",
                      metadata: dict[str, Any] | None = None) -> Path:
    """Write the trained tensors (canonical names) and the base fingerprint (atomic write)."""
    from safetensors.torch import save_file

    from eokit.core.raster import atomic_write

    state = stack.state_dict()
    keys = set(trainable)
    tensors = {_canonical(k, adapter_name): v.detach().cpu().contiguous().clone()
               for k, v in state.items() if k in keys}
    if not tensors:
        raise InputError("nothing to save", parameter="trainable")
    meta = {"format": ADAPTER_FORMAT, "base_fingerprint": fingerprint,
            "model_class": type(stack).__name__, "method": spec.text, "rank": str(spec.rank),
            "alpha": str(spec.alpha), "include": json.dumps(sorted(tensors))}
    meta.update({str(k): v if isinstance(v, str) else json.dumps(v)
                 for k, v in (metadata or {}).items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_adapter_file(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of an adapter file (one clear error for anything else)."""
    from eokit.core.weights import read_safetensors

    path = Path(path)
    meta, tensors = read_safetensors(path, what="adapter file")
    if meta.get("format") != ADAPTER_FORMAT or "method" not in meta:
        raise InputError("not an eokit grounding adapter file", path=path)
    return tensors, meta


def _check_base(meta: dict[str, str], fingerprint: str, path: Path) -> None:
    if meta.get("base_fingerprint") != fingerprint:
        raise InputError("adapter was trained on a different base model (fingerprint "
                         f"{meta.get('base_fingerprint')}, this model {fingerprint})", path=path)


def load_adapter_file(stack: nn.Module, path: str | Path, *, fingerprint: str,
                      adapter_name: str = "default",
                      rules: dict[str, Callable[[str, nn.Module], bool]] | None = None
                      ) -> tuple[AdaptSpec, dict[str, str], list[str]]:
    """Apply the file's method to ``stack`` and copy its tensors in (bit-exact).

    Args:
        stack: The base model (``fingerprint`` is its :func:`base_fingerprint` with weights,
            taken before any adapter was applied).
        path: Adapter file.
        fingerprint: The base model's fingerprint.
        adapter_name: peft name for the LoRA layers of this file.
        rules: Placement rules (default :data:`PLACEMENTS`).

    Returns:
        The method, the file metadata and the state keys that were written.
    """
    path = Path(path)
    tensors, meta = read_adapter_file(path)
    _check_base(meta, fingerprint, path)
    spec = parse_method(meta["method"], rank=int(meta.get("rank", 8)),
                        alpha=int(meta.get("alpha", 16)))
    apply_spec(stack, spec, adapter_name=adapter_name, rules=rules)
    keys = _write(stack, tensors, adapter_name, path)
    for p in stack.parameters():
        p.requires_grad_(False)
    return spec, meta, keys


def _write(stack: nn.Module, tensors: dict[str, Tensor], adapter_name: str, path: Path
           ) -> list[str]:
    state = stack.state_dict()
    by_canon: dict[str, str] = {}
    for key in state:
        by_canon.setdefault(_canonical(key, adapter_name), key)
    missing = [k for k in tensors if k not in by_canon]
    if missing:
        raise InputError(f"{len(missing)} adapter tensors have no place in this model (first: "
                         f"{missing[0]!r})", path=path)
    written = []
    with torch.no_grad():
        for canon, value in tensors.items():
            key = by_canon[canon]
            if tuple(state[key].shape) != tuple(value.shape):
                raise InputError(f"shape mismatch for {canon!r}", path=path)
            state[key].copy_(value.to(state[key].dtype))
            written.append(key)
    return written


# --------------------------------------------------------------------------------------------
# several domains on one base
# --------------------------------------------------------------------------------------------
class DomainAdapters:
    """Adapters of several domains on one base model; switch between them or back to the base.

    LoRA parameters live side by side under peft adapter names (one per domain, switched with
    peft's ``set_adapter`` / disabled for the base); tensors a method changes in place (BitFit
    biases, head-only layers, full fine-tuning, bottleneck adapters) are swapped in and out, the
    base values kept aside, so switching back to the base restores its outputs exactly.

    Every parameter is frozen: ``requires_grad`` selects PyTorch's attention kernels (the
    inference fast path needs frozen weights), so compare outputs with frozen models.

    Args:
        stack: The base model (not yet adapted).
    """

    def __init__(self, stack: nn.Module) -> None:
        self.stack = stack
        self.fingerprint = base_fingerprint(stack, weights=True)
        self._values: dict[str, dict[str, Tensor]] = {}
        self._base: dict[str, Tensor] = {}
        self._lora: dict[str, bool] = {}
        self._methods: dict[str, AdaptSpec] = {}
        self.active: str | None = None

    @property
    def domains(self) -> list[str]:
        """Loaded domain names."""
        return list(self._methods)

    def add(self, domain: str, path: str | Path) -> AdaptSpec:
        """Load a domain's adapter file (refused when trained on another base model)."""
        if not _NAME.match(domain) or domain == "default":
            raise InputError(f"domain names are 1-64 letters, digits, '_' or '-' (not "
                             f"'default'), got {domain!r}", parameter="domain")
        if domain in self._methods:
            raise InputError(f"domain {domain!r} is already loaded", parameter="domain")
        path = Path(path)
        tensors, meta = read_adapter_file(path)
        _check_base(meta, self.fingerprint, path)
        self.use(None)
        spec = parse_method(meta["method"], rank=int(meta.get("rank", 8)),
                            alpha=int(meta.get("alpha", 16)))
        have_adapters = any(m.adapter is not None for m in self._methods.values())
        # bottleneck adapters exist once; each domain's values are swapped in and out
        struct = AdaptSpec(lora=spec.lora, adapter=None if have_adapters else spec.adapter,
                           rank=spec.rank, alpha=spec.alpha, text=spec.text)
        if struct.lora or struct.adapter is not None:
            apply_spec(self.stack, struct, adapter_name=domain)
        state = self.stack.state_dict()
        by_canon: dict[str, str] = {}
        for key in state:
            by_canon.setdefault(_canonical(key, domain), key)
        values: dict[str, Tensor] = {}
        for canon, value in tensors.items():
            if canon not in by_canon:
                raise InputError(f"adapter tensor {canon!r} has no place in this model",
                                 path=path)
            key = by_canon[canon]
            if tuple(state[key].shape) != tuple(value.shape):
                raise InputError(f"shape mismatch for {canon!r}", path=path)
            if "lora_" in key:
                with torch.no_grad():
                    state[key].copy_(value.to(state[key].dtype))
            else:  # kept under the wrapper-free name: a later LoRA may wrap the layer
                values[canon] = value.to(state[key].dtype)
                if canon not in self._base:
                    self._base[canon] = state[key].detach().clone()
        for p in self.stack.parameters():
            p.requires_grad_(False)
        self._values[domain] = values
        self._lora[domain] = bool(spec.lora)
        self._methods[domain] = spec
        self._set_lora(None)
        return spec

    def _lora_layers(self) -> list[Any]:
        from peft.tuners.lora import LoraLayer

        return [m for m in self.stack.modules() if isinstance(m, LoraLayer)]

    def _set_lora(self, domain: str | None) -> None:
        for layer in self._lora_layers():
            if domain is None or not self._lora.get(domain):
                layer.enable_adapters(False)
            else:
                layer.enable_adapters(True)
                layer.set_adapter(domain)
        for p in self.stack.parameters():
            p.requires_grad_(False)

    def use(self, domain: str | None) -> None:
        """Make ``domain`` active (None: the base model, exactly)."""
        if domain is not None and domain not in self._methods:
            raise InputError(f"no adapter loaded for domain {domain!r} (loaded: "
                             f"{', '.join(self._methods) or 'none'})", parameter="domain")
        state = self.stack.state_dict()
        current = {k.replace(".base_layer", ""): k for k in state if "lora_" not in k}
        with torch.no_grad():
            for canon, value in self._base.items():
                state[current[canon]].copy_(value)
            if domain is not None:
                for canon, value in self._values[domain].items():
                    state[current[canon]].copy_(value)
        self._set_lora(domain)
        self.active = domain

    def remove(self, domain: str) -> None:
        """Unload a domain (its LoRA layers deleted); the base becomes active."""
        if domain not in self._methods:
            raise InputError(f"no adapter loaded for domain {domain!r}", parameter="domain")
        self.use(None)
        if self._lora[domain]:
            for layer in self._lora_layers():
                if domain in layer.lora_A:
                    layer.delete_adapter(domain)
        del self._values[domain], self._lora[domain], self._methods[domain]
        self._set_lora(None)


# --------------------------------------------------------------------------------------------
# training and evaluation
# --------------------------------------------------------------------------------------------
class _LiveText:
    """TextCache-like access to the text encoder with gradients (no cache)."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.dim = int(encoder.dim)

    def classes(self, names: Sequence[str]) -> Tensor:
        from eokit.grounding.detector import PROMPT

        return self.encoder.encode([PROMPT.format(n.replace("_", " ")) for n in names]).float()

    def tokens(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        hidden, mask = self.encoder.encode_tokens(list(texts))
        return hidden.float(), mask


def _frozen_text(encoder: Any) -> Any:
    """A fresh TextCache on ``encoder`` that leaves its parameters' trainable flags alone."""
    from eokit.grounding.train import TextCache

    return TextCache(encoder, freeze=False)


@torch.no_grad()
def evaluate(stack: GroundingStack, samples: Sequence[Any], class_names: Sequence[str]
             ) -> dict[str, float]:
    """Grounding metrics (Pr@0.5, meanIoU, cumIoU, in %) of the stack on samples."""
    from eokit.grounding.metrics import grounding_metrics
    from eokit.grounding.train import build_nodes, detect, predict_grounding

    samples = [s for s in samples if s.expressions]
    if not samples:
        raise InputError("the scored scenes hold no referring expression; give more scenes",
                         parameter="--simulate")
    was = stack.head.training
    stack.eval()
    text = _frozen_text(stack.text)
    size = tuple(samples[0].image.shape[-2:])
    _, props = detect(stack.detector, samples, class_names, text)  # type: ignore[arg-type]
    nodes = build_nodes(props, text.classes(class_names), size)  # type: ignore[arg-type]
    pred = predict_grounding(stack.head, samples, nodes, text)  # type: ignore[arg-type]
    metrics = grounding_metrics(pred["boxes"], pred["targets"])
    if was:
        stack.train()
        _freeze_stats(stack)
    return {k: round(100 * float(metrics[k]), 2) for k in ("Pr@0.5", "meanIoU", "cumIoU")}


def _freeze_stats(stack: nn.Module) -> None:
    stack.text.eval()  # type: ignore[union-attr]
    for module in stack.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for s in optimizer.state.values()
               for v in s.values() if isinstance(v, Tensor) and v.ndim > 0)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def adapt(stack: GroundingStack, spec: AdaptSpec, train: Sequence[Any],
          class_names: Sequence[str], *, steps: int = 60, batch_size: int = 8,
          lr: float = 1e-3, seed: int = 0, adapter_name: str = "default",
          max_expressions: int = 16, should_stop: Callable[[], bool] | None = None
          ) -> dict[str, Any]:
    """Apply ``spec`` to ``stack`` and train the named parameters on ``train`` (in place).

    Each step trains the detector (heat-map focal + box losses on the images' boxes) and the
    MB-ORES head (grounding loss on the images' expressions, proposals of the current detector)
    together; the text encoder runs with gradients only when the method trains it.

    Args:
        stack: Base model (modified in place).
        spec: The method.
        train: :class:`eokit.grounding.train.GroundingSample` list (one image size).
        class_names: Vocabulary of the detection targets (boxes of other classes are left out).
        steps: Optimiser steps.
        batch_size: Images per step.
        lr: AdamW learning rate (full fine-tuning gets a tenth of it).
        seed: Batch order seed.
        adapter_name: peft adapter name.
        max_expressions: Expressions per step at most (sampled from the batch's images).
        should_stop: Polled each step.

    Returns:
        ``trainable`` (names), and the cost report: ``trainable_params``, ``total_params``,
        ``trainable_percent``, ``optimizer_state_mb``, ``step_seconds`` (median),
        ``peak_rss_mb`` (whole process), ``final_loss``, ``steps``.
    """
    from eokit.grounding.detector import detection_loss, encode_targets, proposals
    from eokit.grounding.mbores import grounding_loss
    from eokit.grounding.train import _targets, build_nodes

    if not train:
        raise InputError("no training images", parameter="samples")
    if steps < 1:
        raise InputError(f"must be >= 1, got {steps}", parameter="steps")
    size = tuple(train[0].image.shape[-2:])
    if any(tuple(s.image.shape[-2:]) != size for s in train):
        raise InputError("training images must share one size", parameter="samples")
    names = list(class_names)
    trainable = apply_spec(stack, spec, adapter_name=adapter_name)
    report = trainable_parameter_report(stack, groups={})
    params = [p for p in stack.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr * (0.1 if spec.full else 1.0), weight_decay=0.0)
    vocab = {n: i for i, n in enumerate(names)}
    targets = _targets(train, vocab)
    images = torch.from_numpy(np.stack([s.image for s in train]))
    h, w = int(size[0]), int(size[1])
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    live = _LiveText(stack.text)
    cache = _frozen_text(stack.text)
    gen = torch.Generator().manual_seed(seed)
    stack.train()
    stack.text.eval()  # no dropout in the text encoder
    if not spec.full:  # BatchNorm statistics belong to the frozen base
        _freeze_stats(stack)
    times: list[float] = []
    loss_value = float("nan")
    order = torch.randperm(len(train), generator=gen)
    pos = 0
    with torch.no_grad():
        fixed_emb = None if spec.trains_text else cache.classes(names)
    for step in range(steps):
        if pos + min(batch_size, len(train)) > len(order):
            order, pos = torch.randperm(len(train), generator=gen), 0
        idx = order[pos:pos + batch_size].tolist()
        pos += len(idx)
        start = time.perf_counter()
        emb = live.classes(names) if fixed_emb is None else fixed_emb
        x = images[idx]
        out = stack.detector(x, emb)
        det = detection_loss(out, encode_targets([targets[i] for i in idx], len(names), (h, w),
                                                 stack.detector.stride))
        loss = det["loss"]
        rows = [(i, j) for i in idx for j in range(len(train[i].expressions))]
        if len(rows) > max_expressions:
            pick = torch.randperm(len(rows), generator=gen)[:max_expressions].tolist()
            rows = [rows[k] for k in sorted(pick)]
        if rows:
            props = proposals({k: v.detach() for k, v in out.items()}, (h, w),
                              stack.detector.stride)
            per = [{k: v[b] for k, v in props.items()} for b in range(len(idx))]
            nodes = build_nodes(per, emb, (h, w))
            where = {i: b for b, i in enumerate(idx)}
            img = torch.tensor([where[i] for i, _ in rows])
            texts = [train[i].expressions[j] for i, j in rows]
            tokens, token_mask = (live.tokens(texts) if spec.trains_text
                                  else cache.tokens(texts))
            batch_nodes = {k: nodes[k][img] for k in ("features", "class_embed", "boxes",
                                                      "mask")}
            target = torch.stack([torch.as_tensor(train[i].boxes[train[i].targets[j]],
                                                  dtype=torch.float32) for i, j in rows]) / scale
            head_out = stack.head(batch_nodes, tokens, token_mask)
            loss = loss + grounding_loss(head_out, target, batch_nodes["boxes"],
                                         batch_nodes["mask"])["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        times.append(time.perf_counter() - start)
        loss_value = float(loss.detach())
        if not np.isfinite(loss_value):
            raise InputError(f"training diverged (loss {loss_value}) at step {step + 1}; "
                             "lower the learning rate", parameter="lr")
        if should_stop is not None and should_stop():
            break
    stack.eval()
    for p in stack.parameters():
        p.requires_grad_(False)
    if spec.full:  # BatchNorm statistics were trained too
        trainable = [*trainable, *(n for n, _ in stack.named_buffers())]
    return {"trainable": trainable, "trainable_params": int(report["trainable"]),
            "total_params": int(report["total"]),
            "trainable_percent": round(float(report["percent"]), 3),
            "optimizer_state_mb": round(_optimizer_bytes(optimizer) / 2**20, 3),
            "step_seconds": round(float(np.median(times)), 4), "peak_rss_mb": _peak_rss_mb(),
            "final_loss": round(loss_value, 4), "steps": len(times)}


# --------------------------------------------------------------------------------------------
# model folders
# --------------------------------------------------------------------------------------------
def stack_of(model: Any) -> GroundingStack:
    """The :class:`GroundingStack` of a :class:`eokit.grounding.pipeline.GroundingModel`."""
    return GroundingStack(model.detector, model.head, model.text.encoder)


def target_samples(*, scenes: int = 40, size: int = 64, seed: int = 0, gsd_m: float = 1.0,
                   gain: float = 1.0, blur_sigma: float = 0.0, classes: Sequence[str] | None = None,
                   expression_mix: str = "relation", phrasing: str = "plain",
                   records: str | Path | None = None, expressions: int = 4) -> list[Any]:
    """Target-domain samples: simulated (ObjectDomain knobs) or a folder of scene folders.

    A records folder holds one sub-folder per scene as written by
    :func:`eokit.core.synth.objects.write_object_scene` (``expressions.json`` + image).
    """
    from eokit.grounding.train import GroundingSample, scene_samples, to_unit

    if records is None:
        from eokit.core.synth.objects import ObjectDomain, generate_object_dataset
        from eokit.core.synth.scene import SensorDomain

        domain = ObjectDomain(gsd_m=gsd_m, sensor=SensorDomain(gain=gain, blur_sigma=blur_sigma),
                              classes=tuple(classes) if classes else ObjectDomain().classes,
                              expression_mix=expression_mix, phrasing=phrasing)
        return scene_samples(generate_object_dataset(scenes, size, seed=seed, domain=domain,
                                                     n_expressions=expressions))
    from eokit.core.raster import read_image
    from eokit.grounding.data import read_synth_scene

    root = Path(records)
    if not root.is_dir():
        raise InputError("records folder not found", path=root)
    folders = sorted(p for p in root.iterdir() if (p / "expressions.json").is_file())
    if not folders:
        raise InputError("no scene folder (with expressions.json) inside", path=root)
    out = []
    for folder in folders:
        det, ground = read_synth_scene(folder)
        image = to_unit(read_image(det.image).data)
        if image.shape[-1] % 32 or image.shape[-2] % 32:
            raise InputError(f"image sides must be multiples of 32, got {image.shape[-2:]}",
                             path=det.image)
        boxes = np.asarray(det.boxes, dtype=np.float32)
        targets = []
        for g in ground:
            hit = [i for i, b in enumerate(boxes) if np.allclose(b, g.box)]
            targets.append(hit[0] if hit else 0)
        out.append(GroundingSample(image, boxes, list(det.labels), [g.expression for g in ground],
                                   targets, [g.kind or "" for g in ground]))
    if len({s.image.shape for s in out}) > 1:
        raise InputError("the scenes' images differ in size or bands", path=root)
    return out


def held_out(samples: Sequence[Any], test_share: float = 0.2) -> tuple[list[Any], list[Any]]:
    """(test, pool): the last ``test_share`` of the scenes that hold an expression, the rest."""
    usable = [i for i, s in enumerate(samples) if s.expressions]
    n_test = max(1, int(round(test_share * len(usable))))
    if len(usable) < 2:
        raise InputError(f"{len(usable)} of {len(samples)} scenes hold a referring expression; "
                         "need two (one for training, one held out)", parameter="--simulate")
    test_ids = set(usable[-n_test:])
    return ([s for i, s in enumerate(samples) if i in test_ids],
            [s for i, s in enumerate(samples) if i not in test_ids])


def label_subset(samples: Sequence[Any], share: float, seed: int) -> list[Any]:
    """A random ``share`` (0-1] of the samples (at least one)."""
    if not 0 < share <= 1:
        raise InputError(f"must be in (0, 1], got {share}", parameter="label_share")
    rng = np.random.default_rng(seed)
    n = max(1, int(round(share * len(samples))))
    return [samples[i] for i in sorted(rng.choice(len(samples), n, replace=False))]


def adapt_model_dir(model_dir: str | Path, out: str | Path, *, method: str,
                    samples: Sequence[Any], label_share: float = 1.0, steps: int = 60,
                    rank: int = 8, lr: float = 1e-3, seed: int = 0, domain: str = "target",
                    test_share: float = 0.2, report_path: str | Path | None = None
                    ) -> dict[str, Any]:
    """Adapt a model folder to ``samples`` and save the adapter file and the cost report.

    One scene in five (``test_share``) is held out for the scores; ``label_share`` of the rest
    is used for training.
    """
    from eokit.grounding.pipeline import load_model

    if not _NAME.match(domain) or domain == "default":
        raise InputError(f"1-64 letters, digits, '_' or '-' (not 'default'), got {domain!r}",
                         parameter="domain")
    spec = parse_method(method, rank=rank)
    model = load_model(model_dir)
    stack = stack_of(model)
    fingerprint = base_fingerprint(stack, weights=True)
    test, pool = held_out(samples, test_share)
    train = label_subset(pool, label_share, seed)
    names = list(dict.fromkeys([*model.class_names,
                                *(n for s in samples for n in s.labels)]))
    before = evaluate(stack, test, names)
    torch.manual_seed(seed)
    cost = adapt(stack, spec, train, names, steps=steps, lr=lr, seed=seed, adapter_name=domain)
    after = evaluate(stack, test, names)
    path = save_adapter_file(stack, out, cost.pop("trainable"), spec=spec,
                             fingerprint=fingerprint, adapter_name=domain,
                             metadata={"domain": domain, "class_names": names})
    report = {"adapter": str(path), "method": spec.text, "domain": domain,
              "train_scenes": len(train), "test_scenes": len(test),
              "label_share": label_share, **cost,
              "adapter_file_mb": round(Path(path).stat().st_size / 2**20, 4),
              "target_before": before, "target_after": after}
    if report_path is not None:
        from eokit.core.raster import atomic_write

        with atomic_write(Path(report_path)) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2) + "\n")
        report["report"] = str(report_path)
    return report


def load_adapted(model_dir: str | Path, adapter: str | Path) -> Any:
    """A :class:`~eokit.grounding.pipeline.GroundingModel` with an adapter file applied."""
    from eokit.grounding.pipeline import load_model

    model = load_model(model_dir)
    stack = stack_of(model)
    fingerprint = base_fingerprint(stack, weights=True)
    _, meta, _ = load_adapter_file(stack, adapter, fingerprint=fingerprint,
                                   adapter_name=meta_domain(adapter))
    if "class_names" in meta:
        model.class_names = list(json.loads(meta["class_names"]))
    model.text._tokens.clear()
    return model


def meta_domain(path: str | Path) -> str:
    """Domain name stored in an adapter file (``default`` when none)."""
    _, meta = read_adapter_file(path)
    name = meta.get("domain", "default")
    return name if _NAME.match(name) else "default"


def evaluate_adapter(model_dir: str | Path, adapter: str | Path, samples: Sequence[Any], *,
                     test_share: float = 0.2) -> dict[str, Any]:
    """Scores of a model folder with and without an adapter file on the held-out scenes."""
    from eokit.grounding.pipeline import load_model

    test, _ = held_out(samples, test_share)
    base = load_model(model_dir)
    model = load_adapted(model_dir, adapter)
    names = list(dict.fromkeys([*model.class_names, *(n for s in samples for n in s.labels)]))
    return {"adapter": str(adapter), "test_scenes": len(test),
            "base": evaluate(stack_of(base), test, names),
            "adapted": evaluate(stack_of(model), test, names)}
