"""Grounding DINO through transformers, on a tiny random config: boxes, metrics, placements."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from eokit.grounding.adapt import AdaptSpec, apply_spec, placement_modules
from eokit.grounding.gdino import (
    GDINO_PLACEMENTS,
    GroundingDinoDetector,
    plain_view,
    tiny_config,
)

WORDS = ["ship", "storage", "tank", "plane", "the", "left", "of", "bridge", "."]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from transformers import BertTokenizerFast

    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab))


def build(tokenizer) -> GroundingDinoDetector:  # type: ignore[no-untyped-def]
    from transformers import GroundingDinoForObjectDetection

    torch.manual_seed(0)
    return GroundingDinoDetector(GroundingDinoForObjectDetection(tiny_config()).eval(), tokenizer)


def test_boxes_in_image_pixels_feed_our_metrics(tokenizer) -> None:  # type: ignore[no-untyped-def]
    from eokit.grounding.metrics import detection_map, grounding_metrics

    det = build(tokenizer)
    enc, spans = det.prompt(["ship", "storage tank"])
    assert spans[0] == [1] and spans[1] == [3, 4]  # [CLS] ship . storage tank . [SEP]
    images = torch.rand(2, 3, 64, 64)
    dets = det.detect(images, ["ship", "storage tank"], score_threshold=0.0)
    assert len(dets) == 2
    for d in dets:
        b = d["boxes"]
        assert b.shape == (8, 4) and d["labels"].max() <= 1
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 64).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
        assert (d["scores"][:-1] >= d["scores"][1:]).all()
    # the top detection of an image as its only ground truth: a perfect single-image AP
    target = [{"boxes": dets[0]["boxes"][:1], "labels": dets[0]["labels"][:1]}]
    value = detection_map(dets[:1], target)["mAP@0.5"]
    assert value == pytest.approx(100.0) or value == pytest.approx(1.0)
    answer = det.ground(images[0], "the ship left of the bridge")
    m = grounding_metrics(answer["box"][None], dets[0]["boxes"][:1])
    assert 0.0 <= m["Pr@0.5"] <= 1.0 and m["count"] == 1


def test_pixel_scale_follows_image_size(tokenizer) -> None:  # type: ignore[no-untyped-def]
    det = build(tokenizer)
    enc, spans = det.prompt(["ship"])
    out = det(torch.rand(1, 3, 64, 96), enc["input_ids"], enc["attention_mask"])
    boxes = det.to_detections(out, spans, (64, 96))[0]["boxes"]
    from eokit.grounding.boxes import clip_boxes, cxcywh_to_xyxy

    expected = clip_boxes(cxcywh_to_xyxy(out.pred_boxes[0]) * torch.tensor([96.0, 64, 96, 64]),
                          64, 96)
    assert torch.allclose(boxes.sort(0).values, expected.sort(0).values)


FAMILIES = {"text": ("model.text_backbone.",),
            "vision": ("model.backbone.conv_encoder.", ".deformable_layer.self_attn."),
            "fusion": (".fusion_layer.attn.",),
            "decoder": ("model.decoder.layers.",)}


def test_each_placement_matches_only_its_modules(tokenizer) -> None:  # type: ignore[no-untyped-def]
    model = build(tokenizer).model
    seen: dict[str, set[str]] = {}
    for place, marks in FAMILIES.items():
        names = placement_modules(model, place, GDINO_PLACEMENTS)
        assert names, place
        assert all(any(m in n for m in marks) for n in names), place
        assert all(isinstance(model.get_submodule(n), torch.nn.Linear) for n in names)
        seen[place] = set(names)
    places = list(seen)
    for i, a in enumerate(places):
        for b in places[i + 1:]:
            assert not seen[a] & seen[b], (a, b)
    # attention only: no feed-forward, box head or projection into the transformer
    every = set().union(*seen.values())
    assert not any(n.endswith((".fc1", ".fc2")) or "bbox_embed" in n or "input_proj" in n
                   for n in every)
    assert len(placement_modules(model, "all", GDINO_PLACEMENTS)) == len(every)


@pytest.mark.parametrize("spec", [AdaptSpec(lora=("text",)), AdaptSpec(lora=("vision",)),
                                  AdaptSpec(lora=("fusion",)), AdaptSpec(lora=("decoder",)),
                                  AdaptSpec(bitfit=True)], ids=lambda s: s.lora[0] if s.lora
                         else "bitfit")
def test_methods_train_only_what_they_name(tokenizer, spec: AdaptSpec) -> None:  # type: ignore[no-untyped-def]
    det = build(tokenizer)
    model = det.model
    trainable = set(apply_spec(plain_view(model), spec, rules=GDINO_PLACEMENTS))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    enc, _ = det.prompt(["ship", "plane"])
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    out = det(torch.rand(2, 3, 64, 64), enc["input_ids"], enc["attention_mask"])
    (out.logits.float().sigmoid().mean() + out.pred_boxes.mean()).backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed and changed <= trainable
    if spec.bitfit:
        assert all(n.endswith(".bias") for n in trainable)
    else:
        assert all("lora_" in n for n in trainable)
        place = spec.lora[0]
        assert all(any(m in n for m in FAMILIES[place]) for n in trainable)


def test_load_refuses_a_folder_without_config(tmp_path: Path) -> None:
    from eokit.core.errors import InputError
    from eokit.grounding.gdino import load_grounding_dino

    with pytest.raises(InputError, match="config.json"):
        load_grounding_dino(tmp_path)
