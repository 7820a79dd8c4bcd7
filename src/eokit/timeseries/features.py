"""Per-date head features: pooled causal-prefix states of the backbone and lagged input tokens.

Every feature at date ``t`` only depends on dates ``<= t`` (causal), so one head classifies a
pixel at every date. Two groups:

* pooled prefix of the backbone's last layer: ``h_t``, a summary of the prefix (mean of all valid
  dates so far, or a moving average over about the last ``memory`` valid dates) and, with
  ``pooling="stats"``, also the running mean, maximum and minimum over the prefix;
* lagged input tokens (``input_lags > 0``): the backbone's *scaled* bands of the last valid
  observation on or before ``t - j * lag_days`` for ``j = 0 .. input_lags - 1`` (zero plus a
  "missing" flag where there is none) and sin/cos of the day of year of ``t``. A frozen backbone
  pretrained on little data can drop information the head needs (its states are trained to
  predict the next date, not to keep the annual profile); this skip connection keeps it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from eokit.core.errors import InputError

#: Prefix pooling choices.
POOLINGS = ("mean", "stats")


@dataclass
class HeadFeatureConfig:
    """Which per-date features the fine-tuning head sees.

    Attributes:
        pooling: ``"mean"``: ``[h_t, summary]``; ``"stats"``: ``[h_t, summary, running mean,
            running max, running min]``.
        memory: Summary = moving average over about the last ``memory`` valid dates (None: the
            mean of all valid dates so far).
        input_lags: Number of lagged input tokens (0: none).
        lag_days: Spacing of the lags in days.
        residuals: Add the backbone's forecast residual at t (scaled observation minus its
            next-date prediction made at t - 1; 0 where invalid) and its moving average: an
            observation the pretrained model did not expect (a clear-cut, a planting) stands
            out even when the season makes it look like the pixel's past.
    """

    pooling: str = "mean"
    memory: float | None = None
    input_lags: int = 0
    lag_days: float = 30.0
    residuals: bool = False

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise InputError(f"must be one of {POOLINGS}, got {self.pooling!r}",
                             parameter="pooling")
        if self.input_lags < 0:
            raise InputError(f"must be >= 0, got {self.input_lags}", parameter="input_lags")
        if self.lag_days <= 0:
            raise InputError(f"must be > 0, got {self.lag_days}", parameter="lag_days")
        if self.memory is not None and self.memory < 1:
            raise InputError(f"must be >= 1 valid dates, got {self.memory}", parameter="memory")

    def n_features(self, d_model: int, in_bands: int) -> int:
        """Width of the feature vector for a backbone of width ``d_model``."""
        prefix = (2 if self.pooling == "mean" else 5) * d_model
        lagged = self.input_lags * (in_bands + 1) + 2 if self.input_lags else 0
        return prefix + lagged + (2 * in_bands if self.residuals else 0)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON metadata)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HeadFeatureConfig:
        """Inverse of :meth:`as_dict` (unknown keys ignored)."""
        known = {k: values[k] for k in ("pooling", "memory", "input_lags", "lag_days",
                                        "residuals") if k in values}
        return cls(**known)


def moving_average(hidden: torch.Tensor, valid: torch.Tensor, memory: float) -> torch.Tensor:
    """Exponential moving average (B, T, D) of ``hidden`` over valid dates, rate 1/memory."""
    weight = valid[..., None].to(hidden.dtype)
    rate = 1.0 / max(float(memory), 1.0)
    state = torch.zeros_like(hidden[:, 0])
    seen = torch.zeros_like(weight[:, 0])
    steps = []
    for t in range(hidden.shape[1]):
        w = weight[:, t]
        # The first valid observation initialises the average (no bias towards zero).
        step = torch.where(seen > 0, rate * w, w)
        state = state + step * (hidden[:, t] - state)
        seen = torch.maximum(seen, w)
        steps.append(state)
    return torch.stack(steps, dim=1)


def running_stats(hidden: torch.Tensor, valid: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Causal running (mean, max, min), each (B, T, D), over valid dates (0 before the first)."""
    weight = valid[..., None].to(hidden.dtype)
    mean = (hidden * weight).cumsum(1) / weight.cumsum(1).clamp_min(1.0)
    big = torch.finfo(hidden.dtype).max
    mask = valid[..., None]
    highest = torch.cummax(torch.where(mask, hidden, -big), dim=1).values
    lowest = torch.cummin(torch.where(mask, hidden, big), dim=1).values
    started = weight.cumsum(1) > 0
    zero = torch.zeros((), dtype=hidden.dtype, device=hidden.device)
    return mean, torch.where(started, highest, zero), torch.where(started, lowest, zero)


def elapsed_days(doy: torch.Tensor) -> torch.Tensor:
    """Days since the first date (B, T) from day-of-year values (gaps < 1 year assumed)."""
    doy = doy.to(torch.float64)
    steps = torch.remainder(doy[:, 1:] - doy[:, :-1], 365.25)
    return torch.cat((torch.zeros_like(doy[:, :1]), steps.cumsum(1)), dim=1)


def lagged_inputs(scaled: torch.Tensor, valid: torch.Tensor, doy: torch.Tensor, *,
                  n_lags: int, lag_days: float) -> torch.Tensor:
    """Last valid scaled observation on or before ``t - j * lag_days`` (B, T, n_lags * (C + 1)).

    Each lag contributes the C scaled bands (0 where there is no such observation) and a flag that
    is 1 when the observation is missing.
    """
    batch, length, _ = scaled.shape
    positions = torch.arange(length, device=scaled.device).expand(batch, length)
    last_valid = torch.cummax(torch.where(valid, positions, -1), dim=1).values
    days = elapsed_days(doy).contiguous()
    blocks = []
    for j in range(n_lags):
        at = torch.searchsorted(days, days - j * lag_days + 1e-6, right=True) - 1
        source = torch.where(at >= 0, last_valid.gather(1, at.clamp_min(0)), -1)
        present = (source >= 0)[..., None]
        values = scaled.gather(1, source.clamp_min(0)[..., None].expand_as(scaled))
        blocks.append(torch.where(present, values, 0.0))
        blocks.append((~present).to(scaled.dtype))
    return torch.cat(blocks, dim=-1)


def forecast_residuals(scaled: torch.Tensor, predicted: torch.Tensor, valid: torch.Tensor
                       ) -> torch.Tensor:
    """(B, T, C) scaled observation at t minus the prediction made at t - 1 (0 if invalid)."""
    residual = scaled[:, 1:] - predicted[:, :-1]
    residual = torch.cat((torch.zeros_like(scaled[:, :1]), residual), dim=1)
    return torch.where(valid[..., None], residual, 0.0)


def head_features(hidden: torch.Tensor, scaled: torch.Tensor, valid: torch.Tensor,
                  doy: torch.Tensor, config: HeadFeatureConfig,
                  predicted: torch.Tensor | None = None) -> torch.Tensor:
    """Per-date features (B, T, F) for the head (see the module docstring).

    Args:
        hidden: (B, T, D) last-layer states of the backbone.
        scaled: (B, T, C) scaled bands (any value where invalid).
        valid: (B, T) bool.
        doy: (B, T) day of year.
        config: Which features.
        predicted: (B, T, C) the backbone's scaled next-date prediction at every date (needed
            when ``config.residuals``).
    """
    if config.memory is None:
        weight = valid[..., None].to(hidden.dtype)
        summary = (hidden * weight).cumsum(1) / weight.cumsum(1).clamp_min(1.0)
    else:
        summary = moving_average(hidden, valid, config.memory)
    parts = [hidden, summary]
    if config.pooling == "stats":
        parts.extend(running_stats(hidden, valid))
    if config.input_lags:
        parts.append(lagged_inputs(scaled.to(hidden.dtype), valid, doy,
                                   n_lags=config.input_lags, lag_days=config.lag_days))
        angle = 2.0 * math.pi * doy.to(hidden.dtype) / 365.25
        parts.extend((torch.sin(angle)[..., None], torch.cos(angle)[..., None]))
    if config.residuals:
        if predicted is None:
            raise InputError("residual features need the backbone's predictions",
                             parameter="predicted")
        residual = forecast_residuals(scaled.to(hidden.dtype), predicted, valid)
        if config.memory is None:
            weight = valid[..., None].to(hidden.dtype)
            recent = residual.cumsum(1) / weight.cumsum(1).clamp_min(1.0)
        else:
            recent = moving_average(residual, valid, config.memory)
        parts.extend((residual, recent))
    return torch.cat(parts, dim=-1)
