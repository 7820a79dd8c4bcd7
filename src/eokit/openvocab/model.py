"""Open-vocabulary segmenter: rotation-ensembled image-text correlation, guided cost aggregation.

The network scores every pixel against any list of class embeddings (one per prompt template,
from a locked text encoder), so the classes at inference need not be the ones it was trained on.
Blocks, in order (see docs/openvocab.md for how they map to AerOSeg's claims):

1. **Rotation-ensembled correlation volume** (:meth:`OpenVocabSegmenter.correlation`): the image
   is encoded at each angle of a :class:`RotationSet`, every feature map rotated back, projected
   into the text space (the image-side projection is what aligns the two towers, LiT-style),
   and correlated (cosine) with each class's prompt embeddings. Mean and max over the rotations
   are order-free pools, so the volume of a 90-degree-rotated image is the rotated volume.
2. **Correlation embedding**: a 7x7 convolution per class over the (pool x prompt) channels.
3. **Spatial refinement** (:class:`SpatialRefinement`): residual convolutions per class whose
   input is concatenated with guidance features (the image encoder's multi-scale maps, or a
   second encoder such as SAM's ViT).
4. **Class refinement** (:class:`ClassRefinement`): self-attention across the classes at each
   pixel, with the class's text embedding added to queries and keys; no positional encoding, so
   it takes any number of classes and is permutation-equivariant over them.
5. **Semantic back-projection** (:class:`BackProjection`): the class features, pooled with the
   per-pixel class probabilities, are projected back into the guidance feature space; a cosine
   loss ties them to the (detached) guidance features, and the projection is fed back into the
   class features, so the guidance semantics propagate through the aggregation.
6. **Multi-scale attention-aware decoder** (:class:`Decoder`): two x2 upsampling stages per
   class fused with finer encoder maps through channel (squeeze-excitation) and spatial gates.

Ablations switch blocks off: ``rotations=(0,)``, ``guidance=False``, ``back_projection=False``,
``class_refinement=False``. ``head="cosine"`` is the dense-cosine baseline (projection only).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eokit.core.errors import InputError
from eokit.core.types import IGNORE_INDEX

logger = logging.getLogger(__name__)

__all__ = [
    "BackProjection",
    "ClassRefinement",
    "ClosedSetSegmenter",
    "Decoder",
    "OpenVocabSegmenter",
    "RotationSet",
    "SpatialRefinement",
    "harmonic_miou",
    "openvocab_loss",
]

HEADS = ("aggregate", "cosine")
POOLS = ("meanmax", "stack")


class RotationSet:
    """Multiples of 90 degrees at which the image is encoded; maps are rotated back after.

    Args:
        angles: Angles in degrees, each one of 0/90/180/270, unique.
    """

    def __init__(self, angles: Sequence[int] = (0, 90, 180, 270)) -> None:
        angles = [int(a) for a in angles]
        if not angles or any(a % 90 or not 0 <= a < 360 for a in angles) \
                or len(set(angles)) != len(angles):
            raise InputError(f"rotations must be unique multiples of 90 in [0, 360), got "
                             f"{angles}", parameter="rotations")
        self.angles = tuple(angles)

    def __len__(self) -> int:
        return len(self.angles)

    def __iter__(self) -> Any:
        return iter(self.angles)

    @staticmethod
    def rotate(x: Tensor, angle: int) -> Tensor:
        """Rotate the last two axes counter-clockwise by ``angle`` degrees."""
        return torch.rot90(x, angle // 90, dims=(-2, -1)) if angle else x

    @staticmethod
    def unrotate(x: Tensor, angle: int) -> Tensor:
        """Undo :meth:`rotate`."""
        return torch.rot90(x, -(angle // 90), dims=(-2, -1)) if angle else x


def _resample(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _norm(channels: int) -> nn.GroupNorm:
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class SpatialRefinement(nn.Module):
    """Residual 3x3 convolutions on each class's correlation features, guided by image features.

    Input ``x`` (B*K, C, h, w) and guidance (B, G, h, w) repeated for each class (or None).
    """

    def __init__(self, channels: int, guidance_channels: int = 0, depth: int = 2) -> None:
        super().__init__()
        self.guidance_channels = guidance_channels
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels + guidance_channels, channels, 3, padding=1), _norm(channels),
                nn.GELU(), nn.Conv2d(channels, channels, 3, padding=1), _norm(channels))
            for _ in range(depth))

    def forward(self, x: Tensor, guidance: Tensor | None, num_classes: int) -> Tensor:
        """(B*K, C, h, w) -> same shape."""
        g = None
        if self.guidance_channels:
            if guidance is None:
                raise InputError("this refinement was built with guidance", parameter="guidance")
            g = guidance.repeat_interleave(num_classes, dim=0)
        for block in self.blocks:
            inp = x if g is None else torch.cat([x, g], dim=1)
            x = F.gelu(x + block(inp))
        return x


class ClassRefinement(nn.Module):
    """Self-attention across classes at every pixel (any K, permutation-equivariant).

    The class's text embedding, projected, is added to queries and keys (not to values), so
    attention can use which class a channel stack belongs to without a fixed class order.
    """

    def __init__(self, channels: int, text_dim: int, heads: int = 4, depth: int = 1) -> None:
        super().__init__()
        heads = max(h for h in range(1, heads + 1) if channels % h == 0)
        self.text = nn.Linear(text_dim, channels)
        self.layers = nn.ModuleList()
        for _ in range(depth):
            self.layers.append(nn.ModuleDict({
                "norm1": nn.LayerNorm(channels),
                "attn": nn.MultiheadAttention(channels, heads, batch_first=True),
                "norm2": nn.LayerNorm(channels),
                "mlp": nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(),
                                     nn.Linear(2 * channels, channels)),
            }))

    def forward(self, x: Tensor, text: Tensor) -> Tensor:
        """Refine (B, K, C, h, w) class features with text (K, D) guidance; same shape out."""
        b, k, c, h, w = x.shape
        tokens = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, k, c)
        guide = self.text(text)[None]  # (1, K, C)
        for layer in self.layers:
            y = layer["norm1"](tokens)
            qk = y + guide
            tokens = tokens + layer["attn"](qk, qk, y, need_weights=False)[0]
            tokens = tokens + layer["mlp"](layer["norm2"](tokens))
        return tokens.reshape(b, h, w, k, c).permute(0, 3, 4, 1, 2)


class BackProjection(nn.Module):
    """Semantic back-projection: class features -> guidance feature space, and back in.

    Per pixel the class features are pooled with the softmax of their scores (a symmetric
    function of the classes, so equivariance is kept), projected to the guidance space
    (``target_channels``) for the back-projection loss, and that projection is added back to
    every class's features.
    """

    def __init__(self, channels: int, target_channels: int) -> None:
        super().__init__()
        self.score = nn.Conv2d(channels, 1, 1)
        self.to_target = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.GELU(),
                                       nn.Conv2d(channels, target_channels, 1))
        self.back = nn.Conv2d(target_channels, channels, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Class features (B, K, C, h, w) -> (updated features, projection (B, T, h, w))."""
        b, k, c, h, w = x.shape
        scores = self.score(x.reshape(b * k, c, h, w)).reshape(b, k, 1, h, w)
        pooled = (torch.softmax(scores, dim=1) * x).sum(1)
        projection = self.to_target(pooled)
        return x + self.back(projection)[:, None], projection


class _Gate(nn.Module):
    """Channel (squeeze-excitation) and spatial attention on a fused decoder map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(4, channels // 4)
        self.channel = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1),
                                     nn.GELU(), nn.Conv2d(hidden, channels, 1), nn.Sigmoid())
        self.spatial = nn.Sequential(nn.Conv2d(channels, 1, 7, padding=3), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)


class Decoder(nn.Module):
    """Multi-scale attention-aware decoder: x2 upsampling stages per class, fused with skips.

    Args:
        channels: Channels of the class features entering.
        skip_channels: Channels of each skip map, coarse to fine (one stage per skip).
        dims: Output channels of each stage.
    """

    def __init__(self, channels: int, skip_channels: Sequence[int], dims: Sequence[int]) -> None:
        super().__init__()
        if len(skip_channels) != len(dims):
            raise InputError("one decoder dim per skip map", parameter="decoder_dims")
        self.skips = nn.ModuleList(nn.Conv2d(s, d, 1) for s, d in zip(skip_channels, dims,
                                                                        strict=True))
        stages, gates = [], []
        previous = channels
        for d in dims:
            stages.append(nn.Sequential(nn.Conv2d(previous + d, d, 3, padding=1), _norm(d),
                                        nn.GELU()))
            gates.append(_Gate(d))
            previous = d
        self.stages = nn.ModuleList(stages)
        self.gates = nn.ModuleList(gates)
        self.head = nn.Conv2d(previous, 1, 1)

    def forward(self, x: Tensor, skips: Sequence[Tensor], num_classes: int) -> Tensor:
        """Class features (B*K, C, h, w) and skips (B, S_i, h_i, w_i) -> (B, K, h, w) logits."""
        for proj, stage, gate, skip in zip(self.skips, self.stages, self.gates, skips,
                                           strict=True):
            s = proj(skip).repeat_interleave(num_classes, dim=0)
            x = F.interpolate(x, size=s.shape[-2:], mode="bilinear", align_corners=False)
            x = gate(stage(torch.cat([x, s], dim=1)))
        logits = self.head(x)
        return logits.reshape(-1, num_classes, *logits.shape[-2:])


@dataclass
class Encoded:
    """What the (frozen or not) encoders give one batch; cacheable when they are frozen.

    Attributes:
        dense: (B, R, Cd, h, w) raw features at the correlation stride, one per rotation
            (already rotated back), before the image-side projection.
        skips: Finer maps for the decoder, coarse to fine (from the unrotated image).
        guidance: (B, G, h, w) raw guidance features, or None.
        global_feature: (B, D) pooled image embedding of a CLIP-like tower (bias subtraction).
    """

    dense: Tensor
    skips: list[Tensor]
    guidance: Tensor | None
    global_feature: Tensor | None = None

    def select(self, index: Any) -> Encoded:
        """Rows ``index`` of every tensor (a batch of a cached set)."""
        return Encoded(self.dense[index], [s[index] for s in self.skips],
                       None if self.guidance is None else self.guidance[index],
                       None if self.global_feature is None else self.global_feature[index])

    def float(self) -> Encoded:
        """Float32 copy (caches are kept in half precision)."""
        return Encoded(self.dense.float(), [s.float() for s in self.skips],
                       None if self.guidance is None else self.guidance.float(),
                       None if self.global_feature is None else self.global_feature.float())

    def half(self) -> Encoded:
        """Half-precision copy (for caching)."""
        return Encoded(self.dense.half(), [s.half() for s in self.skips],
                       None if self.guidance is None else self.guidance.half(),
                       None if self.global_feature is None else self.global_feature.half())


def _is_clip_like(encoder: nn.Module) -> bool:
    return hasattr(encoder, "visual") and hasattr(encoder, "global_feature")


class OpenVocabSegmenter(nn.Module):
    """Open-vocabulary segmenter over a pluggable image encoder (and optional guidance encoder).

    Args:
        image_encoder: Dense encoder: an :class:`eokit.core.encoders.ImageEncoder` (multi-scale
            maps) or an :class:`~eokit.core.encoders.OpenClipImageEncoder` (patch tokens; its
            ``proj`` initialises the image-side projection).
        text_dim: Width of the class embeddings.
        num_prompts: Prompt templates per class (P).
        guidance_encoder: Second encoder for guidance (e.g. :class:`SamGuidance`); None uses the
            image encoder's own maps at and below the correlation resolution.
        rotations: Angles of the rotation ensemble.
        rotation_pool: ``meanmax`` (mean and max over rotations: rotation-equivariant volume)
            or ``stack`` (one channel per rotation and prompt, as OVRS).
        guidance: Use guidance in the spatial refinement (ablation switch).
        back_projection: Semantic back-projection module and loss (ablation switch).
        class_refinement: Attention across classes (ablation switch).
        head: ``aggregate`` (the full pipeline) or ``cosine`` (dense cosine only: the baseline).
        feature_stride: Stride of the correlation volume (maps of the image encoder at this
            stride and coarser are resampled to it and concatenated).
        embed_dim: Channels of the correlation embedding and the refinement blocks.
        guidance_dim: Channels the guidance is projected to.
        decoder_dims: Channels of the decoder stages (one per x2 upsampling, at most as many as
            finer maps the encoder has; a conv stem supplies them otherwise).
        train_encoder: Fine-tune the image (and guidance) encoder; False locks them (features
            can then be cached).
    """

    def __init__(self, image_encoder: nn.Module, text_dim: int, num_prompts: int, *,
                 guidance_encoder: nn.Module | None = None,
                 rotations: Sequence[int] = (0, 90, 180, 270), rotation_pool: str = "meanmax",
                 guidance: bool = True, back_projection: bool = True,
                 class_refinement: bool = True, head: str = "aggregate",
                 feature_stride: int = 8, embed_dim: int = 32, guidance_dim: int = 32,
                 decoder_dims: Sequence[int] = (32, 16), train_encoder: bool = False) -> None:
        super().__init__()
        if head not in HEADS:
            raise InputError(f"head must be one of {HEADS}, got {head!r}", parameter="head")
        if rotation_pool not in POOLS:
            raise InputError(f"rotation_pool must be one of {POOLS}, got {rotation_pool!r}",
                             parameter="rotation_pool")
        if num_prompts < 1 or text_dim < 1:
            raise InputError("num_prompts and text_dim must be >= 1", parameter="num_prompts")
        self.encoder = image_encoder
        self.guidance_encoder = guidance_encoder
        self.rotations = RotationSet(rotations)
        self.rotation_pool = rotation_pool
        self.head = head
        self.text_dim = int(text_dim)
        self.num_prompts = int(num_prompts)
        self.train_encoder = bool(train_encoder)
        self.use_guidance = bool(guidance) and head == "aggregate"
        self.use_back_projection = bool(back_projection) and self.use_guidance
        self.use_class_refinement = bool(class_refinement) and head == "aggregate"
        self.clip_like = _is_clip_like(image_encoder)
        strides = [int(s) for s in image_encoder.strides]
        channels = [int(c) for c in image_encoder.channels]
        self.in_chans = int(getattr(image_encoder, "in_chans", 3))
        if self.clip_like:
            feature_stride = strides[0]
        coarse = [i for i, s in enumerate(strides) if s >= feature_stride]
        if not coarse:
            raise InputError(f"the image encoder has no map at stride >= {feature_stride}",
                             parameter="feature_stride")
        self.feature_stride = int(feature_stride)
        self.dense_index = coarse
        self.align = max(max(strides), self.feature_stride)
        dense_channels = sum(channels[i] for i in coarse)
        self.dense_channels = dense_channels
        self.project = nn.Conv2d(dense_channels, text_dim, 1)
        if self.clip_like:  # start from CLIP's own projection: the training-free alignment
            proj = getattr(image_encoder.visual, "proj", None)
            if proj is not None and proj.shape == (dense_channels, text_dim):
                with torch.no_grad():
                    self.project.weight.copy_(proj.detach().t()[:, :, None, None])
                    self.project.bias.zero_()
        self.logit_scale = nn.Parameter(torch.tensor(2.3))  # exp: 10 (cosine head)
        self.bias_lambda = 0.3
        finer = [i for i, s in enumerate(strides) if s < feature_stride][::-1]
        dims = list(decoder_dims)
        self.skip_index = finer[: len(dims)]
        self.stem: nn.Module | None = None
        if len(self.skip_index) < len(dims):
            self.stem = _Stem(self.in_chans, dims, feature_stride)
            skip_channels = list(self.stem.channels)
        else:
            skip_channels = [channels[i] for i in self.skip_index]
        # guidance: raw maps and their projection
        if guidance_encoder is not None:
            self.guidance_raw_channels = sum(int(c) for c in guidance_encoder.channels)
        else:
            self.guidance_raw_channels = sum(channels[i] for i in coarse[:2])
        pooled = 2 if rotation_pool == "meanmax" else len(self.rotations)
        if head == "aggregate":
            self.embed = nn.Conv2d(pooled * num_prompts, embed_dim, 7, padding=3)
            gdim = guidance_dim if self.use_guidance else 0
            self.guidance_proj = (nn.Sequential(nn.Conv2d(self.guidance_raw_channels, gdim, 1),
                                                _norm(gdim), nn.GELU())
                                  if self.use_guidance else None)
            self.spatial = SpatialRefinement(embed_dim, gdim)
            self.classes = (ClassRefinement(embed_dim, text_dim)
                            if self.use_class_refinement else None)
            self.back = (BackProjection(embed_dim, self.guidance_raw_channels)
                         if self.use_back_projection else None)
            self.decoder = Decoder(embed_dim, skip_channels, dims)
        if not self.train_encoder:
            for module in (image_encoder, guidance_encoder):
                if module is not None:
                    module.requires_grad_(False)
        self.config: dict[str, Any] = {
            "text_dim": self.text_dim, "num_prompts": self.num_prompts,
            "rotations": list(self.rotations.angles), "rotation_pool": rotation_pool,
            "guidance": bool(guidance), "back_projection": bool(back_projection),
            "class_refinement": bool(class_refinement), "head": head,
            "feature_stride": self.feature_stride, "embed_dim": embed_dim,
            "guidance_dim": guidance_dim, "decoder_dims": dims,
            "train_encoder": self.train_encoder,
        }

    # ------------------------------------------------------------------ encoders
    def train(self, mode: bool = True) -> OpenVocabSegmenter:
        """Locked encoders stay in eval mode (their BatchNorm statistics do not drift)."""
        super().train(mode)
        if not self.train_encoder:
            self.encoder.eval()
            if self.guidance_encoder is not None:
                self.guidance_encoder.eval()
        return self

    def _check_image(self, image: Tensor) -> None:
        if image.ndim != 4 or image.shape[1] != self.in_chans:
            raise InputError(f"expected a (B, {self.in_chans}, H, W) image batch, got "
                             f"{tuple(image.shape)}", parameter="image")
        h, w = image.shape[-2:]
        if h % self.align or w % self.align:
            raise InputError(f"image size {h}x{w} must be a multiple of {self.align}",
                             parameter="image")

    def _maps(self, image: Tensor) -> list[Tensor]:
        return list(self.encoder(self.encoder.normalize(image)))

    def encode(self, image: Tensor) -> Encoded:
        """Encoder outputs of a (B, C, H, W) 0-1 batch (gradients only with ``train_encoder``)."""
        self._check_image(image)
        with torch.set_grad_enabled(self.train_encoder and torch.is_grad_enabled()):
            h, w = image.shape[-2] // self.feature_stride, image.shape[-1] // self.feature_stride
            dense, first_maps, global_feature = [], None, None
            for angle in self.rotations:
                maps = self._maps(RotationSet.rotate(image, angle))
                maps = [RotationSet.unrotate(m, angle) for m in maps]
                if first_maps is None or angle == 0:
                    first_maps = maps
                    if self.clip_like:
                        global_feature = self.encoder.global_feature
                dense.append(torch.cat([_resample(maps[i], (h, w)) for i in self.dense_index], 1))
            assert first_maps is not None
            if self.rotations.angles[0] != 0 and self.clip_like:
                self._maps(image)
                global_feature = self.encoder.global_feature
            skips = [] if self.stem is not None else [first_maps[i] for i in self.skip_index]
            guidance = None
            if self.guidance_encoder is not None:
                gmaps = self.guidance_encoder(image)
                guidance = torch.cat([_resample(g, (h, w)) for g in gmaps], 1)
            else:
                zero = self.rotations.angles.index(0) if 0 in self.rotations.angles else None
                if zero is not None:
                    n = sum(int(self.encoder.channels[i]) for i in self.dense_index[:2])
                    guidance = dense[zero][:, :n]
                else:
                    maps = self._maps(image)
                    guidance = torch.cat([_resample(maps[i], (h, w))
                                          for i in self.dense_index[:2]], 1)
        return Encoded(torch.stack(dense, 1), skips, guidance, global_feature)

    # ------------------------------------------------------------------ correlation
    def correlation(self, encoded: Encoded, text: Tensor) -> Tensor:
        """Cosine correlation (B, K, R, P, h, w) of each rotation's projected features."""
        text = self._check_text(text)
        b, r, c, h, w = encoded.dense.shape
        feats = self.project(encoded.dense.reshape(b * r, c, h, w))
        feats = F.normalize(feats, dim=1).reshape(b, r, -1, h, w)
        return torch.einsum("brdhw,kpd->bkrphw", feats, F.normalize(text, dim=-1))

    def pooled_correlation(self, encoded: Encoded, text: Tensor) -> Tensor:
        """Rotation-pooled volume (B, K, pooled*P, h, w): mean and max (or stacked) rotations."""
        corr = self.correlation(encoded, text)
        b, k, r, p, h, w = corr.shape
        if self.rotation_pool == "meanmax":
            return torch.cat([corr.mean(2), corr.amax(2)], dim=2)
        return corr.reshape(b, k, r * p, h, w)

    def _check_text(self, text: Tensor) -> Tensor:
        if text.ndim == 2:
            text = text[:, None].expand(-1, self.num_prompts, -1)
        if text.ndim != 3 or text.shape[1] != self.num_prompts or text.shape[2] != self.text_dim:
            raise InputError(f"class embeddings must be (K, {self.num_prompts}, "
                             f"{self.text_dim}), got {tuple(text.shape)}", parameter="text")
        if text.shape[0] < 1:
            raise InputError("no class to score", parameter="classes")
        return text

    # ------------------------------------------------------------------ forward
    def forward_encoded(self, encoded: Encoded, text: Tensor, size: tuple[int, int],
                        return_aux: bool = False) -> Any:
        """Logits (B, K, H, W) from encoder outputs; ``return_aux`` adds the loss terms."""
        text = self._check_text(text)
        k = text.shape[0]
        aux: dict[str, Tensor] = {}
        if self.head == "cosine":
            corr = self.correlation(encoded, text)[:, :, :1].mean(3)[:, :, 0]  # first rotation
            logits = corr * self.logit_scale.exp()
            if self.clip_like and encoded.global_feature is not None:
                glob = F.normalize(encoded.global_feature, dim=-1) @ \
                    F.normalize(text.mean(1), dim=-1).t()
                logits = logits - self.bias_lambda * self.logit_scale.exp() * glob[:, :, None,
                                                                                   None]
            out = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            return (out, aux) if return_aux else out
        volume = self.pooled_correlation(encoded, text)
        b, _, ch, h, w = volume.shape
        x = self.embed(volume.reshape(b * k, ch, h, w))
        guidance = None
        if self.guidance_proj is not None and encoded.guidance is not None:
            guidance = self.guidance_proj(encoded.guidance)
        x = self.spatial(x, guidance, k)
        x = x.reshape(b, k, -1, h, w)
        if self.classes is not None:
            x = self.classes(x, F.normalize(text.mean(1), dim=-1))
        if self.back is not None:
            x, projection = self.back(x)
            if encoded.guidance is not None:
                aux["bp_pred"] = projection
                aux["bp_target"] = encoded.guidance.detach()
        skips = encoded.skips
        if self.stem is not None and not skips:
            raise RuntimeError("stem skips need the image: call forward")
        logits = self.decoder(x.reshape(b * k, -1, h, w), skips, k)
        out = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return (out, aux) if return_aux else out

    def forward(self, image: Tensor, text: Tensor, return_aux: bool = False) -> Any:
        """Logits (B, K, H, W) of a (B, C, H, W) 0-1 batch against K class embeddings.

        ``text`` is (K, P, D) per-prompt embeddings (or (K, D), repeated over prompts).
        """
        encoded = self.encode(image)
        if self.stem is not None:
            encoded.skips = self.stem(self.encoder.normalize(image))
        return self.forward_encoded(encoded, text, tuple(image.shape[-2:]),
                                    return_aux=return_aux)


class _Stem(nn.Module):
    """Small learnt convolution stem giving decoder skips when the encoder has no finer maps."""

    def __init__(self, in_chans: int, dims: Sequence[int], feature_stride: int) -> None:
        super().__init__()
        self.channels = [max(8, d // 2) for d in dims]
        strides = [feature_stride // 2 ** (i + 1) for i in range(len(dims))]
        self.strides = strides
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_chans, c, 3, padding=1), nn.GELU()) for c in self.channels)

    def forward(self, image: Tensor) -> list[Tensor]:
        out = []
        for conv, stride in zip(self.convs, self.strides, strict=True):
            x = F.avg_pool2d(image, stride) if stride > 1 else image
            out.append(conv(x))
        return out


class ClosedSetSegmenter(nn.Module):
    """Closed-set upper bound: the same (locked) encoder with a supervised head on K classes."""

    def __init__(self, image_encoder: nn.Module, num_classes: int, *, feature_stride: int = 8,
                 hidden: int = 64) -> None:
        super().__init__()
        if num_classes < 2:
            raise InputError(f"must be >= 2, got {num_classes}", parameter="num_classes")
        self.encoder = image_encoder.requires_grad_(False)
        strides = [int(s) for s in image_encoder.strides]
        channels = [int(c) for c in image_encoder.channels]
        self.dense_index = [i for i, s in enumerate(strides) if s >= feature_stride]
        self.skip_index = [i for i, s in enumerate(strides) if s < feature_stride][-1:]
        self.feature_stride = feature_stride
        dense = sum(channels[i] for i in self.dense_index)
        skip = sum(channels[i] for i in self.skip_index)
        self.body = nn.Sequential(nn.Conv2d(dense, hidden, 3, padding=1), _norm(hidden),
                                  nn.GELU())
        self.fuse = nn.Sequential(nn.Conv2d(hidden + skip, hidden, 3, padding=1), _norm(hidden),
                                  nn.GELU(), nn.Conv2d(hidden, num_classes, 1))
        self.num_classes = num_classes

    def train(self, mode: bool = True) -> ClosedSetSegmenter:
        """The locked encoder stays in eval mode."""
        super().train(mode)
        self.encoder.eval()
        return self

    def features(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Dense (B, Cd, h, w) and skip maps of the locked encoder."""
        with torch.no_grad():
            maps = list(self.encoder(self.encoder.normalize(image)))
        h, w = image.shape[-2] // self.feature_stride, image.shape[-1] // self.feature_stride
        dense = torch.cat([_resample(maps[i], (h, w)) for i in self.dense_index], 1)
        return dense, [maps[i] for i in self.skip_index]

    def forward_features(self, dense: Tensor, skips: Sequence[Tensor],
                         size: tuple[int, int]) -> Tensor:
        """Logits (B, K, H, W) from encoder features."""
        x = self.body(dense)
        if skips:
            x = F.interpolate(x, size=skips[0].shape[-2:], mode="bilinear", align_corners=False)
            x = torch.cat([x, *skips], 1)
        return F.interpolate(self.fuse(x), size=size, mode="bilinear", align_corners=False)

    def forward(self, image: Tensor) -> Tensor:
        """(B, C, H, W) 0-1 image -> (B, K, H, W) logits."""
        dense, skips = self.features(image)
        return self.forward_features(dense, skips, tuple(image.shape[-2:]))


def _valid_fraction(valid: Tensor, size: tuple[int, int]) -> Tensor:
    return F.adaptive_avg_pool2d(valid[:, None].float(), size)[:, 0]


def openvocab_loss(logits: Tensor, labels: Tensor, aux: dict[str, Tensor] | None = None, *,
                   bp_weight: float = 0.5, ignore_index: int = IGNORE_INDEX) -> dict[str, Tensor]:
    """Segmentation and back-projection losses with ignore pixels masked out of both.

    The segmentation term is the softmax cross-entropy over the K scored classes averaged over
    labelled pixels (a pixel with ``ignore_index`` gives no positive and no negative, unlike
    CAT-Seg's per-class BCE). The back-projection term is ``1 - cos`` between the projected
    class features and the detached guidance features, weighted per feature cell by the fraction
    of labelled pixels it covers.

    Returns:
        ``loss`` (total), ``seg`` and ``bp``.
    """
    valid = labels != ignore_index
    k = logits.shape[1]
    if bool(((labels >= k) & valid).any()) or bool(((labels < 0) & valid).any()):
        raise InputError(f"labels must be in [0, {k}) or {ignore_index}", parameter="labels")
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    nll = F.cross_entropy(logits, safe, reduction="none")
    seg = (nll * valid).sum() / valid.sum().clamp(min=1)
    bp = logits.new_zeros(())
    if aux and "bp_pred" in aux:
        pred, target = aux["bp_pred"], aux["bp_target"]
        weight = _valid_fraction(valid, tuple(pred.shape[-2:]))
        dist = 1.0 - F.cosine_similarity(pred, target.to(pred.dtype), dim=1, eps=1e-6)
        bp = (dist * weight).sum() / weight.sum().clamp(min=1e-6)
    return {"loss": seg + bp_weight * bp, "seg": seg, "bp": bp}


def harmonic_miou(seen: float, unseen: float) -> float:
    """h-mIoU ``2 S U / (S + U)`` (0 when both are 0; NaN when either is NaN)."""
    if seen != seen or unseen != unseen:
        return float("nan")
    total = seen + unseen
    return 0.0 if total <= 0 else 2.0 * seen * unseen / total


def seen_unseen_scores(matrix: Any, seen: Sequence[int], unseen: Sequence[int]
                       ) -> dict[str, Any]:
    """Seen/unseen/h-mIoU from one dataset-level confusion matrix.

    Args:
        matrix: A :class:`eokit.core.metrics.ConfusionMatrix` (rows = reference) over all
            evaluated classes, or its (K, K) counts.
        seen: Class indices that were trained on.
        unseen: Class indices that were not.

    Returns:
        ``seen_miou``, ``unseen_miou``, ``h_miou``, ``miou`` (all classes) and the per-class
        ``iou`` list (NaN for a class neither present nor predicted; NaNs are left out of the
        means).
    """
    import numpy as np

    from eokit.core.metrics import ConfusionMatrix

    counts = np.asarray(matrix.matrix if isinstance(matrix, ConfusionMatrix) else matrix,
                        dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise InputError(f"confusion matrix must be square, got {counts.shape}",
                         parameter="matrix")
    tp = np.diag(counts)
    union = counts.sum(0) + counts.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)
    k = len(iou)
    seen_i, unseen_i = [int(i) for i in seen], [int(i) for i in unseen]
    if set(seen_i) & set(unseen_i):
        raise InputError("a class cannot be both seen and unseen", parameter="unseen")
    if any(i < 0 or i >= k for i in seen_i + unseen_i):
        raise InputError(f"class index outside 0..{k - 1}", parameter="seen")

    def mean(idx: list[int]) -> float:
        values = iou[idx] if idx else np.array([])
        values = values[np.isfinite(values)]
        return float(values.mean()) if values.size else float("nan")

    s, u = mean(seen_i), mean(unseen_i)
    return {"seen_miou": s, "unseen_miou": u, "h_miou": harmonic_miou(s, u),
            "miou": mean(list(range(k))), "iou": iou.tolist()}


__all__ += ["Encoded", "seen_unseen_scores"]
