"""Text-conditioned detector: targets, loss, decoding, open vocabulary, partial labels."""

from __future__ import annotations

import pytest
import torch

from eokit.core.errors import InputError
from eokit.grounding.detector import (
    TextConditionedDetector,
    class_embeddings,
    decode_detections,
    detection_loss,
    encode_targets,
    proposals,
)


def scenes(n: int = 4, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, list[dict]]:
    """Red squares (class 0) and blue bars (class 1) on grey."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.full((n, 3, size, size), 0.4)
    targets = []
    for i in range(n):
        x, y = (int(v) for v in torch.randint(4, size // 2 - 16, (2,), generator=gen))
        images[i, :, y:y + 12, x:x + 12] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
        x2, y2 = x + size // 2, y + size // 2 - 4
        images[i, :, y2:y2 + 6, x2 - 4:x2 + 16] = torch.tensor([0.1, 0.1, 0.9])[:, None, None]
        targets.append({"boxes": torch.tensor([[x, y, x + 12, y + 12],
                                               [x2 - 4, y2, x2 + 16, y2 + 6]], dtype=torch.float32),
                        "labels": torch.tensor([0, 1])})
    return images, targets


def test_targets_peak_at_centres_and_regress_inside_boxes() -> None:
    enc = encode_targets([{"boxes": [[8, 16, 40, 32]], "labels": [1]}], 2, (64, 64))
    heat = enc["heat"][0]
    assert heat[0].max() == 0
    assert heat[1, 3, 3] == 1.0  # centre (24, 24) lies in cell (3, 3) at stride 8
    assert (heat[1] == 1.0).sum() == 1
    cells = enc["box_weight"][0] > 0
    assert cells[3, 3] and cells.sum() >= 1
    assert torch.equal(enc["box"][0, :, 3, 3], torch.tensor([8.0, 16, 40, 32]))
    partial = encode_targets([{"boxes": [[8, 16, 40, 32]], "labels": [1], "complete": False}],
                             2, (64, 64))
    assert partial["neg_weight"].item() == 0.0
    with pytest.raises(InputError, match="label index"):
        encode_targets([{"boxes": [[0, 0, 8, 8]], "labels": [2]}], 2, (64, 64))


def test_partial_labels_give_no_negative_loss() -> None:
    torch.manual_seed(0)
    model = TextConditionedDetector(encoder="efficientnet_lite0", text_dim=8, dim=32)
    images, targets = scenes(2)
    emb = torch.randn(2, 8)
    out = model(images, emb)
    full = detection_loss(out, encode_targets(targets, 2, (64, 64)))
    for t in targets:
        t["complete"] = False
    part = detection_loss(out, encode_targets(targets, 2, (64, 64)))
    assert part["focal"] < full["focal"]
    assert torch.isclose(part["l1"], full["l1"])


class TinyEncoder(torch.nn.Module):
    """A three-stage conv encoder (strides 8/16/32): the head's logic at a fraction of the cost."""

    channels = [16, 24, 32]
    strides = [8, 16, 32]

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(16, 16, 3, 2, 1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(16, 16, 3, 2, 1), torch.nn.ReLU())
        self.s16 = torch.nn.Sequential(torch.nn.Conv2d(16, 24, 3, 2, 1), torch.nn.ReLU())
        self.s32 = torch.nn.Sequential(torch.nn.Conv2d(24, 32, 3, 2, 1), torch.nn.ReLU())

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x - 0.5

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = self.stem(x)
        b = self.s16(a)
        return [a, b, self.s32(b)]


def test_detector_learns_two_classes_and_decodes_their_boxes() -> None:
    torch.manual_seed(0)
    model = TextConditionedDetector(text_dim=8, dim=32, image_encoder=TinyEncoder())
    emb = torch.randn(2, 8)
    images, targets = scenes(8)
    enc = encode_targets(targets, 2, (64, 64))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(80):
        loss = detection_loss(model(images, emb), enc)["loss"]
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first
    model.eval()
    with torch.no_grad():
        out = model(images, emb)
    dets = decode_detections(out, (64, 64), score_threshold=0.2)
    from eokit.grounding.boxes import box_iou

    hits = 0
    for det, target in zip(dets, targets, strict=True):
        for box, label in zip(target["boxes"], target["labels"], strict=True):
            same = det["labels"] == label
            if same.any() and box_iou(det["boxes"][same], box[None]).max() > 0.5:
                hits += 1
    assert hits >= 12  # of 16 objects
    props = proposals(out, (64, 64), num=5)
    assert props["boxes"].shape == (8, 5, 4) and props["features"].shape == (8, 5, 32)
    assert props["mask"].any(1).all()
    # swapping the class embeddings swaps the labels: classes are named, not indexed
    with torch.no_grad():
        swapped = decode_detections(model(images, emb.flip(0)), (64, 64), score_threshold=0.2)
    for before, after in zip(dets, swapped, strict=True):
        pairs = {(tuple(b.round(decimals=3).tolist()), int(k))
                 for b, k in zip(before["boxes"], before["labels"], strict=True)}
        flipped = {(tuple(b.round(decimals=3).tolist()), 1 - int(k))
                   for b, k in zip(after["boxes"], after["labels"], strict=True)}
        assert pairs == flipped


def test_class_names_are_checked_and_prompted() -> None:
    seen: list[str] = []

    def fake(texts: list[str]) -> torch.Tensor:
        seen.extend(texts)
        return torch.ones(len(texts), 4)

    assert class_embeddings(fake, ["storage_tank", "ship"]).shape == (2, 4)
    assert seen == ["a satellite image of a storage tank", "a satellite image of a ship"]
    with pytest.raises(InputError, match="unique"):
        class_embeddings(fake, ["ship", "ship "])
    with pytest.raises(InputError, match="non-empty"):
        class_embeddings(fake, ["ship", "  "])


def test_bad_shapes_refused() -> None:
    model = TextConditionedDetector(text_dim=8, dim=32)
    with pytest.raises(InputError, match="multiples of 32"):
        model(torch.zeros(1, 3, 60, 64), torch.zeros(2, 8))
    with pytest.raises(InputError, match="class embeddings"):
        model(torch.zeros(1, 3, 64, 64), torch.zeros(2, 5))
