"""Fit and validate the band RT model's empirical factors against reference RT tables.

Reference tables in the layout of the public ``espg/Landsat_SST_algorithm`` MODTRAN/libRadtran
band-10 runs: ERA5 profiles (``altitude p T q`` per level) and one row per profile with
``wind Ts BT_toa tau dBT/dTs``, in profile order. A table's file number need not be that of the
profiles it simulates (upstream, tables were copied under shifted numbers), so every pairing is
checked by content: the band transmittance the RT model computes from each profile must follow the
table's τ row by row. A TCWV column beside the table cannot show this, since it was integrated from
the same-numbered profile file.
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


#: File names of the reference layout, by month number.
PROFILE_FILE = "era5_antarctic_profiles_{month}.tsv"
TABLE_FILES = {"modtran": "modtran_b10_bt_tau_{month}.txt",
               "libradtran": "libradtran_b10_bt_tau_{month}.txt"}
#: Minimum correlation between the model's τ and a table's τ over the profiles for the table to
#: hold the simulations of those profiles (matching pairs give 0.99, shifted ones below 0.3).
PAIRING_MIN_CORRELATION = 0.9


def read_reference_table(path: str | Path) -> np.ndarray:
    """(N, 5) rows ``wind Ts BT_toa tau dBT/dTs`` of a reference table; a repeated last row dropped.

    Raises:
        InputError: missing or unreadable file, or not five columns.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("reference table not found", path=path)
    try:
        table = np.loadtxt(path, ndmin=2)
    except ValueError as error:
        raise InputError(f"not a table of numbers ({error})", path=path) from None
    if table.shape[1] != 5:
        raise InputError(f"{table.shape[1]} columns; expected wind Ts BT tau dBT/dTs",
                         path=path)
    while len(table) > 1 and np.array_equal(table[-1], table[-2]):
        table = table[:-1]  # the upstream files repeat their last row
    return table


def pairing_correlation(tau_model: np.ndarray, table: np.ndarray) -> float:
    """Correlation of the model's τ with a table's τ (row i = profile i); NaN if lengths differ."""
    tau_model = np.asarray(tau_model, dtype=np.float64)
    if len(table) != len(tau_model) or len(table) < 3:
        return math.nan
    return float(np.corrcoef(tau_model, table[:, 3])[0, 1])


def _model_tau(model: BandRTModel, profiles: Profiles) -> np.ndarray:
    with torch.no_grad():
        return model.forward_profiles(profiles).tau.double().numpy()


def match_tables(
    directory: str | Path, code: str = "modtran", model: BandRTModel | None = None
) -> dict[str, dict[str, Any]]:
    """Pair every reference table in ``directory`` with the profile file whose content it holds.

    Returns:
        Per table month: ``profiles`` (the matching profile month or None), ``correlation`` (τ
        correlation with it) and ``correlations`` with every profile file of the same length.
    """
    directory = Path(directory)
    if code not in TABLE_FILES:
        raise InputError("must be 'modtran' or 'libradtran'", parameter="code")
    model = model or BandRTModel()
    months = sorted(p.name[len("era5_antarctic_profiles_"):-4]
                    for p in directory.glob(PROFILE_FILE.format(month="*")))
    taus = {m: _model_tau(model, read_level_table(directory / PROFILE_FILE.format(month=m)))
            for m in months}
    pattern = TABLE_FILES[code].format(month="*")
    prefix, suffix = pattern.split("*")
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob(pattern)):
        month = path.name[len(prefix):-len(suffix)]
        table = read_reference_table(path)
        scores = {m: pairing_correlation(t, table) for m, t in taus.items()}
        scores = {m: c for m, c in scores.items() if np.isfinite(c)}
        best = max(scores, key=lambda m: scores[m], default=None)
        good = best is not None and scores[best] >= PAIRING_MIN_CORRELATION
        out[month] = {"profiles": best if good else None,
                      "correlation": scores[best] if good and best is not None else None,
                      "correlations": scores}
    return out


def read_reference_month(
    directory: str | Path,
    month: str,
    code: str = "modtran",
    *,
    table_month: str | None = None,
    model: BandRTModel | None = None,
) -> ReferenceSet:
    """Read one month of reference simulations (``code`` = ``"modtran"`` or ``"libradtran"``).

    Rows pair with profiles by order; the pairing is accepted only when the model's τ from the
    profiles follows the table's τ (correlation >= :data:`PAIRING_MIN_CORRELATION`).

    Args:
        directory: Folder in the reference layout.
        month: Number of the profile file (``era5_antarctic_profiles_<month>.tsv``).
        code: Which reference code's table.
        table_month: Number of the table holding these profiles' simulations (default
            ``month``); see :func:`match_tables` for files copied under shifted numbers.
        model: RT model for the content check (default parameters).

    Raises:
        InputError: missing files, or a table that does not hold these profiles' simulations
            (the message names the profile file the table matches and the table that matches
            the profiles, when there are any).
    """
    directory = Path(directory)
    if code not in TABLE_FILES:
        raise InputError("must be 'modtran' or 'libradtran'", parameter="code")
    table_month = table_month or month
    profile_file = directory / PROFILE_FILE.format(month=month)
    if not profile_file.exists():
        raise InputError("profile file not found", path=profile_file)
    table_file = directory / TABLE_FILES[code].format(month=table_month)
    profiles = read_level_table(profile_file)
    table = read_reference_table(table_file)
    if len(table) < 10:
        raise InputError("fewer than 10 rows", path=table_file)
    model = model or BandRTModel()
    correlation = pairing_correlation(_model_tau(model, profiles), table)
    if not correlation >= PAIRING_MIN_CORRELATION:  # also NaN: row and profile counts differ
        raise InputError(_pairing_diagnosis(directory, code, month, table_month, table_file,
                                            profile_file, len(table), len(profiles),
                                            correlation, model), path=table_file)
    logger.debug("%s pairs with %s (tau correlation %.3f)", table_file.name, profile_file.name,
                 correlation)
    label = f"{code}:{month}" if table_month == month else f"{code}:{month}(table {table_month})"
    return ReferenceSet(profiles, table[:, 1], table[:, 2], table[:, 3], label)


def _pairing_diagnosis(
    directory: Path,
    code: str,
    month: str,
    table_month: str,
    table_file: Path,
    profile_file: Path,
    rows: int,
    count: int,
    correlation: float,
    model: BandRTModel,
) -> str:
    """Why a table does not pair with a profile file, and which files do pair by content."""
    if np.isfinite(correlation):
        what = f"τ correlation {correlation:.2f} with the model from {profile_file.name}"
    else:
        what = f"{rows} rows for {count} profiles in {profile_file.name}"
    message = f"does not hold the simulations of {profile_file.name} ({what})"
    matches = match_tables(directory, code, model)
    table_match = matches.get(table_month, {}).get("profiles")
    profile_match = sorted(m for m, info in matches.items() if info["profiles"] == month)
    if table_match is not None:
        message += f"; by content it matches {PROFILE_FILE.format(month=table_match)}"
    if profile_match:
        names = " and ".join(TABLE_FILES[code].format(month=m) for m in profile_match)
        message += (f"; the profiles of {profile_file.name} match {names} (pass "
                    f"table_month={profile_match[0]!r})")
    else:
        message += f"; no {code} table in the folder matches {profile_file.name}"
    return message


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
