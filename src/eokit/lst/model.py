"""Retrieval networks: physics-informed (atmosphere net → RTE inversion layer) and a plain MLP.

Inputs are per-pixel features (BT [K], w [g cm⁻²], ε, view zenith [deg]) — see
:data:`eokit.lst.data.FEATURES`. Both networks normalise inputs with stored statistics, so a saved
model is self-contained.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from eokit.core.errors import InputError
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


def build_network(
    kind: str, *, hidden: int = 64, layers: int = 3, prior: np.ndarray | None = None
) -> nn.Module:
    """``"piml"`` → :class:`PhysicsInformedLST`; ``"mlp"`` → :class:`MLPLST`."""
    if kind == "piml":
        return PhysicsInformedLST(hidden, layers, prior=prior)
    if kind == "mlp":
        return MLPLST(hidden, layers)
    raise InputError(f"unknown model kind {kind!r}; choose 'piml' or 'mlp'", parameter="kind")


def default_model_path() -> Path:
    """The bundled physics-informed model for Landsat-8 band 10.

    Trained by ``benchmarks/lst_retrieval.py`` on TIGR-2000 simulations.
    """
    from importlib import resources

    path = Path(str(resources.files("eokit.lst").joinpath("weights/piml_l8b10.safetensors")))
    if not path.is_file():
        raise InputError(
            "no bundled PIML model; train one with 'eokit lst train' and pass --model",
            parameter="model",
        )
    return path


def load_network(path: str | Path) -> nn.Module:
    """Load a network saved by :func:`train_retrieval` (kind and size from its metadata)."""
    from safetensors import safe_open
    from safetensors.torch import load_model

    path = Path(path)
    if not path.is_file():
        raise InputError("weights file not found", path=path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
    except Exception as error:  # safetensors header errors
        raise InputError(f"not a readable safetensors file ({error})", path=path) from None
    if "kind" not in meta:
        raise InputError("not an eokit LST model (no 'kind' metadata)", path=path)
    network = build_network(
        meta["kind"], hidden=int(meta.get("hidden", 64)), layers=int(meta.get("layers", 3))
    )
    try:
        load_model(network, str(path), strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise InputError(f"weights do not fit a {meta['kind']} model: {first}", path=path) from None
    network.eval()
    return network


@torch.no_grad()
def predict(network: nn.Module, features: np.ndarray, *, batch: int = 1 << 18) -> np.ndarray:
    """Ts (K) for (N, 4) features, in batches."""
    out = np.empty(features.shape[0], dtype=np.float32)
    for start in range(0, features.shape[0], batch):
        x = torch.as_tensor(features[start : start + batch], dtype=torch.float32)
        out[start : start + batch] = network(x)["ts"].numpy()
    return out
