"""EarthPT-style causal transformer over pixel time series, and the Dargana fine-tuning head.

A token is one pixel on one date: its bands scaled to about [-1, 1] (the scaling is fitted once on
the pretraining data and stored in the model as buffers), a validity flag, and sin/cos of the day
of year of this date and of the next one. An MLP embeds the token, learned position embeddings are
added, and a stack of pre-norm GPT blocks with a causal mask (invalid tokens are never attended to
by later tokens) produces one hidden state per date. The pretraining objective is next-token
prediction of the scaled bands with a Huber loss where only valid targets count.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eokit.core.errors import InputError

logger = logging.getLogger(__name__)

#: Named sizes (d_model, n_layers, n_heads). ``tiny``/``small`` train on a CPU; EarthPT's
#: published models range from ~10 M to 700 M parameters (``base``/``large`` here are 4.9 M/86 M).
MODEL_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"d_model": 32, "n_layers": 2, "n_heads": 2},
    "small": {"d_model": 64, "n_layers": 3, "n_heads": 4},
    "base": {"d_model": 256, "n_layers": 6, "n_heads": 8},
    "large": {"d_model": 768, "n_layers": 12, "n_heads": 12},
}

#: Extra token features besides the bands: valid flag + sin/cos DOY of this and the next date.
_EXTRA_FEATURES = 5


@dataclass
class SeriesModelConfig:
    """Architecture of :class:`PixelSeriesTransformer`.

    Attributes:
        in_bands: Number of bands per token.
        d_model: Hidden width.
        n_layers: Transformer blocks.
        n_heads: Attention heads.
        mlp_ratio: Width of the block MLP relative to ``d_model``.
        max_len: Longest series (learned positions); longer inputs use their last ``max_len`` dates.
        dropout: Dropout in attention/MLP (0 for pretraining on small data).
        band_names: Names of the bands in order (checked against inputs when given).
    """

    in_bands: int
    d_model: int = 64
    n_layers: int = 3
    n_heads: int = 4
    mlp_ratio: float = 4.0
    max_len: int = 256
    dropout: float = 0.0
    band_names: list[str] | None = field(default=None)

    @classmethod
    def from_size(cls, size: str, in_bands: int, **overrides: Any) -> SeriesModelConfig:
        """Config for a named size (``tiny``, ``small``, ``base``, ``large``)."""
        if size not in MODEL_SIZES:
            raise InputError(f"unknown size {size!r}; choose from {sorted(MODEL_SIZES)}",
                             parameter="size")
        return cls(in_bands=in_bands, **{**MODEL_SIZES[size], **overrides})

    def to_json(self) -> str:
        """JSON text (stored in checkpoint metadata)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SeriesModelConfig:
        """Inverse of :meth:`to_json`."""
        return cls(**json.loads(text))


def doy_features(doy: torch.Tensor) -> torch.Tensor:
    """(…,) day of year -> (…, 2) sin/cos on the annual cycle."""
    angle = 2.0 * math.pi * doy.to(torch.float32) / 365.25
    return torch.stack((torch.sin(angle), torch.cos(angle)), dim=-1)


def next_doy(doy: torch.Tensor, step_days: float | None = None) -> torch.Tensor:
    """Day of year of the next date for every token; the last token gets ``doy + step``.

    Args:
        doy: (B, T) day of year.
        step_days: Gap assumed after the last date (default: median gap of the series).
    """
    if doy.shape[-1] < 2:
        step = torch.full_like(doy[..., :1], 10.0 if step_days is None else step_days)
    elif step_days is None:
        gaps = torch.remainder(doy[..., 1:] - doy[..., :-1], 365.25)
        step = gaps.median(dim=-1, keepdim=True).values
    else:
        step = torch.full_like(doy[..., :1], float(step_days))
    return torch.cat((doy[..., 1:], doy[..., -1:] + step), dim=-1)


#: Compute dtypes accepted by the inference paths (``dtype=``): float32 is exact, bfloat16 runs
#: the matrix products under autocast (about 3 significant digits, faster on CPUs with bf16 units).
INFERENCE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def inference_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """Parse an inference ``dtype`` option (None / ``"float32"`` / ``"bfloat16"``)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in INFERENCE_DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in INFERENCE_DTYPES:
        return INFERENCE_DTYPES[dtype.removeprefix("torch.")]
    raise InputError(f"must be one of {sorted(INFERENCE_DTYPES)}, got {dtype!r}", parameter="dtype")


def _autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    """Autocast to ``dtype`` (no-op for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _chunk_bounds(sorted_counts: list[int], chunk_tokens: int) -> list[tuple[int, int]]:
    """Slices of series (sorted by valid count) holding about ``chunk_tokens`` packed tokens.

    Series without a valid date are left out (their embedding is zero).
    """
    bounds: list[tuple[int, int]] = []
    total = len(sorted_counts)
    start = bisect.bisect_right(sorted_counts, 0)
    while start < total:
        stop = min(total, start + max(1, chunk_tokens // sorted_counts[start]))
        stop = min(stop, start + max(1, chunk_tokens // sorted_counts[stop - 1]))
        bounds.append((start, stop))
        start = stop
    return bounds


#: Tokens per chunk of :meth:`PixelSeriesTransformer.forward` when gradients are off.
_FORWARD_CHUNK_TOKENS = 8192

#: Longest series for which inference uses :func:`_small_attention` (the fused kernel beyond).
_SMALL_ATTENTION_MAX_LEN = 128


def _small_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     mask: torch.Tensor | None) -> torch.Tensor:
    """Causal attention (B, H, T, hd) as two batched matrix products, for inference.

    For short series this beats PyTorch's CPU flash kernel, whose per-(series, head) blocking
    overhead dominates at T of a few dozen. The scores are built transposed (keys x queries), so
    the softmax runs over a non-innermost axis, vectorised across queries (several times faster
    than a softmax over rows of a few dozen values), and always in float32 (attention is a small
    share of the FLOPs; bfloat16 softmax is slower on CPU). ``mask``: (B, 1, T, T) bool
    (True = may attend), or None for the plain causal mask. Returns the dtype of ``q``.
    """
    batch, heads, length, width = q.shape
    rows = batch * heads
    work = torch.promote_types(q.dtype, torch.float32)
    with torch.autocast(q.device.type, enabled=False):
        if mask is None:
            bias = torch.full((length, length), float("-inf"), dtype=work, device=q.device)
            bias = bias.tril(-1).expand(rows, length, length)  # [key, query]: key > query
        else:
            bias = torch.zeros(mask.shape, dtype=work, device=q.device).masked_fill_(
                ~mask, float("-inf"))
            bias = bias.transpose(-1, -2).expand(batch, heads, length, length).reshape(
                rows, length, length)
        scores = torch.baddbmm(
            bias, k.reshape(rows, length, width).to(work),
            q.reshape(rows, length, width).to(work).transpose(1, 2), alpha=width ** -0.5,
        )
        probabilities = scores.softmax(1).transpose(1, 2)
        out = torch.bmm(probabilities, v.reshape(rows, length, width).to(work))
    return out.view(batch, heads, length, width).to(q.dtype)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (fused QKV projection, PyTorch's fused attention kernel)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise InputError(f"d_model {d_model} is not divisible by n_heads {n_heads}",
                             parameter="n_heads")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, D); mask: (B, 1, T, T) bool (True = may attend), or None for plain causal."""
        batch, length, width = x.shape
        # One view of the fused projection as (3, B, heads, T, head_dim): no split copies.
        q, k, v = self.qkv(x).view(
            batch, length, 3, self.n_heads, width // self.n_heads
        ).permute(2, 0, 3, 1, 4).unbind(0)
        dropout_p = self.dropout if self.training else 0.0
        if not torch.is_grad_enabled() and length <= _SMALL_ATTENTION_MAX_LEN:
            out = _small_attention(q, k, v, mask)
        elif mask is None:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        projected: torch.Tensor = self.proj(out.transpose(1, 2).reshape(batch, length, width))
        return projected


class Block(nn.Module):
    """Pre-norm transformer block (GPT-2 layout)."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(d_model * mlp_ratio)
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, hidden)
        self.fc2 = nn.Linear(hidden, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, D); mask as in :class:`CausalSelfAttention` (None: plain causal)."""
        x = x + self.drop(self.attn(self.ln1(x), mask))
        out: torch.Tensor = x + self.drop(self.fc2(F.gelu(self.fc1(self.ln2(x)))))
        return out


class PixelSeriesTransformer(nn.Module):
    """Causal pixel time-series transformer (EarthPT recipe).

    Inputs everywhere are RAW band values (``series`` (B, T, C)), day of year ``doy`` (B, T) and a
    validity mask ``valid`` (B, T); the model applies its stored band scaling itself, so callers
    never re-guess it.

    Args:
        config: Architecture.
        band_center: (C,) value mapped to 0 (default 0).
        band_half_range: (C,) value mapped to ±1 around the centre (default 1).
    """

    band_center: torch.Tensor
    band_half_range: torch.Tensor

    def __init__(
        self,
        config: SeriesModelConfig,
        band_center: np.ndarray | torch.Tensor | None = None,
        band_half_range: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.compute_dtype = torch.float32  # see set_compute_dtype
        c = config.in_bands
        center = torch.zeros(c) if band_center is None else torch.as_tensor(band_center)
        half = torch.ones(c) if band_half_range is None else torch.as_tensor(band_half_range)
        self.register_buffer("band_center", center.to(torch.float32).clone())
        self.register_buffer("band_half_range", half.to(torch.float32).clone())
        d = config.d_model
        self.token_embed = nn.Sequential(
            nn.Linear(c + _EXTRA_FEATURES, d), nn.GELU(), nn.Linear(d, d)
        )
        self.pos_embed = nn.Embedding(config.max_len, d)
        self.blocks = nn.ModuleList(
            Block(d, config.n_heads, config.mlp_ratio, config.dropout)
            for _ in range(config.n_layers)
        )
        self.ln_f = nn.LayerNorm(d)
        self.next_head = nn.Linear(d, c)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    # -- scaling -------------------------------------------------------------------------------
    def scale(self, series: torch.Tensor) -> torch.Tensor:
        """Raw bands -> scaled (about [-1, 1]), clipped to [-5, 5]; NaN stays NaN."""
        return ((series - self.band_center) / self.band_half_range).clamp(-5.0, 5.0)

    def unscale(self, scaled: torch.Tensor) -> torch.Tensor:
        """Scaled bands -> raw units."""
        return scaled * self.band_half_range + self.band_center

    def set_scaling(self, series: np.ndarray, valid: np.ndarray) -> None:
        """Fit the band scaling from valid observations: 1st/99th percentiles map to -1/+1.

        Args:
            series: (N, T, C) raw values.
            valid: (N, T) bool.
        """
        values = np.asarray(series)[np.asarray(valid, dtype=bool)]
        values = values[np.isfinite(values).all(axis=1)]
        if values.shape[0] == 0:
            raise InputError("no valid observation to fit the band scaling", parameter="series")
        if values.shape[0] > 200_000:
            pick = np.random.default_rng(0).choice(values.shape[0], 200_000, replace=False)
            values = values[pick]
        low, high = np.percentile(values, [1.0, 99.0], axis=0)
        half = np.maximum((high - low) / 2.0, 1e-6)
        self.band_center.copy_(torch.as_tensor((high + low) / 2.0, dtype=torch.float32))
        self.band_half_range.copy_(torch.as_tensor(half, dtype=torch.float32))

    def scaling_dict(self) -> dict[str, list[float]]:
        """The stored band scaling as plain lists (for metadata and reports)."""
        return {
            "center": [float(v) for v in self.band_center],
            "half_range": [float(v) for v in self.band_half_range],
        }

    # -- core ----------------------------------------------------------------------------------
    def check_inputs(self, series: torch.Tensor, doy: torch.Tensor, valid: torch.Tensor) -> None:
        """Raise InputError for shape or band-count mismatches."""
        if series.ndim != 3:
            raise InputError(f"expected (batch, dates, bands), got shape {tuple(series.shape)}",
                             parameter="series")
        if series.shape[-1] != self.config.in_bands:
            raise InputError(
                f"has {series.shape[-1]} bands but the model was trained on "
                f"{self.config.in_bands} ({self.config.band_names or 'unnamed'})",
                parameter="series",
            )
        if doy.shape != series.shape[:2] or valid.shape != series.shape[:2]:
            raise InputError(
                f"doy {tuple(doy.shape)} and valid {tuple(valid.shape)} must match "
                f"series {tuple(series.shape[:2])}",
                parameter="doy",
            )

    def tokens(
        self, series: torch.Tensor, doy: torch.Tensor, valid: torch.Tensor,
        next_day: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token features (B, T, C + 5): scaled bands (0 where invalid), valid, DOY now/next."""
        valid = valid & torch.isfinite(series).all(dim=-1)
        scaled = torch.where(valid[..., None], self.scale(torch.nan_to_num(series)), 0.0)
        if next_day is None:
            next_day = next_doy(doy.to(torch.float32))
        return torch.cat(
            (scaled, valid[..., None].to(scaled.dtype), doy_features(doy), doy_features(next_day)),
            dim=-1,
        )

    def set_compute_dtype(self, dtype: str | torch.dtype | None) -> None:
        """Default compute dtype of :meth:`forward` and :meth:`embed` when gradients are off.

        ``"bfloat16"`` runs the matrix products under autocast (faster on CPUs with bf16 units,
        embeddings agree with float32 to a cosine similarity of about 0.9999); ``None`` or
        ``"float32"`` restores exact float32. Not stored in checkpoints; training always runs in
        the dtype of the weights unless the caller sets up autocast itself.
        """
        self.compute_dtype = inference_dtype(dtype)

    def _resolve_dtype(self, dtype: str | torch.dtype | None, *, inference: bool) -> torch.dtype:
        if dtype is not None:
            return inference_dtype(dtype)
        if not inference:
            return torch.float32
        return self.compute_dtype

    def _check_length(self, length: int) -> None:
        if length > self.config.max_len:
            raise InputError(
                f"series has {length} dates, model max_len is {self.config.max_len}",
                parameter="series",
            )

    def forward(
        self, series: torch.Tensor, doy: torch.Tensor, valid: torch.Tensor,
        next_day: torch.Tensor | None = None, *, dtype: str | torch.dtype | None = None,
    ) -> torch.Tensor:
        """Hidden states (B, T, D) of the last layer (after the final LayerNorm), float32.

        Args:
            series: (B, T, C) raw bands (NaN allowed where invalid).
            doy: (B, T) day of year.
            valid: (B, T) bool; invalid tokens carry no band values and later tokens ignore them.
            next_day: (B, T) day of year of the following date (default from ``doy``).
            dtype: Compute dtype (``"float32"`` or ``"bfloat16"`` autocast); default float32, or
                the one chosen with :meth:`set_compute_dtype` when gradients are off.
        """
        valid = valid.to(torch.bool)
        self.check_inputs(series, doy, valid)
        length = series.shape[1]
        self._check_length(length)
        inference = not torch.is_grad_enabled()
        compute = self._resolve_dtype(dtype, inference=inference)
        tokens = self.tokens(series, doy, valid, next_day)
        valid = valid & torch.isfinite(series).all(dim=-1)
        per_chunk = max(1, _FORWARD_CHUNK_TOKENS // length)
        if not inference or series.shape[0] <= per_chunk:
            return self._hidden(tokens, valid, compute)
        # Without gradients, chunks of a few thousand tokens keep the activations in cache.
        return torch.cat([
            self._hidden(tokens[i:i + per_chunk], valid[i:i + per_chunk], compute)
            for i in range(0, series.shape[0], per_chunk)
        ])

    def _hidden(self, tokens: torch.Tensor, valid: torch.Tensor, dtype: torch.dtype
                ) -> torch.Tensor:
        """Last-layer states (B, T, D) float32 of (B, T, F) token features."""
        length = tokens.shape[1]
        mask: torch.Tensor | None = None  # every date valid: the plain causal mask
        if not bool(valid.all()):
            # Causal, and invalid dates are never keys (except for themselves: no empty rows).
            eye = torch.eye(length, dtype=torch.bool, device=tokens.device)
            causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=tokens.device))
            mask = (causal[None] & (valid[:, None, :] | eye[None]))[:, None]
        with _autocast(tokens.device, dtype):
            x = self.token_embed(tokens) + self.pos_embed.weight[:length][None]
            for block in self.blocks:
                x = block(x, mask)
            hidden: torch.Tensor = self.ln_f(x)
        # Autocast output back to float32; float32/float64 weights keep their dtype.
        return hidden.to(torch.promote_types(hidden.dtype, torch.float32))

    def predict_next(
        self, series: torch.Tensor, doy: torch.Tensor, valid: torch.Tensor,
        next_day: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scaled prediction (B, T, C) of the bands of the NEXT date at every position."""
        prediction: torch.Tensor = self.next_head(self(series, doy, valid, next_day))
        return prediction

    def forecast_residual(
        self, series: torch.Tensor, doy: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """How far each valid date departs from the model's forecast of it, (B, T) float32.

        Mean over bands of the squared difference (scaled units) between a date's bands and the
        one-step prediction made at the previous date from the dates before it (causal: a date's
        value depends on it and earlier dates only). NaN at the first date and at invalid dates.
        An abrupt event (a clear-cut, a fire, a flood) shows as a spike on its first observed
        date; a gradual one (a planting that matures over years) does not.
        """
        with torch.no_grad():
            valid = valid.to(torch.bool) & torch.isfinite(series).all(dim=-1)
            prediction = self.predict_next(series, doy, valid)[:, :-1]
            observed = self.scale(torch.nan_to_num(series[:, 1:]))
            error = (observed - prediction).pow(2).mean(dim=-1).float()
            out = torch.full(series.shape[:2], float("nan"), device=series.device)
            out[:, 1:] = torch.where(valid[:, 1:], error, float("nan"))
        return out

    def next_token_loss(
        self, series: torch.Tensor, doy: torch.Tensor, valid: torch.Tensor, *, delta: float = 1.0
    ) -> torch.Tensor:
        """Huber loss of next-token prediction; only valid targets count.

        Returns:
            Scalar loss (0 with grad if no target is valid).
        """
        valid = valid.to(torch.bool) & torch.isfinite(series).all(dim=-1)
        prediction = self.predict_next(series, doy, valid)[:, :-1]
        target = self.scale(torch.nan_to_num(series[:, 1:]))
        weight = valid[:, 1:, None].to(prediction.dtype).expand_as(prediction)
        loss = F.huber_loss(prediction, target, reduction="none", delta=delta)
        return (loss * weight).sum() / weight.sum().clamp_min(1.0)

    def embed(
        self, series: torch.Tensor, doy: torch.Tensor, valid: torch.Tensor, *,
        dtype: str | torch.dtype | None = None, chunk_tokens: int = 4096, workers: int = 1,
    ) -> torch.Tensor:
        """Pixel embedding (B, D): mean of the last layer over valid dates (zeros if none).

        Equal to the mean of :meth:`forward` over the valid dates, computed faster: an invalid
        date is never a key and is not averaged, so it cannot change the embedding and is dropped
        before the transformer. The valid dates of each series are packed to the front (keeping
        their position and next-date features), series are sorted by their number of valid dates
        and grouped into chunks of about ``chunk_tokens`` tokens (the activations stay in cache),
        and each chunk runs in inference mode with the plain causal mask (padding only follows
        the real tokens), which takes PyTorch's fused attention kernel.

        Args:
            series: (B, T, C) raw bands.
            doy: (B, T) day of year.
            valid: (B, T) bool.
            dtype: ``"float32"`` (exact) or ``"bfloat16"`` (autocast); default float32 or the one
                chosen with :meth:`set_compute_dtype`.
            chunk_tokens: Tokens per chunk (a chunk holds at least one series).
            workers: Threads that process chunks side by side, each running torch single-threaded
                (torch's intra-op thread count is 1 while they run and restored afterwards);
                1 runs the chunks in the calling thread with torch's own threads.

        Returns:
            (B, D) float32 embeddings.
        """
        valid = valid.to(torch.bool)
        self.check_inputs(series, doy, valid)
        self._check_length(series.shape[1])
        if chunk_tokens < 1:
            raise InputError(f"must be >= 1, got {chunk_tokens}", parameter="chunk_tokens")
        if workers < 1:
            raise InputError(f"must be >= 1, got {workers}", parameter="workers")
        compute = self._resolve_dtype(dtype, inference=True)
        with torch.inference_mode():
            valid = valid & torch.isfinite(series).all(dim=-1)
            tokens = self.tokens(series, doy, valid)
            counts = valid.sum(dim=1)
            order = torch.argsort(counts, stable=True)
            bounds = _chunk_bounds(counts[order].tolist(), chunk_tokens)

            def run(bound: tuple[int, int]) -> torch.Tensor:
                pick = order[bound[0]:bound[1]]
                return self._embed_packed(tokens[pick], valid[pick], counts[pick], compute)

            if workers > 1 and len(bounds) > 1:
                from concurrent.futures import ThreadPoolExecutor

                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                try:
                    with ThreadPoolExecutor(min(workers, len(bounds))) as pool:
                        parts = list(pool.map(run, bounds))
                finally:
                    torch.set_num_threads(threads)
            else:
                parts = [run(bound) for bound in bounds]
            embedding = torch.zeros(series.shape[0], self.config.d_model, device=series.device)
            for (start, stop), part in zip(bounds, parts, strict=True):
                embedding[order[start:stop]] = part
        # A normal tensor (not an inference tensor): callers may feed it to autograd.
        return embedding.clone()

    def _embed_packed(self, tokens: torch.Tensor, valid: torch.Tensor, counts: torch.Tensor,
                      dtype: torch.dtype) -> torch.Tensor:
        """Mean last-layer state over the valid tokens of (n, T, F) tokens, valid first."""
        with torch.inference_mode():
            length = int(counts.max())
            # A stable sort of "is invalid" moves the valid dates to the front, in date order.
            position = torch.argsort((~valid).to(torch.uint8), dim=1, stable=True)[:, :length]
            packed = tokens.gather(1, position[..., None].expand(-1, -1, tokens.shape[-1]))
            with _autocast(tokens.device, dtype):
                x = self.token_embed(packed) + self.pos_embed.weight[position]
                for block in self.blocks:
                    x = block(x)
                hidden = self.ln_f(x).float()
            real = torch.arange(length, device=tokens.device)[None] < counts[:, None]
            total = (hidden * real[..., None].to(hidden.dtype)).sum(1)
            mean: torch.Tensor = total / counts[:, None].to(hidden.dtype)
            return mean

    @torch.no_grad()
    def forecast(
        self, series: torch.Tensor, doy: torch.Tensor, valid: torch.Tensor, n_steps: int,
        *, step_days: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forecast ``n_steps`` future dates by feeding predictions back in.

        Args:
            series: (B, T, C) raw bands.
            doy: (B, T) day of year.
            valid: (B, T) bool.
            n_steps: Number of future dates.
            step_days: Gap between future dates (default: the median gap of each series).

        Returns:
            (forecast (B, n_steps, C) raw bands, future day-of-year offsets (B, n_steps) in days
            after the last input date).
        """
        if n_steps < 1:
            raise InputError(f"must be >= 1, got {n_steps}", parameter="n_steps")
        doy = doy.to(torch.float32)
        if step_days is None:
            if doy.shape[1] >= 2:
                gaps = torch.remainder(doy[:, 1:] - doy[:, :-1], 365.25)
                step = gaps.median(dim=1, keepdim=True).values.clamp_min(1.0)
            else:
                step = torch.full_like(doy[:, :1], 10.0)
        else:
            if step_days <= 0:
                raise InputError(f"must be > 0, got {step_days}", parameter="step_days")
            step = torch.full_like(doy[:, :1], float(step_days))
        valid = valid.to(torch.bool)
        outputs = []
        for _ in range(n_steps):
            window = self.config.max_len
            s, d, v = series[:, -window:], doy[:, -window:], valid[:, -window:]
            nxt = torch.cat((d[:, 1:], d[:, -1:] + step), dim=1)
            scaled = self.predict_next(s, d, v, nxt)[:, -1]
            raw = self.unscale(scaled)
            outputs.append(raw)
            series = torch.cat((series, raw[:, None]), dim=1)
            doy = torch.cat((doy, torch.remainder(doy[:, -1:] + step - 1.0, 365.25) + 1.0), dim=1)
            valid = torch.cat((valid, torch.ones_like(valid[:, :1])), dim=1)
        offsets = step * torch.arange(1, n_steps + 1, dtype=torch.float32,
                                      device=step.device)[None]
        return torch.stack(outputs, dim=1), offsets


class SeriesHead(nn.Module):
    """Small MLP head on per-date features, with stored feature standardisation.

    Features are shifted and scaled by ``feature_shift`` / ``feature_scale`` (buffers fitted on
    the labelled pixels' features by :meth:`fit_standardisation`, saved with the model), so
    features of very different ranges (states, running extremes, scaled bands) train alike.
    """

    feature_shift: torch.Tensor
    feature_scale: torch.Tensor

    def __init__(self, in_features: int, out_features: int, hidden: int = 64,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, out_features)
        self.drop = nn.Dropout(dropout)
        self.register_buffer("feature_shift", torch.zeros(in_features))
        self.register_buffer("feature_scale", torch.ones(in_features))

    @torch.no_grad()
    def fit_standardisation(self, features: torch.Tensor) -> None:
        """Store mean / std of ``features`` (…, in_features) as the standardisation."""
        flat = features.reshape(-1, features.shape[-1]).to(torch.float64)
        self.feature_shift.copy_(flat.mean(0).to(self.feature_shift.dtype))
        self.feature_scale.copy_(flat.std(0).clamp_min(1e-4).to(self.feature_scale.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (…, in_features) -> (…, out_features)."""
        x = (x - self.feature_shift) / self.feature_scale
        out: torch.Tensor = self.fc2(self.drop(F.gelu(self.fc1(x))))
        return out


def prefix_features(hidden: torch.Tensor, valid: torch.Tensor, *,
                    memory: float | None = None) -> torch.Tensor:
    """Per-date features from the causal prefix: [h_t, summary of h over valid dates <= t].

    Args:
        hidden: (B, T, D) last-layer states.
        valid: (B, T) bool.
        memory: None: the summary is the mean over all valid dates so far (at the last date it
            equals :meth:`PixelSeriesTransformer.embed`). A number k: an exponential moving
            average with weight 1/k per valid date (about the last k observations), which reacts
            faster to changes such as clear-cuts.

    Returns:
        (B, T, 2 D).
    """
    from eokit.timeseries.features import moving_average

    weight = valid[..., None].to(hidden.dtype)
    if memory is None:
        running = (hidden * weight).cumsum(1) / weight.cumsum(1).clamp_min(1.0)
        return torch.cat((hidden, running), dim=-1)
    return torch.cat((hidden, moving_average(hidden, valid, memory)), dim=-1)


class FineTunedSeriesModel(nn.Module):
    """Backbone + head predicting a class (logits) or a value at every date (Dargana).

    Args:
        backbone: Pretrained :class:`PixelSeriesTransformer`.
        out_features: Number of classes (classification) or 1 (regression).
        task: ``"classification"`` or ``"regression"``.
        class_names: Names of the classes (classification).
        hidden: Head width.
        memory: Prefix summary of :func:`prefix_features` (None: mean of all dates so far).
        pooling: ``"mean"`` or ``"stats"`` (adds running mean / max / min of the prefix).
        input_lags: Lagged scaled input tokens given to the head (0: none); see
            :mod:`eokit.timeseries.features`.
        lag_days: Spacing of those lags in days.
        dropout: Head dropout.
        residuals: Give the head the backbone's forecast residuals (see
            :class:`eokit.timeseries.features.HeadFeatureConfig`).
    """

    target_mean: torch.Tensor
    target_std: torch.Tensor

    def __init__(
        self,
        backbone: PixelSeriesTransformer,
        out_features: int,
        *,
        task: str = "classification",
        class_names: list[str] | None = None,
        hidden: int = 64,
        memory: float | None = None,
        pooling: str = "mean",
        input_lags: int = 0,
        lag_days: float = 30.0,
        dropout: float = 0.1,
        residuals: bool = False,
    ) -> None:
        from eokit.timeseries.features import HeadFeatureConfig

        super().__init__()
        if task not in ("classification", "regression"):
            raise InputError(f"must be classification or regression, got {task!r}",
                             parameter="task")
        self.backbone = backbone
        self.task = task
        self.class_names = list(class_names or [])
        self.feature_config = HeadFeatureConfig(pooling=pooling, memory=memory,
                                                input_lags=input_lags, lag_days=lag_days,
                                                residuals=residuals)
        width = self.feature_config.n_features(backbone.config.d_model, backbone.config.in_bands)
        self.head = SeriesHead(width, out_features, hidden, dropout)
        # Further heads of a seed ensemble on the same frozen backbone (see add_member).
        self.extra_heads = nn.ModuleList()
        self.register_buffer("target_mean", torch.zeros(1))
        self.register_buffer("target_std", torch.ones(1))

    def features(self, series: torch.Tensor, doy: torch.Tensor, valid: torch.Tensor
                 ) -> torch.Tensor:
        """(B, T, F) per-date features (:func:`eokit.timeseries.features.head_features`)."""
        from eokit.timeseries.features import head_features

        valid = valid.to(torch.bool) & torch.isfinite(series).all(dim=-1)
        hidden = self.backbone(series, doy, valid)
        config = self.feature_config
        scaled = self.backbone.scale(torch.nan_to_num(series)) \
            if config.input_lags or config.residuals else series
        predicted = self.backbone.next_head(hidden) if config.residuals else None
        return head_features(hidden, scaled, valid, doy, config, predicted)

    @property
    def memory(self) -> float | None:
        """Moving-average memory of the prefix summary (None: mean of all dates so far)."""
        return self.feature_config.memory

    def forward(self, series: torch.Tensor, doy: torch.Tensor, valid: torch.Tensor
                ) -> torch.Tensor:
        """(B, T, K) logits (classification) or standardised values (regression) per date."""
        out: torch.Tensor = self.head(self.features(series, doy, valid))
        return out

    @property
    def members(self) -> int:
        """Heads whose predictions are averaged (1 unless a seed ensemble)."""
        return 1 + len(self.extra_heads)

    def add_member(self, other: FineTunedSeriesModel) -> None:
        """Average ``other``'s head into this model's predictions (a seed ensemble).

        ``other`` must have been fine-tuned head-only on the same frozen backbone, with the same
        features and targets' standardisation, so one forward pass of the backbone serves both.
        """
        same = (other.task == self.task and other.class_names == self.class_names
                and other.feature_config.as_dict() == self.feature_config.as_dict()
                and torch.equal(other.target_mean, self.target_mean)
                and torch.equal(other.target_std, self.target_std)
                and all(torch.equal(a, b) for a, b in zip(
                    self.backbone.state_dict().values(), other.backbone.state_dict().values(),
                    strict=True)))
        if not same:
            raise InputError("ensemble members must share the frozen backbone, features and "
                             "targets", parameter="ensemble")
        self.extra_heads.append(other.head)

    @torch.no_grad()
    def predict(self, series: torch.Tensor, doy: torch.Tensor, valid: torch.Tensor
                ) -> torch.Tensor:
        """(B, T, K) class probabilities or (B, T) values in target units at every date.

        A seed ensemble averages its heads' probabilities (or values).
        """
        features = self.features(series, doy, valid)
        outputs = [head(features) for head in (self.head, *self.extra_heads)]
        if self.task == "classification":
            return torch.stack([out.softmax(-1) for out in outputs]).mean(0)
        values = torch.stack([out[..., 0] for out in outputs]).mean(0)
        return values * self.target_std + self.target_mean


# -- compute accounting ----------------------------------------------------------------------
def forward_flops_per_token(config: SeriesModelConfig, length: int) -> float:
    """Approximate forward FLOPs per token (2 x weights + attention over the causal context)."""
    d = config.d_model
    hidden = int(d * config.mlp_ratio)
    embed = (config.in_bands + _EXTRA_FEATURES) * d + d * d
    per_block = 3 * d * d + d * d + 2 * d * hidden
    weights = embed + config.n_layers * per_block + d * config.in_bands
    attention = config.n_layers * 2 * d * (length + 1) / 2.0  # QK^T and AV, mean causal context
    return 2.0 * weights + 2.0 * attention


@dataclass
class ComputeAccount:
    """Tokens and FLOPs spent in one training phase (pretraining or fine-tuning)."""

    phase: str
    tokens: int = 0
    flops: float = 0.0
    pixels: int = 0
    epochs: int = 0
    seconds: float = 0.0

    def add(self, tokens: int, flops: float) -> None:
        """Record ``tokens`` processed for ``flops``."""
        self.tokens += int(tokens)
        self.flops += float(flops)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON)."""
        return asdict(self)


# -- save / load -----------------------------------------------------------------------------
def save_model(model: PixelSeriesTransformer | FineTunedSeriesModel, path: str | Path,
               *, extra: dict[str, Any] | None = None) -> Path:
    """Save weights, config, band scaling and ``extra`` metadata to one safetensors file."""
    from eokit.core.train import save_weights

    backbone = model.backbone if isinstance(model, FineTunedSeriesModel) else model
    metadata: dict[str, str] = {
        "eokit_model": "timeseries.finetuned" if isinstance(model, FineTunedSeriesModel)
        else "timeseries.backbone",
        "config": backbone.config.to_json(),
        "band_scaling": json.dumps(backbone.scaling_dict()),
    }
    if isinstance(model, FineTunedSeriesModel):
        metadata["head"] = json.dumps({
            "task": model.task, "class_names": model.class_names,
            "out_features": model.head.fc2.out_features, "hidden": model.head.fc1.out_features,
            "dropout": model.head.drop.p, "members": model.members,
            **model.feature_config.as_dict(),
        })
    for key, value in (extra or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(_plain(model), path, metadata)
    return path


def _plain(model: nn.Module) -> nn.Module:
    """Model with LoRA merged (so checkpoints load into the plain architecture)."""
    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(backbone, "merge_and_unload"):
        import copy

        merged = copy.deepcopy(model)
        merged.backbone = merged.backbone.merge_and_unload()  # type: ignore[union-attr,operator]
        return merged
    return model


def load_model(path: str | Path) -> tuple[PixelSeriesTransformer | FineTunedSeriesModel,
                                          dict[str, Any]]:
    """Load a model saved by :func:`save_model`.

    Returns:
        (model in eval mode, metadata with JSON values decoded).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError("model file not found", path=path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except Exception as error:  # noqa: BLE001 - any parse failure is a bad file
        raise InputError(f"not a safetensors model ({type(error).__name__})", path=path) from None
    if "config" not in raw or "eokit_model" not in raw:
        raise InputError("not an eokit timeseries model (no config in metadata)", path=path)
    from eokit.core.train import load_weights

    config = SeriesModelConfig.from_json(raw["config"])
    backbone = PixelSeriesTransformer(config)
    model: PixelSeriesTransformer | FineTunedSeriesModel = backbone
    if raw["eokit_model"] == "timeseries.finetuned":
        head = json.loads(raw["head"])
        model = FineTunedSeriesModel(backbone, head["out_features"], task=head["task"],
                                     class_names=head["class_names"], hidden=head["hidden"],
                                     memory=head.get("memory"),
                                     pooling=head.get("pooling", "mean"),
                                     input_lags=int(head.get("input_lags", 0)),
                                     lag_days=float(head.get("lag_days", 30.0)),
                                     dropout=float(head.get("dropout", 0.1)),
                                     residuals=bool(head.get("residuals", False)))
        for _ in range(int(head.get("members", 1)) - 1):
            model.extra_heads.append(SeriesHead(model.head.fc1.in_features,
                                                head["out_features"], head["hidden"],
                                                float(head.get("dropout", 0.1))))
    load_weights(model, path, strict=True)
    model.eval()
    metadata: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            metadata[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            metadata[key] = value
    return model, metadata
