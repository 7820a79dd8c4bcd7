"""MB-ORES grounding head: multi-branch proposal encoding, object reasoner, soft selection.

Following Radouane et al. ("MB-ORES: A Multi-Branch Object Reasoner for Visual Grounding in
Remote Sensing"), each image becomes a graph of detector proposals. A node carries three views
of one proposal: its visual query (pyramid features at the proposal's cell), its categorical
view (the class-name embedding of the detector's class probabilities) and its spatial view
(the box, normalised to the image). Each view has its own branch of ``branch_layers``
cross-attention layers to the encoded referring expression; a fusion layer merges the three
into a task-aware proposal. The object reasoner (``reasoner_layers`` transformer-decoder
layers: self-attention across proposals, so relations between objects can be read, and
cross-attention to the expression) scores every proposal. The answer box is the
probability-weighted combination of the proposal boxes (soft selection, differentiable; it
tends to the best proposal as the temperature goes to 0), refined by a small box head.

Ablation switches: ``multi_branch=False`` sums the three views and sends them straight to the
reasoner (the paper's "without the multi-branch network"); ``selection="hard"`` answers with
the arg-max proposal (trained through the proposal term only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eokit.core.errors import InputError
from eokit.grounding.boxes import cxcywh_to_xyxy, elementwise_giou, xyxy_to_cxcywh

__all__ = ["MBORESHead", "box_features", "grounding_loss", "soft_select"]

BOX_FEATURES = 9


def box_features(boxes: Tensor) -> Tensor:
    """(..., 4) normalised xyxy -> (..., 9): xyxy, centre, size, log area."""
    cxcywh = xyxy_to_cxcywh(boxes.reshape(-1, 4)).reshape(boxes.shape)
    area = (cxcywh[..., 2] * cxcywh[..., 3]).clamp(min=1e-6).log()[..., None]
    return torch.cat([boxes, cxcywh, area], -1)


def soft_select(logits: Tensor, boxes: Tensor, mask: Tensor | None = None,
                temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Probability-weighted box of each sample.

    Args:
        logits: (B, N) proposal scores.
        boxes: (B, N, 4) proposal boxes.
        mask: (B, N) True for real proposals (padding gets no weight).
        temperature: Softmax temperature (> 0); small values approach the arg-max box.

    Returns:
        ``probs`` (B, N) and the selected ``box`` (B, 4).
    """
    if temperature <= 0:
        raise InputError(f"must be > 0, got {temperature}", parameter="temperature")
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(logits / temperature, dim=-1)
    return probs, torch.einsum("bn,bnc->bc", probs, boxes)


class _CrossLayer(nn.Module):
    """Pre-norm cross-attention from nodes to expression tokens, then a feed-forward block."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_f = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(2 * dim, dim))

    def forward(self, x: Tensor, memory: Tensor, memory_pad: Tensor) -> Tensor:
        q = self.norm_q(x)
        x = x + self.attn(q, memory, memory, key_padding_mask=memory_pad,
                          need_weights=False)[0]
        return x + self.ffn(self.norm_f(x))  # type: ignore[no-any-return]


class _Branch(nn.Module):
    def __init__(self, in_dim: int, dim: int, heads: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim))
        self.layers = nn.ModuleList(_CrossLayer(dim, heads, dropout) for _ in range(layers))

    def forward(self, x: Tensor, memory: Tensor, memory_pad: Tensor,
                cross: bool = True) -> Tensor:
        x = self.proj(x)
        if cross:
            for layer in self.layers:
                x = layer(x, memory, memory_pad)
        return x


class MBORESHead(nn.Module):
    """Scores detector proposals against a referring expression and selects the answer box.

    Args:
        feat_dim: Width of the proposals' visual features.
        text_dim: Width of class and expression token embeddings.
        dim: Width inside the head.
        heads: Attention heads.
        branch_layers: Cross-attention layers per branch (k).
        reasoner_layers: Object-reasoner decoder layers (l).
        multi_branch: Use the three branches and fusion (False: the ablation).
        selection: ``"soft"`` (probability-weighted boxes) or ``"hard"`` (arg-max).
        temperature: Soft-selection temperature.
        refine: Add a box head that refines the selected box.
        dropout: Dropout in attention and feed-forward blocks.
    """

    def __init__(self, feat_dim: int, text_dim: int, *, dim: int = 128, heads: int = 4,
                 branch_layers: int = 2, reasoner_layers: int = 2, multi_branch: bool = True,
                 selection: str = "soft", temperature: float = 1.0, refine: bool = True,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if selection not in ("soft", "hard"):
            raise InputError(f"use 'soft' or 'hard', got {selection!r}", parameter="selection")
        if dim % heads:
            raise InputError(f"dim {dim} is not a multiple of heads {heads}", parameter="heads")
        self.multi_branch, self.selection = multi_branch, selection
        self.temperature, self.refine = temperature, refine
        self.text = nn.Sequential(nn.Linear(text_dim, dim), nn.LayerNorm(dim))
        self.visual = _Branch(feat_dim, dim, heads, branch_layers, dropout)
        self.spatial = _Branch(BOX_FEATURES, dim, heads, branch_layers, dropout)
        self.category = _Branch(text_dim, dim, heads, branch_layers, dropout)
        self.fusion = nn.Sequential(nn.Linear(3 * dim, dim), nn.LayerNorm(dim), nn.GELU(),
                                    nn.Linear(dim, dim))
        layer = nn.TransformerDecoderLayer(dim, heads, 2 * dim, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.reasoner = nn.TransformerDecoder(layer, reasoner_layers)
        self.score = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 1))
        self.box_head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 4))
        nn.init.zeros_(self.box_head[-1].weight)
        nn.init.zeros_(self.box_head[-1].bias)

    def forward(self, nodes: dict[str, Tensor], tokens: Tensor, token_mask: Tensor,
                *, temperature: float | None = None) -> dict[str, Tensor]:
        """Ground one expression per image.

        Args:
            nodes: ``features`` (B, N, feat_dim), ``class_embed`` (B, N, text_dim), ``boxes``
                (B, N, 4) xyxy normalised to 0-1, ``mask`` (B, N) True for real proposals.
            tokens: (B, L, text_dim) expression token embeddings.
            token_mask: (B, L) True for real tokens.
            temperature: Override of the soft-selection temperature.

        Returns:
            ``logits`` (B, N), ``probs`` (B, N), ``box`` (B, 4) normalised xyxy answer,
            ``selected`` (B, 4) the selection before refinement.
        """
        mask = nodes["mask"]
        if not bool(mask.any(1).all()):
            raise InputError("an image has no proposal to ground against", parameter="nodes")
        memory = self.text(tokens)
        pad = ~token_mask
        boxes = nodes["boxes"]
        geo = box_features(boxes)
        if self.multi_branch:
            fused = self.fusion(torch.cat([self.visual(nodes["features"], memory, pad),
                                           self.spatial(geo, memory, pad),
                                           self.category(nodes["class_embed"], memory, pad)],
                                          -1))
        else:
            fused = (self.visual(nodes["features"], memory, pad, cross=False)
                     + self.spatial(geo, memory, pad, cross=False)
                     + self.category(nodes["class_embed"], memory, pad, cross=False))
        hidden = self.reasoner(fused, memory, tgt_key_padding_mask=~mask,
                               memory_key_padding_mask=pad)
        logits = self.score(hidden).squeeze(-1).masked_fill(~mask, float("-inf"))
        tau = self.temperature if temperature is None else temperature
        if self.selection == "soft":
            probs, selected = soft_select(logits, boxes, mask, tau)
            summary = torch.einsum("bn,bnd->bd", probs, hidden)
        else:
            probs = torch.softmax(logits, -1)
            best = logits.argmax(-1)
            rows = torch.arange(len(best), device=best.device)
            selected, summary = boxes[rows, best], hidden[rows, best]
        box = selected
        if self.refine:
            delta = self.box_head(summary)
            cxcywh = xyxy_to_cxcywh(selected)
            cxcywh = torch.cat([cxcywh[:, :2] + 0.1 * delta[:, :2] * cxcywh[:, 2:],
                                cxcywh[:, 2:] * torch.exp(0.1 * delta[:, 2:].clamp(-5, 5))], 1)
            box = cxcywh_to_xyxy(cxcywh).clamp(0, 1)
        return {"logits": logits, "probs": probs, "box": box, "selected": selected}


def grounding_loss(out: dict[str, Tensor], target: Tensor, boxes: Tensor, mask: Tensor, *,
                   proposal_weight: float = 1.0, positive_iou: float = 0.5) -> dict[str, Tensor]:
    """L1 + GIoU on the answer box plus a proposal-level cross-entropy.

    The proposal term's target is the proposal that overlaps the target box most, for samples
    where that overlap reaches ``positive_iou`` (others have no proposal term).

    Args:
        out: :meth:`MBORESHead.forward` output.
        target: (B, 4) normalised xyxy target boxes.
        boxes: (B, N, 4) proposal boxes (normalised).
        mask: (B, N) real proposals.
        proposal_weight: Weight of the proposal cross-entropy.
        positive_iou: Overlap the best proposal needs to be the proposal term's target.
    """
    from eokit.grounding.boxes import box_iou

    l1 = (out["box"] - target).abs().sum(1).mean()
    giou = (1 - elementwise_giou(out["box"], target)).mean()
    ious = torch.stack([box_iou(boxes[i], target[i:i + 1])[:, 0] for i in range(len(target))])
    ious = ious.masked_fill(~mask, -1.0)
    best_iou, best = ious.max(1)
    ok = best_iou >= positive_iou
    if ok.any():
        ce = F.cross_entropy(out["logits"][ok].masked_fill(~mask[ok], -1e4), best[ok])
    else:
        ce = out["logits"].new_zeros(())
    total = proposal_weight * ce
    if out["box"].requires_grad:
        total = total + l1 + giou
    return {"loss": total, "l1": l1.detach(), "giou": giou.detach(), "proposal": ce.detach(),
            "recall": ok.float().mean().detach()}

