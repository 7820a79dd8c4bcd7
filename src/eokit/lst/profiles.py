"""Atmospheric profiles: TIGR reader, (p, T, q) level tables, standard atmospheres, water vapour.

A :class:`Profiles` batch holds N profiles on L pressure levels ordered top (low pressure) to bottom
(surface). Water vapour and ozone are mass mixing ratios (g/g, i.e. kg/kg).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eokit.core.errors import InputError

logger = logging.getLogger(__name__)

GRAVITY = 9.80665  # m s⁻²
EPSILON = 0.622  # Mv / Md
R_DRY = 287.05  # J kg⁻¹ K⁻¹

#: TIGR-2000 43-level pressure grid, hPa, top to bottom.
TIGR_PRESSURE_HPA = np.array(
    [
        0.0026,
        0.0089,
        0.024,
        0.05,
        0.09,
        0.17,
        0.3,
        0.55,
        1,
        1.5,
        2.23,
        3.33,
        4.98,
        7.43,
        11.11,
        16.6,
        24.79,
        37.04,
        45.73,
        56.46,
        69.71,
        86.07,
        106.27,
        131.2,
        161.99,
        200,
        222.65,
        247.87,
        275.95,
        307.2,
        341.99,
        380.73,
        423.85,
        471.86,
        525,
        584.8,
        651.04,
        724.78,
        800,
        848.69,
        900.33,
        955.12,
        1013,
    ]
)

#: TIGR air-mass classes by 1-based profile number (TIGR documentation).
TIGR_AIRMASS = (
    ("tropical", 1, 872),
    ("midlat_summer", 873, 1260),
    ("midlat_winter", 1261, 1614),
    ("polar_summer", 1615, 1718),
    ("polar_winter", 1719, 2311),
)


@dataclass
class Profiles:
    """A batch of atmospheric profiles on pressure levels (top → bottom).

    Attributes:
        pressure_hpa: (N, L) level pressure, hPa, increasing along L.
        temperature_k: (N, L) air temperature, K.
        h2o: (N, L) water-vapour mass mixing ratio, g/g.
        o3: (N, L) ozone mass mixing ratio, g/g (zeros when unknown).
        surface_temperature_k: (N,) skin temperature from the source (NaN when unknown).
        ids: (N,) profile identifiers.
        latitude: (N,) degrees (NaN when unknown).
        source: Free text (file name or definition).
    """

    pressure_hpa: np.ndarray
    temperature_k: np.ndarray
    h2o: np.ndarray
    o3: np.ndarray
    surface_temperature_k: np.ndarray
    ids: np.ndarray
    latitude: np.ndarray = field(default_factory=lambda: np.zeros(0))
    source: str = ""

    def __post_init__(self) -> None:
        n = self.temperature_k.shape[0]
        if self.latitude.size != n:
            self.latitude = np.full(n, np.nan)

    def __len__(self) -> int:
        return int(self.temperature_k.shape[0])

    @property
    def levels(self) -> int:
        """Number of pressure levels L."""
        return int(self.temperature_k.shape[1])

    def subset(self, index: np.ndarray) -> Profiles:
        """Profiles selected by a boolean mask or an index array."""
        return Profiles(
            self.pressure_hpa[index],
            self.temperature_k[index],
            self.h2o[index],
            self.o3[index],
            self.surface_temperature_k[index],
            self.ids[index],
            self.latitude[index],
            self.source,
        )

    @property
    def surface_air_temperature_k(self) -> np.ndarray:
        """(N,) temperature of the lowest level, K."""
        return np.asarray(self.temperature_k[:, -1])

    def water_vapour_column(self) -> np.ndarray:
        """(N,) total column water vapour w, g cm⁻² (∫ q dp / g with specific humidity q)."""
        return water_vapour_column(self.pressure_hpa, self.h2o)

    def relative_humidity(self) -> np.ndarray:
        """(N, L) relative humidity over water, 0..1 (Magnus formula)."""
        vapour = vapour_pressure_hpa(self.pressure_hpa, self.h2o)
        return np.asarray(vapour / saturation_vapour_pressure_hpa(self.temperature_k))

    def clear_sky_mask(self, *, max_rh: float = 0.9, top_hpa: float = 300.0) -> np.ndarray:
        """(N,) True where RH < ``max_rh`` at every level below ``top_hpa`` (cloud-free proxy)."""
        rh = self.relative_humidity()
        below = self.pressure_hpa >= top_hpa
        return np.asarray(np.all(np.where(below, rh < max_rh, True), axis=1))


def specific_humidity(mixing_ratio: np.ndarray) -> np.ndarray:
    """Specific humidity q = r / (1 + r) from a mass mixing ratio r."""
    return np.asarray(mixing_ratio / (1.0 + mixing_ratio))


def vapour_pressure_hpa(pressure_hpa: np.ndarray, mixing_ratio: np.ndarray) -> np.ndarray:
    """Water-vapour partial pressure e = p·r / (ε + r), hPa."""
    return np.asarray(pressure_hpa * mixing_ratio / (EPSILON + mixing_ratio))


def saturation_vapour_pressure_hpa(temperature_k: np.ndarray) -> np.ndarray:
    """Saturation vapour pressure over water (Magnus/Bolton 1980), hPa."""
    celsius = temperature_k - 273.15
    return np.asarray(6.112 * np.exp(17.67 * celsius / (celsius + 243.5)))


def water_vapour_column(pressure_hpa: np.ndarray, mixing_ratio: np.ndarray) -> np.ndarray:
    """Total column water vapour, g cm⁻², by trapezoid integration of specific humidity over p."""
    q = specific_humidity(np.asarray(mixing_ratio, dtype=np.float64))
    p_pa = np.asarray(pressure_hpa, dtype=np.float64) * 100.0
    kg_per_m2 = np.trapezoid(q, p_pa, axis=-1) / GRAVITY
    return np.asarray(kg_per_m2 / 10.0)


def _float_tokens(line: str) -> list[float]:
    return [float(token.replace("D", "E")) for token in line.split()]


def read_tigr(
    path: str | Path, *, levels: int = 43, pressure_hpa: np.ndarray | None = None
) -> Profiles:
    """Read a TIGR-format profile file (ASCII, one record per profile).

    Each record: a header line ``id lon×100 lat×100 date`` then T on ``levels`` levels, ``Tsurf
    Psurf``, H2O then O3 mass mixing ratios on ``levels`` levels (top to bottom), 6 values per line.

    Args:
        path: The ``.dsf`` file.
        levels: Levels per profile (43 for TIGR-2000).
        pressure_hpa: The level grid (default: TIGR 43 levels).

    Raises:
        InputError: missing/unreadable file, a record with another value count (wrong level
            count), non-physical values, or no profiles.
    """
    path = Path(path)
    grid = TIGR_PRESSURE_HPA if pressure_hpa is None else np.asarray(pressure_hpa, dtype=float)
    if grid.size != levels:
        raise InputError(
            f"pressure grid has {grid.size} levels, expected {levels}", parameter="pressure_hpa"
        )
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read TIGR file ({error})", path=path) from None
    expected = 3 * levels + 2
    headers: list[list[float]] = []
    records: list[list[float]] = []
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) == 4 and all(t.lstrip("-").isdigit() for t in tokens):
            headers.append([float(t) for t in tokens])
            records.append([])
            continue
        if not records:
            raise InputError(
                f"line {number}: expected a profile header 'id lon lat date'", path=path
            )
        try:
            records[-1].extend(_float_tokens(line))
        except ValueError:
            raise InputError(
                f"line {number}: not a number in {line.strip()[:40]!r}", path=path
            ) from None
    if not records:
        raise InputError("no TIGR profiles found", path=path)
    for index, values in enumerate(records):
        if len(values) != expected:
            found = (len(values) - 2) / 3
            raise InputError(
                f"profile {index + 1} (id {int(headers[index][0])}) has {len(values)} values, "
                f"expected {expected} for {levels} levels (looks like {found:g} levels)",
                path=path,
            )
    data = np.array(records)
    temperature = data[:, :levels]
    surface_t = data[:, levels]
    h2o = data[:, levels + 2 : 2 * levels + 2]
    o3 = data[:, 2 * levels + 2 :]
    if (
        np.any(temperature < 100)
        or np.any(temperature > 400)
        or np.any(h2o < 0)
        or np.any(h2o > 0.1)
    ):
        raise InputError(
            "non-physical temperature or H2O values (T must be 100-400 K, "
            "H2O mixing ratio 0-0.1 g/g)",
            path=path,
        )
    head = np.array(headers)
    n = data.shape[0]
    logger.info("read %d TIGR profiles from %s", n, path)
    return Profiles(
        np.broadcast_to(grid, (n, levels)).copy(),
        temperature,
        h2o,
        o3,
        surface_t,
        head[:, 0].astype(int),
        head[:, 2] / 100.0,
        path.name,
    )


def read_level_table(
    path: str | Path,
    *,
    pressure_column: int = 1,
    temperature_column: int = 2,
    humidity_column: int = 3,
    humidity: str = "specific",
) -> Profiles:
    """Read plain (p, T, q) level tables: one row per level, profiles stacked top to bottom.

    A new profile starts wherever the pressure stops increasing. Every profile must have the same
    number of levels. Works with the ERA5 ``altitude p T q`` layout (default columns) and any
    comma/whitespace separated table; lines that do not parse as numbers are skipped.

    Args:
        path: Text/CSV file.
        pressure_column: 0-based column of pressure (hPa).
        temperature_column: 0-based column of temperature (K).
        humidity_column: 0-based column of humidity.
        humidity: ``"specific"`` (kg/kg) or ``"mixing_ratio"`` (g/g).

    Raises:
        InputError: unreadable file, ragged profiles, or non-physical values.
    """
    path = Path(path)
    if humidity not in {"specific", "mixing_ratio"}:
        raise InputError("must be 'specific' or 'mixing_ratio'", parameter="humidity")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read level table ({error})", path=path) from None
    rows = []
    for line in text.splitlines():
        parts = line.replace(",", " ").replace("\t", " ").split()
        try:
            rows.append(
                [
                    float(parts[pressure_column]),
                    float(parts[temperature_column]),
                    float(parts[humidity_column]),
                ]
            )
        except (ValueError, IndexError):
            continue
    if len(rows) < 3:
        raise InputError("no (pressure, temperature, humidity) rows found", path=path)
    table = np.array(rows)
    starts = np.concatenate([[0], np.nonzero(np.diff(table[:, 0]) <= 0)[0] + 1])
    sizes = np.diff(np.concatenate([starts, [len(table)]]))
    if np.any(sizes != sizes[0]):
        raise InputError(
            f"profiles have different level counts ({sorted(set(sizes.tolist()))})", path=path
        )
    stacked = table.reshape(len(starts), int(sizes[0]), 3)
    pressure, temperature, q = stacked[..., 0], stacked[..., 1], stacked[..., 2]
    if (
        np.any(pressure <= 0)
        or np.any(temperature < 100)
        or np.any(temperature > 400)
        or np.any(q < 0)
    ):
        raise InputError("non-physical pressure, temperature or humidity values", path=path)
    mixing = q / (1.0 - q) if humidity == "specific" else q
    n = len(starts)
    return Profiles(
        pressure,
        temperature,
        mixing,
        np.zeros_like(mixing),
        np.full(n, np.nan),
        np.arange(n),
        np.full(n, np.nan),
        path.name,
    )


# --- standard atmospheres -------------------------------------------------------------------
# US76 temperature is the piecewise-linear ICAO/US Standard Atmosphere 1976 definition. The five
# AFGL atmospheres (Anderson et al. 1986, AFGL-TR-86-0110) are written here as piecewise-linear
# temperature profiles through their published surface, tropopause and stratopause values, with
# relative humidity starting at the published surface water vapour and decaying exponentially with
# the height that gives the published total column; ozone is a Gaussian layer with the published
# column. They reproduce the published surface temperature, column water vapour and column
# ozone exactly, not every tabulated level.

# name: (height km, temperature K) knots, surface H2O ppmv, H2O column g cm⁻², O3 column DU
_STANDARD: dict[str, tuple[tuple[tuple[float, float], ...], float, float, float]] = {
    "tropical": (
        (
            (0, 299.7),
            (2, 287.7),
            (5, 270.3),
            (10, 237.0),
            (17, 195.0),
            (20, 203.7),
            (30, 226.0),
            (47, 270.0),
            (50, 270.0),
            (70, 219.0),
            (100, 190.0),
        ),
        25900.0,
        4.117,
        277.0,
    ),
    "midlat_summer": (
        (
            (0, 294.2),
            (2, 285.2),
            (5, 267.2),
            (10, 235.0),
            (13, 215.7),
            (20, 218.5),
            (30, 230.0),
            (47, 275.0),
            (50, 275.0),
            (70, 218.0),
            (100, 190.0),
        ),
        18760.0,
        2.924,
        331.0,
    ),
    "midlat_winter": (
        (
            (0, 272.2),
            (1, 268.7),
            (4, 255.7),
            (10, 219.7),
            (20, 218.0),
            (30, 224.0),
            (47, 265.0),
            (50, 265.0),
            (70, 223.0),
            (100, 210.0),
        ),
        4316.0,
        0.853,
        376.0,
    ),
    "subarctic_summer": (
        (
            (0, 287.2),
            (2, 276.0),
            (5, 257.2),
            (10, 225.2),
            (20, 225.2),
            (30, 232.0),
            (47, 277.0),
            (50, 277.0),
            (70, 216.0),
            (100, 210.0),
        ),
        11940.0,
        2.085,
        345.0,
    ),
    "subarctic_winter": (
        (
            (0, 257.2),
            (1, 259.1),
            (3, 253.1),
            (8, 217.2),
            (20, 217.2),
            (30, 215.0),
            (47, 265.0),
            (50, 265.0),
            (70, 230.0),
            (100, 210.0),
        ),
        1405.0,
        0.419,
        377.0,
    ),
    "us76": (
        (
            (0, 288.15),
            (11, 216.65),
            (20, 216.65),
            (32, 228.65),
            (47, 270.65),
            (51, 270.65),
            (71, 214.65),
            (86, 186.87),
            (100, 195.0),
        ),
        7745.0,
        1.418,
        343.0,
    ),
}

STANDARD_ATMOSPHERES = tuple(_STANDARD)


def standard_atmosphere(name: str, *, surface_pressure_hpa: float = 1013.25) -> Profiles:
    """A built-in standard atmosphere on the TIGR 43-level pressure grid.

    Args:
        name: One of :data:`STANDARD_ATMOSPHERES`.
        surface_pressure_hpa: Surface pressure; levels below it are dropped and the bottom level
            is placed at it.

    Raises:
        InputError: unknown name.
    """
    key = name.lower().replace("-", "_").replace(" ", "_")
    if key not in _STANDARD:
        raise InputError(
            f"unknown standard atmosphere {name!r}; choose one of "
            f"{', '.join(STANDARD_ATMOSPHERES)}",
            parameter="atmosphere",
        )
    knots, h2o_surface_ppmv, h2o_column, o3_column_du = _STANDARD[key]
    z_km = np.linspace(0.0, 100.0, 2001)
    heights, temps = zip(*knots, strict=True)
    temperature = np.interp(z_km, heights, temps)
    # hydrostatic pressure from the temperature profile
    log_p = np.log(surface_pressure_hpa) - np.concatenate(
        [
            [0.0],
            np.cumsum(
                GRAVITY
                / (R_DRY * 0.5 * (temperature[1:] + temperature[:-1]))
                * np.diff(z_km)
                * 1000.0
            ),
        ]
    )
    pressure = np.exp(log_p)
    grid = np.concatenate(
        [TIGR_PRESSURE_HPA[TIGR_PRESSURE_HPA < surface_pressure_hpa - 1.0], [surface_pressure_hpa]]
    )
    order = np.argsort(pressure)
    t_grid = np.interp(np.log(grid), np.log(pressure[order]), temperature[order])
    z_grid = np.interp(np.log(grid), np.log(pressure[order]), z_km[order])
    # water vapour: relative humidity starts at the value implied by the published surface mixing
    # ratio and decays exponentially with height (capped at 90 %); the decay height is solved by
    # bisection so that the column equals the published column
    saturation = saturation_vapour_pressure_hpa(t_grid)
    surface_vapour = h2o_surface_ppmv * 1e-6 * grid[-1]
    rh_surface = min(0.9, surface_vapour / float(saturation[-1]))

    def mixing_for(scale_km: float) -> np.ndarray:
        rh = np.minimum(0.9, rh_surface * np.exp(-z_grid / scale_km))
        vapour = rh * saturation
        return np.asarray(np.maximum(EPSILON * vapour / (grid - vapour), 4e-6 * EPSILON))

    low, high = 0.2, 30.0
    for _ in range(60):
        middle = 0.5 * (low + high)
        if float(water_vapour_column(grid, mixing_for(middle))) < h2o_column:
            low = middle
        else:
            high = middle
    mixing = mixing_for(0.5 * (low + high))
    # ozone: Gaussian layer at 22 km, 6 km wide, scaled to the column (1 DU = 2.1415e-5 kg m⁻²)
    shape = np.exp(-0.5 * ((z_grid - 22.0) / 6.0) ** 2)
    o3_kg_m2 = float(np.trapezoid(shape, grid * 100.0) / GRAVITY)
    o3 = shape * (o3_column_du * 2.1415e-5) / o3_kg_m2
    t_surface = float(temps[0])
    return Profiles(
        grid[None],
        t_grid[None],
        mixing[None],
        o3[None],
        np.array([t_surface]),
        np.array([0]),
        np.array([math.nan]),
        f"standard:{key}",
    )


#: TIGR-2000 v1.2 (LMD/IPSL ARA group, CC BY 4.0; cite Chédin et al. 1985, Chevallier et al. 1998)
#: as redistributed unchanged in github.com/Tatjanaya/Create_MODTRAN5_tape5; downloaded on first use
#: into the eokit cache (``EOKIT_CACHE_DIR``), never bundled.
TIGR_URL = (
    "https://raw.githubusercontent.com/Tatjanaya/Create_MODTRAN5_tape5/"
    "54d9f81bc51fc676aa0b14e2bbfc74ec7aa55b8a/atm4atigr2000_v1.2_43lev.dsf"
)
TIGR_SHA256 = "6d2b0d48b92ffd53b0d74d27b4803c061f96806efb46b5b943c9fe55d8cce3e4"


def load_tigr2000(
    path: str | Path | None = None, *, clear_sky: bool = True, offline: bool | None = None
) -> Profiles:
    """TIGR-2000 (2311 profiles): a local file, else the cached copy, else a checked download.

    Args:
        path: Local ``.dsf`` file (skips the cache and the download).
        clear_sky: Keep only profiles with RH < 90 % below 300 hPa (1448 profiles).
        offline: Forbid the download (default: ``EOKIT_OFFLINE``).
    """
    from eokit.core.weights import WeightsSpec, resolve_weights

    source = (
        path
        if path is not None
        else WeightsSpec("tigr2000-v1.2", TIGR_URL, TIGR_SHA256, filename="tigr2000_v1.2_43lev.dsf")
    )
    profiles = read_tigr(resolve_weights(source, offline=offline))
    return profiles.subset(profiles.clear_sky_mask()) if clear_sky else profiles


def concatenate(batches: list[Profiles]) -> Profiles:
    """Stack profile batches that share the same level count."""
    levels = {b.levels for b in batches}
    if len(levels) != 1:
        raise InputError(
            f"profile batches have different level counts {sorted(levels)}", parameter="profiles"
        )
    names = (
        "pressure_hpa",
        "temperature_k",
        "h2o",
        "o3",
        "surface_temperature_k",
        "ids",
        "latitude",
    )
    arrays = {name: np.concatenate([getattr(b, name) for b in batches]) for name in names}
    return Profiles(**arrays, source="+".join(b.source for b in batches))


def tigr_airmass(ids: np.ndarray) -> np.ndarray:
    """TIGR air-mass class name for 1-based profile numbers."""
    names = np.full(np.shape(ids), "unknown", dtype=object)
    for name, first, last in TIGR_AIRMASS:
        names[(ids >= first) & (ids <= last)] = name
    return names
