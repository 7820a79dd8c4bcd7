"""Differentiable layer-by-layer band radiative-transfer model for clear-sky thermal-infrared bands.

For each profile the atmosphere is cut into the layers between its pressure levels. Each layer's
monochromatic optical depth in spectral sub-band k (centre λ_k, RSR weight w_k) is the sum of

* water-vapour self continuum  δ_s = f_s·C_s(ν)·N_w·(e/p0)·exp(n_T·(296/T − 1))
* water-vapour foreign continuum δ_f = f_f·γ·C_s(ν)·N_w·((p − e)/p0)
* water-vapour line wings      δ_l = f_l·u_w·(p/p0)^½
* uniformly mixed gases (CO2…) δ_m = f_m·(Δp/p0)·(p/p0)
* ozone                        δ_o = f_o·(u_O3/300 DU)·exp(−(λ − 9.6 µm)/0.4 µm)

with C_s(ν) = a + b·exp(−βν) the Roberts et al. (1976) self-continuum shape (a = 1.25e-22,
b = 1.67e-19 cm² molec⁻¹ atm⁻¹, β = 7.87e-3 cm, γ = 0.002), N_w the water column in the layer
(molec cm⁻²), u_w in g cm⁻², e the vapour pressure. The factors f_* and the temperature exponent n_T
are the model's few empirical factors; they are fitted to MODTRAN band-10 simulations
(``rt_params.json`` records values and provenance).

Radiances (per sub-band, then RSR-weighted):

    t_j = exp(−m Σ_{l<j} δ_l),   m = 1/cos θ   (level j to top of atmosphere)
    L↑  = Σ_l B(T̄_l)·(t_l − t_{l+1})          (layer emission reaching the sensor)
    L↓  = Σ_l B(T̄_l)·(s_{l+1} − s_l),  s = transmittance from the surface with the diffusivity
          factor 1.66 (hemispheric integral)
    L_sen = Σ_k w_k [τ_k (ε B_k(Ts) + (1 − ε) L↓_k) + L↑_k]

Band-effective τ, L↑ and L↓ are the RSR-weighted means of the sub-band values, which is the usual
MODTRAN convention behind the single-channel algorithms.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from eokit.core.errors import InputError
from eokit.lst.planck import C1, C2, Band, get_band
from eokit.lst.profiles import EPSILON, GRAVITY, Profiles

logger = logging.getLogger(__name__)

P0_HPA = 1013.25
AVOGADRO = 6.02214076e23
M_H2O = 18.01528
DIFFUSIVITY = 1.66
PARAM_NAMES = ("log_self", "log_foreign", "log_lines", "log_mixed", "log_ozone", "self_t_exponent")
DEFAULT_PARAMS = {
    "log_self": 0.0,
    "log_foreign": 0.0,
    "log_lines": math.log(0.01),
    "log_mixed": math.log(0.015),
    "log_ozone": math.log(0.005),
    "self_t_exponent": 1800.0 / 296.0,
}


@dataclass
class Atmosphere:
    """Band-effective atmospheric functions (tensors, shape (N,)) plus their sub-band values.

    tau: transmittance surface → sensor; up: upwelling path radiance L↑; down: downwelling sky
    radiance L↓ (irradiance/π), W m⁻² sr⁻¹ µm⁻¹. ``*_k``: (N, K) per sub-band.
    """

    tau: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor
    tau_k: torch.Tensor
    up_k: torch.Tensor
    down_k: torch.Tensor

    def psi(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Single-channel atmospheric functions ψ1 = 1/τ, ψ2 = −L↓ − L↑/τ, ψ3 = L↓."""
        return 1.0 / self.tau, -self.down - self.up / self.tau, self.down


def params_path() -> Path:
    """Path of the bundled fitted RT parameters (``rt_params.json``)."""
    return Path(str(resources.files("eokit.lst").joinpath("rt_params.json")))


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    """Fitted parameters and provenance; defaults (literature values) when no file exists."""
    path = params_path() if path is None else Path(path)
    if not path.exists():
        logger.warning("no fitted RT parameters at %s; using literature defaults", path)
        return {"params": dict(DEFAULT_PARAMS), "provenance": "literature defaults (not fitted)"}
    record: dict[str, Any] = json.loads(path.read_text())
    return record


class BandRTModel(nn.Module):
    """Torch band RT model, vectorised over profiles and differentiable in inputs and parameters.

    Args:
        band: The thermal band (default Landsat-8 band 10).
        bins: Spectral sub-bands across the RSR.
        params: Parameter dict (see :data:`PARAM_NAMES`); default the bundled fitted values.
    """

    wavelength_um: torch.Tensor
    weights: torch.Tensor
    self_shape: torch.Tensor
    ozone_shape: torch.Tensor

    def __init__(
        self, band: Band | None = None, *, bins: int = 16, params: dict[str, float] | None = None
    ) -> None:
        super().__init__()
        self.band = band if band is not None else get_band("L8_B10")
        centres, weights = self.band.spectral_grid(bins)
        self.register_buffer("wavelength_um", torch.tensor(centres, dtype=torch.float64))
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float64))
        wavenumber = 1e4 / centres
        shape = 1.25e-22 + 1.67e-19 * np.exp(-7.87e-3 * wavenumber)
        self.register_buffer("self_shape", torch.tensor(shape, dtype=torch.float64))
        ozone_shape = np.exp(-(centres - 9.6) / 0.4)
        self.register_buffer("ozone_shape", torch.tensor(ozone_shape, dtype=torch.float64))
        values = load_params()["params"] if params is None else params
        self.theta = nn.Parameter(
            torch.tensor([float(values[n]) for n in PARAM_NAMES], dtype=torch.float64)
        )

    def param_dict(self) -> dict[str, float]:
        """Current parameters as plain floats."""
        return {n: float(v) for n, v in zip(PARAM_NAMES, self.theta.detach().tolist(), strict=True)}

    def planck_k(self, temperature_k: torch.Tensor) -> torch.Tensor:
        """Spectral Planck radiance at each sub-band centre: (..., K)."""
        lam = self.wavelength_um
        t = temperature_k.unsqueeze(-1)
        return C1 / (lam**5 * torch.expm1(C2 / (lam * t)))

    def band_planck(self, temperature_k: torch.Tensor) -> torch.Tensor:
        """RSR-weighted Planck radiance from the sub-band quadrature."""
        return (self.planck_k(temperature_k) * self.weights).sum(-1)

    def layer_optical_depth(
        self,
        pressure_hpa: torch.Tensor,
        temperature_k: torch.Tensor,
        h2o: torch.Tensor,
        o3: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Nadir optical depth of each layer per sub-band, and the layer mean temperature.

        Args:
            pressure_hpa: (N, L) level pressure, hPa, top → bottom.
            temperature_k: (N, L) level temperature, K.
            h2o: (N, L) water-vapour mass mixing ratio.
            o3: (N, L) ozone mass mixing ratio.

        Returns:
            (delta (N, L-1, K), layer temperature (N, L-1)).
        """
        log_self, log_foreign, log_lines, log_mixed, log_ozone, t_exp = self.theta
        p_top, p_bot = pressure_hpa[:, :-1], pressure_hpa[:, 1:]
        dp = (p_bot - p_top).clamp_min(0.0)
        p_mid = 0.5 * (p_top + p_bot)
        t_mid = 0.5 * (temperature_k[:, :-1] + temperature_k[:, 1:])
        r_mid = 0.5 * (h2o[:, :-1] + h2o[:, 1:])
        q_mid = r_mid / (1.0 + r_mid)
        water_g_cm2 = q_mid * dp * 100.0 / GRAVITY / 10.0
        ozone_g_cm2 = 0.5 * (o3[:, :-1] + o3[:, 1:]) * dp * 100.0 / GRAVITY / 10.0
        ozone_du = ozone_g_cm2 / 2.1415e-4
        molecules = water_g_cm2 * AVOGADRO / M_H2O
        vapour = p_mid * r_mid / (EPSILON + r_mid)
        t_factor = torch.exp(t_exp * (296.0 / t_mid - 1.0))
        cont = molecules.unsqueeze(-1) * self.self_shape
        delta = (
            torch.exp(log_self) * cont * (vapour / P0_HPA * t_factor).unsqueeze(-1)
            + torch.exp(log_foreign) * 0.002 * cont * ((p_mid - vapour) / P0_HPA).unsqueeze(-1)
            + (torch.exp(log_lines) * water_g_cm2 * torch.sqrt(p_mid / P0_HPA)).unsqueeze(-1)
            + (torch.exp(log_mixed) * dp / P0_HPA * p_mid / P0_HPA).unsqueeze(-1)
            + torch.exp(log_ozone) * (ozone_du / 300.0).unsqueeze(-1) * self.ozone_shape
        )
        return delta, t_mid

    def forward(
        self,
        pressure_hpa: torch.Tensor,
        temperature_k: torch.Tensor,
        h2o: torch.Tensor,
        o3: torch.Tensor,
        view_zenith_deg: torch.Tensor | float = 0.0,
    ) -> Atmosphere:
        """Atmospheric functions for a batch of profiles.

        Args:
            pressure_hpa: (N, L) level pressure, hPa, top → bottom (float64 advised).
            temperature_k: (N, L) level temperature, K.
            h2o: (N, L) water-vapour mass mixing ratio.
            o3: (N, L) ozone mass mixing ratio.
            view_zenith_deg: scalar or (N,) sensor view zenith angle.

        Returns:
            :class:`Atmosphere` with τ, L↑, L↓ (band-effective and per sub-band).
        """
        delta, t_layer = self.layer_optical_depth(pressure_hpa, temperature_k, h2o, o3)
        zenith = torch.as_tensor(view_zenith_deg, dtype=delta.dtype, device=delta.device)
        airmass = (1.0 / torch.cos(torch.deg2rad(zenith))).reshape(-1, 1, 1)
        zero = torch.zeros_like(delta[:, :1])
        depth_from_top = torch.cat([zero, torch.cumsum(delta, dim=1)], dim=1)  # (N, L, K)
        t_up = torch.exp(-airmass * depth_from_top)  # level → TOA
        source = self.planck_k(t_layer)  # (N, L-1, K)
        up_k = (source * (t_up[:, :-1] - t_up[:, 1:])).sum(1)
        tau_k = t_up[:, -1]
        depth_from_surface = depth_from_top[:, -1:] - depth_from_top  # level → surface
        s_down = torch.exp(-DIFFUSIVITY * depth_from_surface)
        down_k = (source * (s_down[:, 1:] - s_down[:, :-1])).sum(1)
        w = self.weights
        return Atmosphere(
            (tau_k * w).sum(-1), (up_k * w).sum(-1), (down_k * w).sum(-1), tau_k, up_k, down_k
        )

    def forward_profiles(self, profiles: Profiles, view_zenith_deg: Any = 0.0) -> Atmosphere:
        """:meth:`forward` on a :class:`Profiles` batch (numpy → float64 tensors)."""

        def as_t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)

        zenith = torch.as_tensor(np.asarray(view_zenith_deg, dtype=np.float64))
        result: Atmosphere = self(
            as_t(profiles.pressure_hpa),
            as_t(profiles.temperature_k),
            as_t(profiles.h2o),
            as_t(profiles.o3),
            zenith,
        )
        return result

    def toa_radiance(
        self,
        atmosphere: Atmosphere,
        surface_temperature_k: torch.Tensor,
        emissivity: torch.Tensor | float,
    ) -> torch.Tensor:
        """Band TOA radiance, integrated per sub-band (spectrally consistent), (N,)."""
        eps = torch.as_tensor(emissivity, dtype=atmosphere.tau.dtype,
                              device=atmosphere.tau.device).reshape(-1, 1)
        surface = self.planck_k(surface_temperature_k)
        per_bin = (
            atmosphere.tau_k * (eps * surface + (1.0 - eps) * atmosphere.down_k) + atmosphere.up_k
        )
        return (per_bin * self.weights).sum(-1)

    def toa_brightness_temperature(
        self,
        atmosphere: Atmosphere,
        surface_temperature_k: torch.Tensor,
        emissivity: torch.Tensor | float,
    ) -> torch.Tensor:
        """TOA brightness temperature (K) through the band's Planck inverse."""
        bt: torch.Tensor = self.band.brightness_temperature(
            self.toa_radiance(atmosphere, surface_temperature_k, emissivity)
        )
        return bt


def rte_forward(
    surface_temperature_k: Any, emissivity: Any, tau: Any, up: Any, down: Any, band: Band
) -> Any:
    """Band-effective RTE: L_sen = τ·[ε·B(Ts) + (1 − ε)·L↓] + L↑ (numpy or torch)."""
    return (
        tau * (emissivity * band.radiance(surface_temperature_k) + (1.0 - emissivity) * down) + up
    )


def rte_inverse(radiance: Any, emissivity: Any, tau: Any, up: Any, down: Any, band: Band) -> Any:
    """RTE inversion: Ts = B⁻¹([(L_sen − L↑)/τ − (1 − ε)·L↓]/ε) (numpy or torch).

    Surface radiances ≤ 0 (atmosphere inconsistent with the measurement) give NaN in numpy; in
    torch they are clamped to a tiny positive value so gradients stay finite.
    """
    surface = ((radiance - up) / tau - (1.0 - emissivity) * down) / emissivity
    if type(surface).__module__.startswith("torch"):
        surface = surface.clamp_min(1e-3)
    else:
        surface = np.where(surface > 0, surface, np.nan)
    return band.brightness_temperature(surface)


#: Emissivity above 1 by at most this much is rounding in a stored product, not an error.
EMISSIVITY_TOLERANCE = 1e-3


def check_emissivity(emissivity: np.ndarray | float, name: str = "emissivity") -> None:
    """Raise InputError unless every finite emissivity lies in (0, 1] (+ a rounding tolerance)."""
    values = np.asarray(emissivity, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size and (finite.min() <= 0.0 or finite.max() > 1.0 + EMISSIVITY_TOLERANCE):
        hint = "; in percent or scaled? give a fraction" if finite.max() > 1.5 else ""
        raise InputError(
            f"emissivity must lie in (0, 1], found {finite.min():.4g}..{finite.max():.4g}{hint}",
            parameter=name,
        )


def check_water_vapour(water_vapour: np.ndarray | float, name: str = "water_vapour") -> None:
    """Raise InputError unless every finite water vapour lies in [0, 10] g cm⁻²."""
    values = np.asarray(water_vapour, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 10.0):
        raise InputError(
            f"water vapour must lie in [0, 10] g cm-2, found "
            f"{finite.min():.4g}..{finite.max():.4g}",
            parameter=name,
        )


def check_radiance(radiance: np.ndarray | float, name: str = "radiance") -> None:
    """Raise InputError if any finite radiance is negative."""
    values = np.asarray(radiance, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size and finite.min() < 0.0:
        raise InputError(
            f"negative radiance ({finite.min():.4g} W m-2 sr-1 um-1); check the "
            "calibration (RADIANCE_MULT/ADD) or the input band",
            parameter=name,
        )
