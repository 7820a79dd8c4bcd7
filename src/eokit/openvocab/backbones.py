"""Encoder pairs for the open-vocabulary segmenter, built offline from a small config dict.

* ``embedded`` (default): the catalogue's all-MiniLM-L6-v2 text encoder (locked) and the
  ImageNet EfficientNet-Lite image encoder (multi-scale maps); the image side is aligned to the
  text space by the segmenter's trained projection. Both ship with eokit.
* ``open_clip``: an open_clip model's image and text towers from a local weights file
  (``clip_model`` + ``clip_weights``); a ViT's patch tokens are the dense features and its
  ``proj`` initialises the projection, so the dense-cosine head works untrained.
* guidance ``sam``: the image encoder of Segment Anything (``segment-anything`` package) from a
  local checkpoint (``sam_checkpoint``, the ``image_encoder.*`` keys are read with
  ``weights_only``); ``sam_config`` builds a small random one (tests).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eokit.core.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["SAM_VARIANTS", "FixedSizeEncoder", "SamGuidance", "build_encoders"]

#: ViT sizes of the released SAM image encoders (embed dim, depth, heads, global-attention blocks).
SAM_VARIANTS: dict[str, dict[str, Any]] = {
    "vit_b": {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": (2, 5, 8, 11)},
    "vit_l": {"embed_dim": 1024, "depth": 24, "num_heads": 16,
              "global_attn_indexes": (5, 11, 17, 23)},
    "vit_h": {"embed_dim": 1280, "depth": 32, "num_heads": 16,
              "global_attn_indexes": (7, 15, 23, 31)},
}


class FixedSizeEncoder(nn.Module):
    """Runs an encoder that takes one input size on any tile: resize in, maps come out coarse.

    The segmenter resamples every map to its own grid, so only the input is resized here.
    """

    def __init__(self, inner: nn.Module, size: int) -> None:
        super().__init__()
        self.inner = inner
        self.size = int(size)
        for name in ("channels", "strides", "in_chans", "normalization", "name"):
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))
        if hasattr(inner, "visual"):
            self.visual = inner.visual

    @property
    def global_feature(self) -> Tensor | None:
        """The inner CLIP tower's pooled embedding of the last call."""
        return getattr(self.inner, "global_feature", None)

    def normalize(self, image: Tensor) -> Tensor:
        """The inner encoder's normalisation."""
        return self.inner.normalize(image)  # type: ignore[no-any-return]

    def forward(self, image: Tensor) -> list[Tensor]:
        """Maps of the resized image."""
        if tuple(image.shape[-2:]) != (self.size, self.size):
            image = F.interpolate(image, size=(self.size, self.size), mode="bilinear",
                                  align_corners=False)
        return list(self.inner(image))


class SamGuidance(nn.Module):
    """SAM's ViT image encoder as a guidance encoder: 0-1 image -> [(B, 256, S/16, S/16)].

    Args:
        variant: ``vit_b``/``vit_l``/``vit_h`` (the released sizes) when ``config`` is None.
        checkpoint: Local SAM checkpoint (the full model or the image encoder alone).
        config: Keyword arguments of ``ImageEncoderViT`` (a small random encoder for tests).
    """

    def __init__(self, variant: str = "vit_b", checkpoint: str | Path | None = None,
                 config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        try:
            from segment_anything.modeling import ImageEncoderViT
        except ImportError:
            raise InputError("SAM guidance needs segment-anything: pip install 'eokit[clip]'",
                             parameter="guidance_encoder") from None
        if config is None:
            if variant not in SAM_VARIANTS:
                raise InputError(f"unknown SAM variant {variant!r}; use one of "
                                 f"{', '.join(SAM_VARIANTS)}", parameter="sam_variant")
            config = {"img_size": 1024, "patch_size": 16, "out_chans": 256, "window_size": 14,
                      "use_rel_pos": True, "mlp_ratio": 4.0, "qkv_bias": True,
                      **SAM_VARIANTS[variant]}
        kwargs = dict(config)
        kwargs.setdefault("norm_layer", _sam_layer_norm)
        self.body = ImageEncoderViT(**kwargs)
        self.size = int(kwargs.get("img_size", 1024))
        self.channels = [int(kwargs.get("out_chans", 256))]
        self.strides = [int(kwargs.get("patch_size", 16))]
        self.register_buffer("mean", torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
                             / 255.0, persistent=False)
        self.register_buffer("std", torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
                             / 255.0, persistent=False)
        if checkpoint is not None:
            self._load(checkpoint)

    def _load(self, checkpoint: str | Path) -> None:
        from eokit.core.encoders import load_state_dict_file
        from eokit.core.weights import resolve_weights

        path = resolve_weights(checkpoint)
        state = load_state_dict_file(path)
        if any(k.startswith("image_encoder.") for k in state):
            state = {k[len("image_encoder."):]: v for k, v in state.items()
                     if k.startswith("image_encoder.")}
        try:
            self.body.load_state_dict(state, strict=True)
        except RuntimeError as err:
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            detail = lines[1] if len(lines) > 1 else lines[0]
            raise InputError(f"SAM weights do not match this image encoder ({detail[:140]})",
                             path=path) from None

    def forward(self, image: Tensor) -> list[Tensor]:
        """One guidance map of a (B, 3, H, W) 0-1 batch (resized to SAM's input size)."""
        if image.shape[1] != 3:
            image = image[:, :3] if image.shape[1] > 3 else image.repeat(1, 3, 1, 1)[:, :3]
        x = (image - self.mean) / self.std
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False)
        return [self.body(x)]


def _sam_layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6)


def build_encoders(config: Mapping[str, Any], *, pretrained: bool = True
                   ) -> tuple[nn.Module, Any, nn.Module | None]:
    """(image encoder, text encoder, guidance encoder or None) from a model config.

    Keys: ``encoder`` (``efficientnet_lite0``... or ``open_clip``), ``in_chans``,
    ``clip_model``/``clip_weights``/``clip_config`` (open_clip), ``text_encoder``
    (``minilm_l6``), ``guidance_encoder`` (``none`` or ``sam``) with ``sam_variant``/
    ``sam_checkpoint``/``sam_config``. ``pretrained=False`` builds random image (and
    open_clip) weights for tests; the catalogue text encoder is always the pretrained one.
    """
    from eokit.core.encoders import build_image_encoder, build_open_clip, build_text_encoder

    kind = str(config.get("encoder", "efficientnet_lite0"))
    if kind == "open_clip":
        weights = config.get("clip_weights") if pretrained else None
        image, text = build_open_clip(str(config.get("clip_model", "ViT-B-16")), weights,
                                      model_config=config.get("clip_config"))
        size = image.visual.image_size
        size = int(size[0] if isinstance(size, tuple | list) else size)
        in_chans = int(config.get("in_chans", 3))
        if in_chans != 3:
            raise InputError(f"open_clip image towers take 3 bands, not {in_chans}",
                             parameter="in_chans")
        image_encoder: nn.Module = FixedSizeEncoder(image, size)
        text.requires_grad_(False)
        text_encoder: Any = text
    else:
        image_encoder = build_image_encoder(kind, pretrained=pretrained,
                                            in_chans=int(config.get("in_chans", 3)),
                                            frozen_bn=not config.get("train_encoder", False))
        # the locked text tower always comes from the catalogue (it ships with eokit), so a
        # model built with random image weights still reloads with the same class embeddings
        text_encoder = build_text_encoder(str(config.get("text_encoder", "minilm_l6")))
        text_encoder.requires_grad_(False)
    text_encoder.eval()
    guidance: nn.Module | None = None
    if str(config.get("guidance_encoder", "none")) == "sam":
        guidance = SamGuidance(str(config.get("sam_variant", "vit_b")),
                               config.get("sam_checkpoint") if pretrained else None,
                               config.get("sam_config"))
    elif str(config.get("guidance_encoder", "none")) != "none":
        raise InputError(f"unknown guidance encoder {config.get('guidance_encoder')!r}; use "
                         "none or sam", parameter="guidance_encoder")
    return image_encoder, text_encoder, guidance
