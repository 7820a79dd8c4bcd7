"""U-Net on a catalogue encoder and the baseline losses (CE, smoothing, GCE, confusion)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eokit.core.encoders import build_image_encoder
from eokit.core.errors import InputError
from eokit.core.types import IGNORE_INDEX

logger = logging.getLogger(__name__)

__all__ = ["LOSSES", "ConfusionLoss", "UNet", "baseline_loss", "generalized_ce"]

#: Losses selectable by name: ``kms`` is the spatially correlated Bayesian model (in the task).
LOSSES = ("kms", "ce", "smooth", "gce", "confusion")


class _Block(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)  # type: ignore[no-any-return]


class UNet(nn.Module):
    """U-Net decoder on a multi-scale encoder from :func:`eokit.core.encoders.build_image_encoder`.

    Args:
        num_classes: Output classes K (>= 2).
        in_chans: Input bands.
        encoder: Encoder name (``efficientnet_lite0``/``efficientnet_lite2`` or a timm name).
        pretrained: Encoder weights (False, True = catalogue, or a local file).
        decoder_channels: Channels of the four decoder stages, coarse to fine.
        frozen_bn: Keep the encoder's BatchNorm statistics fixed (pretrained encoders on small
            batches: running statistics of a few steps make evaluation unstable).

    Input: ``(B, in_chans, H, W)`` float reflectance/0-1 (scaled by the encoder's ``normalize``);
    H and W multiples of 32. Output: ``(B, K, H, W)`` logits.
    """

    def __init__(self, num_classes: int = 2, *, in_chans: int = 3,
                 encoder: str = "efficientnet_lite0", pretrained: bool | str | Path = False,
                 decoder_channels: Sequence[int] = (96, 48, 32, 16),
                 frozen_bn: bool = False) -> None:
        super().__init__()
        if num_classes < 2:
            raise InputError(f"must be >= 2, got {num_classes}", parameter="num_classes")
        self.num_classes = num_classes
        self.encoder = build_image_encoder(encoder, pretrained=pretrained, in_chans=in_chans,
                                           frozen_bn=frozen_bn)
        chans = list(self.encoder.channels)
        if len(chans) != 5:
            raise InputError(f"encoder {encoder!r} gives {len(chans)} feature maps, need 5",
                             parameter="encoder")
        blocks = []
        previous = chans[-1]
        for skip, out in zip(reversed(chans[:-1]), decoder_channels, strict=True):
            blocks.append(_Block(previous + skip, out))
            previous = out
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(previous, num_classes, 1)

    def forward(self, image: Tensor) -> Tensor:
        """(B, C, H, W) 0-1 image -> (B, K, H, W) logits."""
        h, w = image.shape[-2:]
        if h % 32 or w % 32:
            raise InputError(f"image size {h}x{w} must be a multiple of 32", parameter="image")
        feats = self.encoder(self.encoder.normalize(image))
        x = feats[-1]
        for block, skip in zip(self.decoder, reversed(feats[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        logits = self.head(x)
        return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)


def generalized_ce(logits: Tensor, labels: Tensor, q: float = 0.7,
                   ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Generalised cross-entropy ``(1 - p_y^q) / q`` (Zhang & Sabuncu 2018), mean over pixels."""
    valid = labels != ignore_index
    log_p = torch.log_softmax(logits, dim=1)
    log_py = log_p.gather(1, labels.clamp(0, logits.shape[1] - 1)[:, None]).squeeze(1)
    loss = (1.0 - torch.exp(q * log_py)) / q
    return (loss * valid).sum() / valid.sum().clamp(min=1)


class ConfusionLoss(nn.Module):
    """Global label-confusion baseline (forward-corrected marginal likelihood).

    The observed label is the clean one passed through a learnt K x K transition matrix
    ``T[clean, observed]``; the loss is the marginal negative
    log-likelihood ``-log sum_k p_theta(k | x) T[k, y]`` (the objective EM maximises).

    Args:
        num_classes: K.
        init_smoothing: Off-diagonal mass of the initial matrix.
    """

    def __init__(self, num_classes: int, init_smoothing: float = 0.1) -> None:
        super().__init__()
        off = init_smoothing / (num_classes - 1)
        init = torch.full((num_classes, num_classes), off)
        init.fill_diagonal_(1.0 - init_smoothing)
        self.log_transition = nn.Parameter(init.log())

    def transition(self) -> Tensor:
        """Row-stochastic (K, K) transition matrix."""
        return torch.softmax(self.log_transition, dim=1)

    def forward(self, logits: Tensor, labels: Tensor,
                ignore_index: int = IGNORE_INDEX) -> Tensor:
        """Mean marginal NLL over labelled pixels of (B, K, H, W) logits and (B, H, W) labels."""
        valid = labels != ignore_index
        log_p = torch.log_softmax(logits, dim=1)  # (B, K, H, W)
        log_t = torch.log_softmax(self.log_transition, dim=1)  # (K, K)
        safe = labels.clamp(0, logits.shape[1] - 1)
        # log T[k, y] per pixel, for every clean class k
        log_t_y = log_t[:, safe].permute(1, 0, 2, 3)
        nll = -torch.logsumexp(log_p + log_t_y, dim=1)
        return (nll * valid).sum() / valid.sum().clamp(min=1)


def baseline_loss(name: str, logits: Tensor, labels: Tensor, *, smoothing: float = 0.1,
                  gce_q: float = 0.7, confusion: ConfusionLoss | None = None,
                  ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Loss of a baseline: ``ce``, ``smooth`` (label smoothing), ``gce`` or ``confusion``."""
    if name == "ce":
        return F.cross_entropy(logits, labels, ignore_index=ignore_index)
    if name == "smooth":
        return F.cross_entropy(logits, labels, ignore_index=ignore_index,
                               label_smoothing=smoothing)
    if name == "gce":
        return generalized_ce(logits, labels, gce_q, ignore_index)
    if name == "confusion":
        if confusion is None:
            raise InputError("the confusion loss needs its transition module", parameter="loss")
        return confusion(logits, labels, ignore_index)  # type: ignore[no-any-return]
    raise InputError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}", parameter="loss")
