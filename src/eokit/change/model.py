"""Change-detection networks: a siamese timm U-Net, a plain siamese U-Net, and the CANet wrapper.

``CANet`` turns any bitemporal change model ``base(image_a, image_b) -> logits (B, 1, H, W)`` into
a multi-dataset model with dataset-shared weights and, per dataset:

* one set of batch-norm statistics and affine parameters (every BN becomes ``DomainBatchNorm``);
* a bottleneck adapter at each adapted block (by default every decoder scale), whose residual
  contribution is multiplied by that dataset's *interesting change region mask* (ICM), a spatial
  gate in [0, 1] predicted from the block's (fused bitemporal) features;
* its own prediction head; the change probability is the head's probability times the ICM of
  the finest adapted scale, so the ICM can suppress change types the dataset does not label.

See docs/change.md for the design and the ablations that support it.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eokit.core.adapters import BottleneckAdapter, DomainBatchNorm, convert_to_domain_bn
from eokit.core.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "BACKBONES",
    "CANet",
    "DomainAdapterBlock",
    "DomainHead",
    "InterestingChangeMask",
    "SiameseTimmUNet",
    "SiameseUNet",
    "build_canet",
]

#: Short backbone names -> (timm model name, extra timm kwargs). Any other timm name is used as is.
BACKBONES: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet18-tiny": (
        "resnet18",
        {"channels": (16, 32, 64, 128), "stem_type": "deep", "stem_width": 8},
    ),
    "resnet18-small": ("resnet18", {"channels": (32, 64, 128, 256)}),
    "resnet18": ("resnet18", {}),
    "resnet50": ("resnet50", {}),
    "efficientnet_b0": ("efficientnet_b0", {}),
}


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Fusion(nn.Module):
    """Bitemporal fusion of one scale: 1x1 conv over [a, b, |a - b|] -> BN -> ReLU."""

    def __init__(self, channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        self.block = _conv_bn_relu(3 * channels, out_channels or channels, kernel=1)

    def forward(self, feature_a: torch.Tensor, feature_b: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) x2 -> (B, C_out, h, w)."""
        fused: torch.Tensor = self.block(
            torch.cat([feature_a, feature_b, (feature_a - feature_b).abs()], dim=1)
        )
        return fused


class DecoderBlock(nn.Module):
    """U-Net decoder step: upsample to the skip, concatenate, two 3x3 conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = _conv_bn_relu(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Decode ``x`` (coarser) with ``skip`` (finer)."""
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        out: torch.Tensor = self.conv2(self.conv1(torch.cat([x, skip], dim=1)))
        return out


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    height, width = x.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x, (height, width)


def _timm_features(name: str, pretrained: bool | str | Path, in_channels: int,
                   kwargs: dict[str, Any]) -> nn.Module:
    """A timm ``features_only`` encoder with timm's own weights or a local timm weights file."""
    import timm

    from eokit.core.weights import hub_offline, resolve_weights

    weights: Path | None = None
    if not isinstance(pretrained, bool):
        weights = resolve_weights(pretrained)
        # timm adapts this conv to in_chans; its default name misses deep stems (conv1.0).
        probe = timm.create_model(name, pretrained=False, **kwargs)
        first_conv = next(n for n, m in probe.named_modules() if isinstance(m, nn.Conv2d))
        kwargs = {**kwargs, "pretrained_cfg_overlay": {"file": str(weights),
                                                       "first_conv": first_conv}}
    try:
        with hub_offline():
            return timm.create_model(
                name, pretrained=bool(pretrained), features_only=True, in_chans=in_channels,
                **kwargs,
            )
    except (RuntimeError, ValueError, TypeError, KeyError, OSError) as error:
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        if weights is not None:
            raise InputError(f"does not fit timm backbone {name!r} ({first[:160]})",
                             path=weights) from None
        if pretrained:
            raise InputError(
                f"timm's pretrained weights for {name!r} are not available here "
                f"({first[:100]}); give a local weights file instead (pretrained: PATH; "
                "EOKIT_OFFLINE=1 skips the network), or use backbone efficientnet_lite0 / "
                "efficientnet_lite2, whose ImageNet weights come with eokit",
                parameter="pretrained",
            ) from None
        raise InputError(
            f"cannot build timm backbone {name!r}: {error}", parameter="backbone"
        ) from None


class SiameseTimmUNet(nn.Module):
    """Siamese timm encoder (shared weights) + per-scale fusion + U-Net decoder + 1x1 head.

    Args:
        in_channels: Bands per date (any number).
        backbone: ``efficientnet_lite0`` / ``efficientnet_lite2`` (ImageNet weights from the
            catalogue, inputs rescaled inside the model to the weights' range), a key of
            ``BACKBONES``, or any timm model name supporting ``features_only``.
        decoder_channels: Output channels of the decoder blocks, coarse to fine; one block per
            encoder scale except the deepest, plus a last one at full resolution whose skip is a
            fusion of the raw images (keeps small objects that strided encoders blur away).
        input_channels: Channels of the full-resolution fusion of the raw images.
        pretrained: Encoder weights: False (random), True (catalogue weights for the Lite
            backbones, timm's own pretrained weights from its cache otherwise), or the path
            of a timm weights file for this backbone
            (``.safetensors``, or ``.pth`` read with ``weights_only``), read locally; timm adapts
            the first convolution to ``in_channels`` and drops the classifier.
        backbone_kwargs: Extra keyword arguments for ``timm.create_model``.

    Shapes:
        ``forward(image_a (B, C, H, W), image_b (B, C, H, W)) -> change logits (B, 1, H, W)``.
    """

    #: Names of the modules CANet adapts by default (the decoder scales) and the head.
    adapter_points: tuple[str, ...]
    input_mean: torch.Tensor
    input_std: torch.Tensor
    #: Where ``CANet(lora_rank=r)`` puts per-dataset LoRA: every conv after the encoder.
    lora_points = ("fusions", "input_fusion", "decoder")
    #: Where ``CANet(encoder_lora_rank=r)`` puts per-dataset LoRA: the siamese encoder.
    encoder_lora_points = ("encoder",)
    head_name = "head"

    def __init__(
        self,
        in_channels: int = 3,
        backbone: str = "resnet18-tiny",
        decoder_channels: Sequence[int] = (64, 32, 24, 16, 16),
        *,
        input_channels: int = 16,
        pretrained: bool | str | Path = False,
        backbone_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from eokit.core.encoders import IMAGE_ENCODERS, build_image_encoder

        if in_channels < 1:
            raise InputError(f"must be >= 1, got {in_channels}", parameter="in_channels")
        name, preset = BACKBONES.get(backbone, (backbone, {}))
        kwargs = {**preset, **(backbone_kwargs or {})}
        #: Per-band (mean, std) the encoder's weights expect of 0-1 inputs; None: inputs as given.
        self.input_normalization: dict[str, list[float]] | None = None
        if backbone in IMAGE_ENCODERS:
            # Catalogue encoders (ImageNet EfficientNet-Lite): weights, band adaptation and the
            # input scaling come from core.encoders; the scaling is fixed by the backbone name,
            # so a checkpoint rebuilds it without the weights file.
            encoder = build_image_encoder(backbone, pretrained=pretrained, in_chans=in_channels,
                                          **kwargs)
            self.encoder = encoder.body
            self.input_normalization = encoder.normalization
            for key in ("mean", "std"):  # not in checkpoints: the backbone name fixes them
                values = torch.tensor(encoder.normalization[key]).view(1, -1, 1, 1)
                self.register_buffer(f"input_{key}", values, persistent=False)
        else:
            self.encoder = _timm_features(name, pretrained, in_channels, kwargs)
        self.in_channels = in_channels
        self.backbone = backbone
        info: Any = self.encoder.feature_info
        channels = [int(c) for c in info.channels()]
        self.reduction = int(max(info.reduction()))
        self.fusions = nn.ModuleList(Fusion(c) for c in channels)
        self.input_fusion = nn.Sequential(
            _conv_bn_relu(3 * in_channels, input_channels), _conv_bn_relu(input_channels,
                                                                          input_channels)
        )
        decoder_channels = list(decoder_channels)
        if len(decoder_channels) != len(channels):
            raise InputError(
                f"needs {len(channels)} values for this backbone, got {len(decoder_channels)}",
                parameter="decoder_channels",
            )
        blocks = []
        previous = channels[-1]
        skips = [input_channels, *channels[:-1]]
        for skip, out in zip(reversed(skips), decoder_channels, strict=True):
            blocks.append(DecoderBlock(previous, skip, out))
            previous = out
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(previous, 1, kernel_size=1)
        self.adapter_points = tuple(f"decoder.{i}" for i in range(len(blocks)))

    def forward(self, image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
        """Change logits (B, 1, H, W) for two co-registered dates."""
        a, size = _pad_to_multiple(image_a, self.reduction)
        b, _ = _pad_to_multiple(image_b, self.reduction)
        pair = torch.cat([a, b], dim=0)
        if self.input_normalization is not None:
            pair = (pair - self.input_mean) / self.input_std
        features = self.encoder(pair)
        fused = [self.input_fusion(torch.cat([a, b, (a - b).abs()], dim=1))]
        fused += [
            fusion(*f.chunk(2, dim=0)) for fusion, f in zip(self.fusions, features, strict=True)
        ]
        x = fused[-1]
        for block, skip in zip(self.decoder, reversed(fused[:-1]), strict=True):
            x = block(x, skip)
        return self.head(x)[..., : size[0], : size[1]]  # type: ignore[no-any-return]


class SiameseUNet(nn.Module):
    """Plain siamese U-Net (FC-Siam-diff style): shared conv encoder, skips are |f_a - f_b|.

    A second, timm-free architecture that shows CANet wrapping another change model.

    Args:
        in_channels: Bands per date.
        widths: Encoder widths per level (the decoder mirrors them).
    """

    head_name = "head"

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        widths = list(widths)
        self.in_channels = in_channels
        self.encoder = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoder.append(
                nn.Sequential(_conv_bn_relu(previous, width), _conv_bn_relu(width, width))
            )
            previous = width
        blocks = []
        for level in range(len(widths) - 2, -1, -1):
            blocks.append(DecoderBlock(widths[level + 1], widths[level], widths[level]))
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(widths[0], 1, kernel_size=1)
        self.reduction = 2 ** (len(widths) - 1)
        self.adapter_points = tuple(f"decoder.{i}" for i in range(len(self.decoder)))

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level, block in enumerate(self.encoder):
            if level:
                x = F.max_pool2d(x, 2)
            x = block(x)
            features.append(x)
        return features

    def forward(self, image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
        """Change logits (B, 1, H, W)."""
        a, size = _pad_to_multiple(image_a, self.reduction)
        b, _ = _pad_to_multiple(image_b, self.reduction)
        features = self._encode(torch.cat([a, b], dim=0))
        diffs = [(f_a - f_b).abs() for f_a, f_b in (f.chunk(2, dim=0) for f in features)]
        x = diffs[-1]
        for block, skip in zip(self.decoder, reversed(diffs[:-1]), strict=True):
            x = block(x, skip)
        logits: torch.Tensor = self.head(x)
        return logits[..., : size[0], : size[1]]


class InterestingChangeMask(nn.Module):
    """ICM: a spatial gate in [0, 1] (returned as a logit) predicted from a block's features.

    Initialised open (bias +3, sigmoid ~ 0.95) so a fresh domain starts as "every change counts".
    """

    def __init__(self, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(4, channels // 4)
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )
        last: Any = self.net[2]
        nn.init.zeros_(last.weight)
        nn.init.constant_(last.bias, 3.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> gate logits (B, 1, h, w)."""
        logits: torch.Tensor = self.net(features)
        return logits


class DomainAdapterBlock(nn.Module):
    """Wrap a block: output + ICM_d(output) * (adapter_d(output) - output) for the active domain d.

    Args:
        inner: The wrapped block (any module returning (B, C, h, w)).
        channels: C.
        num_domains: Number of datasets.
        reduction: Bottleneck reduction of the adapter.
        use_icm: Gate the adapter with an interesting-change-region mask.
    """

    def __init__(
        self, inner: nn.Module, channels: int, num_domains: int, *, reduction: int, use_icm: bool
    ) -> None:
        super().__init__()
        self.inner = inner
        self.channels = channels
        self.reduction = reduction
        self.use_icm = use_icm
        self.adapters = nn.ModuleList(
            BottleneckAdapter(channels, reduction=reduction) for _ in range(num_domains)
        )
        self.icms = nn.ModuleList(
            InterestingChangeMask(channels) for _ in range(num_domains if use_icm else 0)
        )
        self.domain = 0
        self.last_icm_logits: torch.Tensor | None = None

    def add_domain(self, source: int) -> None:
        """Append a domain initialised as a copy of domain ``source``."""
        self.adapters.append(copy.deepcopy(self.adapters[source]))
        if self.use_icm:
            self.icms.append(copy.deepcopy(self.icms[source]))

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Run the wrapped block, then the active domain's gated adapter."""
        out: torch.Tensor = self.inner(*args, **kwargs)
        delta: torch.Tensor = self.adapters[self.domain](out) - out  # the adapter is residual
        if self.use_icm:
            logits = self.icms[self.domain](out)
            self.last_icm_logits = logits
            delta = torch.sigmoid(logits) * delta
        return out + delta


class LoRAConv(nn.Module):
    """Low-rank residual of a convolution: ``up(down(x))``, ``down`` with the conv's geometry.

    ``up`` starts at zero, so the wrapped convolution's output is unchanged at first.
    """

    def __init__(self, conv: nn.Conv2d, rank: int) -> None:
        super().__init__()
        geometry: dict[str, Any] = {"kernel_size": conv.kernel_size, "stride": conv.stride,
                                    "padding": conv.padding, "dilation": conv.dilation}
        self.down = nn.Conv2d(conv.in_channels, rank, bias=False, **geometry)
        self.up = nn.Conv2d(rank, conv.out_channels, 1, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, h, w) -> the low-rank update (B, C_out, h', w')."""
        out: torch.Tensor = self.up(self.down(x))
        return out


class DomainLoRAConv(nn.Module):
    """A shared convolution plus one LoRA update per domain: ``conv(x) + lora_d(x)``.

    The shared weight stays as it is (frozen while adapting); a dataset owns only its
    rank-``r`` update, so separately adapted datasets still stack onto one shared model.
    """

    def __init__(self, conv: nn.Conv2d, num_domains: int, rank: int) -> None:
        super().__init__()
        if conv.groups != 1:
            raise InputError("LoRA needs convolutions without groups", parameter="lora_rank")
        self.conv = conv
        self.loras = nn.ModuleList(LoRAConv(conv, rank) for _ in range(num_domains))
        self.domain = 0

    def add_domain(self, source: int) -> None:
        """Append a domain initialised as a copy of domain ``source``'s update."""
        self.loras.append(copy.deepcopy(self.loras[source]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shared convolution plus the active domain's low-rank update."""
        out: torch.Tensor = self.conv(x) + self.loras[self.domain](x)
        return out


class DomainHead(nn.Module):
    """One copy of the base model's head per domain."""

    def __init__(self, head: nn.Module, num_domains: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(copy.deepcopy(head) for _ in range(num_domains))
        self.domain = 0

    def add_domain(self, source: int) -> None:
        """Append a head initialised as a copy of domain ``source``'s head."""
        self.heads.append(copy.deepcopy(self.heads[source]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the active domain's head."""
        out: torch.Tensor = self.heads[self.domain](x)
        return out


def _log1mexp(log_p: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(log_p)) for log_p < 0, numerically stable."""
    log_p = log_p.clamp(max=-1e-7)
    return torch.where(
        log_p > -0.6931, torch.log(-torch.expm1(log_p)), torch.log1p(-torch.exp(log_p))
    )


class CANet(nn.Module):
    """Change adapter network: wrap a change model with per-dataset BN, adapters, ICM and heads.

    Args:
        base: Any module ``base(image_a, image_b) -> logits (B, 1, H, W)`` with attribute
            ``in_channels`` (and optionally ``adapter_points`` / ``head_name``). It is modified in
            place (BNs converted, blocks wrapped).
        domains: Dataset names, in domain-index order.
        adapter_points: Names of the blocks to adapt (default ``base.adapter_points``).
        head: Name of the head module (default ``base.head_name`` or ``"head"``).
        adapter_reduction: Bottleneck reduction of the adapters.
        use_icm: Use the interesting change region mask (False = plain adapters).
        icm_output: Multiply every dataset's change probability by its finest ICM. Off by
            default: in joint training from scratch (``benchmarks/change_domains.py``) this
            product collapsed the dataset with the fewest labelled changes to "no change";
            gating the adapters only did not. Datasets added later by ``adapt`` switch it on for
            themselves (``output_gated``), where the shared features are already trained.
        domain_bn: One BN per dataset (False = shared BN).
        lora_rank: Give every dataset a rank-``r`` LoRA update of each convolution under
            ``base.lora_points`` (default: the adapted blocks; ``SiameseTimmUNet``: the fusions
            and the decoder). 0 = none. With frozen shared convolutions a dataset's adapters
            alone could not re-shape the decoder features; the low-rank updates can, at a few
            per cent of the parameters (results in ``docs/change.md``).
        encoder_lora_rank: Rank of per-dataset LoRA updates of every convolution under
            ``base.encoder_lora_points`` (default ``("encoder",)``). 0 = none. Lets a dataset
            re-shape the shared encoder's features for its sensor; costs gradient through the
            encoder in ``adapt`` (placement ``all`` only).
        base_config: Constructor arguments of ``base`` (recorded in checkpoints).

    Shapes:
        ``forward(image_a, image_b, domain=None) -> change logits (B, 1, H, W)``; ``domain`` (name
        or index) switches the active dataset first.
    """

    def __init__(
        self,
        base: nn.Module,
        domains: Sequence[str],
        *,
        adapter_points: Sequence[str] | None = None,
        head: str | None = None,
        adapter_reduction: int = 4,
        use_icm: bool = True,
        icm_output: bool = False,
        domain_bn: bool = True,
        lora_rank: int = 0,
        encoder_lora_rank: int = 0,
        base_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        domains = list(domains)
        if not domains or len(set(domains)) != len(domains):
            raise InputError(f"need unique dataset names, got {domains}", parameter="domains")
        self.domains = domains
        self.use_icm = use_icm
        self.icm_output = icm_output
        #: Datasets whose change probability is multiplied by their finest ICM.
        self.output_gated: set[str] = set(domains) if icm_output else set()
        #: Per-dataset decision thresholds chosen on training labels (default 0.5).
        self.thresholds: dict[str, float] = {}
        #: Dataset being adapted (``task.prepare_adapt``): its BN statistics keep adapting.
        self.adapting_domain: str | None = None
        self.domain_bn = domain_bn
        self.adapter_reduction = adapter_reduction
        self.base_config = dict(base_config or {})
        self.base_class = f"{type(base).__module__}.{type(base).__qualname__}"
        in_channels = getattr(base, "in_channels", None)
        if in_channels is None:
            raise InputError("the base model needs an 'in_channels' attribute", parameter="base")
        self.in_channels = int(in_channels)
        default_points: Sequence[str] = getattr(base, "adapter_points", ())
        points = [str(p) for p in (adapter_points or default_points)]
        if not points:
            raise InputError("name at least one block to adapt", parameter="adapter_points")
        head_name = str(head or getattr(base, "head_name", "head"))
        channels = self._probe_channels(base, points)
        if domain_bn:
            convert_to_domain_bn(base, len(domains))
        for key, rank in (("lora_rank", lora_rank), ("encoder_lora_rank", encoder_lora_rank)):
            if rank < 0:
                raise InputError(f"{key} must be >= 0, got {rank}", parameter=key)
        self.lora_rank = lora_rank
        self.encoder_lora_rank = encoder_lora_rank
        #: Module prefixes of the encoder LoRA (never trained by the ``decoder`` placement).
        self.encoder_prefixes = tuple(f"base.{p}" for p in getattr(base, "encoder_lora_points",
                                                                    ("encoder",)))
        for rank, prefixes in (
            (lora_rank, tuple(str(p) for p in getattr(base, "lora_points", points))),
            (encoder_lora_rank, tuple(p.removeprefix("base.") for p in self.encoder_prefixes)),
        ):
            if not rank:
                continue
            convs = [n for n, m in base.named_modules() if isinstance(m, nn.Conv2d)
                     and any(n == p or n.startswith(f"{p}.") for p in prefixes)]
            for name in convs:
                conv = base.get_submodule(name)
                assert isinstance(conv, nn.Conv2d)
                base.set_submodule(name, DomainLoRAConv(conv, len(domains), rank))
        for name in points:
            block = DomainAdapterBlock(
                base.get_submodule(name),
                channels[name],
                len(domains),
                reduction=adapter_reduction,
                use_icm=use_icm,
            )
            base.set_submodule(name, block)
        base.set_submodule(head_name, DomainHead(base.get_submodule(head_name), len(domains)))
        self.base = base
        self.adapter_points = points
        self.head_name = head_name
        self._domain = 0

    @staticmethod
    def _probe_channels(base: nn.Module, points: Sequence[str]) -> dict[str, int]:
        """Find each block's output channels with one tiny forward pass."""
        channels: dict[str, int] = {}
        hooks = []
        for name in points:
            try:
                module = base.get_submodule(name)
            except AttributeError:
                raise InputError(
                    f"base model has no block {name!r}", parameter="adapter_points"
                ) from None

            def hook(_m: nn.Module, _i: Any, out: torch.Tensor, name: str = name) -> None:
                channels[name] = int(out.shape[1])

            hooks.append(module.register_forward_hook(hook))
        size = 2 * int(getattr(base, "reduction", 32))
        was_training = base.training
        base.eval()
        try:
            with torch.no_grad():
                probe = torch.zeros(1, int(base.in_channels), size, size)  # type: ignore[arg-type]
                base(probe, probe)
        finally:
            for handle in hooks:
                handle.remove()
            base.train(was_training)
        return channels

    # ----------------------------------------------------------------- domains
    @property
    def num_domains(self) -> int:
        """Number of datasets the model knows."""
        return len(self.domains)

    @property
    def domain(self) -> str:
        """Name of the active dataset."""
        return self.domains[self._domain]

    def domain_index(self, domain: str | int) -> int:
        """Index of a dataset given by name or index; InputError if unknown."""
        if isinstance(domain, int) and not isinstance(domain, bool):
            if 0 <= domain < len(self.domains):
                return domain
        elif domain in self.domains:
            return self.domains.index(domain)
        raise InputError(
            f"unknown dataset {domain!r}; this model knows {', '.join(self.domains)}",
            parameter="domain",
        )

    def threshold_of(self, domain: str | int) -> float:
        """Decision threshold of a dataset (``thresholds`` entry, else 0.5)."""
        return float(self.thresholds.get(self.domains[self.domain_index(domain)], 0.5))

    def set_domain(self, domain: str | int) -> None:
        """Make ``domain`` the active dataset for BN, adapters, ICM and head."""
        index = self.domain_index(domain)
        self._domain = index
        for module in self.base.modules():
            if isinstance(module, DomainBatchNorm):
                module.domain = index
            elif isinstance(module, DomainAdapterBlock | DomainHead | DomainLoRAConv):
                module.domain = index

    def add_domain(self, name: str, *, init_from: str | int = 0) -> int:
        """Add a dataset whose BN, adapters, ICM and head start as copies of ``init_from``'s.

        Returns:
            The new domain index.
        """
        if name in self.domains:
            raise InputError(f"dataset {name!r} already exists", parameter="domain")
        source = self.domain_index(init_from)
        for module in self.base.modules():
            if isinstance(module, DomainAdapterBlock | DomainHead | DomainLoRAConv):
                module.add_domain(source)
            elif isinstance(module, DomainBatchNorm):
                _add_bn_domain(module, source)
        self.domains.append(name)
        if self.icm_output:
            self.output_gated.add(name)
        return len(self.domains) - 1

    def domain_parameter_patterns(
        self, domain: str | int, *, encoder_bn: bool = True, placement: str | None = None
    ) -> list[str]:
        """Regexes matching the parameter/buffer names owned by one dataset.

        Args:
            domain: Dataset name or index.
            encoder_bn: Include the dataset's BN layers before the decoder (``base.encoder``,
                ``base.fusions``, ``base.input_fusion``). False: only the BNs of the decoder;
                the earlier per-dataset BN statistics still adapt in train mode, but no gradient
                has to flow through the encoder and fusion.
            placement: Which of the dataset's parts to match (overrides ``encoder_bn``):
                ``"all"`` (everything it owns, LoRA updates included), ``"decoder"`` (all but
                the BNs before the decoder) or ``"finest"`` (the adapter and ICM of the finest
                adapted block, the last BN of that block and the head: the gradient never has to
                pass a shared convolution; no LoRA update).
        """
        k = self.domain_index(domain)
        placement = placement or ("all" if encoder_bn else "decoder")
        if placement not in ("all", "decoder", "finest"):
            raise InputError(f"unknown placement {placement!r}; use all, decoder or finest",
                             parameter="placement")
        if placement == "finest":
            point = re.escape(f"base.{self.adapter_points[-1]}.")
            patterns = [rf"^{point}(adapters|icms)\.{k}\.", rf"(^|\.)heads\.{k}\."]
            if self.domain_bn:
                last_bn = self._last_bn_name(self.adapter_points[-1])
                if last_bn is not None:
                    patterns.append(rf"^{re.escape(last_bn)}\.bns\.{k}\.")
            return patterns
        patterns = [
            rf"(^|\.)adapters\.{k}\.",
            rf"(^|\.)icms\.{k}\.",
            rf"(^|\.)heads\.{k}\.",
        ]
        if placement == "all" and (self.lora_rank or self.encoder_lora_rank):
            patterns.append(rf"(^|\.)loras\.{k}\.")
        elif self.lora_rank:  # "decoder": not the encoder's updates (no gradient through it)
            encoder = "|".join(re.escape(p) for p in self.encoder_prefixes)
            patterns.append(rf"^(?!({encoder})\.).*(^|\.)loras\.{k}\.")
        if self.domain_bn:
            prefix = "" if placement == "all" else r"^(?!base\.(encoder|fusions|input_fusion)\.)"
            patterns.append(rf"{prefix}.*(^|\.)bns\.{k}\.")
        return patterns

    def _last_bn_name(self, point: str) -> str | None:
        """Name of the last DomainBatchNorm inside an adapted block (None if it has none)."""
        block = self.base.get_submodule(point)
        inner = block.inner if isinstance(block, DomainAdapterBlock) else block
        names = [n for n, m in inner.named_modules() if isinstance(m, DomainBatchNorm)]
        if not names:
            return None
        return f"base.{point}.inner.{names[-1]}"

    def domain_parameter_names(self, domain: str | int) -> list[str]:
        """Names of the parameters (not buffers) owned by one dataset."""
        regexes = [re.compile(p) for p in self.domain_parameter_patterns(domain)]
        return [n for n, _ in self.named_parameters() if any(r.search(n) for r in regexes)]

    def is_domain_specific(self, name: str) -> bool:
        """True when a parameter/buffer name belongs to some dataset (not shared)."""
        return re.search(r"(^|\.)(adapters|icms|heads|bns|loras)\.\d+\.", name) is not None

    def shared_fingerprint(self) -> str:
        """Hash of the shared parameters' names, shapes and values (identifies the base model)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            if self.is_domain_specific(name) or not tensor.is_floating_point():
                continue
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes()[:4096])
        return digest.hexdigest()[:16]

    def _collect_icm_logits(self) -> list[torch.Tensor]:
        """ICM logits of the running forward pass (coarse to fine); clears them in the blocks."""
        gates = []
        for module in self.base.modules():
            if isinstance(module, DomainAdapterBlock) and module.last_icm_logits is not None:
                gates.append(module.last_icm_logits)
                module.last_icm_logits = None  # no graph kept on the module (deepcopy-safe)
        return gates

    def forward(
        self, image_a: torch.Tensor, image_b: torch.Tensor, domain: str | int | None = None
    ) -> torch.Tensor:
        """Change logits (B, 1, H, W) for the active (or given) dataset."""
        if domain is not None:
            self.set_domain(domain)
        for module in self.base.modules():
            if isinstance(module, DomainAdapterBlock):
                module.last_icm_logits = None
        logits: torch.Tensor = self.base(image_a, image_b)
        gates = self._collect_icm_logits()
        #: Detached ICM gate logits of the last forward pass, coarse to fine (for display).
        self.last_icm_logits = [gate.detach() for gate in gates]
        if self.use_icm and (self.icm_output or self.domain in self.output_gated):
            if gates:
                # p = sigmoid(head) * ICM_finest: the mask can only remove change the dataset
                # does not label; back to a logit so the loss stays BCE-with-logits.
                gate = F.interpolate(
                    gates[-1], size=logits.shape[-2:], mode="bilinear", align_corners=False
                )
                log_p = F.logsigmoid(logits) + F.logsigmoid(gate)
                logits = log_p - _log1mexp(log_p)
        return logits


def _add_bn_domain(module: DomainBatchNorm, source: int) -> None:
    """Append a copy of BN domain ``source`` to a DomainBatchNorm."""
    bns = module.bns
    bns.append(copy.deepcopy(bns[source]))
    if hasattr(module, "num_domains"):
        module.num_domains = len(bns)


def build_canet(
    domains: Sequence[str],
    *,
    in_channels: int = 3,
    architecture: str = "timm_unet",
    backbone: str = "resnet18-tiny",
    decoder_channels: Sequence[int] = (64, 32, 24, 16, 16),
    widths: Sequence[int] = (16, 32, 64),
    adapter_reduction: int = 4,
    use_icm: bool = True,
    icm_output: bool = False,
    domain_bn: bool = True,
    lora_rank: int = 0,
    encoder_lora_rank: int = 0,
    pretrained: bool | str | Path = False,
) -> CANet:
    """Build a CANet around ``SiameseTimmUNet`` (``architecture="timm_unet"``) or ``SiameseUNet``.

    The arguments are recorded in ``model.base_config`` so checkpoints can rebuild the model,
    except ``pretrained`` (encoder weights to start from, see ``SiameseTimmUNet``): a checkpoint
    holds its own weights, so loading one never needs the original weights file.
    """
    config: dict[str, Any] = {"in_channels": in_channels, "architecture": architecture}
    base: nn.Module
    if architecture == "timm_unet":
        base = SiameseTimmUNet(in_channels, backbone, decoder_channels, pretrained=pretrained)
        config.update(backbone=backbone, decoder_channels=list(decoder_channels))
    elif architecture == "siamese_unet":
        if pretrained is not False:
            raise InputError("siamese_unet has no pretrained weights; use architecture "
                             "timm_unet", parameter="pretrained")
        base = SiameseUNet(in_channels, widths)
        config.update(widths=list(widths))
    else:
        raise InputError(
            f"unknown architecture {architecture!r}; use timm_unet or siamese_unet",
            parameter="architecture",
        )
    config.update(adapter_reduction=adapter_reduction, use_icm=use_icm, icm_output=icm_output,
                  domain_bn=domain_bn)
    if lora_rank:  # recorded only when set, so files of models without LoRA still match
        config["lora_rank"] = lora_rank
    if encoder_lora_rank:
        config["encoder_lora_rank"] = encoder_lora_rank
    return CANet(
        base,
        domains,
        adapter_reduction=adapter_reduction,
        use_icm=use_icm,
        icm_output=icm_output,
        domain_bn=domain_bn,
        lora_rank=lora_rank,
        encoder_lora_rank=encoder_lora_rank,
        base_config=config,
    )
