"""Retrieval networks: physics-informed (atmosphere net → RTE inversion layer) and a plain MLP.

Inputs are per-pixel features (BT [K], w [g cm⁻²], ε, view zenith [deg]) — see
:data:`eokit.lst.data.FEATURES`. Both networks normalise inputs with stored statistics, so a saved
model is self-contained.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from eokit.lst.planck import Band, get_band

#: Typical scales used to normalise the atmospheric functions in losses.
TAU_SCALE, UP_SCALE, DOWN_SCALE = 0.05, 0.5, 0.8


def _mlp(inputs: int, hidden: int, layers: int, outputs: int) -> nn.Sequential:
    blocks: list[nn.Module] = []
    width = inputs
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.SiLU()]
        width = hidden
    blocks.append(nn.Linear(width, outputs))
    return nn.Sequential(*blocks)


class _Normalised(nn.Module):
    """Holds input mean/std buffers (set from training data with :meth:`set_normalisation`)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("std", torch.ones(features))

    def set_normalisation(self, features: np.ndarray) -> None:
        """Store per-feature mean and std of (N, F) training features."""
        self.mean.copy_(torch.as_tensor(features.mean(0), dtype=torch.float32))
        self.std.copy_(torch.as_tensor(features.std(0) + 1e-6, dtype=torch.float32))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """(x − mean)/std."""
        return (x - self.mean) / self.std


class PhysicsInformedLST(_Normalised):
    """Network predicting τ, L↑, L↓ followed by a differentiable RTE inversion layer.

    ``forward(x)`` returns a dict with ``ts`` (K), ``tau``, ``up``, ``down`` (each (N,)). The
    RTE inversion uses the measured radiance reconstructed from the BT input, so the network can
    only act through the atmospheric functions: Ts = B⁻¹([(L − L↑)/τ − (1 − ε)L↓]/ε).

    A first-guess atmosphere from the quadratic ψ(w) curves (``prior``, (3, 3) coefficients as in
    the SC algorithm) is corrected by the network; this keeps early training stable and makes the
    network learn what the w-only SC model misses.

    Args:
        hidden: Hidden width. layers: Hidden layers. band: Thermal band (Planck pair).
        prior: (3, 3) ψ-coefficients (rows ψ1..3, columns w², w, 1) for the first guess.
    """

    prior: torch.Tensor

    def __init__(
        self,
        hidden: int = 64,
        layers: int = 3,
        band: Band | None = None,
        prior: np.ndarray | None = None,
    ) -> None:
        super().__init__(4)
        self.band = band if band is not None else get_band("L8_B10")
        self.net = _mlp(4, hidden, layers, 3)
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        from eokit.lst.baselines import JM2014_L8_B10

        coefficients = JM2014_L8_B10 if prior is None else prior
        self.register_buffer(
            "prior", torch.as_tensor(np.asarray(coefficients), dtype=torch.float32)
        )

    def first_guess(self, water_vapour: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """τ, L↑, L↓ from the ψ(w) prior."""
        w = water_vapour.clamp(0.0, 10.0)
        design = torch.stack([w * w, w, torch.ones_like(w)], dim=-1)
        psi = design @ self.prior.T
        tau = (1.0 / psi[..., 0]).clamp(0.05, 1.0)
        down = psi[..., 2].clamp_min(0.0)
        up = (-tau * (psi[..., 1] + psi[..., 2])).clamp_min(0.0)
        return tau, up, down

    def atmosphere(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predicted (τ, L↑, L↓), each (N,)."""
        tau0, up0, down0 = self.first_guess(x[:, 1])
        delta = self.net(self.normalise(x))
        logit = torch.logit(tau0.clamp(1e-3, 1 - 1e-3))
        tau = torch.sigmoid(logit + delta[:, 0])
        up = nn.functional.softplus(up0 + UP_SCALE * 4 * delta[:, 1], beta=5.0)
        down = nn.functional.softplus(down0 + DOWN_SCALE * 4 * delta[:, 2], beta=5.0)
        return tau, up, down

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (N, 4) features → dict of (N,) tensors ``ts``, ``tau``, ``up``, ``down``."""
        tau, up, down = self.atmosphere(x)
        radiance = self.band.radiance(x[:, 0].double())
        emissivity = x[:, 2].double()
        surface = (
            (radiance - up.double()) / tau.double() - (1.0 - emissivity) * down.double()
        ) / emissivity
        ts = self.band.brightness_temperature(surface.clamp_min(1e-3)).float()
        return {"ts": ts, "tau": tau, "up": up, "down": down}


class MLPLST(_Normalised):
    """Plain MLP baseline: features → Ts (it predicts the correction Ts − BT)."""

    def __init__(self, hidden: int = 64, layers: int = 3) -> None:
        super().__init__(4)
        self.net = _mlp(4, hidden, layers, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (N, 4) → {"ts": (N,)}."""
        return {"ts": x[:, 0] + 5.0 * self.net(self.normalise(x))[:, 0]}


class PixelwiseLST(nn.Module):
    """Wrap a retrieval network for rasters: (B, 4, h, w) feature stack → (B, 1, h, w) Ts."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the network to every pixel."""
        b, c, h, w = x.shape
        flat = x.permute(0, 2, 3, 1).reshape(-1, c)
        ts: torch.Tensor = self.network(flat)["ts"]
        return ts.reshape(b, h, w).unsqueeze(1)
