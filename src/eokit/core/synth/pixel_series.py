"""Simulated multi-year pixel time series with phenology, clouds, hedgerows and canopy events.

The generator draws a parcel map (Voronoi fields) of six surface classes, gives every pixel an
NDVI-consistent reflectance curve over several years at an irregular revisit, covers dates with
spatially correlated clouds (and whole missing acquisitions), adds sensor noise, thin hedgerows
of broadleaf trees, clear-cuts and new plantings that mature over years. The truth it returns
(per-date canopy class, event type and event date per pixel) is what the canopy benchmark and
tests score against.

Realistic: per-class phenology shape and timing (evergreen, deciduous green-up/senescence, grass
mowing, crop sowing/harvest), linear spectral mixing of vegetation and soil endmembers so that
NDVI and all six bands move together, cloud brightness and spatial clumping, irregular revisit.
Not realistic: no atmosphere or BRDF, no cloud shadows, no mixed pixels at parcel edges other
than hedgerows, parcel shapes are convex Voronoi cells, one sowing/harvest per year.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from eokit.core.types import Grid, day_of_year

logger = logging.getLogger(__name__)

#: Surface classes of the parcel map (index = value in ``landcover``).
PIXEL_SERIES_CLASSES: tuple[str, ...] = ("conifer", "broadleaf", "grass", "crop", "urban", "water")
#: Canopy classes of the per-date truth (index = value in ``canopy``).
CANOPY_CLASSES: tuple[str, ...] = ("none", "conifer", "broadleaf")
#: Band order of the simulated reflectance.
SERIES_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir", "swir1", "swir2")
#: Event codes in ``event_type``.
EVENT_TYPES: tuple[str, ...] = ("none", "clear_cut", "planting")

_CLASS_PROBABILITIES = np.array([0.2, 0.2, 0.25, 0.2, 0.09, 0.06])

# Endmember reflectance (blue, green, red, nir, swir1, swir2).
_SOIL = np.array([0.08, 0.11, 0.15, 0.22, 0.30, 0.25], dtype=np.float32)
_LITTER = np.array([0.06, 0.08, 0.10, 0.20, 0.30, 0.22], dtype=np.float32)
_BROADLEAF = np.array([0.03, 0.08, 0.04, 0.46, 0.22, 0.10], dtype=np.float32)
_CONIFER = np.array([0.02, 0.05, 0.03, 0.27, 0.12, 0.05], dtype=np.float32)
_GRASS = np.array([0.035, 0.09, 0.045, 0.40, 0.24, 0.12], dtype=np.float32)
_CROP = np.array([0.03, 0.09, 0.04, 0.48, 0.25, 0.12], dtype=np.float32)
_URBAN = np.array([0.12, 0.13, 0.14, 0.18, 0.22, 0.20], dtype=np.float32)
_WATER = np.array([0.05, 0.05, 0.03, 0.015, 0.008, 0.005], dtype=np.float32)
_CLOUD = np.array([0.42, 0.43, 0.45, 0.50, 0.40, 0.30], dtype=np.float32)


@dataclass
class PixelSeriesScene:
    """A simulated image time series with its truth.

    Attributes:
        reflectance: (T, C, H, W) float32 surface reflectance 0..1 as observed (clouds included).
        valid: (T, H, W) bool, False under clouds and on missing acquisitions.
        dates: (T,) datetime64[D], strictly increasing, irregular revisit.
        landcover: (H, W) uint8 surface class at the first date (``PIXEL_SERIES_CLASSES``).
        canopy: (T, H, W) uint8 canopy class per date (``CANOPY_CLASSES``).
        event_type: (H, W) uint8 index into ``EVENT_TYPES``.
        event_date: (H, W) datetime64[D]; the date the pixel stops (clear-cut) or starts
            (planting: canopy cover crosses 50 %) being forest; NaT where no event.
        hedgerow: (H, W) bool thin tree lines.
        grid: georeference (projected CRS, ``gsd_m`` pixels).
    """

    reflectance: np.ndarray
    valid: np.ndarray
    dates: np.ndarray
    landcover: np.ndarray
    canopy: np.ndarray
    event_type: np.ndarray
    event_date: np.ndarray
    hedgerow: np.ndarray
    grid: Grid
    band_names: tuple[str, ...] = SERIES_BANDS
    class_names: tuple[str, ...] = PIXEL_SERIES_CLASSES
    canopy_names: tuple[str, ...] = CANOPY_CLASSES
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def doy(self) -> np.ndarray:
        """(T,) day of year (1..366) of every date."""
        return day_of_year(self.dates, "int32")


def _logistic(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


def _season(doy: np.ndarray, up: np.ndarray, down: np.ndarray, width: float) -> np.ndarray:
    """Double-logistic green season 0..1 (``doy`` broadcast against per-pixel up/down days)."""
    season: np.ndarray = _logistic((doy - up) / width) * _logistic((down - doy) / width)
    return season


def _irregular_dates(start: _dt.date, years: int, rng: np.random.Generator) -> np.ndarray:
    end = np.datetime64(start) + np.timedelta64(int(round(365.25 * years)), "D")
    steps = np.array([5, 5, 10, 10, 10, 15, 20])
    dates = [np.datetime64(start)]
    while True:
        nxt = dates[-1] + np.timedelta64(int(rng.choice(steps)), "D")
        if nxt >= end:
            break
        dates.append(nxt)
    return np.array(dates, dtype="datetime64[D]")


def _parcels(size: int, n_parcels: int, rng: np.random.Generator) -> np.ndarray:
    seeds = rng.uniform(0, size, size=(n_parcels, 2))
    rows, cols = np.mgrid[0:size, 0:size]
    # Anisotropic distance gives field-like elongated parcels.
    stretch = rng.uniform(0.6, 1.6, size=n_parcels)
    dist = ((rows[None] - seeds[:, 0, None, None]) ** 2) * stretch[:, None, None] + (
        (cols[None] - seeds[:, 1, None, None]) ** 2
    ) / stretch[:, None, None]
    parcel_ids: np.ndarray = np.argmin(dist, axis=0).astype(np.int32)
    return parcel_ids


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="wrap")
    standardised: np.ndarray = (noise - noise.mean()) / (noise.std() + 1e-9)
    return standardised


def generate_pixel_series(
    size: int = 64,
    *,
    seed: int = 0,
    years: int = 3,
    start: str = "2019-01-01",
    gsd_m: float = 10.0,
    cloud_fraction: float = 0.35,
    missing_fraction: float = 0.03,
    noise_std: float = 0.006,
    n_parcels: int | None = None,
    n_hedgerows: int | None = None,
    n_events: int | None = None,
    crs: str = "EPSG:32633",
    origin: tuple[float, float] = (500000.0, 5000000.0),
) -> PixelSeriesScene:
    """Generate a deterministic multi-year pixel time series scene.

    Args:
        size: Scene width and height in pixels.
        seed: Random seed (same seed, same scene).
        years: Length of the series in years.
        start: First acquisition date (ISO).
        gsd_m: Pixel size in metres.
        cloud_fraction: Mean fraction of clouded pixels per date.
        missing_fraction: Fraction of dates with no valid pixel (missing acquisitions).
        noise_std: Gaussian reflectance noise.
        n_parcels: Number of Voronoi parcels (default scales with area).
        n_hedgerows: Number of 1-pixel tree lines (default scales with size).
        n_events: Number of clear-cut plus planting events (default scales with area).
        crs: CRS of the grid.
        origin: (x, y) of the upper-left corner.

    Returns:
        The scene with observed reflectance, validity and truth.
    """
    from eokit.core.errors import InputError

    if size < 8:
        raise InputError(f"must be at least 8 pixels, got {size}", parameter="size")
    if years < 1:
        raise InputError(f"must be at least 1, got {years}", parameter="years")
    if not 0.0 <= cloud_fraction < 1.0:
        raise InputError(f"must be in [0, 1), got {cloud_fraction}", parameter="cloud_fraction")
    rng = np.random.default_rng(seed)
    dates = _irregular_dates(_dt.date.fromisoformat(start), years, rng)
    n_dates = len(dates)
    doy = day_of_year(dates)
    day_index = (dates - dates[0]).astype(np.int64).astype(np.float32)
    year_index = (dates.astype("datetime64[Y]") - dates[0].astype("datetime64[Y]")).astype(int)

    area = size * size
    n_parcels = n_parcels or max(6, area // 180)
    parcel = _parcels(size, n_parcels, rng)
    parcel_class = rng.choice(len(PIXEL_SERIES_CLASSES), size=n_parcels, p=_CLASS_PROBABILITIES)
    landcover = parcel_class[parcel].astype(np.uint8)

    # Hedgerows: straight 1-pixel broadleaf lines crossing open land.
    hedgerow = np.zeros((size, size), dtype=bool)
    n_hedgerows = size // 16 if n_hedgerows is None else n_hedgerows
    for _ in range(n_hedgerows):
        r0, c0 = rng.integers(0, size, size=2)
        angle = rng.uniform(0, np.pi)
        length = rng.integers(size // 4, size // 2 + 1)
        along = np.arange(length)
        rr = np.clip(np.round(r0 + along * np.sin(angle)).astype(int), 0, size - 1)
        cc = np.clip(np.round(c0 + along * np.cos(angle)).astype(int), 0, size - 1)
        line = np.zeros_like(hedgerow)
        line[rr, cc] = True
        hedgerow |= line & np.isin(landcover, (2, 3))
    landcover[hedgerow] = 1

    # Per-pixel phenology parameters.
    shift = _smooth_noise((size, size), 6.0, rng) * 6.0 + rng.normal(0, 3.0, (size, size))
    amplitude = 1.0 + 0.06 * _smooth_noise((size, size), 4.0, rng)
    brightness = (1.0 + 0.04 * _smooth_noise((size, size), 3.0, rng)).astype(np.float32)
    sow = rng.uniform(95, 140, size=(n_parcels, years + 1))[parcel]  # (H, W, Y)
    harvest = sow + rng.uniform(90, 120, size=(n_parcels, years + 1))[parcel]
    mow = rng.uniform(150, 230, size=(n_parcels, years + 1))[parcel]

    # Events on whole parcels (or a rectangle inside), with dates after the first year.
    event_type = np.zeros((size, size), dtype=np.uint8)
    event_date = np.full((size, size), np.datetime64("NaT"), dtype="datetime64[D]")
    cut_day = np.full((size, size), np.inf, dtype=np.float32)
    plant_day = np.full((size, size), np.inf, dtype=np.float32)
    maturity_days = np.full((size, size), np.inf, dtype=np.float32)
    planted_species = np.zeros((size, size), dtype=np.uint8)
    events: list[dict[str, Any]] = []
    n_events = n_events if n_events is not None else max(2, area // 700)
    total_days = float(day_index[-1])
    forest_parcels = [p for p in range(n_parcels) if parcel_class[p] in (0, 1)]
    open_parcels = [p for p in range(n_parcels) if parcel_class[p] == 2]
    for k in range(n_events):
        clear_cut = k % 2 == 0
        pool = forest_parcels if clear_cut else open_parcels
        if not pool:
            continue
        p = int(pool[rng.integers(len(pool))])
        pool.remove(p)
        rows, cols = np.nonzero((parcel == p) & ~hedgerow)
        if rows.size < 4:
            continue
        # A rectangle inside the parcel so events do not always follow parcel edges.
        r_lo, r_hi = np.percentile(rows, [rng.uniform(0, 30), rng.uniform(70, 100)]).astype(int)
        c_lo, c_hi = np.percentile(cols, [rng.uniform(0, 30), rng.uniform(70, 100)]).astype(int)
        region = (parcel == p) & ~hedgerow
        region[:r_lo] = False
        region[r_hi + 1 :] = False
        region[:, :c_lo] = False
        region[:, c_hi + 1 :] = False
        if region.sum() < 4:
            continue
        if clear_cut:
            day = float(rng.uniform(0.35, 0.85) * total_days)
            cut_day[region] = day
            when = dates[0] + np.timedelta64(int(round(day)), "D")
            event_type[region] = 1
        else:
            day = float(rng.uniform(0.05, 0.3) * total_days)
            maturity = float(rng.uniform(0.9, 1.4) * 365.0)
            plant_day[region] = day
            maturity_days[region] = maturity
            planted_species[region] = 1 if rng.uniform() < 0.5 else 0
            # Forest from the day canopy cover crosses 50 %.
            when = dates[0] + np.timedelta64(int(round(day + 0.5 * maturity)), "D")
            event_type[region] = 2
        event_date[region] = when
        events.append(
            {
                "type": EVENT_TYPES[event_type[region][0]],
                "date": str(when),
                "pixels": int(region.sum()),
                "parcel": p,
            }
        )

    # Vegetation fraction and endmember per class, (T, H, W).
    t_doy = doy[:, None, None]
    t_day = day_index[:, None, None]
    veg = np.zeros((n_dates, size, size), dtype=np.float32)
    refl = np.zeros((n_dates, len(SERIES_BANDS), size, size), dtype=np.float32)

    def mix(weight: np.ndarray, spectrum: np.ndarray) -> None:
        refl[:] += weight[:, None, :, :] * spectrum[None, :, None, None]

    is_class = [(landcover == c).astype(np.float32)[None] for c in range(len(PIXEL_SERIES_CLASSES))]
    # Conifer: evergreen, mild summer peak.
    f_con = (0.78 + 0.07 * np.cos(2 * np.pi * (t_doy - 200 - shift) / 365.0)) * amplitude
    # Broadleaf: deciduous, green-up ~ day 115, senescence ~ day 290.
    f_broad = 0.12 + 0.78 * amplitude * _season(t_doy, 115 + shift, 290 + shift, 8.0)
    # Grass: long season, early green-up, one mowing dip.
    mow_y = np.take_along_axis(mow, np.clip(year_index, 0, years)[None, None, :], 2)
    mow_y = np.moveaxis(mow_y, 2, 0)
    mowing = 1.0 - 0.45 * np.exp(-(((t_doy - mow_y) / 12.0) ** 2)) * (t_doy > mow_y - 3)
    f_grass = (0.35 + 0.45 * _season(t_doy, 85 + shift, 300 + shift, 15.0)) * mowing
    # Crops: bare soil except between sowing and harvest.
    sow_y = np.moveaxis(
        np.take_along_axis(sow, np.clip(year_index, 0, years)[None, None, :], 2), 2, 0
    )
    har_y = np.moveaxis(
        np.take_along_axis(harvest, np.clip(year_index, 0, years)[None, None, :], 2), 2, 0
    )
    f_crop = 0.05 + 0.85 * _logistic((t_doy - sow_y - 35) / 7.0) * _logistic((har_y - t_doy) / 4.0)
    f_urban = 0.10 + 0.05 * _season(t_doy, 110 + shift, 290 + shift, 10.0)

    # Events: clear-cut turns forest into regrowing clearing; planting matures over years.
    after_cut = t_day >= cut_day[None]
    regrow = np.clip((t_day - cut_day[None]) / 500.0, 0.0, 1.0)
    f_clearing = 0.08 + (f_grass - 0.08) * regrow
    planted = np.isfinite(plant_day)
    cover = np.zeros((n_dates, size, size), dtype=np.float32)
    cover[:, planted] = np.clip(
        (t_day[:, :, 0] - plant_day[planted][None]) / maturity_days[planted][None], 0.0, 1.0
    )

    def forest_weights(
        weight: np.ndarray, tree_f: np.ndarray, spectrum: np.ndarray, winter: np.ndarray
    ) -> None:
        mix(weight * tree_f, spectrum)
        mix(weight * (1.0 - tree_f) * winter, _LITTER)
        mix(weight * (1.0 - tree_f) * (1.0 - winter), _SOIL)

    leafless = np.clip(1.0 - _season(t_doy, 115 + shift, 290 + shift, 8.0), 0.0, 1.0)
    for cls, f_tree, spectrum in ((0, f_con, _CONIFER), (1, f_broad, _BROADLEAF)):
        w = np.broadcast_to(is_class[cls], f_tree.shape)
        standing = w * (~after_cut)
        cleared = w * after_cut
        forest_weights(standing, np.clip(f_tree, 0, 1), spectrum, leafless)
        mix(np.clip(f_clearing, 0, 1) * cleared, _GRASS)
        mix((1.0 - np.clip(f_clearing, 0, 1)) * cleared, _SOIL)
        veg += (f_tree * standing + f_clearing * cleared).astype(np.float32)
    # Grass (with planting events mixed in as young trees).
    w_grass = np.broadcast_to(is_class[2], f_grass.shape)
    planted_f = np.where(planted_species[None] == 1, f_broad, f_con)
    planted_spec_b = (planted_species == 1).astype(np.float32)[None]
    tree_part = w_grass * cover
    grass_part = w_grass * (1.0 - cover)
    mix(np.clip(f_grass, 0, 1) * grass_part, _GRASS)
    mix((1.0 - np.clip(f_grass, 0, 1)) * grass_part, _SOIL)
    mix(np.clip(planted_f, 0, 1) * tree_part * planted_spec_b, _BROADLEAF)
    mix(np.clip(planted_f, 0, 1) * tree_part * (1.0 - planted_spec_b), _CONIFER)
    mix((1.0 - np.clip(planted_f, 0, 1)) * tree_part, _SOIL)
    w_crop = np.broadcast_to(is_class[3], f_crop.shape)
    mix(f_crop * w_crop, _CROP)
    mix((1.0 - f_crop) * w_crop, _SOIL)
    w_urban = np.broadcast_to(is_class[4], f_urban.shape)
    mix(f_urban * w_urban, _GRASS)
    mix((1.0 - f_urban) * w_urban, _URBAN)
    mix(np.broadcast_to(is_class[5], f_urban.shape).astype(np.float32), _WATER)
    refl *= brightness[None, None]

    # Per-date canopy truth.
    canopy = np.zeros((n_dates, size, size), dtype=np.uint8)
    canopy[np.broadcast_to(landcover == 0, canopy.shape) & ~after_cut] = 1
    canopy[np.broadcast_to(landcover == 1, canopy.shape) & ~after_cut] = 2
    planted_forest = (cover >= 0.5) & (landcover == 2)[None]
    canopy[planted_forest & (planted_species == 1)[None]] = 2
    canopy[planted_forest & (planted_species == 0)[None]] = 1

    # Noise, clouds, missing acquisitions.
    refl += rng.normal(0.0, noise_std, size=refl.shape).astype(np.float32)
    valid = np.ones((n_dates, size, size), dtype=bool)
    for t in range(n_dates):
        fraction = float(np.clip(rng.beta(0.6, 0.6 * (1 - cloud_fraction) / cloud_fraction), 0, 1))
        if fraction < 0.02:
            continue
        field_ = _smooth_noise((size, size), max(2.0, size / 12), rng)
        cloud = field_ > np.quantile(field_, 1.0 - fraction)
        opacity = np.clip(0.6 + 0.3 * field_, 0.4, 1.0)[None]
        cloudy = refl[t] * (1 - opacity) + _CLOUD[:, None, None] * opacity
        refl[t] = np.where(cloud[None], cloudy, refl[t])
        valid[t] &= ~cloud
    missing = rng.uniform(size=n_dates) < missing_fraction
    valid[missing] = False
    refl[missing] = np.nan
    refl = np.clip(refl, 0.0, 1.0, out=refl, where=np.isfinite(refl))

    grid = Grid(
        crs=_crs(crs),
        transform=Affine(gsd_m, 0.0, origin[0], 0.0, -gsd_m, origin[1]),
        width=size,
        height=size,
    )
    logger.debug("simulated %d dates x %dx%d pixels, %d events", n_dates, size, size, len(events))
    return PixelSeriesScene(
        reflectance=refl.astype(np.float32),
        valid=valid,
        dates=dates,
        landcover=landcover,
        canopy=canopy,
        event_type=event_type,
        event_date=event_date,
        hedgerow=hedgerow,
        grid=grid,
        events=events,
    )


def _crs(crs: str) -> Any:
    from rasterio.crs import CRS

    return CRS.from_user_input(crs)


def ndvi(reflectance: np.ndarray, *, red: int = 2, nir: int = 3, axis: int = 1) -> np.ndarray:
    """NDVI from reflectance with bands on ``axis`` (default the (T, C, H, W) layout)."""
    r = np.take(reflectance, red, axis=axis)
    n = np.take(reflectance, nir, axis=axis)
    index: np.ndarray = (n - r) / np.maximum(n + r, 1e-6)
    return index


def write_pixel_series(scene: PixelSeriesScene, out_dir: str | Path) -> dict[str, Path]:
    """Write a scene as a GeoTIFF stack (one file per date, invalid pixels NaN) plus truth rasters.

    Layout: ``out_dir/stack/S2_<YYYY-MM-DD>.tif`` (C bands, float32, nodata NaN),
    ``out_dir/landcover.tif``, ``out_dir/canopy_first.tif``, ``out_dir/canopy_last.tif``,
    ``out_dir/event_type.tif``, ``out_dir/events.json``.

    Returns:
        Name -> path of what was written.
    """
    import json

    from eokit.core.raster import atomic_write, write_raster

    out = Path(out_dir)
    stack = out / "stack"
    stack.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"stack": stack}
    for t, date in enumerate(scene.dates):
        data = np.where(scene.valid[t][None], scene.reflectance[t], np.nan).astype(np.float32)
        write_raster(
            stack / f"S2_{date}.tif",
            data,
            scene.grid,
            nodata=float("nan"),
            band_names=list(scene.band_names),
            overviews=False,
        )
    paths["landcover"] = write_raster(out / "landcover.tif", scene.landcover, scene.grid)
    paths["canopy_first"] = write_raster(out / "canopy_first.tif", scene.canopy[0], scene.grid)
    paths["canopy_last"] = write_raster(out / "canopy_last.tif", scene.canopy[-1], scene.grid)
    paths["event_type"] = write_raster(out / "event_type.tif", scene.event_type, scene.grid)
    info = {
        "class_names": list(scene.class_names),
        "canopy_names": list(scene.canopy_names),
        "band_names": list(scene.band_names),
        "dates": [str(d) for d in scene.dates],
        "events": scene.events,
    }
    with atomic_write(out / "events.json") as tmp:
        Path(tmp).write_text(json.dumps(info, indent=2))
    paths["events"] = out / "events.json"
    return paths
