"""Scene inputs and window-by-window LST retrieval on rasters (MTL, NDVI emissivity, methods).

Retrieval is per pixel, so the scene is streamed in blocks planned by
:func:`eokit.core.tiling.plan_windows` (no overlap needed) and written with
:func:`eokit.core.raster.open_writer`: memory is bounded by the block size, not the scene size.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eokit.core.errors import DataError, InputError
from eokit.lst.baselines import MonoWindow, SingleChannel
from eokit.lst.planck import Band, get_band
from eokit.lst.rt import (
    EMISSIVITY_TOLERANCE,
    check_emissivity,
    check_radiance,
    check_water_vapour,
    rte_inverse,
)

logger = logging.getLogger(__name__)

METHODS = ("piml", "sc", "rte", "mono")

#: NDVI thresholds method (Sobrino et al. 2008) constants for TIRS band 10.
NDVI_SOIL, NDVI_VEG = 0.2, 0.5
EMISSIVITY_SOIL, EMISSIVITY_VEG, EMISSIVITY_WATER = 0.971, 0.987, 0.991

#: Plausible land-surface temperatures, K: colder than the coldest Antarctic plateau surfaces
#: (~185 K) or hotter than the hottest bare soils (~350 K) plus margin is not a surface.
LST_MIN_K, LST_MAX_K = 180.0, 380.0
#: Reflectance range accepted for red/NIR (negative SR values and bright clouds occur a little
#: beyond [0, 1]; unscaled DN lie in the thousands).
REFLECTANCE_MIN, REFLECTANCE_MAX = -0.1, 1.5
#: Fraction of a block's valid pixels outside a physical input range that makes the input wrong
#: rather than noisy.
_OUTLIER_FRACTION = 0.01
#: Above this share of the retrievable pixels outside [LST_MIN_K, LST_MAX_K] the scene is an error.
_IMPLAUSIBLE_FRACTION = 0.5


@dataclass
class MtlCalibration:
    """Band rescaling and thermal constants parsed from a Landsat MTL file."""

    spacecraft: str
    band_number: int
    radiance_mult: float
    radiance_add: float
    k1: float
    k2: float
    path: Path | None = None


def parse_mtl(
    path: str | Path, *, band_number: int = 10, spacecraft: str | None = None
) -> MtlCalibration:
    """Read ``RADIANCE_MULT/ADD_BAND_n`` and ``K1/K2_CONSTANT_BAND_n`` from an MTL (text) file.

    Args:
        path: MTL text file.
        band_number: Thermal band (10 or 11).
        spacecraft: Expected ``SPACECRAFT_ID`` (e.g. ``"LANDSAT_8"``); checked when given.

    Raises:
        InputError: missing file, missing keys (MTL of another band/sensor), wrong spacecraft.
    """
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        raise InputError(f"cannot read MTL file ({error.strerror})", path=path) from None
    values: dict[str, str] = {}
    for match in re.finditer(r"^\s*([A-Z0-9_]+)\s*=\s*\"?([^\"\n]*)\"?\s*$", text, re.MULTILINE):
        values[match.group(1)] = match.group(2).strip()
    found = values.get("SPACECRAFT_ID", "UNKNOWN")
    if spacecraft is not None and found != spacecraft:
        raise InputError(f"MTL is for {found}, expected {spacecraft}", path=path)
    keys = [
        f"RADIANCE_MULT_BAND_{band_number}",
        f"RADIANCE_ADD_BAND_{band_number}",
        f"K1_CONSTANT_BAND_{band_number}",
        f"K2_CONSTANT_BAND_{band_number}",
    ]
    missing = [k for k in keys if k not in values]
    if missing:
        raise InputError(
            f"MTL has no {missing[0]} (an MTL for another band or sensor? spacecraft {found})",
            path=path,
        )
    try:
        ml, al, k1, k2 = (float(values[k]) for k in keys)
    except ValueError:
        raise InputError("MTL band constants are not numbers", path=path) from None
    return MtlCalibration(found, band_number, ml, al, k1, k2, path)


def ndvi_emissivity(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """Band-10 emissivity by the NDVI thresholds method (NDVI-THM, Sobrino et al. 2008).

    NDVI < 0: water (0.991); NDVI < 0.2: bare soil (0.971); NDVI > 0.5: full vegetation
    (0.987 + cavity term 0.005); otherwise ε = ε_v·Pv + ε_s·(1 − Pv) + 4·0.005·Pv·(1 − Pv)
    with the vegetation fraction Pv = ((NDVI − 0.2)/0.3)².
    """
    red = np.asarray(red, dtype=np.float32)
    nir = np.asarray(nir, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = (nir - red) / (nir + red)
    pv = np.clip((ndvi - NDVI_SOIL) / (NDVI_VEG - NDVI_SOIL), 0.0, 1.0) ** 2
    cavity = 0.005
    mixed = EMISSIVITY_VEG * pv + EMISSIVITY_SOIL * (1 - pv) + 4 * cavity * pv * (1 - pv)
    emissivity = np.where(
        ndvi < 0,
        EMISSIVITY_WATER,
        np.where(
            ndvi < NDVI_SOIL,
            EMISSIVITY_SOIL,
            np.where(ndvi > NDVI_VEG, EMISSIVITY_VEG + cavity, mixed),
        ),
    )
    return np.where(np.isfinite(ndvi), emissivity, np.nan).astype(np.float32)


@dataclass
class RetrievalConfig:
    """What a scene retrieval needs besides the rasters.

    Attributes:
        method: One of :data:`METHODS`.
        band: Thermal band (Planck pair for BT and the RTE).
        atmosphere: (τ, L↑, L↓) for ``rte``.
        air_temperature_k: Near-surface air temperature for ``mono``.
        sc: The SC algorithm (default JM2014 published coefficients).
        mono: The mono-window algorithm settings.
        network: Trained retrieval network for ``piml`` (features BT, w, ε, view zenith).
        view_zenith_deg: Sensor view zenith angle.
    """

    method: str = "sc"
    band: Band = field(default_factory=lambda: get_band("L8_B10"))
    atmosphere: tuple[float, float, float] | None = None
    air_temperature_k: float | None = None
    sc: SingleChannel = field(default_factory=SingleChannel)
    mono: MonoWindow = field(default_factory=MonoWindow)
    network: Any = None
    view_zenith_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(
                f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}",
                parameter="method",
            )
        if self.method == "rte" and self.atmosphere is None:
            raise InputError(
                "method 'rte' needs the atmosphere (tau, L_up, L_down)", parameter="atmosphere"
            )
        if self.method == "mono" and self.air_temperature_k is None:
            raise InputError(
                "method 'mono' needs the near-surface air temperature", parameter="air_temperature"
            )
        if self.method == "piml" and self.network is None:
            raise InputError("method 'piml' needs a trained model", parameter="model")


_CHUNK_PIXELS = 32768


def _rows(array: np.ndarray, rows: slice, shape: tuple[int, ...]) -> np.ndarray:
    """Rows of a full-size array, or the array itself when it broadcasts (scalar, 1 row)."""
    if array.ndim == 2 and array.shape == shape:
        return array[rows]
    return array


def retrieve_block(
    radiance: np.ndarray, emissivity: np.ndarray, water_vapour: np.ndarray, config: RetrievalConfig
) -> np.ndarray:
    """LST (K, float32) for one block of pixels (all inputs broadcastable, NaN = nodata).

    The classical methods run on whole arrays in float32 (NaN propagates; a scalar water vapour
    keeps the ψ functions scalar); the network runs on the valid pixels only.
    """
    radiance = np.asarray(radiance, dtype=np.float32)
    eps = np.asarray(emissivity, dtype=np.float32)
    water = np.asarray(water_vapour, dtype=np.float32)
    if config.method != "piml" and radiance.ndim == 2 and radiance.size > 2 * _CHUNK_PIXELS:
        # cache-sized row chunks: each numpy pass then stays in L2, about 3x faster than
        # whole-block temporaries on a 7000-px-wide scene
        rows = max(1, _CHUNK_PIXELS // radiance.shape[1])
        out = np.empty(radiance.shape, dtype=np.float32)
        for start in range(0, radiance.shape[0], rows):
            sl = slice(start, start + rows)
            out[sl] = retrieve_block(
                radiance[sl],
                _rows(eps, sl, radiance.shape),
                _rows(water, sl, radiance.shape),
                config,
            )
        return out
    if config.method != "piml":
        with np.errstate(invalid="ignore", divide="ignore"):
            rad = np.where(radiance > 0, radiance, np.float32(np.nan))
            if config.method == "sc":
                ts = config.sc(rad, eps, water, validate=False)
            elif config.method == "rte":
                assert config.atmosphere is not None
                tau, up, down = (np.float32(v) for v in config.atmosphere)
                ts = rte_inverse(rad, eps, tau, up, down, config.band)
            else:
                assert config.air_temperature_k is not None
                ts = config.mono(rad, eps, water, float(config.air_temperature_k))
        return np.asarray(np.broadcast_to(ts, radiance.shape), dtype=np.float32)
    from eokit.lst.model import predict

    eps_full = np.broadcast_to(eps, radiance.shape)
    water_full = np.broadcast_to(water, radiance.shape)
    ok = np.isfinite(radiance) & np.isfinite(eps_full) & np.isfinite(water_full) & (radiance > 0)
    out = np.full(radiance.shape, np.nan, dtype=np.float32)
    if not ok.any():
        return out
    rad, e, w = radiance[ok], eps_full[ok], water_full[ok]
    bt = config.band.brightness_temperature(rad)
    features = np.stack([bt, w, e, np.full_like(bt, config.view_zenith_deg)], axis=1)
    out[ok] = predict(config.network, features.astype(np.float32))
    return out


def retrieve_arrays(
    thermal: np.ndarray,
    *,
    config: RetrievalConfig,
    calibration: MtlCalibration | None = None,
    emissivity: np.ndarray | float | None = None,
    red: np.ndarray | None = None,
    nir: np.ndarray | None = None,
    water_vapour: np.ndarray | float = 2.0,
    names: dict[str, str] | None = None,
) -> np.ndarray:
    """LST (K) for in-memory (H, W) arrays: DN or radiance → emissivity → retrieval.

    Works in cache-sized row chunks (calibration, NDVI emissivity, checks and retrieval fused per
    chunk), which is several times faster than whole-array numpy passes on wide scenes.

    Args:
        thermal: Band-10 DN (with ``calibration``; DN 0 = fill) or TOA radiance (NaN = nodata).
        config: Method and its parameters.
        calibration: MTL rescaling (DN → radiance), if ``thermal`` holds DN.
        emissivity: Emissivity array or value; else ``red`` and ``nir`` (NDVI-THM).
        red: Red reflectance (same shape as ``thermal``).
        nir: NIR reflectance (same shape as ``thermal``).
        water_vapour: Column water vapour, g cm⁻² (value or array).
        names: Names used in error messages (keys radiance, emissivity, water_vapour).

    Raises:
        InputError: emissivity outside (0, 1], negative radiance, water vapour outside [0, 10].
    """
    names = names or {}
    thermal = np.asarray(thermal)
    if emissivity is None and (red is None or nir is None):
        raise InputError(
            "give an emissivity (array or value) or both red and nir", parameter="emissivity"
        )
    shape = thermal.shape
    eps_in = None if emissivity is None else np.asarray(emissivity, dtype=np.float32)
    water_in = np.asarray(water_vapour, dtype=np.float32)
    width = shape[1] if thermal.ndim == 2 else max(1, thermal.size)
    chunk = _CHUNK_PIXELS if config.method != "piml" else 8 * _CHUNK_PIXELS  # fewer torch calls
    rows = max(1, chunk // width) if thermal.ndim == 2 else 1
    out = np.empty(shape, dtype=np.float32)
    if config.method == "sc":
        _retrieve_sc(thermal, out, config, calibration, eps_in, red, nir, water_in, names)
        return out
    for start in range(0, shape[0] if thermal.ndim == 2 else 1, rows):
        sl = slice(start, start + rows) if thermal.ndim == 2 else slice(None)
        data = thermal[sl].astype(np.float32)
        if calibration is not None:  # Level-1 DN; 0 is the fill value
            scaled = data * np.float32(calibration.radiance_mult)
            data = np.where(data > 0, scaled + np.float32(calibration.radiance_add), np.nan)
        check_radiance(data, name=names.get("radiance", "radiance"))
        if eps_in is not None:
            eps = _rows(eps_in, sl, shape)
            check_emissivity(eps, name=names.get("emissivity", "emissivity"))
        else:
            assert red is not None and nir is not None
            eps = ndvi_emissivity(red[sl], nir[sl])
        water = _rows(water_in, sl, shape)
        check_water_vapour(water, name=names.get("water_vapour", "water_vapour"))
        out[sl] = retrieve_block(data, eps, water, config)
    return out


def _check_range(
    values: np.ndarray,
    low: float,
    high: float,
    check: Callable[[np.ndarray, str], None],
    name: str,
) -> None:
    """Cheap NaN-ignoring min/max test; the full check (and its message) only when it fails."""
    if values.size == 0:
        return
    flat = values.ravel()
    if np.fmin.reduce(flat) < low or np.fmax.reduce(flat) > high:
        check(values, name)


def _retrieve_sc(
    thermal: np.ndarray,
    out: np.ndarray,
    config: RetrievalConfig,
    calibration: MtlCalibration | None,
    eps_in: np.ndarray | None,
    red: np.ndarray | None,
    nir: np.ndarray | None,
    water_in: np.ndarray,
    names: dict[str, str],
) -> None:
    """SC retrieval into ``out`` by chunks through the fused kernel of :mod:`eokit.lst.fused`."""
    from eokit.lst import fused

    shape = thermal.shape
    mult, add = (
        (calibration.radiance_mult, calibration.radiance_add) if calibration else (None, None)
    )
    rows = max(1, fused.CHUNK_PIXELS // shape[1]) if thermal.ndim == 2 else 1
    tiny = float(np.finfo(np.float32).tiny)

    def work(start: int) -> None:
        sl = slice(start, start + rows) if thermal.ndim == 2 else slice(None)
        radiance = fused.radiance_chunk(thermal[sl], mult, add)
        _check_range(radiance, 0.0, np.inf, check_radiance, names.get("radiance", "radiance"))
        if eps_in is not None:
            eps = _rows(eps_in, sl, shape)
            _check_range(eps, tiny, 1.0 + EMISSIVITY_TOLERANCE, check_emissivity,
                         names.get("emissivity", "emissivity"))
        else:
            assert red is not None and nir is not None
            eps = fused.ndvi_emissivity_chunk(red[sl], nir[sl])
        water = _rows(water_in, sl, shape)
        _check_range(
            water, 0.0, 10.0, check_water_vapour, names.get("water_vapour", "water_vapour")
        )
        fused.sc_chunk(radiance, water, config.sc, eps, out=out[sl])

    starts = range(0, shape[0] if thermal.ndim == 2 else 1, rows)
    # small inputs (tests, single windows) stay on the calling thread
    fused.run_chunks(starts, work, threads=None if thermal.size > 4 * fused.CHUNK_PIXELS else 1)


@dataclass
class RetrievalResult:
    """What :func:`retrieve_scene` wrote and how many pixels it had to mask.

    It is path-like (``os.fspath(result)`` is the written file), so it can be passed wherever
    the output path is expected.

    Attributes:
        path: The LST COG.
        valid_pixels: Pixels with a plausible LST in the output.
        retrievable_pixels: Pixels whose inputs were all valid.
        implausible_masked: Retrievable pixels whose LST fell outside [180, 380] K or could not
            be inverted; they are nodata in the output.
        implausible_low, implausible_high, not_invertible: The masked pixels by cause.
    """

    path: Path
    valid_pixels: int = 0
    retrievable_pixels: int = 0
    implausible_masked: int = 0
    implausible_low: int = 0
    implausible_high: int = 0
    not_invertible: int = 0

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        """File name of the output."""
        return self.path.name

    def as_dict(self) -> dict[str, Any]:
        """Counts as a JSON-able dict (with the plausible range)."""
        return {
            "valid_pixels": self.valid_pixels,
            "retrievable_pixels": self.retrievable_pixels,
            "implausible_masked": self.implausible_masked,
            "implausible_below_180k": self.implausible_low,
            "implausible_above_380k": self.implausible_high,
            "not_invertible": self.not_invertible,
            "plausible_range_k": [LST_MIN_K, LST_MAX_K],
        }


def _finite_count(values: Any) -> int:
    return int(np.count_nonzero(np.isfinite(values)))


def _thermal_block_check(
    data: np.ndarray, calibration: MtlCalibration | None, band: Band, path: Path
) -> None:
    """InputError when a block's radiance exceeds any value the band can measure.

    Band-10 TOA radiance stays below ~25 W m-2 sr-1 um-1 (a 380 K blackbody); the sensor
    saturates near 22. A share of pixels above the radiance of a 400 K blackbody means the file
    holds something else, and the values tell what.
    """
    if data.size == 0:
        return
    high = float(np.fmax.reduce(data, axis=None))
    if not np.isfinite(high):
        return
    limit = float(band.radiance(np.float64(400.0)))
    scale = (calibration.radiance_mult, calibration.radiance_add) if calibration else (1.0, 0.0)
    if high * scale[0] + scale[1] <= limit:
        return
    finite = data[np.isfinite(data) & (data > 0)]
    radiance = finite * np.float32(scale[0]) + np.float32(scale[1])
    if np.count_nonzero(radiance > limit) <= _OUTLIER_FRACTION * finite.size:
        return  # a few hot or corrupt pixels: masked by the output check
    median = float(np.median(finite))
    if calibration is not None:
        cause = (f"radiance after the MTL rescaling reaches {high * scale[0] + scale[1]:.4g} "
                 f"W m-2 sr-1 um-1, above any {band.name} value ({limit:.1f} at 400 K); "
                 f"is the MTL ({calibration.path}) for this band and product?")
    elif median > 1000:
        cause = (f"looks like Level-1 DN, not radiance (values up to {high:.6g}, median "
                 f"{median:.6g}): pass --mtl with the scene's MTL file (a Level-2 ST_B10 band "
                 "is already LST, scaled)")
    elif 150 <= median <= 400:
        cause = (f"values around {median:.4g} look like brightness temperatures in K; give the "
                 "TOA radiance in W m-2 sr-1 um-1 (or Level-1 DN with --mtl)")
    else:
        cause = (f"values up to {high:.6g} exceed any {band.name} TOA radiance ({limit:.1f} "
                 "W m-2 sr-1 um-1 at 400 K); it does not look like a thermal radiance band")
    raise InputError(cause, path=path)


def _reflectance_block_check(values: np.ndarray, what: str, path: Path) -> None:
    """InputError when red/NIR values lie far outside reflectance (DN, percent, wrong band)."""
    if values.size == 0:
        return
    low, high = float(np.fmin.reduce(values, axis=None)), float(np.fmax.reduce(values, axis=None))
    if not (low < REFLECTANCE_MIN or high > REFLECTANCE_MAX):
        return  # also when all NaN (comparisons are False)
    finite = values[np.isfinite(values)]
    outside = np.count_nonzero((finite < REFLECTANCE_MIN) | (finite > REFLECTANCE_MAX))
    if outside <= _OUTLIER_FRACTION * finite.size:
        return
    if high > 100:
        hint = ("it looks like DN not scaled to reflectance (Landsat Collection 2 Level-2: "
                "rho = 2.75e-5 * DN - 0.2)")
    elif high > REFLECTANCE_MAX:
        hint = "reflectance in percent? give it as a fraction (0-1)"
    else:
        hint = "check the band and its scaling"
    raise InputError(
        f"{what} reflectance ranges {low:.4g}..{high:.4g}, {100 * outside / finite.size:.0f} % "
        f"of the pixels outside [{REFLECTANCE_MIN}, {REFLECTANCE_MAX}]; {hint}",
        path=path,
    )


class _Plausibility:
    """Per-input valid-pixel counts and the output mask of implausible LST, block by block."""

    def __init__(self, inputs: dict[str, Path]) -> None:
        self.inputs = inputs
        self.valid_inputs = dict.fromkeys(inputs, 0)
        self.retrievable = 0
        self.valid = 0
        self.low = 0
        self.high = 0
        self.not_invertible = 0

    def block(self, lst: np.ndarray, rasters: dict[str, np.ndarray]) -> np.ndarray:
        """Count the block's valid inputs and set implausible LST to NaN (in place)."""
        ok = np.ones(lst.shape, dtype=bool)
        for key, values in rasters.items():
            good = np.isfinite(values)
            if key == "thermal":
                good &= values > 0  # DN 0 is fill; radiance <= 0 is not a measurement
            self.valid_inputs[key] += int(np.count_nonzero(good))
            ok &= good
        with np.errstate(invalid="ignore"):
            low = ok & (lst < LST_MIN_K)
            high = ok & (lst > LST_MAX_K)
        nan = ok & np.isnan(lst)
        self.retrievable += int(np.count_nonzero(ok))
        self.low += int(np.count_nonzero(low))
        self.high += int(np.count_nonzero(high))
        self.not_invertible += int(np.count_nonzero(nan))
        bad = low | high
        if bad.any():
            lst[bad] = np.nan
        # pixels with an invalid input that still got a number (a scalar emissivity, say) stay
        self.valid += _finite_count(lst)
        return lst

    @property
    def masked(self) -> int:
        return self.low + self.high + self.not_invertible

    def finish(
        self, thermal: Path, calibration: MtlCalibration | None, config: RetrievalConfig
    ) -> None:
        """Raise for an empty input or a mostly implausible scene; log the masked count."""
        for key, count in self.valid_inputs.items():
            if count == 0:
                raise InputError(
                    f"{key.replace('_', ' ')} raster has no valid pixel (all nodata or NaN)",
                    path=self.inputs[key],
                )
        if self.retrievable == 0:
            names = ", ".join(map(str, self.inputs.values()))
            raise DataError(
                f"no pixel is valid in all inputs at once ({names}); their nodata areas do not "
                "overlap the thermal band's data"
            )
        if self.masked == 0:
            return
        share = self.masked / self.retrievable
        if share > _IMPLAUSIBLE_FRACTION:
            raise DataError(
                f"{thermal}: {100 * share:.0f} % of the {self.retrievable} retrievable pixels "
                f"give an LST outside the plausible {LST_MIN_K:.0f}-{LST_MAX_K:.0f} K "
                f"({self.low} below, {self.high} above, {self.not_invertible} not invertible); "
                f"likely cause: "
                f"{self._cause(calibration, config)}"
            )
        logger.warning(
            "%s: %d of %d retrievable pixels (%.2f %%) gave an LST outside %.0f-%.0f K "
            "(%d below, %d above, %d not invertible) and are masked as nodata",
            thermal, self.masked, self.retrievable, 100 * share, LST_MIN_K, LST_MAX_K,
            self.low, self.high, self.not_invertible,
        )

    def _cause(self, calibration: MtlCalibration | None, config: RetrievalConfig) -> str:
        too_hot = self.high >= self.low + self.not_invertible
        if config.method == "rte" and not too_hot:
            return ("the atmosphere (--tau, --up, --down) does not fit the radiance (path "
                    "radiance above the measurement?)")
        if too_hot:
            if calibration is None:
                return "the thermal band looks like Level-1 DN: pass --mtl"
            return "the MTL rescaling does not fit the thermal band (MTL of another scene/band?)"
        if calibration is not None:
            return ("the thermal band looks like radiance already, yet the MTL rescaled it as "
                    "DN: drop --mtl")
        return ("the radiance is too low for a surface (is it TOA radiance in W m-2 sr-1 um-1 "
                "of band 10/11?)")


def _check_one_band(path: Path, what: str) -> tuple[Any, int, str]:
    from eokit.core.raster import raster_info

    grid, count, dtype = raster_info(path)
    if count != 1:
        raise InputError(
            f"has {count} bands; the {what} input must be a one-band raster (give that band as "
            "its own file)",
            path=path,
        )
    return grid, count, dtype


def _read_window(path: Path, window: tuple[int, int, int, int]) -> np.ndarray:
    from eokit.core.raster import read_raster

    raster = read_raster(path, window=window, bands=[1], dtype="float32", allow_empty=True)
    data: np.ndarray = raster.data[0].astype(np.float32)
    data[~raster.valid] = np.nan
    return data


def retrieve_scene(
    thermal: str | Path,
    output: str | Path,
    *,
    config: RetrievalConfig,
    mtl: str | Path | None = None,
    emissivity: str | Path | float | None = None,
    red: str | Path | None = None,
    nir: str | Path | None = None,
    water_vapour: str | Path | float = 2.0,
    block: int = 1024,
    progress: bool = True,
    on_block: Callable[[np.ndarray], None] | None = None,
) -> RetrievalResult:
    """Retrieve LST for a thermal raster, block by block, into a float32 COG (K, NaN = nodata).

    Inputs and output are checked for physical plausibility on the way: one-band rasters, no
    8-bit image as the thermal band, band-10/11 radiance below that of a 400 K blackbody (DN
    without ``mtl`` and brightness temperatures are recognised), red/NIR within reflectance,
    emissivity in (0, 1], every raster with valid pixels. LST outside [180, 380] K is masked as
    nodata and counted; when more than half of the retrievable pixels are masked the scene is an
    error naming the likely cause.

    Args:
        thermal: Band-10 raster: Level-1 DN when ``mtl`` is given, else TOA radiance.
        output: Output GeoTIFF (COG).
        config: Method and its parameters.
        mtl: MTL file (rescaling DN → radiance).
        emissivity: Emissivity raster or one value; alternatively ``red`` + ``nir`` (NDVI-THM).
        red: Red reflectance raster on the thermal grid.
        nir: NIR reflectance raster on the thermal grid.
        water_vapour: Column water vapour, g cm⁻²: one value or a raster on the thermal grid.
        block: Block size in pixels.
        progress: Show a tqdm bar.
        on_block: Called with each finished LST block (for statistics), after masking.

    Returns:
        The written path with the counts of valid and masked pixels (path-like).

    Raises:
        InputError: missing/misaligned/multi-band inputs, bad values (emissivity outside (0, 1],
            negative or unphysical radiance, reflectance far outside [-0.1, 1.5], water vapour
            outside [0, 10]), an input without a valid pixel, MTL for another band/sensor.
        DataError: more than half of the retrievable pixels give an implausible LST.
    """
    from eokit.core.raster import check_aligned, open_writer, raster_info
    from eokit.core.tiling import plan_windows

    thermal = Path(thermal)
    calibration = (
        parse_mtl(mtl, band_number=config.band.band_number, spacecraft=config.band.sensor)
        if mtl is not None
        else None
    )
    if np.dtype(raster_info(thermal)[2]) == np.uint8:  # checked first: a JPEG has 3 bands too
        raise InputError(
            "8-bit data (0-255, an image such as a JPEG/PNG?) does not look like a thermal band: "
            "give Level-1 DN (16-bit, with --mtl) or TOA radiance in W m-2 sr-1 um-1",
            path=thermal,
        )
    grid = _check_one_band(thermal, "thermal")[0]
    rasters: dict[str, Path] = {}
    if emissivity is not None and not isinstance(emissivity, int | float):
        rasters["emissivity"] = Path(emissivity)
    elif emissivity is None:
        if red is None or nir is None:
            raise InputError(
                "give --emissivity (raster or value) or both --red and --nir",
                parameter="emissivity",
            )
        rasters["red"], rasters["nir"] = Path(red), Path(nir)
    else:
        check_emissivity(float(emissivity))
    if not isinstance(water_vapour, int | float):
        rasters["water_vapour"] = Path(water_vapour)
    else:
        check_water_vapour(float(water_vapour))
    grids = {str(thermal): grid}
    for key, path in rasters.items():
        grids[str(path)] = _check_one_band(path, key.replace("_", " "))[0]
    if len(grids) > 1:
        check_aligned(**grids)
    plausibility = _Plausibility({"thermal": thermal, **rasters})
    windows = plan_windows(grid.height, grid.width, tile=block, overlap=0)
    iterator: Any = windows
    if progress:
        from tqdm import tqdm

        iterator = tqdm(windows, desc=f"LST ({config.method})", unit="block")
    with open_writer(
        output, grid, 1, "float32", nodata=float("nan"), cog=True, band_names=["lst_k"]
    ) as writer:
        for window in iterator:
            blocks = {"thermal": _read_window(thermal, window)}
            for key, path in rasters.items():
                blocks[key] = _read_window(path, window)
            _thermal_block_check(blocks["thermal"], calibration, config.band, thermal)
            for key in ("red", "nir"):
                if key in blocks:
                    _reflectance_block_check(blocks[key], key.upper() if key == "nir" else key,
                                             rasters[key])
            lst = retrieve_arrays(
                blocks["thermal"],
                config=config,
                calibration=calibration,
                emissivity=blocks.get("emissivity", emissivity),  # type: ignore[arg-type]
                red=blocks.get("red"),
                nir=blocks.get("nir"),
                water_vapour=blocks.get("water_vapour", water_vapour),  # type: ignore[arg-type]
                names={"radiance": str(thermal), **{k: str(v) for k, v in rasters.items()}},
            )
            lst = plausibility.block(lst, blocks)
            if on_block is not None:
                on_block(lst)
            writer.write_window(lst[None], window[0], window[1])
        # still inside the writer: an error here leaves no output file behind
        plausibility.finish(thermal, calibration, config)
    return RetrievalResult(
        path=Path(output),
        valid_pixels=plausibility.valid,
        retrievable_pixels=plausibility.retrievable,
        implausible_masked=plausibility.masked,
        implausible_low=plausibility.low,
        implausible_high=plausibility.high,
        not_invertible=plausibility.not_invertible,
    )
