"""Simulated cities: optical + SAR of mono- or polycentric cities with a known density law.

The built-up density follows Clark's law around each centre, ``rho(r) = w_i * exp(-alpha * r)``
(r in km to centre i), combined as the maximum over centres, inside an urban footprint that ends
(with a ragged edge) where rho drops below ``edge_density``; outside it is rural land.
Both sensors respond (nearly)
linearly to rho, so the fused signal of :mod:`eokit.urban` is ``c0 + k * rho`` and the exponent
alpha is recoverable from its profile:

- optical: a green/brown vegetation background mixed with a mosaic of roofs (4x4-pixel blocks of
  random albedo); the mixing weight is rho, so the local edge contrast (Sobel) grows with rho;
- rural land: field parcels (~240 m) with differing reflectance and -15..-12 dB backscatter;
- SAR VV sigma0 in dB inside the city: -13.5 dB (the mean of the fields) plus 16 dB * rho
  (double bounce in built areas),
  water -22 dB, with multiplicative gamma speckle (``looks``).

What is not realistic: no roads, shadows, building heights or layover; the law is imposed, not
emergent; the 8-bit "rendering" maps dB linearly from [-25, 5] dB like a display export.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine
from scipy import ndimage

from eokit.core.errors import InputError
from eokit.core.types import Grid

logger = logging.getLogger(__name__)

#: SAR display range used for the 8-bit rendering (dB).
SAR_DB_RANGE = (-25.0, 5.0)
LAND_DB = -13.5
URBAN_GAIN_DB = 16.0
WATER_DB = -22.0
VEGETATION_RGB = (0.045, 0.075, 0.040)
WATER_RGB = (0.020, 0.030, 0.045)
ROOF_BLOCK_PX = 4
OPTICAL_GAIN = 2.5  # true-colour rendering gain (reflectance * 2.5 -> 0..1)


@dataclass
class City:
    """A simulated city.

    Attributes:
        optical: (3, H, W) uint8 true-colour rendering (R, G, B).
        sar: (H, W) uint8 rendering of VV sigma0 dB over ``SAR_DB_RANGE``.
        reflectance: (3, H, W) float32 surface reflectance (R, G, B).
        sar_db: (H, W) float32 VV sigma0 in dB (with speckle).
        density: (H, W) float32 true built-up density rho in [0, 1].
        water: (H, W) bool river mask.
        grid: Metric grid (pixel size ``pixel_size_m``).
        centres_px: (row, col) of each centre. weights: peak density per centre.
        alpha_per_km: Exponent of the law. kind: "mono" or "poly". seed, noise: as generated.
    """

    optical: np.ndarray
    sar: np.ndarray
    reflectance: np.ndarray
    sar_db: np.ndarray
    density: np.ndarray
    water: np.ndarray
    grid: Grid
    centres_px: list[tuple[float, float]]
    weights: list[float]
    alpha_per_km: float
    kind: str
    seed: int
    noise: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def pixel_size_m(self) -> float:
        """Pixel size in metres."""
        return self.grid.pixel_size_m


def default_centres(
    kind: str, height: int, width: int, n_centres: int, rng: np.random.Generator
) -> list[tuple[float, float]]:
    """Centre positions: image middle (mono) or spread on a ring around it (poly)."""
    cy, cx = height / 2.0, width / 2.0
    if kind == "mono":
        return [(cy + rng.uniform(-0.03, 0.03) * height, cx + rng.uniform(-0.03, 0.03) * width)]
    radius = 0.28 * min(height, width)
    phase = rng.uniform(0, 2 * math.pi)
    return [
        (
            cy + radius * math.sin(phase + 2 * math.pi * i / n_centres),
            cx + radius * math.cos(phase + 2 * math.pi * i / n_centres),
        )
        for i in range(n_centres)
    ]


def density_field(
    shape: tuple[int, int],
    centres: list[tuple[float, float]],
    weights: list[float],
    alpha_per_km: float,
    pixel_size_m: float,
) -> np.ndarray:
    """Rho = max_i w_i exp(-alpha r_i), r_i in km."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    rho = np.zeros(shape)
    for (r0, c0), w in zip(centres, weights, strict=True):
        r_km = np.hypot(rows - r0, cols - c0) * pixel_size_m / 1000.0
        rho = np.maximum(rho, w * np.exp(-alpha_per_km * r_km))
    return rho.astype(np.float32)


def river_mask(shape: tuple[int, int], rng: np.random.Generator, width_px: float) -> np.ndarray:
    """A meandering river crossing the scene near one edge (bool)."""
    h, w = shape
    cols = np.arange(w)
    base = rng.uniform(0.12, 0.2) * h
    centre = base + 0.04 * h * np.sin(
        2 * np.pi * cols / w * rng.uniform(1.0, 2.0) + rng.uniform(0, 6)
    )
    rows = np.arange(h)[:, None]
    return np.abs(rows - centre[None, :]) < width_px / 2


def generate_city(
    size: int | tuple[int, int] = 384,
    *,
    kind: str = "mono",
    alpha_per_km: float = 1.0,
    pixel_size_m: float = 10.0,
    n_centres: int = 3,
    weights: list[float] | None = None,
    centres_px: list[tuple[float, float]] | None = None,
    noise: float = 0.25,
    river: bool = True,
    edge_density: float = 0.3,
    seed: int = 0,
    crs: str = "EPSG:32633",
    origin: tuple[float, float] = (500000.0, 5800000.0),
) -> City:
    """Simulate one city.

    Args:
        size: Pixels (square) or (height, width).
        kind: "mono" (one centre) or "poly" (``n_centres`` centres on a ring).
        alpha_per_km: Clark exponent of the density law (per km, > 0).
        pixel_size_m: Ground pixel size.
        n_centres: Centres of a polycentric city.
        weights: Peak density per centre (default 1.0 for each).
        centres_px: Explicit (row, col) centres (overrides ``kind``'s layout).
        noise: Noise level: SAR speckle coefficient of variation (looks = 1 / noise^2) and optical
            reflectance noise std = 0.02 * noise.
        river: Add a river (water class).
        edge_density: Density at the urban edge; outside it the land is rural (rho = 0).
        seed: Random seed (deterministic output).
        crs: CRS of the grid.
        origin: Upper-left corner (x, y) in CRS units.

    Raises:
        InputError: on a bad parameter.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if kind not in ("mono", "poly"):
        raise InputError(f"must be 'mono' or 'poly', got {kind!r}", parameter="kind")
    if not alpha_per_km > 0:
        raise InputError(f"must be > 0, got {alpha_per_km}", parameter="alpha_per_km")
    if not pixel_size_m > 0:
        raise InputError(f"must be > 0, got {pixel_size_m}", parameter="pixel_size_m")
    if not 0 <= noise <= 2:
        raise InputError(f"must be in [0, 2], got {noise}", parameter="noise")
    if min(height, width) < 32:
        raise InputError(f"must be at least 32 pixels, got {size}", parameter="size")
    rng = np.random.default_rng(seed)
    n = 1 if kind == "mono" else max(2, int(n_centres))
    centres = centres_px or default_centres(kind, height, width, n, rng)
    weights = list(weights) if weights is not None else [1.0] * len(centres)
    if len(weights) != len(centres):
        raise InputError("needs one weight per centre", parameter="weights")
    rho = density_field((height, width), centres, weights, alpha_per_km, pixel_size_m)
    water = (
        river_mask((height, width), rng, max(8.0, 300.0 / pixel_size_m))
        if river
        else np.zeros((height, width), bool)
    )
    # the urban footprint ends where rho falls below edge_density (ragged edge): rural outside
    ragged = ndimage.gaussian_filter(rng.normal(0, 1, (height, width)), 6)
    ragged = ragged / (np.abs(ragged).max() + 1e-9)
    footprint = rho >= edge_density * (1 + 0.35 * ragged)
    rho = np.where(footprint & ~water, rho, 0.0).astype(np.float32)

    # rural land: field parcels of differing crop/bare reflectance and SAR backscatter
    parcel_px = max(8, int(round(240.0 / pixel_size_m)))
    ph, pw = math.ceil(height / parcel_px), math.ceil(width / parcel_px)
    parcel_refl = rng.uniform(0.7, 1.6, (ph, pw))
    parcel_db = rng.uniform(-15.0, -12.0, (ph, pw))
    fields = np.kron(parcel_refl, np.ones((parcel_px, parcel_px)))[:height, :width]
    field_db = np.kron(parcel_db, np.ones((parcel_px, parcel_px)))[:height, :width]
    lowfreq = ndimage.gaussian_filter(rng.normal(0, 1, (height, width)), 12)
    lowfreq = lowfreq / (np.abs(lowfreq).max() + 1e-9)
    veg = np.stack([v * fields * (1 + 0.15 * lowfreq) for v in VEGETATION_RGB])

    # optical: rural land mixed with a roof mosaic (4x4-pixel blocks of random albedo) by rho
    blocks = rng.uniform(
        0.04, 0.32, (math.ceil(height / ROOF_BLOCK_PX), math.ceil(width / ROOF_BLOCK_PX))
    )
    roof = np.kron(blocks, np.ones((ROOF_BLOCK_PX, ROOF_BLOCK_PX)))[:height, :width]
    tint = np.array([1.05, 1.0, 0.95])[:, None, None]
    urban = rho > 0
    mix = np.where(urban, rho, 0.0)
    refl = (1 - mix)[None] * veg + mix[None] * roof[None] * tint
    refl = np.where(water[None], np.array(WATER_RGB)[:, None, None], refl)
    refl = refl + rng.normal(0, 0.02 * noise, refl.shape)
    refl = np.clip(refl, 0, 1).astype(np.float32)
    optical = np.clip(np.rint(refl * OPTICAL_GAIN * 255), 0, 255).astype(np.uint8)

    # SAR: fields outside, LAND_DB + gain * rho inside the city, water dark; gamma speckle
    sigma_db = np.where(urban, LAND_DB + URBAN_GAIN_DB * rho, field_db)
    sigma_db = np.where(water, WATER_DB, sigma_db)
    linear = 10 ** (sigma_db / 10)
    if noise > 0:
        looks = max(1.0, 1.0 / noise**2)
        linear = linear * rng.gamma(looks, 1.0 / looks, linear.shape)
    sar_db = (10 * np.log10(np.maximum(linear, 1e-6))).astype(np.float32)
    lo, hi = SAR_DB_RANGE
    sar = np.clip(np.rint((sar_db - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)

    grid = Grid(
        crs=_crs(crs),
        transform=Affine(pixel_size_m, 0, origin[0], 0, -pixel_size_m, origin[1]),
        width=width,
        height=height,
    )
    logger.debug("city %s: %d centres, alpha %.3f/km", kind, len(centres), alpha_per_km)
    return City(
        optical=optical,
        sar=sar,
        reflectance=refl,
        sar_db=sar_db,
        density=rho,
        water=water,
        grid=grid,
        centres_px=[(float(r), float(c)) for r, c in centres],
        weights=weights,
        alpha_per_km=float(alpha_per_km),
        kind=kind,
        seed=seed,
        noise=float(noise),
    )


def _crs(value: str | None) -> object:
    if value is None:
        return None
    from rasterio.crs import CRS

    return CRS.from_user_input(value)


def write_city(city: City, out_dir: str | Path, *, stem: str = "city") -> dict[str, Path]:
    """Write the city as a JPEG pair (paper-mode inputs) and GeoTIFFs (geo-mode inputs).

    Files: ``<stem>_optical.jpg``, ``<stem>_sar.jpg`` (not georeferenced, like Copernicus Browser
    exports), ``<stem>_optical.tif`` (3-band reflectance R,G,B, float32), ``<stem>_sar_db.tif``
    (VV sigma0 dB, float32), ``<stem>_density.tif`` (true rho).

    Returns:
        Mapping name -> path.
    """
    import cv2

    from eokit.core.raster import atomic_write, write_raster

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    jpeg = [int(cv2.IMWRITE_JPEG_QUALITY), 95]
    optical_path = out / f"{stem}_optical.jpg"
    with atomic_write(optical_path) as tmp:
        ok, buf = cv2.imencode(".jpg", np.moveaxis(city.optical[::-1], 0, -1).copy(), jpeg)
        tmp.write_bytes(buf.tobytes())
    sar_path = out / f"{stem}_sar.jpg"
    with atomic_write(sar_path) as tmp:
        ok, buf = cv2.imencode(".jpg", city.sar, jpeg)
        tmp.write_bytes(buf.tobytes())
    paths["optical_jpg"], paths["sar_jpg"] = optical_path, sar_path
    paths["optical_tif"] = write_raster(
        out / f"{stem}_optical.tif",
        city.reflectance,
        city.grid,
        cog=True,
        band_names=["red", "green", "blue"],
        units="reflectance",
    )
    paths["sar_tif"] = write_raster(
        out / f"{stem}_sar_db.tif", city.sar_db, city.grid, cog=True, band_names=["vv_db"],
        units="dB",
    )
    paths["density_tif"] = write_raster(
        out / f"{stem}_density.tif", city.density, city.grid, cog=True, band_names=["rho"]
    )
    return paths
