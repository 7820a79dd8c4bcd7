r"""Parameter-efficient fine-tuning: LoRA/IA3 (peft), BitFit, bottleneck adapters, per-domain BN.

Every function works in place on any ``torch.nn.Module`` (CNN or ViT) and returns the model so
calls chain. Adapters are saved alone (a few kB to MB) in safetensors together with a fingerprint
of the base model they were trained on; loading them onto a different base raises
:class:`~eokit.core.errors.InputError`.

Typical use::

    model = timm.create_model("resnet18", pretrained=False, num_classes=5)
    apply_lora(model, r"layer\d\.\d\.conv\d", r=4)
    freeze_all_but(model, ["*lora_*", "fc.*"])
    ...  # train
    save_adapter(model, "adapter.safetensors", include=["*lora_*", "fc.*"])
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eokit.core.errors import InputError
from eokit.core.raster import atomic_write

logger = logging.getLogger(__name__)

__all__ = [
    "BottleneckAdapter",
    "DomainBatchNorm",
    "apply_bitfit",
    "apply_ia3",
    "apply_lora",
    "base_fingerprint",
    "convert_to_domain_bn",
    "freeze_all_but",
    "insert_adapters",
    "load_adapter",
    "matches_any",
    "save_adapter",
    "set_domain",
    "trainable_parameter_report",
]

ADAPTER_FORMAT = "eokit-adapter/1"
_ADAPTER_CHILD = "bottleneck_adapter"


# --------------------------------------------------------------------------------------------------
# name matching
# --------------------------------------------------------------------------------------------------
def _pattern_matches(name: str, pattern: str) -> bool:
    """True if ``pattern`` matches ``name`` as a glob (whole name) or as a regex (searched)."""
    if fnmatch.fnmatchcase(name, pattern):
        return True
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return False


def matches_any(name: str, patterns: Sequence[str]) -> bool:
    """Return True if a parameter/module name matches any glob or regex in ``patterns``.

    Args:
        name: Dotted parameter or module name, e.g. ``"blocks.0.attn.qkv.lora_A.default.weight"``.
        patterns: Globs (``"*.bias"``, matched against the whole name) or regular expressions
            (``r"lora_[AB]"``, searched anywhere in the name).
    """
    return any(_pattern_matches(name, p) for p in patterns)


def _as_patterns(patterns: Sequence[str] | str, parameter: str) -> list[str]:
    if isinstance(patterns, str):
        patterns = [patterns]
    out = [str(p) for p in patterns]
    if not out:
        raise InputError("give at least one name pattern", parameter=parameter)
    return out


# --------------------------------------------------------------------------------------------------
# HF peft methods
# --------------------------------------------------------------------------------------------------
def _inject_peft(model: nn.Module, config: Any, adapter_name: str) -> nn.Module:
    from peft import inject_adapter_in_model

    try:
        return inject_adapter_in_model(config, model, adapter_name=adapter_name)
    except ValueError as err:
        # peft reports unmatched or unsupported targets as ValueError with a long message.
        first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        raise InputError(first, parameter="target_modules") from err


def apply_lora(
    model: nn.Module,
    target_modules: Sequence[str] | str,
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    adapter_name: str = "default",
) -> nn.Module:
    r"""Inject LoRA layers (HF peft) into ``model`` in place; Linear, Conv1d/2d/3d targets work.

    The low-rank update starts at zero (``B = 0``), so the model output is unchanged right after
    injection. peft freezes every other parameter; unfreeze heads with :func:`freeze_all_but`.

    Args:
        model: Any module.
        target_modules: Module-name suffixes (``["qkv", "fc1"]``) or one regex matched against
            full module names (``r".*layer\d\.\d\.conv\d"``), as peft's
            ``LoraConfig.target_modules``.
        r: Rank of the update.
        alpha: Scaling numerator (update scaled by ``alpha / r``).
        dropout: Dropout on the LoRA branch input.
        adapter_name: Name of this adapter (several can coexist; peft ``set_adapter`` switches).

    Returns:
        The same model, modified in place.

    Raises:
        InputError: no module matches ``target_modules`` or a matched type is not supported.
    """
    from peft import LoraConfig

    if r < 1:
        raise InputError(f"rank must be >= 1, got {r}", parameter="r")
    targets: list[str] | str = (
        target_modules if isinstance(target_modules, str) else list(target_modules)
    )
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    model = _inject_peft(model, config, adapter_name)
    logger.info("LoRA r=%d on %s: %s", r, targets, _short_report(model))
    return model


def apply_ia3(
    model: nn.Module,
    target_modules: Sequence[str] | str,
    feedforward_modules: Sequence[str] | str | None = None,
    *,
    adapter_name: str = "default",
) -> nn.Module:
    """Inject IA3 scaling vectors (HF peft) in place; ones at start, so the output is unchanged.

    Args:
        model: Any module.
        target_modules: Module names or regex, as in :func:`apply_lora`.
        feedforward_modules: Subset of targets whose *input* is scaled (IA3's feed-forward rule);
            the others scale their output.
        adapter_name: Name of this adapter.

    Returns:
        The same model, modified in place.
    """
    from peft import IA3Config

    targets: list[str] | str = (
        target_modules if isinstance(target_modules, str) else list(target_modules)
    )
    ff: list[str] | str | None
    if feedforward_modules is None:
        ff = []
    elif isinstance(feedforward_modules, str):
        ff = feedforward_modules
    else:
        ff = list(feedforward_modules)
    config = IA3Config(target_modules=targets, feedforward_modules=ff)
    model = _inject_peft(model, config, adapter_name)
    logger.info("IA3 on %s: %s", targets, _short_report(model))
    return model


def apply_bitfit(model: nn.Module) -> nn.Module:
    """BitFit: make only bias parameters trainable (every other parameter frozen).

    Returns:
        The same model.

    Raises:
        InputError: the model has no bias parameter.
    """
    n_bias = 0
    for name, param in model.named_parameters():
        is_bias = name == "bias" or name.endswith(".bias")
        param.requires_grad_(is_bias)
        n_bias += int(is_bias)
    if n_bias == 0:
        raise InputError("model has no bias parameters; BitFit would train nothing",
                         parameter="model")
    logger.info("BitFit: %s", _short_report(model))
    return model


# --------------------------------------------------------------------------------------------------
# bottleneck adapters
# --------------------------------------------------------------------------------------------------
class BottleneckAdapter(nn.Module):
    """Residual bottleneck adapter ``y + up(act(down(y)))`` with ``up`` initialised to zero.

    Args:
        channels: Feature channels ``C``.
        reduction: Bottleneck width is ``max(1, C // reduction)``.
        dims: 2 for feature maps ``(B, C, H, W)`` (1x1 convolutions); 1 for tokens ``(..., C)``
            (Linear layers on the last axis).
    """

    def __init__(self, channels: int, reduction: int = 4, dims: int = 2) -> None:
        super().__init__()
        if channels < 1:
            raise InputError(f"channels must be >= 1, got {channels}", parameter="channels")
        if reduction < 1:
            raise InputError(f"reduction must be >= 1, got {reduction}", parameter="reduction")
        if dims not in (1, 2):
            raise InputError(f"dims must be 1 (tokens) or 2 (feature maps), got {dims}",
                             parameter="dims")
        hidden = max(1, channels // reduction)
        self.dims = dims
        self.down: nn.Module
        self.up: nn.Module
        if dims == 2:
            self.down = nn.Conv2d(channels, hidden, kernel_size=1)
            self.up = nn.Conv2d(hidden, channels, kernel_size=1)
        else:
            self.down = nn.Linear(channels, hidden)
            self.up = nn.Linear(hidden, channels)
        self.act = nn.GELU()
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the residual adapter to ``x`` (shape as described in the class docstring)."""
        out: torch.Tensor = x + self.up(self.act(self.down(x)))
        return out


def _adapter_hook(module: nn.Module, inputs: Any, output: Any) -> Any:
    """Forward hook: pass a module's tensor output through its attached bottleneck adapter."""
    adapter = getattr(module, _ADAPTER_CHILD)
    if not isinstance(output, torch.Tensor):
        raise InputError(
            f"bottleneck adapter needs a module returning one tensor, got {type(output).__name__}",
            parameter="module_names",
        )
    return adapter(output)


def _infer_channels(module: nn.Module) -> tuple[int, int] | None:
    """Guess (channels, dims) of a module's output from its last shape-bearing submodule."""
    for sub in reversed(list(module.modules())):
        if isinstance(sub, nn.Conv2d | nn.ConvTranspose2d):
            return int(sub.out_channels), 2
        if isinstance(sub, nn.BatchNorm2d):
            return int(sub.num_features), 2
        if isinstance(sub, nn.GroupNorm):
            return int(sub.num_channels), 2
        if isinstance(sub, nn.Linear):
            return int(sub.out_features), 1
        if isinstance(sub, nn.LayerNorm):
            return int(sub.normalized_shape[-1]), 1
    return None


def insert_adapters(
    model: nn.Module,
    module_names: Sequence[str],
    *,
    reduction: int = 4,
    example_input: torch.Tensor | None = None,
) -> list[str]:
    """Attach a :class:`BottleneckAdapter` after each named module (residual, identity at start).

    The adapter becomes a child ``<module>.bottleneck_adapter`` applied by a forward hook, so the
    base model's parameter names (and pretrained state dicts) stay valid.

    Args:
        model: Any module.
        module_names: Exact dotted names of modules whose output is adapted (``"layer2"``,
            ``"blocks.3"``). Each must return one tensor.
        reduction: Bottleneck reduction factor.
        example_input: Optional input batch; when given, output shapes are probed with one forward
            pass (4-D output -> conv adapter on dim 1, otherwise Linear adapter on the last dim).
            Without it the shape is read from the module's last Conv/Linear/Norm layer.

    Returns:
        Names of the inserted adapter modules (usable as ``include`` patterns for
        :func:`save_adapter`).

    Raises:
        InputError: unknown module name, module already adapted, or channels cannot be inferred.
    """
    modules = dict(model.named_modules())
    names = list(module_names)
    if not names:
        raise InputError("give at least one module name", parameter="module_names")
    for name in names:
        if name not in modules:
            raise InputError(f"no module named {name!r} in {type(model).__name__}",
                             parameter="module_names")
        if hasattr(modules[name], _ADAPTER_CHILD):
            raise InputError(f"module {name!r} already has a bottleneck adapter",
                             parameter="module_names")

    shapes: dict[str, tuple[int, int]] = {}
    if example_input is not None:
        handles = []
        for name in names:
            def _probe(mod: nn.Module, inp: Any, out: Any, key: str = name) -> None:
                if isinstance(out, torch.Tensor):
                    shapes[key] = (
                        (int(out.shape[1]), 2) if out.ndim == 4 else (int(out.shape[-1]), 1)
                    )
            handles.append(modules[name].register_forward_hook(_probe))
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                model(example_input)
        finally:
            model.train(was_training)
            for h in handles:
                h.remove()

    inserted = []
    for name in names:
        module = modules[name]
        shape = shapes.get(name) or _infer_channels(module)
        if shape is None:
            raise InputError(
                f"cannot infer the output channels of {name!r}; pass example_input",
                parameter="module_names",
            )
        channels, dims = shape
        ref = next(iter(module.parameters()), None)
        adapter = BottleneckAdapter(channels, reduction=reduction, dims=dims)
        if ref is not None:
            adapter.to(device=ref.device, dtype=ref.dtype)
        module.add_module(_ADAPTER_CHILD, adapter)
        module.register_forward_hook(_adapter_hook)
        full = f"{name}.{_ADAPTER_CHILD}" if name else _ADAPTER_CHILD
        inserted.append(full)
        logger.debug("bottleneck adapter %s: channels=%d dims=%d", full, channels, dims)
    return inserted


# --------------------------------------------------------------------------------------------------
# per-domain BatchNorm
# --------------------------------------------------------------------------------------------------
_BN_BY_DIMS: dict[int, type[nn.modules.batchnorm._BatchNorm]] = {
    1: nn.BatchNorm1d,
    2: nn.BatchNorm2d,
    3: nn.BatchNorm3d,
}


class DomainBatchNorm(nn.Module):
    """One BatchNorm per domain (sensor, dataset, season); the domain id picks which one runs.

    The active domain is ``self.domain`` (set with :func:`set_domain`) unless ``forward`` gets
    ``domain=``: an int, or a ``(B,)`` tensor of per-sample ids (each group normalised by its own
    BN).

    Args:
        num_features: Channels ``C``.
        num_domains: Number of domains.
        dims: 1 (``(B,C)``/``(B,C,L)``), 2 (``(B,C,H,W)``) or 3.
        eps: BatchNorm epsilon.
        momentum: BatchNorm momentum.
        affine: Learn per-domain scale and shift.
        track_running_stats: Keep per-domain running statistics.
        post: Optional module applied after normalisation (keeps timm's fused ``BatchNormAct2d``).
    """

    def __init__(
        self,
        num_features: int,
        num_domains: int,
        dims: int = 2,
        *,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        post: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if num_domains < 1:
            raise InputError(f"num_domains must be >= 1, got {num_domains}",
                             parameter="num_domains")
        if dims not in _BN_BY_DIMS:
            raise InputError(f"dims must be 1, 2 or 3, got {dims}", parameter="dims")
        bn_cls = _BN_BY_DIMS[dims]
        self.num_features = num_features
        self.num_domains = num_domains
        self.dims = dims
        self.domain = 0
        self.bns = nn.ModuleList(
            bn_cls(num_features, eps=eps, momentum=momentum, affine=affine,
                   track_running_stats=track_running_stats)
            for _ in range(num_domains)
        )
        self.post = post

    def _check(self, domain: int) -> int:
        if not 0 <= int(domain) < self.num_domains:
            raise InputError(f"domain id {int(domain)} outside 0..{self.num_domains - 1}",
                             parameter="domain")
        return int(domain)

    def forward(self, x: torch.Tensor, domain: int | torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x`` with the BN of ``domain`` (default: the active domain)."""
        if domain is None or (isinstance(domain, torch.Tensor) and domain.ndim == 0):
            d = self._check(self.domain if domain is None else int(domain))
            out = self.bns[d](x)
        elif isinstance(domain, torch.Tensor):
            if domain.shape != x.shape[:1]:
                raise InputError(
                    f"per-sample domain ids need shape ({x.shape[0]},), got {tuple(domain.shape)}",
                    parameter="domain",
                )
            out = torch.empty_like(x)
            for d in torch.unique(domain).tolist():
                idx = domain == d
                out[idx] = self.bns[self._check(d)](x[idx])
        else:
            out = self.bns[self._check(domain)](x)
        if self.post is not None:
            out = self.post(out)
        return out  # type: ignore[no-any-return]

    def extra_repr(self) -> str:
        """Describe the layer in ``print(model)``."""
        return f"{self.num_features}, num_domains={self.num_domains}, domain={self.domain}"

    @classmethod
    def from_batchnorm(
        cls, bn: nn.modules.batchnorm._BatchNorm, num_domains: int, post: nn.Module | None = None
    ) -> DomainBatchNorm:
        """Build a DomainBatchNorm whose domains all start as copies of ``bn`` (stats, affine)."""
        base = _bn_base_class(bn)
        dims = 1 if base is nn.BatchNorm1d else 3 if base is nn.BatchNorm3d else 2
        dbn = cls(
            bn.num_features, num_domains, dims=dims, eps=bn.eps, momentum=bn.momentum,
            affine=bn.affine, track_running_stats=bn.track_running_stats, post=post,
        )
        state = {k: v for k, v in bn.state_dict().items()}
        for sub in dbn.bns:
            sub.load_state_dict(state, strict=False)
        ref: torch.Tensor | None = next(iter(bn.parameters()), None)
        if ref is None:
            ref = next(iter(bn.buffers()), None)
        if ref is not None:
            dbn.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
        dbn.train(bn.training)
        return dbn


def _bn_base_class(bn: nn.Module) -> type[nn.Module] | None:
    for base in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
        if isinstance(bn, base):
            return base
    return None


def _post_of(bn: nn.Module) -> nn.Module | None | bool:
    """Return the activation part of a fused BN subclass, None for a plain BN, False if unknown."""
    if type(bn) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
        return None
    act = getattr(bn, "act", None)
    drop = getattr(bn, "drop", None)
    if isinstance(act, nn.Module) and isinstance(drop, nn.Module):
        return nn.Sequential(drop, act)
    return False


def convert_to_domain_bn(model: nn.Module, num_domains: int) -> nn.Module:
    """Replace every BatchNorm1d/2d/3d in ``model`` by a :class:`DomainBatchNorm` (in place).

    Each domain starts as a copy of the original layer (running stats and affine), so outputs are
    unchanged until domains are trained apart. timm's ``BatchNormAct2d`` keeps its activation.
    ``SyncBatchNorm`` and unknown BN subclasses are left alone (logged).

    Args:
        model: Any module (or a bare BatchNorm, which is returned converted).
        num_domains: Number of domains.

    Returns:
        The model (the new module when ``model`` itself is a BatchNorm).
    """
    if num_domains < 1:
        raise InputError(f"num_domains must be >= 1, got {num_domains}", parameter="num_domains")
    if _bn_base_class(model) is not None:
        post = _post_of(model)
        if post is False:
            raise InputError(f"cannot convert {type(model).__name__}", parameter="model")
        return DomainBatchNorm.from_batchnorm(model, num_domains, post=post or None)  # type: ignore[arg-type]
    converted = 0
    for parent_name, parent in list(model.named_modules()):
        if isinstance(parent, DomainBatchNorm):
            continue
        for child_name, child in list(parent.named_children()):
            if _bn_base_class(child) is None or isinstance(child, nn.SyncBatchNorm):
                continue
            post = _post_of(child)
            if post is False:
                logger.warning("left %s.%s (%s) unconverted", parent_name, child_name,
                               type(child).__name__)
                continue
            dbn = DomainBatchNorm.from_batchnorm(child, num_domains, post=post or None)  # type: ignore[arg-type]
            setattr(parent, child_name, dbn)
            converted += 1
    if converted == 0:
        logger.warning("convert_to_domain_bn: no BatchNorm layer found in %s", type(model).__name__)
    logger.info("converted %d BatchNorm layers to %d domains", converted, num_domains)
    return model


def set_domain(model: nn.Module, domain: int) -> None:
    """Make ``domain`` the active domain of every :class:`DomainBatchNorm` in ``model``.

    Raises:
        InputError: the model has no DomainBatchNorm or the id is out of range.
    """
    layers = [m for m in model.modules() if isinstance(m, DomainBatchNorm)]
    if not layers:
        raise InputError("model has no DomainBatchNorm; call convert_to_domain_bn first",
                         parameter="model")
    for layer in layers:
        layer._check(domain)
    for layer in layers:
        layer.domain = int(domain)


# --------------------------------------------------------------------------------------------------
# freezing and accounting
# --------------------------------------------------------------------------------------------------
def freeze_all_but(model: nn.Module, patterns: Sequence[str] | str) -> None:
    r"""Freeze every parameter except those whose name matches one of ``patterns``.

    Args:
        model: Any module.
        patterns: Globs on the full parameter name (``"head.*"``, ``"*lora_*"``) or regexes searched
            in it (``r"\.bias$"``).

    Raises:
        InputError: a pattern matches no parameter (likely a typo).
    """
    pats = _as_patterns(patterns, "patterns")
    hits = dict.fromkeys(pats, 0)
    for name, param in model.named_parameters():
        keep = False
        for p in pats:
            if _pattern_matches(name, p):
                hits[p] += 1
                keep = True
        param.requires_grad_(keep)
    missing = [p for p, n in hits.items() if n == 0]
    if missing:
        raise InputError(f"pattern(s) {missing} match no parameter of {type(model).__name__}",
                         parameter="patterns")


def _count(params: Iterator[tuple[str, nn.Parameter]]) -> tuple[int, int]:
    total = trainable = 0
    for _, p in params:
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 4) if whole else 0.0


def trainable_parameter_report(
    model: nn.Module, groups: dict[str, str] | None = None
) -> dict[str, Any]:
    """Count total and trainable parameters, overall and per group.

    Args:
        model: Any module.
        groups: ``{group_name: pattern}`` (glob or regex on parameter names); a parameter counts in
            every group it matches. Default: one group per top-level child module.

    Returns:
        ``{"total", "trainable", "percent", "groups": {name: {"total", "trainable", "percent",
        "percent_of_trainable"}}}`` with percent = trainable / total * 100.
    """
    named = list(model.named_parameters())
    total, trainable = _count(iter(named))
    out_groups: dict[str, dict[str, float | int]] = {}
    if groups is None:
        by_child: dict[str, list[tuple[str, nn.Parameter]]] = {}
        for name, p in named:
            by_child.setdefault(name.split(".", 1)[0], []).append((name, p))
        selected = by_child
    else:
        selected = {g: [(n, p) for n, p in named if _pattern_matches(n, pat)]
                    for g, pat in groups.items()}
    for g, items in selected.items():
        g_total, g_train = _count(iter(items))
        out_groups[g] = {
            "total": g_total,
            "trainable": g_train,
            "percent": _pct(g_train, g_total),
            "percent_of_trainable": _pct(g_train, trainable),
        }
    return {"total": total, "trainable": trainable, "percent": _pct(trainable, total),
            "groups": out_groups}


def _short_report(model: nn.Module) -> str:
    rep = trainable_parameter_report(model, groups={})
    return f"{rep['trainable']:,} of {rep['total']:,} parameters trainable ({rep['percent']:.3f} %)"


# --------------------------------------------------------------------------------------------------
# adapter-only save / load
# --------------------------------------------------------------------------------------------------
def base_fingerprint(
    model: nn.Module, exclude: Sequence[str] = (), *, weights: bool = False
) -> str:
    """Hash the names and shapes (and optionally the values) of a model's state outside ``exclude``.

    Args:
        model: Any module.
        exclude: Exact state-dict keys to leave out (the adapter's own tensors).
        weights: Also hash the tensor values (detects same architecture, other weights).

    Returns:
        Hex sha256 digest (first 32 characters).
    """
    skip = set(exclude)
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        if key in skip:
            continue
        h.update(f"{key}:{tuple(tensor.shape)};".encode())
        if weights:
            t = tensor.detach().cpu().contiguous()
            if t.dtype == torch.bfloat16:
                t = t.float()
            h.update(t.numpy().tobytes())
    return h.hexdigest()[:32]


def save_adapter(
    model: nn.Module,
    path: str | Path,
    *,
    include: Sequence[str] | str,
    metadata: dict[str, str] | None = None,
    hash_base_weights: bool = False,
    fingerprint_exclude: Sequence[str] | str = (),
) -> Path:
    """Save only the parameters/buffers matching ``include`` to a safetensors file (atomic write).

    The file metadata records a fingerprint of everything else (the frozen base: names and shapes,
    plus a hash of its values when ``hash_base_weights``), checked by :func:`load_adapter`.

    Args:
        model: Model carrying the adapters.
        path: Output ``.safetensors`` path.
        include: Globs/regexes selecting state-dict keys, e.g. ``["*lora_*"]``, ``["*.bias"]``,
            ``["*bottleneck_adapter*"]``, ``["*.bns.*"]``, ``["head.*"]``.
        metadata: Extra ``str -> str`` metadata to store.
        hash_base_weights: Also fingerprint the base weights' values.
        fingerprint_exclude: Globs/regexes of state-dict keys that are neither this adapter nor
            the base, e.g. a second adapter the model carries (``["*lora_*.other.*"]``): left out
            of the fingerprint (and so out of the check when loading), so the file also loads
            onto the base with only this adapter applied. Stored in the file.

    Returns:
        The written path.
    """
    from safetensors.torch import save_file

    path = Path(path)
    pats = _as_patterns(include, "include")
    state = model.state_dict()
    selected = {k: v for k, v in state.items() if matches_any(k, pats)}
    if not selected:
        raise InputError(f"no parameter or buffer matches {pats}", parameter="include")
    others = _as_patterns(fingerprint_exclude, "fingerprint_exclude") if fingerprint_exclude \
        else []
    outside = _fingerprint_skip(state, selected, others)
    meta: dict[str, str] = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update(
        {
            "format": ADAPTER_FORMAT,
            "include": json.dumps(pats),
            "base_fingerprint": base_fingerprint(model, outside),
            "model_class": type(model).__name__,
        }
    )
    if others:
        meta["fingerprint_exclude"] = json.dumps(others)
    if hash_base_weights:
        meta["base_weights_fingerprint"] = base_fingerprint(model, outside, weights=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in selected.items()}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    logger.info("saved %d adapter tensors (%d values) to %s", len(tensors),
                sum(t.numel() for t in tensors.values()), path)
    return path


def _fingerprint_skip(state: dict[str, Any], adapter: Iterable[str], others: Sequence[str]
                      ) -> list[str]:
    """Keys left out of the base fingerprint: the adapter's own and those matching ``others``."""
    return [*adapter, *(k for k in state if others and matches_any(k, others))]


def load_adapter(
    model: nn.Module, path: str | Path, *, base_fingerprint_check: bool = True
) -> dict[str, str]:
    """Load adapter tensors saved by :func:`save_adapter` into ``model`` (in place).

    Apply the same adapters to the fresh base first (same ``apply_lora``/``insert_adapters``/...
    calls); the values are then copied bit-exactly.

    Args:
        model: Base model with the same adapters applied.
        path: ``.safetensors`` file from :func:`save_adapter`.
        base_fingerprint_check: Refuse a file saved on another base model.

    Returns:
        The file metadata.

    Raises:
        InputError: missing/corrupt file, keys the model lacks, shape mismatch, or a base
            fingerprint that differs from this model's.
    """
    from eokit.core.weights import read_safetensors

    path = Path(path)
    meta, tensors = read_safetensors(path, what="adapter file")
    if meta.get("format") != ADAPTER_FORMAT:
        raise InputError("not an eokit adapter file (no adapter metadata)", path=path)
    state = model.state_dict()
    missing = [k for k in tensors if k not in state]
    if missing:
        raise InputError(
            f"{len(missing)} adapter tensors have no place in this model (first: {missing[0]!r}); "
            "apply the same adapters to the base model before loading",
            path=path,
        )
    bad = [k for k, v in tensors.items() if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise InputError(
            f"shape mismatch for {bad[0]!r}: file {tuple(tensors[bad[0]].shape)}, "
            f"model {tuple(state[bad[0]].shape)}; adapter was saved for another base model",
            path=path,
        )
    if base_fingerprint_check:
        try:
            others = [str(p) for p in json.loads(meta.get("fingerprint_exclude", "[]"))]
        except ValueError as err:
            raise InputError(f"corrupt adapter metadata 'fingerprint_exclude' ({err})",
                             path=path) from err
        outside = _fingerprint_skip(state, tensors, others)
        expected = meta.get("base_fingerprint")
        actual = base_fingerprint(model, outside)
        if expected != actual:
            raise InputError(
                f"adapter was saved for a different base model (fingerprint {expected}, "
                f"this model {actual})",
                path=path,
            )
        if "base_weights_fingerprint" in meta:
            actual_w = base_fingerprint(model, outside, weights=True)
            if actual_w != meta["base_weights_fingerprint"]:
                raise InputError(
                    "adapter was saved on the same architecture with different base weights",
                    path=path,
                )
    with torch.no_grad():
        for key, value in tensors.items():
            state[key].copy_(value.to(dtype=state[key].dtype))
    logger.info("loaded %d adapter tensors from %s", len(tensors), path)
    return meta

