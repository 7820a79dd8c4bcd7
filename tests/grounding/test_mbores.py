"""MB-ORES head: soft selection, ablation switches, padding, and learning a relation."""

from __future__ import annotations

import pytest
import torch

from eokit.core.errors import InputError
from eokit.grounding.mbores import MBORESHead, grounding_loss, soft_select


def test_soft_selection_is_differentiable_and_tends_to_the_argmax_box() -> None:
    logits = torch.tensor([[0.3, 1.2, -0.5]], requires_grad=True)
    boxes = torch.tensor([[[0.0, 0, 1, 1], [2, 2, 3, 3], [5, 5, 6, 6]]])
    probs, box = soft_select(logits, boxes)
    assert torch.isclose(probs.sum(), torch.tensor(1.0))
    box.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    _, cold = soft_select(logits.detach(), boxes, temperature=1e-3)
    torch.testing.assert_close(cold, boxes[:, 1])
    # padding never receives weight, even when its score is the largest
    mask = torch.tensor([[True, False, True]])
    probs, box = soft_select(logits.detach(), boxes, mask, temperature=1e-3)
    assert probs[0, 1] == 0 and torch.allclose(box, boxes[:, 0])
    with pytest.raises(InputError, match="temperature"):
        soft_select(logits, boxes, temperature=0.0)


def nodes(b: int, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    x0 = torch.rand(b, n, 1, generator=gen) * 0.8
    y0 = torch.rand(b, n, 1, generator=gen) * 0.8
    boxes = torch.cat([x0, y0, x0 + 0.1, y0 + 0.1], -1)
    return {"features": torch.randn(b, n, 6, generator=gen),
            "class_embed": torch.randn(b, n, 8, generator=gen),
            "boxes": boxes, "mask": torch.ones(b, n, dtype=torch.bool)}


@pytest.mark.parametrize("multi_branch,selection", [(True, "soft"), (False, "soft"),
                                                    (True, "hard")])
def test_head_shapes_and_padding(multi_branch: bool, selection: str) -> None:
    gen = torch.Generator().manual_seed(0)
    head = MBORESHead(6, 8, dim=16, heads=2, branch_layers=1, reasoner_layers=1,
                      multi_branch=multi_branch, selection=selection).eval()
    g = nodes(3, 5, gen)
    g["mask"][0, 3:] = False
    tokens, tmask = torch.randn(3, 4, 8, generator=gen), torch.ones(3, 4, dtype=torch.bool)
    out = head(g, tokens, tmask)
    assert out["logits"].shape == (3, 5) and out["box"].shape == (3, 4)
    assert torch.all(out["probs"][0, 3:] == 0)
    # padded proposals change nothing for the real ones
    g2 = {k: v.clone() for k, v in g.items()}
    g2["features"][0, 3:] = 100.0
    torch.testing.assert_close(head(g2, tokens, tmask)["box"], out["box"])
    g["mask"][1] = False
    with pytest.raises(InputError, match="no proposal"):
        head(g, tokens, tmask)


def test_head_learns_a_spatial_relation_from_the_expression() -> None:
    # "leftmost" / "rightmost" / "topmost": the answer depends on the expression and on the
    # other proposals' boxes, which only the reasoner's attention across proposals can see
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    words = torch.randn(3, 8, generator=gen)
    head = MBORESHead(6, 8, dim=32, heads=4, branch_layers=1, reasoner_layers=2, dropout=0.0)
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)

    def batch(n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        g = nodes(n, 6, gen)
        which = torch.randint(0, 3, (n,), generator=gen)
        cx, cy = g["boxes"][..., 0], g["boxes"][..., 1]
        pick = torch.where(which == 0, cx.argmin(1), torch.where(which == 1, cx.argmax(1),
                                                                 cy.argmin(1)))
        target = g["boxes"][torch.arange(n), pick]
        return g, words[which][:, None], torch.ones(n, 1, dtype=torch.bool), target

    for _ in range(150):
        g, tok, tm, target = batch(32)
        loss = grounding_loss(head(g, tok, tm), target, g["boxes"], g["mask"])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    g, tok, tm, target = batch(200)
    with torch.no_grad():
        out = head(g, tok, tm, temperature=0.05)
    from eokit.grounding.boxes import elementwise_iou

    accuracy = (elementwise_iou(out["box"], target) > 0.5).float().mean()
    assert accuracy > 0.8
