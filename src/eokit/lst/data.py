"""Training samples: profiles × surface temperature × emissivity × view angle through the RT model.

Samples are split by profile, never by sample, so that no atmosphere is seen in training and test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from eokit.core.errors import InputError
from eokit.lst.profiles import Profiles
from eokit.lst.rt import BandRTModel

logger = logging.getLogger(__name__)

#: Sample fields, each an (N,) float32 array.
FIELDS = (
    "radiance",
    "bt",
    "water_vapour",
    "emissivity",
    "air_temperature",
    "view_zenith",
    "tau",
    "up",
    "down",
    "surface_temperature",
)
#: Network input features (in this order).
FEATURES = ("bt", "water_vapour", "emissivity", "view_zenith")


@dataclass
class SampleSet:
    """Simulated samples: arrays keyed by :data:`FIELDS`, plus the source profile of each sample."""

    arrays: dict[str, np.ndarray]
    profile_index: np.ndarray

    def __len__(self) -> int:
        return int(self.profile_index.size)

    def subset(self, mask: np.ndarray) -> SampleSet:
        """Samples where ``mask`` is True."""
        return SampleSet({k: v[mask] for k, v in self.arrays.items()}, self.profile_index[mask])

    def features(self) -> np.ndarray:
        """(N, 4) float32 network inputs ordered as :data:`FEATURES`."""
        return np.stack([self.arrays[name] for name in FEATURES], axis=1).astype(np.float32)


def generate_samples(
    profiles: Profiles,
    model: BandRTModel | None = None,
    *,
    per_profile: int = 20,
    seed: int = 0,
    surface_offset_k: tuple[float, float] = (-5.0, 15.0),
    emissivity_range: tuple[float, float] = (0.90, 1.00),
    view_zenith_range: tuple[float, float] = (0.0, 10.0),
    bt_noise_k: float = 0.0,
    chunk: int = 4096,
    progress: bool = False,
) -> SampleSet:
    """Simulate TOA observations for random surfaces under each profile.

    Surface temperature is the lowest-level air temperature plus a uniform offset in
    ``surface_offset_k``; emissivity and view zenith angle are uniform in their ranges. The TOA
    radiance is integrated per spectral sub-band; band-effective τ, L↑, L↓ are returned beside it.

    Args:
        profiles: The atmospheres (N profiles).
        model: RT model (default: Landsat-8 B10 with the bundled fitted factors).
        per_profile: Samples per profile.
        seed: Random seed.
        surface_offset_k: Range of Ts − T_air(lowest level), K.
        emissivity_range: Band emissivity range.
        view_zenith_range: View zenith angle range, degrees.
        bt_noise_k: Gaussian sensor noise added to the brightness temperature, K (NEΔT).
        chunk: Samples per RT batch (memory bound).
        progress: Show a tqdm bar.

    Raises:
        InputError: empty profile set or invalid ranges.
    """
    if len(profiles) == 0:
        raise InputError("no profiles to simulate", parameter="profiles")
    if not 0.0 < emissivity_range[0] <= emissivity_range[1] <= 1.0:
        raise InputError("must lie in (0, 1]", parameter="emissivity_range")
    if per_profile < 1:
        raise InputError("must be >= 1", parameter="per_profile")
    if not bt_noise_k >= 0:  # also NaN
        raise InputError(f"must be >= 0 K, got {bt_noise_k}", parameter="bt_noise_k")
    model = model if model is not None else BandRTModel()
    rng = np.random.default_rng(seed)
    n_profiles = len(profiles)
    index = np.repeat(np.arange(n_profiles), per_profile)
    total = index.size
    air = profiles.surface_air_temperature_k[index]
    surface = air + rng.uniform(*surface_offset_k, total)
    emissivity = rng.uniform(*emissivity_range, total)
    zenith = rng.uniform(*view_zenith_range, total)
    water = profiles.water_vapour_column()[index]
    out = {name: np.empty(total, dtype=np.float64) for name in ("radiance", "tau", "up", "down")}
    starts = range(0, total, chunk)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="simulating", unit="chunk")
    with torch.no_grad():
        for start in starts:
            sl = slice(start, start + chunk)
            sub = profiles.subset(index[sl])
            atmosphere = model.forward_profiles(sub, zenith[sl])
            radiance = model.toa_radiance(
                atmosphere, torch.as_tensor(surface[sl]), torch.as_tensor(emissivity[sl])
            )
            out["radiance"][sl] = radiance.numpy()
            out["tau"][sl] = atmosphere.tau.numpy()
            out["up"][sl] = atmosphere.up.numpy()
            out["down"][sl] = atmosphere.down.numpy()
    bt = model.band.brightness_temperature(out["radiance"])
    if bt_noise_k > 0:
        bt = bt + rng.normal(0.0, bt_noise_k, total)
        out["radiance"] = model.band.radiance(bt)
    arrays = {
        "radiance": out["radiance"],
        "bt": bt,
        "water_vapour": water,
        "emissivity": emissivity,
        "air_temperature": air,
        "view_zenith": zenith,
        "tau": out["tau"],
        "up": out["up"],
        "down": out["down"],
        "surface_temperature": surface,
    }
    logger.info("simulated %d samples from %d profiles", total, n_profiles)
    return SampleSet({k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}, index)


def split_profiles(
    n_profiles: int, *, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> np.ndarray:
    """(n_profiles,) int8 split id per profile: 0 = train, 1 = val, 2 = test."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise InputError("fractions must be >= 0 and sum to 1", parameter="fractions")
    order = np.random.default_rng(seed).permutation(n_profiles)
    bounds = np.round(np.cumsum(fractions) * n_profiles).astype(int)
    split = np.zeros(n_profiles, dtype=np.int8)
    split[order[bounds[0] : bounds[1]]] = 1
    split[order[bounds[1] :]] = 2
    return split


def read_samples_csv(path: str | Path) -> SampleSet:
    """Read samples written by ``eokit lst simulate`` (columns ``profile`` + :data:`FIELDS`).

    Raises:
        InputError: unreadable file or missing columns.
    """
    import csv

    path = Path(path)
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"cannot read samples CSV ({error})", path=path) from None
    missing = [c for c in ("profile", *FIELDS) if c not in columns]
    if missing or not rows:
        raise InputError(
            f"not a samples CSV (missing columns {missing})" if missing else "no samples", path=path
        )
    try:
        arrays = {c: np.array([float(r[c]) for r in rows], dtype=np.float32) for c in FIELDS}
        profile = np.array([int(float(r["profile"])) for r in rows])
    except ValueError as error:
        raise InputError(f"non-numeric value ({error})", path=path) from None
    return SampleSet(arrays, profile)


class SampleDataset(Dataset[dict[str, Any]]):
    """Torch dataset over a :class:`SampleSet` whose items are chunks of ``chunk`` samples.

    Samples are shuffled once (``seed``) and cut into fixed chunks; the loader's sampler shuffles
    the chunks every epoch. Per-chunk items keep Python overhead negligible for tabular data; use
    :func:`collate_chunks` as the loader's ``collate_fn``. Item: ``{"x": (n, 4), <field>: (n,)}``.
    """

    def __init__(self, samples: SampleSet, *, chunk: int = 128, seed: int = 0) -> None:
        order = np.random.default_rng(seed).permutation(len(samples))
        self.x = torch.as_tensor(samples.features()[order])
        self.fields = {k: torch.as_tensor(v[order]) for k, v in samples.arrays.items()}
        self.chunk = chunk

    def __len__(self) -> int:
        return int(-(-self.x.shape[0] // self.chunk))

    def __getitem__(self, index: int) -> dict[str, Any]:
        sl = slice(index * self.chunk, (index + 1) * self.chunk)
        return {"x": self.x[sl], **{k: v[sl] for k, v in self.fields.items()}}


def collate_chunks(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate chunk items into one batch."""
    return {key: torch.cat([item[key] for item in items]) for key in items[0]}
