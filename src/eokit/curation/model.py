"""DINO networks: any timm backbone on 1-channel input, projection head, multi-crop wrapper."""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eokit.core.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["DINOHead", "DINONet", "build_backbone"]

#: Small default for CPU runs (timm's test-sized ResNet, ~0.2 M parameters).
DEFAULT_BACKBONE = "test_resnet"


def build_backbone(name: str = DEFAULT_BACKBONE, *, in_chans: int = 1,
                   pretrained: bool | str = False) -> nn.Module:
    """A timm model without classifier (``num_classes=0``): images -> pooled features.

    Args:
        name: Any timm model name (``resnet50``, ``vit_small_patch16_224``...).
        in_chans: Input channels (1 for VV imagettes).
        pretrained: timm weights (from its cache only; never downloads in tests) or a local
            weights file; False for random initialisation (DINO from scratch).

    Raises:
        InputError: unknown model name.
    """
    import timm

    if not timm.is_model(name):
        raise InputError(f"unknown timm model {name!r}", parameter="backbone")
    kwargs: dict[str, Any] = {"in_chans": in_chans, "num_classes": 0}
    if isinstance(pretrained, str):
        kwargs["pretrained"] = True
        kwargs["pretrained_cfg_overlay"] = {"file": pretrained}
    else:
        kwargs["pretrained"] = bool(pretrained)
    model: nn.Module = timm.create_model(name, **kwargs)
    return model


class DINOHead(nn.Module):
    """MLP projection, L2 normalisation, then a weight-normalised layer onto the prototypes.

    Args:
        in_dim: Backbone feature dimension.
        out_dim: Number of prototypes (the softmax dimension).
        hidden_dim: MLP width.
        bottleneck_dim: Dimension before the prototype layer.
    """

    def __init__(self, in_dim: int, out_dim: int = 1024, hidden_dim: int = 256,
                 bottleneck_dim: int = 64) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        self.last = nn.utils.parametrizations.weight_norm(
            nn.Linear(bottleneck_dim, out_dim, bias=False))
        # DINO fixes the norm of the prototypes at 1 (the magnitude carries no information).
        self.last.parametrizations.weight.original0.data.fill_(1.0)
        self.last.parametrizations.weight.original0.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Prototype logits ``(B, out_dim)``."""
        logits: torch.Tensor = self.last(F.normalize(self.mlp(x), dim=-1))
        return logits


class DINONet(nn.Module):
    """Backbone + head applied to a list of views; views of one size go through in one batch.

    Args:
        backbone: Feature extractor (``(B, C, H, W) -> (B, D)``).
        head: The projection head.
    """

    def __init__(self, backbone: nn.Module, head: DINOHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        """``(sum of view batches, out_dim)`` logits, in view order."""
        outputs: list[torch.Tensor] = []
        start = 0
        while start < len(views):
            stop = start
            while stop < len(views) and views[stop].shape[-2:] == views[start].shape[-2:]:
                stop += 1
            features = self.backbone(torch.cat(views[start:stop]))
            outputs.append(self.head(features))
            start = stop
        return torch.cat(outputs)


def feature_dim(backbone: nn.Module) -> int:
    """Pooled feature dimension of a timm backbone."""
    dim = getattr(backbone, "num_features", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    raise InputError("backbone has no num_features", parameter="backbone")
