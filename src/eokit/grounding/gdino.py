"""Grounding DINO (``transformers``) as the detector / proposal source of eokit.grounding.

:class:`GroundingDinoDetector` wraps ``GroundingDinoForObjectDetection``: it builds the text
prompt from class names (``"ship . storage tank ."``), runs the model on 0-1 images and returns
boxes in our format (xyxy pixels of the input image, ``scores``, ``labels`` = class indices),
so :func:`eokit.grounding.metrics.detection_map` and
:func:`eokit.grounding.metrics.grounding_metrics` apply unchanged. :meth:`ground` answers a
referring expression with the best-scoring query's box.

Real weights come from a local folder only (never a download): a Hugging Face model folder
(``config.json``, weights, tokenizer files), e.g. ``IDEA-Research/grounding-dino-tiny`` copied
to disk, or a path resolved by :func:`eokit.core.weights.resolve_weights`. See
``docs/grounding.md``.

:data:`GDINO_PLACEMENTS` maps the PEFT placement names of :mod:`eokit.grounding.adapt` to
Grounding DINO's modules.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from eokit.core.errors import InputError
from eokit.grounding.boxes import clip_boxes, cxcywh_to_xyxy

logger = logging.getLogger(__name__)

__all__ = ["GDINO_PLACEMENTS", "GroundingDinoDetector", "load_grounding_dino", "plain_view",
           "tiny_config"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _linear(pattern: str) -> Callable[[str, nn.Module], bool]:
    rx = re.compile(pattern)
    return lambda n, m: isinstance(m, nn.Linear) and rx.fullmatch(n) is not None


#: Placement -> module rule on ``GroundingDinoForObjectDetection`` (names of transformers 4.4x+;
#: Swin attention is ``q_proj/k_proj/v_proj/o_proj`` or ``self.query/key/value`` by version).
#:
#: ============  ===============================================================================
#: text          BERT self-attention: ``model.text_backbone.encoder.layer.*.attention.self.
#:               {query,key,value}``
#: vision        Swin window attention: ``model.backbone.conv_encoder.model.*.attention.
#:               {q,k,v,o}_proj`` (or ``.self.{query,key,value}``) and the encoder's deformable
#:               self-attention ``model.encoder.layers.*.deformable_layer.self_attn.
#:               {sampling_offsets,attention_weights,value_proj,output_proj}``
#: fusion        image-text bi-attention of the feature enhancer: ``model.encoder.layers.*.
#:               fusion_layer.attn.{vision,text,values_vision,values_text,out_vision,
#:               out_text}_proj``
#: decoder       decoder self-, text cross- and deformable image cross-attention:
#:               ``model.decoder.layers.*.{self_attn,encoder_attn_text}.{query,key,value,
#:               out_proj}`` and ``model.decoder.layers.*.encoder_attn.{sampling_offsets,
#:               attention_weights,value_proj,output_proj}``
#: ============  ===============================================================================
GDINO_PLACEMENTS: dict[str, Callable[[str, nn.Module], bool]] = {
    "text": _linear(r"model\.text_backbone\.encoder\.layer\.\d+\.attention\.self\."
                    r"(query|key|value)"),
    "vision": _linear(r"model\.backbone\.conv_encoder\.model\..*\.attention\."
                      r"([qkvo]_proj|self\.(query|key|value))"
                      r"|model\.encoder\.layers\.\d+\.deformable_layer\.self_attn\."
                      r"(sampling_offsets|attention_weights|value_proj|output_proj)"),
    "fusion": _linear(r"model\.encoder\.layers\.\d+\.fusion_layer\.attn\."
                      r"(vision|text|values_vision|values_text|out_vision|out_text)_proj"),
    "decoder": _linear(r"model\.decoder\.layers\.\d+\.(self_attn|encoder_attn_text)\."
                       r"(query|key|value|out_proj)"
                       r"|model\.decoder\.layers\.\d+\.encoder_attn\."
                       r"(sampling_offsets|attention_weights|value_proj|output_proj)"),
}


def plain_view(model: nn.Module) -> nn.Module:
    """A plain module sharing ``model``'s children (same parameter names).

    peft's injection inspects a transformers ``PreTrainedModel`` for embeddings tied to an
    output layer, which Grounding DINO does not implement; apply adapters through this view
    (the layers are replaced inside the shared children, so ``model`` carries them).
    """
    view = nn.Module()
    for name, child in model.named_children():
        view.add_module(name, child)
    return view


def tiny_config(*, image_size: int = 64, vocab_size: int = 64, num_queries: int = 8) -> Any:
    """A tiny randomly initialised Grounding DINO configuration (tests and smoke runs).

    Swin backbone with 16-wide embeddings and one block per stage, a one-layer 32-wide BERT,
    a 32-wide transformer with one encoder and two decoder layers; no pretrained backbone.
    """
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    backbone = SwinConfig(image_size=image_size, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1],
                          num_heads=[1, 1, 2, 2], window_size=4,
                          out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    return GroundingDinoConfig(
        backbone_config=backbone, text_config=text, use_pretrained_backbone=False,
        use_timm_backbone=False, backbone=None, d_model=32, encoder_layers=1, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, num_queries=num_queries, num_feature_levels=3, encoder_n_points=2,
        decoder_n_points=2, max_text_len=32, dropout=0.0, fusion_dropout=0.0)


def load_grounding_dino(path: str | Path) -> GroundingDinoDetector:
    """Load Grounding DINO and its tokenizer from a local Hugging Face folder (no download).

    Args:
        path: Folder with ``config.json``, the weights and the tokenizer files, or a weights
            location :func:`eokit.core.weights.resolve_weights` resolves to such a folder.
    """
    from transformers import AutoTokenizer, GroundingDinoForObjectDetection

    from eokit.core.weights import resolve_weights

    folder = Path(path)
    if not folder.exists():
        folder = Path(resolve_weights(str(path)))
    if not (folder / "config.json").is_file():
        raise InputError("not a Hugging Face model folder (no config.json)", path=folder)
    try:
        model = GroundingDinoForObjectDetection.from_pretrained(str(folder),
                                                                local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"cannot load Grounding DINO ({first[:160]})", path=folder) from None
    return GroundingDinoDetector(model, tokenizer)


class GroundingDinoDetector(nn.Module):
    """Open-vocabulary detection and grounding with a Grounding DINO model.

    Args:
        model: ``GroundingDinoForObjectDetection``.
        tokenizer: Its (BERT) tokenizer; a fast tokenizer is needed to map tokens to class
            names. Without one, give ``input_ids`` and ``spans`` to :meth:`forward`.
        mean: Per-band normalisation mean of 0-1 inputs (ImageNet by default).
        std: Per-band normalisation std.
    """

    def __init__(self, model: nn.Module, tokenizer: Any = None, *,
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1), persistent=False)

    def prompt(self, names: Sequence[str]) -> tuple[dict[str, Tensor], list[list[int]]]:
        """Token ids of ``"name1 . name2 ."`` and the token positions of each name."""
        clean = [str(n).strip().replace("_", " ") for n in names]
        if not clean or any(not n for n in clean):
            raise InputError("class names must be non-empty", parameter="classes")
        if self.tokenizer is None:
            raise InputError("this detector has no tokenizer; pass input_ids and spans",
                             parameter="tokenizer")
        text, starts = "", []
        for n in clean:
            starts.append((len(text), len(text) + len(n)))
            text += n + " . "
        enc = self.tokenizer([text.strip()], return_tensors="pt", return_offsets_mapping=True)
        offsets = enc.pop("offset_mapping")[0].tolist()
        spans = []
        for a, b in starts:
            idx = [i for i, (s, e) in enumerate(offsets) if e > s and s >= a and e <= b]
            if not idx:
                raise InputError(f"class name {clean[len(spans)]!r} has no token",
                                 parameter="classes")
            spans.append(idx)
        return dict(enc), spans

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Any:
        """Raw model outputs for (B, 3, H, W) 0-1 images and one tokenised prompt (1, L)."""
        if images.ndim != 4 or images.shape[1] != self.mean.shape[1]:  # type: ignore[index]
            raise InputError(f"expected (B, {self.mean.shape[1]}, H, W) images, got "  # type: ignore[index]
                             f"{tuple(images.shape)}", parameter="images")
        b = images.shape[0]
        ids = input_ids.expand(b, -1)
        mask = torch.ones_like(ids) if attention_mask is None else attention_mask.expand(b, -1)
        kwargs: dict[str, Any] = {}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids.expand(b, -1)
        pixels = (images - self.mean) / self.std
        return self.model(pixel_values=pixels, input_ids=ids, attention_mask=mask, **kwargs)

    @staticmethod
    def to_detections(outputs: Any, spans: Sequence[Sequence[int]], size: tuple[int, int], *,
                      score_threshold: float = 0.0) -> list[dict[str, Tensor]]:
        """Per image ``boxes`` (N, 4) xyxy pixels (clipped), ``scores`` and ``labels``.

        A query's score for a class is the highest sigmoid logit over the class's tokens; each
        query keeps its best class.
        """
        logits = outputs.logits.float().sigmoid()  # (B, Q, L)
        per_class = torch.stack([logits[..., list(s)].max(-1).values for s in spans], -1)
        scores, labels = per_class.max(-1)
        h, w = size
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=logits.device)
        boxes = cxcywh_to_xyxy(outputs.pred_boxes.float().reshape(-1, 4)).reshape(
            outputs.pred_boxes.shape) * scale
        out = []
        for i in range(len(scores)):
            keep = scores[i] >= score_threshold
            bx = clip_boxes(boxes[i][keep], h, w)
            order = scores[i][keep].argsort(descending=True)
            out.append({"boxes": bx[order], "scores": scores[i][keep][order],
                        "labels": labels[i][keep][order]})
        return out

    @torch.no_grad()
    def detect(self, images: Tensor, names: Sequence[str], *, score_threshold: float = 0.3
               ) -> list[dict[str, Tensor]]:
        """Detections of the named classes in (B, 3, H, W) 0-1 images (our box format)."""
        enc, spans = self.prompt(names)
        outputs = self(images, enc["input_ids"], enc.get("attention_mask"),
                       enc.get("token_type_ids"))
        return self.to_detections(outputs, spans, (images.shape[-2], images.shape[-1]),
                                  score_threshold=score_threshold)

    @torch.no_grad()
    def ground(self, image: Tensor, expression: str) -> dict[str, Any]:
        """The box (xyxy pixels) of the query that matches ``expression`` best."""
        text = " ".join(str(expression).split())
        if not text:
            raise InputError("the expression is empty", parameter="expression")
        if self.tokenizer is None:
            raise InputError("this detector has no tokenizer", parameter="tokenizer")
        enc = dict(self.tokenizer([text], return_tensors="pt"))
        outputs = self(image[None] if image.ndim == 3 else image, enc["input_ids"],
                       enc.get("attention_mask"), enc.get("token_type_ids"))
        n = int(enc["input_ids"].shape[1])
        spans = [list(range(1, max(2, n - 1)))]  # every word token, not [CLS]/[SEP]
        det = self.to_detections(outputs, spans, (image.shape[-2], image.shape[-1]))[0]
        return {"box": det["boxes"][0], "score": float(det["scores"][0])}
