"""Image and text encoders: remapped weights, band adaptation, bad weights files, text towers."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from eokit.core.encoders import (
    build_image_encoder,
    build_open_clip,
    build_text_encoder,
    load_state_dict_file,
    remap_efficientnet_lite,
)
from eokit.core.errors import InputError
from eokit.core.weights import CATALOGUE, _carrier_file

HAS_REFERENCE = importlib.util.find_spec("efficientnet_lite_pytorch") is not None
HAS_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None


def _installed(entry: str) -> bool:
    path = _carrier_file(CATALOGUE[entry])
    return path is not None and path.is_file()


def _timm_lite(name: str) -> nn.Module:
    import timm

    return timm.create_model(f"tf_{name}", pretrained=False).eval()


@pytest.mark.skipif(not HAS_REFERENCE, reason="efficientnet_lite_pytorch not installed")
@pytest.mark.parametrize("name,size", [("efficientnet_lite0", 224), ("efficientnet_lite2", 260)])
def test_remap_reproduces_reference_logits(name: str, size: int) -> None:
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    reference = EfficientNet.from_name(name.replace("_", "-")).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a swapped BN would show
        for module in reference.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    ours = _timm_lite(name)
    depths = [len(stage) for stage in ours.blocks]
    ours.load_state_dict(remap_efficientnet_lite(reference.state_dict(), depths), strict=True)
    # The reference pads for its native size ('same' padding is static there), so test at it.
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x), atol=1e-5)


def test_remap_rejects_a_block_count_of_another_model() -> None:
    state = {"_blocks.99._expand_conv.weight": torch.zeros(1)}
    with pytest.raises(KeyError):
        remap_efficientnet_lite(state, [1, 2, 2])


@pytest.mark.skipif(not _installed("efficientnet_lite0.imagenet"), reason="carrier not installed")
@pytest.mark.parametrize("name,size", [("efficientnet_lite0", 224), ("efficientnet_lite2", 260)])
def test_pretrained_encoder_recognises_a_real_photo(name: str, size: int) -> None:
    """matplotlib's sample photo of Grace Hopper: ImageNet class 652 (military uniform)."""
    import matplotlib.cbook
    from PIL import Image

    if not _installed(f"{name}.imagenet"):
        pytest.skip("carrier not installed")
    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    photo = photo.resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    encoder = build_image_encoder(name, pretrained=True).eval()
    classifier = _timm_lite(name)
    state = remap_efficientnet_lite(
        load_state_dict_file(_carrier_file(CATALOGUE[f"{name}.imagenet"])),  # type: ignore[arg-type]
        [len(stage) for stage in classifier.blocks],
    )
    classifier.load_state_dict(state)
    with torch.no_grad():
        logits = classifier(encoder.normalize(x))
        features = encoder(encoder.normalize(x))
    assert int(logits.argmax()) == 652
    assert encoder.normalization == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert [f.shape[1] for f in features] == encoder.channels
    assert [f.shape[-1] for f in features] == [-(-size // s) for s in encoder.strides]


def _save_body(tmp_path: Path, name: str = "efficientnet_lite0", in_chans: int = 3) -> Path:
    torch.manual_seed(1)
    body = build_image_encoder(name, pretrained=False, in_chans=in_chans).body
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in body.state_dict().items()}, str(path))
    return path


def test_local_weights_with_more_bands_adapt_the_first_conv(tmp_path: Path) -> None:
    from timm.models import adapt_input_conv

    path = _save_body(tmp_path)
    rgb = load_state_dict_file(path)
    encoder = build_image_encoder("efficientnet_lite0", pretrained=path, in_chans=5)
    stem = encoder.body.conv_stem.weight.detach()
    assert stem.shape[1] == 5
    assert torch.allclose(stem, adapt_input_conv(5, rgb["conv_stem.weight"]))
    assert torch.equal(encoder.body.blocks[3][0].conv_pw.weight, rgb["blocks.3.0.conv_pw.weight"])
    assert len(encoder.normalization["mean"]) == 5
    assert len(encoder(torch.zeros(1, 5, 64, 64))) == 5
    with pytest.raises(InputError, match="expected a \\(B, 5, H, W\\)"):
        encoder(torch.zeros(1, 3, 64, 64))


def test_weights_of_another_architecture_are_one_line(tmp_path: Path) -> None:
    path = _save_body(tmp_path, "efficientnet_lite0")
    with pytest.raises(InputError, match="do not fit this encoder") as info:
        build_image_encoder("efficientnet_lite2", pretrained=path)
    assert "\n" not in str(info.value) and path.name in str(info.value)


def test_lukemelas_keys_for_a_non_efficientnet_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "lite.safetensors"
    save_file({"_blocks.0._depthwise_conv.weight": torch.zeros(32, 1, 3, 3)}, str(path))
    with pytest.raises(InputError, match="EfficientNet"):
        build_image_encoder("resnet18", pretrained=path)


class _Payload:
    """Any class outside torch's allow-list makes weights_only loading refuse the pickle."""


def test_pickle_with_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": _Payload()}, path)
    with pytest.raises(InputError, match="weights_only=True") as info:
        load_state_dict_file(path)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="weights_only"):
        build_image_encoder("efficientnet_lite0", pretrained=path)


def test_a_file_that_is_not_weights(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(InputError, match="cannot read weights|weights_only"):
        load_state_dict_file(path)
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"a": torch.ones(2)}, "epoch": 3}, wrapped)
    assert list(load_state_dict_file(wrapped)) == ["a"]


def test_band_count_and_unknown_backbone_errors() -> None:
    with pytest.raises(InputError, match="in_chans"):
        build_image_encoder("efficientnet_lite0", in_chans=0)
    with pytest.raises(InputError, match="cannot build encoder 'no_such_net'"):
        build_image_encoder("no_such_net")


def test_timm_pretrained_without_its_cache_says_what_to_do(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("EOKIT_OFFLINE", "1")
    with pytest.raises(InputError, match="local weights file"):
        build_image_encoder("resnet18", pretrained=True)


def test_frozen_bn_keeps_statistics_in_training() -> None:
    encoder = build_image_encoder("efficientnet_lite0", frozen_bn=True).train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules())
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    encoder(torch.randn(2, 3, 64, 64) * 3 + 1)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    trainable = build_image_encoder("efficientnet_lite0").train()
    stats = trainable.body.bn1.running_mean.clone()
    trainable(torch.randn(2, 3, 64, 64) * 3 + 1)
    assert not torch.equal(stats, trainable.body.bn1.running_mean)


def test_channels_last_and_out_indices() -> None:
    encoder = build_image_encoder("efficientnet_lite0", channels_last=True, out_indices=(2, 4))
    assert encoder.body.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert encoder.channels == [40, 320] and encoder.strides == [8, 32]
    x = torch.randn(1, 3, 64, 64).to(memory_format=torch.channels_last)
    assert [f.shape[1] for f in encoder(x)] == [40, 320]


def test_normalisation_is_not_part_of_the_checkpoint() -> None:
    encoder = build_image_encoder("efficientnet_lite0")
    assert not any(k in ("mean", "std") for k in encoder.state_dict())
    assert torch.allclose(encoder.normalize(torch.ones(1, 3, 2, 2)), torch.ones(1, 3, 2, 2))


needs_minilm = pytest.mark.skipif(not _installed("minilm_l6.sentence"),
                                  reason="all-MiniLM-L6-v2 carrier not installed")


@needs_minilm
def test_text_encoder_equals_sentence_transformers() -> None:
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    texts = ["a satellite image of a harbour", "buildings", "the ship left of the storage tank"]
    ours = build_text_encoder("minilm_l6").eval()
    reference = SentenceTransformer(str(_carrier_file(CATALOGUE["minilm_l6.sentence"]).parent),
                                    device="cpu", local_files_only=True)
    with torch.no_grad():
        mine = ours.encode(texts)
    theirs = torch.from_numpy(reference.encode(texts, normalize_embeddings=True))
    assert mine.shape == (3, 384)
    assert torch.allclose(mine, theirs, atol=1e-5)
    tokens, mask = ours.encode_tokens(texts)
    assert tokens.shape[:2] == mask.shape and tokens.shape[-1] == 384
    assert mask[1].sum() < mask[2].sum()  # padding masked


@needs_minilm
def test_text_encoder_warns_when_it_truncates(caplog: pytest.LogCaptureFixture) -> None:
    encoder = build_text_encoder("minilm_l6", pretrained=False, max_length=8)
    with caplog.at_level(logging.WARNING, logger="eokit.core.encoders"):
        encoder.encode(["short", "one two three four five six seven eight nine ten eleven"])
    assert encoder.last_truncated == [1]
    assert "truncated" in caplog.text
    with pytest.raises(InputError, match="no text"):
        encoder.encode([])


def test_unknown_text_encoder() -> None:
    with pytest.raises(InputError, match="unknown text encoder"):
        build_text_encoder("bert_huge")


TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip not installed")
def test_open_clip_towers_from_a_local_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    image_tower, text_tower = build_open_clip("eokit-tiny-clip", model_config=TINY_CLIP)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in text_tower.model.state_dict().items()}, str(path))
    image_again, text_again = build_open_clip("eokit-tiny-clip", path, model_config=TINY_CLIP)
    texts = ["a ship", "a road"]
    with torch.no_grad():
        emb = text_again.encode(texts)
        assert torch.allclose(emb, text_tower.encode(texts), atol=1e-6)
        maps = image_again(image_again.normalize(torch.rand(1, 3, 32, 32)))
    assert emb.shape == (2, 32) and torch.allclose(emb.norm(dim=-1), torch.ones(2))
    assert maps[0].shape[-2:] == (4, 4)
    bad = tmp_path / "bad.safetensors"
    state = load_state_dict_file(path)
    state["positional_embedding"] = torch.zeros(3, 3)
    save_file(state, str(bad))
    with pytest.raises(InputError, match="do not match 'eokit-tiny-clip'"):
        build_open_clip("eokit-tiny-clip", bad, model_config=TINY_CLIP)
    with pytest.raises(InputError, match="unknown open_clip model"):
        build_open_clip("no-such-clip")
