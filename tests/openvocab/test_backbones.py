"""Both encoder paths (open_clip towers, SAM guidance) build from small random configurations."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from eokit.core.errors import InputError
from eokit.openvocab.backbones import SamGuidance, build_encoders
from eokit.openvocab.model import OpenVocabSegmenter

HAS_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None
HAS_SAM = importlib.util.find_spec("segment_anything") is not None

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_SAM = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2,
            "out_chans": 16, "window_size": 2, "global_attn_indexes": (1,), "use_rel_pos": True}


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip not installed")
def test_open_clip_pair_builds_and_segments_any_tile() -> None:
    torch.manual_seed(0)
    cfg = {"encoder": "open_clip", "clip_model": "eokit-ov-tiny-clip", "clip_config": TINY_CLIP}
    image, text, guidance = build_encoders(cfg, pretrained=False)
    assert guidance is None and not any(p.requires_grad for p in text.parameters())
    emb = text.encode(["a satellite image of a road.", "an aerial photo of water."])
    model = OpenVocabSegmenter(image, int(text.dim), 1, decoder_dims=(8,)).eval()
    assert model.clip_like and model.feature_stride == 8
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 64, 64), emb[:, None])
        cosine = OpenVocabSegmenter(image, int(text.dim), 1, head="cosine").eval()
        base = cosine(torch.rand(1, 3, 64, 64), emb[:, None])
    assert logits.shape == (1, 2, 64, 64) and torch.isfinite(logits).all()
    assert base.shape == (1, 2, 64, 64) and torch.isfinite(base).all()


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip not installed")
def test_open_clip_weights_of_another_model_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    bad = tmp_path / "other.safetensors"
    save_file({"positional_embedding": torch.zeros(3, 3)}, str(bad))
    cfg = {"encoder": "open_clip", "clip_model": "eokit-ov-tiny-clip", "clip_config": TINY_CLIP,
           "clip_weights": str(bad)}
    with pytest.raises(InputError, match="do not match"):
        build_encoders(cfg)


@pytest.mark.skipif(not HAS_SAM, reason="segment-anything not installed (pip install "
                                        "'eokit[clip]')")
def test_sam_guidance_builds_from_a_random_config_and_guides_the_refinement(
        tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from eokit.core.encoders import build_image_encoder

    torch.manual_seed(0)
    sam = SamGuidance(config=TINY_SAM)
    maps = sam(torch.rand(2, 3, 64, 64))
    assert maps[0].shape == (2, 16, 4, 4)
    encoder = build_image_encoder("efficientnet_lite0", pretrained=False, frozen_bn=True)
    model = OpenVocabSegmenter(encoder, 8, 2, guidance_encoder=sam).eval()
    assert model.guidance_raw_channels == 16
    with torch.no_grad():
        logits, aux = model(torch.rand(1, 3, 64, 64), torch.randn(3, 2, 8), return_aux=True)
    assert logits.shape == (1, 3, 64, 64)
    assert aux["bp_target"].shape[1] == 16 and aux["bp_pred"].shape == aux["bp_target"].shape
    # a checkpoint with the image_encoder.* keys of a full SAM model loads into it
    path = tmp_path / "sam.safetensors"
    save_file({f"image_encoder.{k}": v.contiguous() for k, v in sam.body.state_dict().items()},
              str(path))
    again = SamGuidance(config=TINY_SAM, checkpoint=path)
    for key, value in sam.body.state_dict().items():
        assert torch.equal(again.body.state_dict()[key], value)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"pos_embed": torch.zeros(1, 2, 2, 3)}, str(wrong))
    with pytest.raises(InputError, match="SAM weights do not match"):
        SamGuidance(config=TINY_SAM, checkpoint=wrong)
