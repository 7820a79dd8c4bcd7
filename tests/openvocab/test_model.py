"""Model maths of the open-vocabulary segmenter: rotation ensemble, class refinement, losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eokit.core.encoders import build_image_encoder
from eokit.core.errors import InputError
from eokit.openvocab.model import (
    ClassRefinement,
    OpenVocabSegmenter,
    RotationSet,
    harmonic_miou,
    openvocab_loss,
    seen_unseen_scores,
)

TEXT_DIM, PROMPTS = 16, 3


def _model(**kwargs: object) -> OpenVocabSegmenter:
    torch.manual_seed(0)
    encoder = build_image_encoder("efficientnet_lite0", pretrained=False, frozen_bn=True)
    return OpenVocabSegmenter(encoder, TEXT_DIM, PROMPTS, **kwargs).eval()  # type: ignore[arg-type]


def _text(k: int, seed: int = 1) -> torch.Tensor:
    return torch.nn.functional.normalize(
        torch.randn(k, PROMPTS, TEXT_DIM, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_rotation_ensemble_volume_rotates_with_the_input() -> None:
    model = _model()
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    text = _text(4)
    with torch.no_grad():
        volume = model.pooled_correlation(model.encode(image), text)
        turned = model.pooled_correlation(model.encode(torch.rot90(image, 1, (-2, -1))), text)
    assert torch.allclose(turned, torch.rot90(volume, 1, (-2, -1)), atol=1e-5)


def test_single_rotation_volume_is_not_rotation_invariant() -> None:
    # the check above can fail: without the ensemble the encoder's padding breaks the symmetry
    model = _model(rotations=(0,))
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    text = _text(4)
    with torch.no_grad():
        volume = model.pooled_correlation(model.encode(image), text)
        turned = model.pooled_correlation(model.encode(torch.rot90(image, 1, (-2, -1))), text)
    assert not torch.allclose(turned, torch.rot90(volume, 1, (-2, -1)), atol=1e-5)


def test_rotation_set_rejects_other_angles() -> None:
    for angles in ([], [45], [0, 0], [360]):
        with pytest.raises(InputError):
            RotationSet(angles)


@pytest.mark.parametrize("k", [1, 2, 5, 9])
def test_class_refinement_takes_any_number_of_classes_and_is_equivariant(k: int) -> None:
    torch.manual_seed(0)
    block = ClassRefinement(8, TEXT_DIM).eval()
    x = torch.randn(2, k, 8, 3, 4)
    text = torch.randn(k, TEXT_DIM)
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(k))
    with torch.no_grad():
        out = block(x, text)
        out_perm = block(x[:, perm], text[perm])
    assert out.shape == x.shape
    assert torch.allclose(out_perm, out[:, perm], atol=1e-5)
    if k > 1:  # classes do interact: changing one class changes the others
        x2 = x.clone()
        x2[:, 0] = torch.randn_like(x2[:, 0])
        with torch.no_grad():
            assert not torch.allclose(block(x2, text)[:, 1:], out[:, 1:], atol=1e-4)


def test_full_model_is_permutation_equivariant_over_classes() -> None:
    model = _model()
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    text = _text(6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        logits = model(image, text)
        permuted = model(image, text[perm])
        three = model(image, text[:3])
    assert logits.shape == (1, 6, 64, 64)
    assert three.shape == (1, 3, 64, 64)
    assert torch.allclose(permuted, logits[:, perm], atol=1e-4)


@pytest.mark.parametrize("switches", [{}, {"rotations": (0,)}, {"guidance": False},
                                      {"back_projection": False},
                                      {"class_refinement": False}, {"head": "cosine"},
                                      {"rotation_pool": "stack"}])
def test_ablations_build_and_predict(switches: dict[str, object]) -> None:
    model = _model(**switches)
    with torch.no_grad():
        logits, aux = model(torch.rand(2, 3, 32, 32), _text(3), return_aux=True)
    assert logits.shape == (2, 3, 32, 32) and torch.isfinite(logits).all()
    wants_bp = switches.get("back_projection", True) and switches.get("guidance", True) \
        and switches.get("head", "aggregate") == "aggregate"
    assert ("bp_pred" in aux) == bool(wants_bp)


def test_ignore_pixels_give_no_gradient() -> None:
    model = _model().train()
    image = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    labels = torch.randint(0, 3, (2, 64, 64), generator=torch.Generator().manual_seed(5))
    labels[0] = 255  # a whole ignored image
    labels[1, :32] = 255  # and the top half of the other
    logits, aux = model(image, _text(3), return_aux=True)
    logits.retain_grad()
    losses = openvocab_loss(logits, labels, aux, bp_weight=1.0)
    assert float(losses["bp"].detach()) > 0
    # the back-projection term alone: no gradient on the feature cells that are all ignored
    (bp_grad,) = torch.autograd.grad(losses["bp"], aux["bp_pred"], retain_graph=True)
    assert bp_grad[0].abs().max() == 0 and bp_grad[1, :, :4].abs().max() == 0
    assert bp_grad[1, :, 4:].abs().max() > 0
    losses["loss"].backward()
    ignored = labels == 255
    assert logits.grad is not None
    assert logits.grad.permute(1, 0, 2, 3)[:, ignored].abs().max() == 0
    assert logits.grad.permute(1, 0, 2, 3)[:, ~ignored].abs().max() > 0


def test_loss_ignores_labels_and_logits_at_ignore_pixels() -> None:
    logits = torch.randn(1, 3, 8, 8)
    labels = torch.randint(0, 3, (1, 8, 8))
    labels[0, :4] = 255
    changed = logits.clone()
    changed[0, :, :4] = 100 * torch.randn(3, 4, 8)
    a = openvocab_loss(logits, labels)["loss"]
    b = openvocab_loss(changed, labels)["loss"]
    assert torch.allclose(a, b)
    with pytest.raises(InputError):
        openvocab_loss(logits, torch.full((1, 8, 8), 3))


def test_h_miou_from_a_hand_computed_confusion_matrix() -> None:
    # rows = reference, columns = prediction
    matrix = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])
    # IoU_0 = 5/(6+7-5) = 5/8, IoU_1 = 3/(6+4-3) = 3/7, IoU_2 = 4/(4+5-4) = 4/5
    scores = seen_unseen_scores(matrix, seen=[0, 1], unseen=[2])
    seen = (5 / 8 + 3 / 7) / 2
    assert scores["iou"] == pytest.approx([5 / 8, 3 / 7, 4 / 5])
    assert scores["seen_miou"] == pytest.approx(seen)
    assert scores["unseen_miou"] == pytest.approx(0.8)
    assert scores["h_miou"] == pytest.approx(2 * seen * 0.8 / (seen + 0.8))
    assert harmonic_miou(0.0, 0.0) == 0.0 and math.isnan(harmonic_miou(float("nan"), 0.5))
    with pytest.raises(InputError):
        seen_unseen_scores(matrix, seen=[0, 1], unseen=[1])
