"""Classical single-channel LST methods: generalized SC (JM-SC), RTE inversion, mono-window.

All functions are vectorised numpy (float32 or float64 in, same out) and work on scene arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from eokit.core.errors import InputError
from eokit.lst.planck import C2, Band, get_band
from eokit.lst.rt import check_emissivity, check_radiance, check_water_vapour

logger = logging.getLogger(__name__)

#: Jiménez-Muñoz et al. 2014 (IEEE GRSL 11(10):1840) ψ-coefficients for Landsat-8 TIRS B10:
#: rows ψ1, ψ2, ψ3; columns (w², w, 1).
JM2014_L8_B10 = np.array(
    [
        [0.04019, 0.02916, 1.01523],
        [-0.38333, -1.50294, 0.20324],
        [0.00918, 1.36072, -0.27514],
    ]
)
#: bγ of the SC linearisation for L8 B10 (JM2014), K.
JM2014_B_GAMMA = 1324.0


@dataclass
class SingleChannel:
    """Generalized single-channel algorithm Ts = γ[(ψ1·L + ψ2)/ε + ψ3] + δ.

    Attributes:
        coefficients: (3, 3) ψ-coefficients, rows ψ1..ψ3, columns (w², w, 1).
        b_gamma: bγ (K); γ = Tb²/(bγ·L), δ = Tb − Tb²/bγ (JM's Wien-approximation form).
        band: Band for the brightness temperature Tb.
        source: Where the coefficients come from.
    """

    coefficients: np.ndarray = field(default_factory=lambda: JM2014_L8_B10.copy())
    b_gamma: float = JM2014_B_GAMMA
    band: Band = field(default_factory=lambda: get_band("L8_B10"))
    source: str = "JM2014"

    def psi(self, water_vapour: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ψ1, ψ2, ψ3 at column water vapour w (g cm⁻²)."""
        w = np.asarray(water_vapour)
        c = self.coefficients.astype(w.dtype if w.dtype.kind == "f" else np.float64)
        psi1, psi2, psi3 = (c[i, 0] * w * w + c[i, 1] * w + c[i, 2] for i in range(3))
        return psi1, psi2, psi3

    def __call__(
        self,
        radiance: np.ndarray,
        emissivity: np.ndarray | float,
        water_vapour: np.ndarray | float,
        *,
        validate: bool = True,
    ) -> np.ndarray:
        """Surface temperature (K) from TOA radiance, emissivity and column water vapour."""
        if validate:
            check_radiance(radiance)
            check_emissivity(emissivity)
            check_water_vapour(water_vapour)
        radiance = np.asarray(radiance)
        psi1, psi2, psi3 = self.psi(np.asarray(water_vapour, dtype=radiance.dtype))
        tb = self.band.brightness_temperature(radiance)
        gamma = tb * tb / (self.b_gamma * radiance)
        delta = tb - tb * tb / self.b_gamma
        return np.asarray(gamma * ((psi1 * radiance + psi2) / emissivity + psi3) + delta)

    @classmethod
    def fit(
        cls,
        water_vapour: np.ndarray,
        tau: np.ndarray,
        up: np.ndarray,
        down: np.ndarray,
        *,
        band: Band | None = None,
        source: str = "refit",
    ) -> SingleChannel:
        """Least-squares quadratic ψ(w) fits to simulated atmospheric functions."""
        w = np.asarray(water_vapour, dtype=np.float64)
        design = np.stack([w * w, w, np.ones_like(w)], axis=1)
        targets = [1.0 / tau, -down - up / tau, down]
        coefficients = np.stack(
            [
                np.linalg.lstsq(design, np.asarray(t, dtype=np.float64), rcond=None)[0]
                for t in targets
            ]
        )
        band = band if band is not None else get_band("L8_B10")
        return cls(coefficients, C2 / band.effective_wavelength_um, band, source)


def rte_inversion(
    radiance: np.ndarray,
    emissivity: np.ndarray | float,
    tau: np.ndarray | float,
    up: np.ndarray | float,
    down: np.ndarray | float,
    band: Band | None = None,
) -> np.ndarray:
    """Ts from the RTE with known atmospheric functions (the 'atmospheric calculator' method)."""
    from eokit.lst.rt import rte_inverse

    check_emissivity(emissivity)
    check_radiance(radiance)
    tau_arr = np.asarray(tau)
    if np.any(tau_arr <= 0) or np.any(tau_arr > 1):
        raise InputError("transmittance must lie in (0, 1]", parameter="tau")
    band = band if band is not None else get_band("L8_B10")
    return np.asarray(rte_inverse(np.asarray(radiance), emissivity, tau, up, down, band))


@dataclass
class MonoWindow:
    """Qin et al. (2001) mono-window algorithm with L8 B10 linearisation constants.

    Ts = [a(1−C−D) + (b(1−C−D) + C + D)·Tb − D·Ta] / C,  C = ε·τ,  D = (1−τ)(1 + (1−ε)τ).
    τ(w) = τ0 + τ1·w and the effective mean atmospheric temperature Ta = t0 + t1·T_air are linear
    fits (Qin's approach); :meth:`fit` derives them from simulations, the defaults are Qin's
    mid-latitude-summer Ta relation and a TIGR-derived τ(w) line.

    Attributes:
        a, b: Linearisation of L/(dL/dT) = a + b·T (L8 B10, 0–50 °C: −62.7182, 0.4339).
    """

    a: float = -62.7182
    b: float = 0.4339
    tau_coefficients: tuple[float, float] = (0.98, -0.085)
    ta_coefficients: tuple[float, float] = (16.0110, 0.92621)
    band: Band = field(default_factory=lambda: get_band("L8_B10"))

    def __call__(
        self,
        radiance: np.ndarray,
        emissivity: np.ndarray | float,
        water_vapour: np.ndarray | float,
        air_temperature: np.ndarray | float,
    ) -> np.ndarray:
        """Ts (K) from TOA radiance, emissivity, water vapour and near-surface air temperature."""
        check_radiance(radiance)
        check_emissivity(emissivity)
        check_water_vapour(water_vapour)
        radiance = np.asarray(radiance)
        tb = self.band.brightness_temperature(radiance)
        tau = np.clip(
            self.tau_coefficients[0] + self.tau_coefficients[1] * np.asarray(water_vapour),
            0.05,
            1.0,
        )
        ta = self.ta_coefficients[0] + self.ta_coefficients[1] * np.asarray(air_temperature)
        c = emissivity * tau
        d = (1 - tau) * (1 + (1 - emissivity) * tau)
        return np.asarray((self.a * (1 - c - d) + (self.b * (1 - c - d) + c + d) * tb - d * ta) / c)

    @classmethod
    def fit(
        cls,
        water_vapour: np.ndarray,
        tau: np.ndarray,
        up: np.ndarray,
        air_temperature: np.ndarray,
        band: Band | None = None,
    ) -> MonoWindow:
        """Fit τ(w) and Ta(T_air) to simulations; Ta is defined by B(Ta) = L↑/(1 − τ)."""
        band = band if band is not None else get_band("L8_B10")
        w = np.asarray(water_vapour, dtype=np.float64)
        tau_fit = np.polyfit(w, tau, 1)
        ta_eff = band.brightness_temperature(
            np.asarray(up, np.float64) / (1 - np.asarray(tau, np.float64))
        )
        ta_fit = np.polyfit(np.asarray(air_temperature, np.float64), ta_eff, 1)
        return cls(
            tau_coefficients=(float(tau_fit[1]), float(tau_fit[0])),
            ta_coefficients=(float(ta_fit[1]), float(ta_fit[0])),
            band=band,
        )


def emissivity_corrected_bt(
    radiance: np.ndarray, emissivity: np.ndarray | float, band: Band | None = None
) -> np.ndarray:
    """Surface temperature without atmospheric correction: B⁻¹(L/ε).

    This is what emissivity-corrected brightness temperature tools compute; a lower bound on
    effort, not on accuracy.
    """
    band = band if band is not None else get_band("L8_B10")
    return np.asarray(band.brightness_temperature(np.asarray(radiance) / emissivity))
