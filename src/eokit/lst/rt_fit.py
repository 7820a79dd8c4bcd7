"""Fit and validate the band RT model's empirical factors against reference RT tables.

Reference tables in the layout of the public ``espg/Landsat_SST_algorithm`` MODTRAN/libRadtran
band-10 runs: ERA5 profiles (``altitude p T q`` per level) and one row per profile with
``wind Ts BT_toa tau dBT/dTs``. Rows are matched to profiles by their column water vapour where the
table carries one (the ``*_tcwv_*.csv`` files), otherwise by order.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eokit.core.errors import InputError
from eokit.lst.profiles import Profiles, read_level_table
from eokit.lst.rt import DEFAULT_PARAMS, PARAM_NAMES, BandRTModel

logger = logging.getLogger(__name__)

#: Emissivity implied by the MODTRAN sea-surface Jacobians (dBT/dTs ≈ τ·ε·B'(Ts)/B'(BT)).
SEA_EMISSIVITY = 0.993


@dataclass
class ReferenceSet:
    """Profiles with the reference code's surface temperature, TOA BT and τ (all (N,))."""

    profiles: Profiles
    surface_temperature_k: np.ndarray
    toa_bt_k: np.ndarray
    tau: np.ndarray
    label: str

    @property
    def water_vapour(self) -> np.ndarray:
        """(N,) column water vapour of the profiles, g cm⁻²."""
        return self.profiles.water_vapour_column()


def read_reference_month(directory: str | Path, month: str, code: str = "modtran") -> ReferenceSet:
    """Read one month of reference simulations (``code`` = ``"modtran"`` or ``"libradtran"``).

    Raises:
        InputError: missing files or rows that cannot be matched to profiles.
    """
    directory = Path(directory)
    profile_file = directory / f"era5_antarctic_profiles_{month}.tsv"
    if not profile_file.exists():
        raise InputError("profile file not found", path=profile_file)
    profiles = read_level_table(profile_file)
    water = profiles.water_vapour_column()
    if code == "modtran":
        table_file = directory / f"modtran_b10_bt_tau_tcwv_{month}.csv"
        if not table_file.exists():
            raise InputError("MODTRAN table not found", path=table_file)
        table = np.genfromtxt(table_file, delimiter=",", skip_header=1)
        index = np.full(len(table), -1)
        for row, tcwv in enumerate(table[:, 5]):
            if np.isfinite(tcwv):
                hits = np.nonzero(np.abs(water - tcwv) < 1e-6)[0]
                if hits.size:
                    index[row] = hits[0]
        keep = index >= 0
        _, first = np.unique(index[keep], return_index=True)  # drop duplicated rows
        rows = np.nonzero(keep)[0][first]
        table, index = table[rows], index[rows]
    elif code == "libradtran":
        table_file = directory / f"libradtran_b10_bt_tau_{month}.txt"
        if not table_file.exists():
            raise InputError("libRadtran table not found", path=table_file)
        table = np.loadtxt(table_file)
        if len(table) != len(profiles):
            raise InputError(f"{len(table)} rows for {len(profiles)} profiles", path=table_file)
        index = np.arange(len(table))
    else:
        raise InputError("must be 'modtran' or 'libradtran'", parameter="code")
    if len(index) < 10:
        raise InputError("fewer than 10 rows matched to profiles", path=table_file)
    return ReferenceSet(
        profiles.subset(index), table[:, 1], table[:, 2], table[:, 3], f"{code}:{month}"
    )


def simulate_reference(
    model: BandRTModel, ref: ReferenceSet, emissivity: float = SEA_EMISSIVITY
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model TOA BT and band τ for a reference set (nadir view)."""
    atmosphere = model.forward_profiles(ref.profiles)
    surface = torch.as_tensor(ref.surface_temperature_k, dtype=torch.float64)
    bt = model.toa_brightness_temperature(atmosphere, surface, emissivity)
    return bt, atmosphere.tau


def fit_parameters(
    model: BandRTModel,
    refs: list[ReferenceSet],
    *,
    psi_profiles: Profiles | None = None,
    psi_coefficients: np.ndarray | None = None,
    bt_scale_k: float = 0.1,
    tau_scale: float = 0.01,
    psi_scales: tuple[float, float, float] = (0.05, 0.3, 0.3),
    prior_weight: float = 1e-2,
    steps: int = 60,
    trainable: tuple[str, ...] = PARAM_NAMES,
) -> dict[str, Any]:
    """Fit the model's factors by L-BFGS.

    Loss = mean((ΔBT/bt_scale)²) + mean((Δτ/tau_scale)²) over the reference sets, plus — when
    ``psi_profiles`` and ``psi_coefficients`` are given — the mean squared deviation of the model's
    ψ1..ψ3 from the quadratic ψ(w) curves on those profiles (each over its ``psi_scales``), plus a
    weak prior pulling the parameters toward the literature defaults. Parameters not in
    ``trainable`` keep their values.

    Returns:
        dict with the fitted ``params`` and final ``bt_rmse``/``tau_rmse`` on the reference sets.
    """
    targets = [(torch.as_tensor(r.toa_bt_k), torch.as_tensor(r.tau)) for r in refs]
    psi_targets: list[torch.Tensor] = []
    if psi_profiles is not None and psi_coefficients is not None:
        w = psi_profiles.water_vapour_column()
        psi_targets = [torch.as_tensor(np.polyval(psi_coefficients[i], w)) for i in range(3)]
    prior = torch.tensor([DEFAULT_PARAMS[n] for n in PARAM_NAMES], dtype=torch.float64)
    mask = torch.tensor([float(n in trainable) for n in PARAM_NAMES], dtype=torch.float64)
    optimizer = torch.optim.LBFGS(
        [model.theta], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.zeros((), dtype=torch.float64)
        for ref, (bt_ref, tau_ref) in zip(refs, targets, strict=True):
            bt, tau = simulate_reference(model, ref)
            loss = loss + (((bt - bt_ref) / bt_scale_k) ** 2).mean()
            loss = loss + (((tau - tau_ref) / tau_scale) ** 2).mean()
        if psi_targets:
            assert psi_profiles is not None
            psi = model.forward_profiles(psi_profiles).psi()
            for value, target, scale in zip(psi, psi_targets, psi_scales, strict=True):
                loss = loss + (((value - target) / scale) ** 2).mean()
        loss = loss + prior_weight * ((model.theta - prior) ** 2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        assert model.theta.grad is not None
        model.theta.grad.mul_(mask)
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    with torch.no_grad():
        bt_err = torch.cat(
            [simulate_reference(model, r)[0] - t[0] for r, t in zip(refs, targets, strict=True)]
        )
        tau_err = torch.cat(
            [simulate_reference(model, r)[1] - t[1] for r, t in zip(refs, targets, strict=True)]
        )
    return {
        "params": model.param_dict(),
        "bt_rmse": float(bt_err.pow(2).mean().sqrt()),
        "tau_rmse": float(tau_err.pow(2).mean().sqrt()),
    }


def subsample(ref: ReferenceSet, step: int) -> ReferenceSet:
    """Every ``step``-th profile of a reference set (faster fits)."""
    index = np.arange(0, len(ref.profiles), step)
    return ReferenceSet(
        ref.profiles.subset(index),
        ref.surface_temperature_k[index],
        ref.toa_bt_k[index],
        ref.tau[index],
        ref.label,
    )


def save_params(
    path: str | Path, params: dict[str, float], provenance: str, extra: dict[str, Any] | None = None
) -> Path:
    """Write fitted parameters + provenance as JSON (atomic)."""
    from eokit.core.raster import atomic_write

    path = Path(path)
    record = {"params": params, "provenance": provenance, **(extra or {})}
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2) + "\n")
    return path


def error_stats(model_values: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """RMSE, bias (model − reference), MAE and count."""
    diff = np.asarray(model_values) - np.asarray(reference)
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return {"rmse": math.nan, "bias": math.nan, "mae": math.nan, "n": 0}
    return {
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "bias": float(diff.mean()),
        "mae": float(np.abs(diff).mean()),
        "n": int(diff.size),
    }
