"""Procedural land-cover scenes: labels, optical surface reflectance and C-band SAR, georeferenced.

A scene is built in three independent, seeded steps so that each can be reused on its own:

1. :func:`generate_landcover` lays out a landscape at a given ground sampling distance: field
   parcels (anisotropic Voronoi cells), rural roads along parcel edges, trunk roads through a town,
   a town with a rotated street grid, lots and building footprints, forest (conifer/broadleaf),
   a meandering river with a riparian strip, a lake, and farmsteads.
2. :func:`render_reflectance` turns labels into surface reflectance in six Sentinel-2-like bands
   (per-class spectra, NDVI phenology by day of year, per-parcel and within-class variation) and
   applies sensor-domain effects (:class:`SensorDomain`, :func:`apply_domain`).
3. :func:`render_sar` turns labels into VV backscatter sigma0 in dB with gamma-distributed
   multiplicative speckle of ``looks`` looks.

Feature sizes are in metres, so a scene at 2 m and one at 30 m show the same landscape at
different detail. All randomness comes from ``numpy.random.default_rng([seed, stream])``: the same
seed gives bit-identical arrays. Tables and their sources: ``docs/simulator.md``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage
from scipy.special import expit

from eokit.core.errors import InputError
from eokit.core.types import Grid

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

__all__ = [
    "BANDS",
    "BAND_CENTRES_NM",
    "CLASS_COLORS",
    "LANDCOVER_CLASSES",
    "Scene",
    "SensorDomain",
    "apply_domain",
    "generate_landcover",
    "generate_layout",
    "generate_scene",
    "green_fraction",
    "ndvi",
    "quicklook_figure",
    "render_reflectance",
    "render_sar",
    "write_scene",
]

#: Land-cover class names; the class id is the position in this tuple.
LANDCOVER_CLASSES: tuple[str, ...] = (
    "water",
    "conifer",
    "broadleaf",
    "grass",
    "crop",
    "bare",
    "building",
    "road",
)
WATER, CONIFER, BROADLEAF, GRASS, CROP, BARE, BUILDING, ROAD = range(8)
NUM_CLASSES = len(LANDCOVER_CLASSES)

#: Optical band names (Sentinel-2 B2, B3, B4, B8, B11, B12).
BANDS: tuple[str, ...] = ("blue", "green", "red", "nir", "swir1", "swir2")
#: Band centre wavelengths in nm (Sentinel-2A MSI).
BAND_CENTRES_NM: tuple[int, ...] = (490, 560, 665, 842, 1610, 2190)
_RED, _NIR = 2, 3

#: RGB display colour per class (0-255), also written as the GeoTIFF colour table.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "water": (31, 120, 200),
    "conifer": (0, 80, 40),
    "broadleaf": (60, 170, 60),
    "grass": (170, 220, 120),
    "crop": (240, 200, 60),
    "bare": (170, 125, 80),
    "building": (220, 30, 40),
    "road": (90, 90, 90),
}

# Surface reflectance (0-1) in BANDS order. "_GREEN" is the fully green (peak-season) spectrum;
# "_BACKGROUND" what shows when the canopy is absent or senescent (soil, litter, bark, dry
# grass). Rounded band averages of typical library spectra (USGS splib07, ECOSTRESS) and
# Sentinel-2 L2A class means; see docs/simulator.md.
_GREEN = np.array(
    [
        [0.045, 0.060, 0.040, 0.020, 0.010, 0.006],  # water
        [0.020, 0.040, 0.022, 0.260, 0.120, 0.050],  # conifer
        [0.025, 0.060, 0.030, 0.400, 0.190, 0.085],  # broadleaf
        [0.035, 0.075, 0.045, 0.340, 0.210, 0.110],  # grass
        [0.030, 0.080, 0.040, 0.430, 0.230, 0.100],  # crop
        [0.080, 0.115, 0.160, 0.230, 0.310, 0.260],  # bare
        [0.120, 0.130, 0.150, 0.190, 0.220, 0.200],  # building (mean roof)
        [0.080, 0.090, 0.100, 0.120, 0.140, 0.130],  # road (aged asphalt)
    ],
    dtype=np.float32,
)
_BACKGROUND = _GREEN.copy()
_BACKGROUND[CONIFER] = [0.025, 0.040, 0.035, 0.200, 0.130, 0.070]  # winter needles, understorey
_BACKGROUND[BROADLEAF] = [0.045, 0.065, 0.080, 0.190, 0.260, 0.190]  # leaf-off: bark + litter
_BACKGROUND[GRASS] = [0.060, 0.090, 0.110, 0.240, 0.320, 0.230]  # dormant / dry grass
_BACKGROUND[CROP] = [0.080, 0.110, 0.150, 0.210, 0.290, 0.240]  # tilled soil / stubble
_VEGETATION = (CONIFER, BROADLEAF, GRASS, CROP)

#: Roof materials drawn per building (clay tile, concrete/gravel, bitumen, bright metal).
_ROOFS = np.array(
    [
        [0.070, 0.090, 0.180, 0.250, 0.300, 0.250],
        [0.170, 0.190, 0.210, 0.250, 0.280, 0.260],
        [0.060, 0.070, 0.080, 0.100, 0.120, 0.110],
        [0.200, 0.220, 0.240, 0.270, 0.250, 0.200],
    ],
    dtype=np.float32,
)
_ROOF_PROBABILITIES = (0.40, 0.30, 0.20, 0.10)

#: Relative amplitude of within-class texture (multiplies reflectance by 1 + amp * noise).
_TEXTURE_AMPLITUDE = np.array([0.03, 0.10, 0.10, 0.06, 0.05, 0.06, 0.05, 0.04], dtype=np.float32)
#: Std of the per-parcel brightness factor (moisture, management, variety).
_PARCEL_BRIGHTNESS_STD = np.array([0.10, 0.05, 0.05, 0.07, 0.08, 0.10, 0.0, 0.06], np.float32)

#: Mean C-band VV sigma0 in dB per class (incidence ~35-40 degrees).
SAR_SIGMA0_DB = np.array([-21.0, -7.5, -7.0, -12.0, -10.5, -14.0, 1.0, -17.0], dtype=np.float32)
# Per-parcel std (wind on water, moisture, orientation of buildings) and within-class texture, dB.
_SAR_PARCEL_STD_DB = np.array([1.0, 0.7, 0.7, 1.2, 1.5, 1.5, 4.0, 1.0], dtype=np.float32)
_SAR_TEXTURE_DB = np.array([0.3, 0.8, 0.8, 0.5, 0.5, 0.5, 1.0, 0.5], dtype=np.float32)


@dataclass(frozen=True)
class SensorDomain:
    """Sensor/processing differences between datasets, applied by :func:`apply_domain`.

    Order: blur -> block-average ``downsample`` -> ``gain * x ** gamma + offset`` -> additive
    Gaussian noise -> nearest upsample back to the input grid -> clip to [0, 1].

    Attributes:
        gain: Multiplicative radiometric gain (> 0).
        offset: Additive radiometric offset (reflectance units).
        gamma: Exponent applied to reflectance before gain (> 0; 1 = linear).
        blur_sigma: Gaussian point-spread function sigma in pixels (>= 0).
        downsample: Integer block size of the detector (1 = native resolution).
        noise_std: Std of additive Gaussian sensor noise (reflectance units, >= 0).
    """

    gain: float = 1.0
    offset: float = 0.0
    gamma: float = 1.0
    blur_sigma: float = 0.0
    downsample: int = 1
    noise_std: float = 0.005

    def __post_init__(self) -> None:
        checks = {
            "gain": self.gain > 0,
            "gamma": self.gamma > 0,
            "blur_sigma": self.blur_sigma >= 0,
            "noise_std": self.noise_std >= 0,
            "offset": math.isfinite(self.offset),
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if not ok or not math.isfinite(value):
                raise InputError(f"invalid value {value}", parameter=name)
        if int(self.downsample) != self.downsample or self.downsample < 1:
            raise InputError(
                f"must be an integer >= 1, got {self.downsample}", parameter="downsample"
            )


@dataclass
class Scene:
    """A simulated scene on a projected grid.

    Attributes:
        reflectance: (6, H, W) float32 surface reflectance 0-1 in :data:`BANDS` order.
        landcover: (H, W) uint8 class ids into ``class_names``.
        sar_db: (H, W) float32 VV sigma0 in dB (with speckle).
        grid: Georeference (projected CRS, metres).
        class_names: Names of the land-cover classes.
        parcels: (H, W) int32 object ids (field parcels, building lots, water bodies) or None.
        seed: Seed the scene was generated with.
        season_doy: Day of year of the optical acquisition.
        domain: Sensor domain applied to ``reflectance``.
        looks: Equivalent number of looks of the SAR speckle.
    """

    reflectance: np.ndarray
    landcover: np.ndarray
    sar_db: np.ndarray
    grid: Grid
    class_names: tuple[str, ...] = LANDCOVER_CLASSES
    parcels: np.ndarray | None = None
    seed: int = 0
    season_doy: int = 180
    domain: SensorDomain = field(default_factory=SensorDomain)
    looks: float = 4.0

    def class_fractions(self) -> dict[str, float]:
        """Fraction of the scene covered by each class."""
        counts = np.bincount(self.landcover.ravel(), minlength=len(self.class_names))
        return {
            name: float(c) / self.landcover.size
            for name, c in zip(self.class_names, counts, strict=True)
        }


# --------------------------------------------------------------------------------------------
# Random fields and helpers
# --------------------------------------------------------------------------------------------


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], scale_px: float, octaves: int = 1
) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (cubic-interpolated value noise, fBm octaves).

    Args:
        rng: Random generator.
        shape: (H, W).
        scale_px: Correlation length of the coarsest octave in pixels.
        octaves: Number of octaves; each halves the scale and the amplitude.
    """
    import cv2

    h, w = shape
    total = np.zeros(shape, dtype=np.float32)
    amplitude = 1.0
    scale = float(scale_px)
    for _ in range(octaves):
        if scale <= 1.0:
            layer = rng.standard_normal(shape, dtype=np.float32)
        else:
            gh = int(math.ceil(h / scale)) + 4
            gw = int(math.ceil(w / scale)) + 4
            coarse = rng.standard_normal((gh, gw), dtype=np.float32)
            size = (int(math.ceil(gw * scale)), int(math.ceil(gh * scale)))
            big = cv2.resize(coarse, size, interpolation=cv2.INTER_CUBIC)
            oy = int(rng.integers(0, max(1, big.shape[0] - h - int(scale)) + 1))
            ox = int(rng.integers(0, max(1, big.shape[1] - w - int(scale)) + 1))
            layer = np.asarray(big[oy : oy + h, ox : ox + w], dtype=np.float32)
        total += np.float32(amplitude) * layer
        amplitude *= 0.5
        scale /= 2.0
    std = float(total.std())
    normalised: np.ndarray = (total - total.mean()) / np.float32(std if std > 0 else 1.0)
    return normalised


def _hash_uniform(*keys: np.ndarray, salt: int) -> np.ndarray:
    """Stateless uniform [0, 1) values from integer keys (splitmix64), for per-object traits."""
    with np.errstate(over="ignore"):
        state = np.full(np.shape(keys[0]), np.uint64(salt) * np.uint64(0x9E3779B97F4A7C15))
        for key in keys:
            state = state ^ np.asarray(key, dtype=np.int64).astype(np.uint64)
            state = state + np.uint64(0x9E3779B97F4A7C15)
            state = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            state = (state ^ (state >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            state = state ^ (state >> np.uint64(31))
    return (state >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _disk(diameter_px: int) -> np.ndarray:
    import cv2

    size = max(1, int(diameter_px))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _dilate(mask: np.ndarray, diameter_px: float) -> np.ndarray:
    """Grow a mask to a total width of ``diameter_px`` (no-op below 1.5 px)."""
    import cv2

    size = int(round(diameter_px))
    if size < 2:
        return mask
    return cv2.dilate(mask.astype(np.uint8), _disk(size)).astype(bool)


def _draw_polyline(shape: tuple[int, int], points_px: np.ndarray, width_px: float) -> np.ndarray:
    """Rasterise a polyline (N, 2) of (x, y) pixel coordinates with a given width."""
    import cv2

    canvas = np.zeros(shape, dtype=np.uint8)
    thickness = max(1, int(round(width_px)))
    # Fixed-point coordinates (shift=4) keep sub-pixel precision for thin lines.
    pts = np.round(points_px * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [pts], False, 1, thickness=thickness, lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool)


def _parse_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int | np.integer):
        height = width = int(size)
    else:
        try:
            height, width = (int(s) for s in size)
        except (TypeError, ValueError):
            raise InputError(
                f"expected an int or (height, width), got {size!r}", parameter="size"
            ) from None
    if height < 16 or width < 16:
        raise InputError(f"must be at least 16 pixels, got {height}x{width}", parameter="size")
    return height, width


def _check_gsd(gsd_m: float) -> float:
    if not (math.isfinite(gsd_m) and 0.1 <= gsd_m <= 1000):
        raise InputError(f"must be between 0.1 and 1000 m, got {gsd_m}", parameter="gsd_m")
    return float(gsd_m)


# --------------------------------------------------------------------------------------------
# Land-cover layout
# --------------------------------------------------------------------------------------------


def _town_blocks(
    x_m: np.ndarray,
    y_m: np.ndarray,
    town_distance: np.ndarray,
    *,
    angle: float,
    block_m: float,
    gsd_m: float,
    salt: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Classes and lot keys of town pixels (1-D arrays of their x/y in metres).

    A street grid rotated by ``angle`` cuts square blocks; a block is a park, an industrial
    block (one large hall on a bare yard) or residential lots, each with at most one building
    of random size and setback; building density falls from the centre outwards.
    """
    street_m = max(10.0, 1.1 * gsd_m)
    u = x_m * math.cos(angle) + y_m * math.sin(angle)
    v = -x_m * math.sin(angle) + y_m * math.cos(angle)
    block_u = np.floor(u / block_m)
    block_v = np.floor(v / block_m)
    in_u = u - block_u * block_m - street_m  # position inside the block, metres
    in_v = v - block_v * block_m - street_m
    street = (in_u < 0) | (in_v < 0)
    usable = block_m - street_m
    block_kind = _hash_uniform(block_u, block_v, salt=salt)
    lot_choice = _hash_uniform(block_u, block_v, salt=salt + 1)
    lot_m = np.maximum(
        np.where(lot_choice < 0.4, 20.0, np.where(lot_choice < 0.8, 28.0, 36.0)), 3.0 * gsd_m
    )
    lot_u = np.floor(np.maximum(in_u, 0) / lot_m)
    lot_v = np.floor(np.maximum(in_v, 0) / lot_m)
    pos_u = in_u - lot_u * lot_m
    pos_v = in_v - lot_v * lot_m
    trait = [_hash_uniform(block_u, block_v, lot_u, lot_v, salt=salt + k) for k in range(2, 7)]
    margin = lot_m * (0.08 + 0.10 * trait[0])
    built_probability = np.clip(0.95 - 0.45 * town_distance, 0.4, 0.95)
    residential = (
        (pos_u >= margin)
        & (pos_u < margin + lot_m * (0.50 + 0.35 * trait[1]))
        & (pos_v >= margin)
        & (pos_v < margin + lot_m * (0.50 + 0.35 * trait[2]))
        & (trait[3] < built_probability)
    )
    hall_margin = max(8.0, gsd_m)
    industrial = (
        (in_u >= hall_margin)
        & (in_u < usable - hall_margin)
        & (in_v >= hall_margin)
        & (in_v < usable * (0.55 + 0.3 * lot_choice))
    )
    park = block_kind < 0.07
    is_industrial = (block_kind >= 0.07) & (block_kind < 0.19)
    building = ~street & np.where(is_industrial, industrial, residential & ~park)
    ground = np.where(trait[4] < 0.6, GRASS, np.where(trait[4] < 0.78, BROADLEAF, BARE))
    ground = np.where(is_industrial, BARE, ground)
    ground = np.where(park, np.where(trait[4] < 0.5, BROADLEAF, GRASS), ground)
    cover = np.where(street, ROAD, np.where(building, BUILDING, ground)).astype(np.uint8)
    whole_block = is_industrial | park
    lot_key = (
        (block_u.astype(np.int64) & 0xFFFF) << 40
        | (block_v.astype(np.int64) & 0xFFFF) << 24
        | np.where(whole_block, 0, (lot_u.astype(np.int64) & 0xFFF) << 12)
        | np.where(whole_block, 0, lot_v.astype(np.int64) & 0xFFF)
    )
    return cover, lot_key


def _layout(height: int, width: int, gsd_m: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Land cover (H, W) uint8 and object ids (H, W) int32 (fields, lots, farms, water)."""
    rng = np.random.default_rng([seed, 0])
    h, w = height, width
    extent_y, extent_x = h * gsd_m, w * gsd_m
    short = min(extent_x, extent_y)
    ys = ((np.arange(h, dtype=np.float32) + 0.5) * gsd_m)[:, None]
    xs = ((np.arange(w, dtype=np.float32) + 0.5) * gsd_m)[None, :]

    # Field parcels: anisotropic Voronoi cells (fields are longer than wide).
    spacing = rng.uniform(180.0, 320.0)
    n_fields = max(12, int(extent_x * extent_y / spacing**2))
    seed_rows = rng.integers(0, h, n_fields)
    seed_cols = rng.integers(0, w, n_fields)
    stretch = rng.uniform(1.2, 2.2)
    sampling = (stretch, 1.0) if rng.random() < 0.5 else (1.0, stretch)
    markers = np.ones((h, w), dtype=bool)
    markers[seed_rows, seed_cols] = False
    seed_id = np.zeros((h, w), dtype=np.int32)
    seed_id[seed_rows, seed_cols] = np.arange(n_fields, dtype=np.int32)
    nearest = ndimage.distance_transform_edt(
        markers, sampling=sampling, return_distances=False, return_indices=True
    )
    fields = seed_id[nearest[0], nearest[1]]
    del nearest, markers

    field_class = rng.choice(np.array([CROP, GRASS, BARE]), size=n_fields, p=(0.55, 0.3, 0.15))
    present = np.unique(fields)
    forced = rng.permutation(present)[:3]
    field_class[forced] = np.array([CROP, GRASS, BARE])[: forced.size]
    landcover = field_class[fields].astype(np.uint8)

    # Rural roads: edges between groups of parcels (farm blocks ~1-1.6 km).
    block_spacing = rng.uniform(900.0, 1600.0)
    n_blocks = max(2, int(round(extent_x * extent_y / block_spacing**2)))
    block_xy = rng.uniform(0, 1, (n_blocks, 2)) * np.array([extent_x, extent_y])
    field_xy = np.stack([(seed_cols + 0.5) * gsd_m, (seed_rows + 0.5) * gsd_m], axis=1)
    block_of_field = np.argmin(
        ((field_xy[:, None, :] - block_xy[None, :, :]) ** 2).sum(axis=2), axis=1
    )
    blocks = block_of_field[fields]
    rural_road = np.zeros((h, w), dtype=bool)
    rural_road[:, :-1] |= blocks[:, :-1] != blocks[:, 1:]
    rural_road[:-1, :] |= blocks[:-1, :] != blocks[1:, :]
    rural_road = _dilate(rural_road, 6.0 / gsd_m)
    del blocks

    # Town: irregular disk with a rotated street grid, lots and building footprints.
    centre_x = rng.uniform(0.3, 0.7) * extent_x
    centre_y = rng.uniform(0.3, 0.7) * extent_y
    town_radius = min(rng.uniform(700.0, 1300.0), 0.3 * short)
    town_distance = np.hypot(ys - centre_y, xs - centre_x) / town_radius
    urban = town_distance + 0.25 * _smooth_noise(rng, (h, w), town_radius / 2 / gsd_m, 2) < 1.0
    angle = rng.uniform(0, math.pi / 2)
    block_m = rng.uniform(90.0, 140.0)
    salt = int(rng.integers(0, 2**31))
    town_rows, town_cols = np.nonzero(urban)
    town_cover, town_lots = _town_blocks(
        (town_cols + 0.5) * gsd_m,
        (town_rows + 0.5) * gsd_m,
        town_distance[town_rows, town_cols],
        angle=angle,
        block_m=block_m,
        gsd_m=gsd_m,
        salt=salt,
    )
    del town_distance

    # Forest: rough-edged patches from fractal noise, conifer vs broadleaf stands.
    forest_field = _smooth_noise(rng, (h, w), 900.0 / gsd_m, octaves=4)
    forest_share = rng.uniform(0.18, 0.32)
    outside = ~urban
    sample = forest_field[::4, ::4][outside[::4, ::4]]
    threshold = np.quantile(sample, 1 - forest_share) if sample.size else np.inf
    forest = outside & (forest_field > threshold)
    kind_field = _smooth_noise(rng, (h, w), 600.0 / gsd_m, octaves=2)
    kind_sample = kind_field[forest]
    conifer_cut = np.quantile(kind_sample, rng.uniform(0.3, 0.7)) if kind_sample.size else 0.0
    forest_class = np.where(kind_field > conifer_cut, CONIFER, BROADLEAF).astype(np.uint8)
    del forest_field, kind_field

    # River: meandering centre line across the scene; lake: irregular blob away from the town.
    direction = rng.uniform(0, math.pi)
    diagonal = math.hypot(extent_x, extent_y)
    through = np.array([rng.uniform(0.2, 0.8) * extent_x, rng.uniform(0.2, 0.8) * extent_y])
    t = np.linspace(-diagonal, diagonal, 400)
    lateral = np.zeros_like(t)
    for _ in range(3):
        wavelength = rng.uniform(800.0, 3000.0)
        lateral += rng.uniform(40.0, 220.0) * np.sin(
            2 * np.pi * t / wavelength + rng.uniform(0, 6.3)
        )
    along = np.array([math.cos(direction), math.sin(direction)])
    normal = np.array([-along[1], along[0]])
    river_xy = through + t[:, None] * along + lateral[:, None] * normal
    river_width = rng.uniform(25.0, 60.0)
    river = _draw_polyline((h, w), river_xy / gsd_m - 0.5, river_width / gsd_m)
    lake_radius = min(rng.uniform(200.0, 450.0), 0.1 * short)
    for _ in range(50):
        lake_x = rng.uniform(0.1, 0.9) * extent_x
        lake_y = rng.uniform(0.1, 0.9) * extent_y
        if math.hypot(lake_x - centre_x, lake_y - centre_y) > town_radius + 1.5 * lake_radius:
            break
    lake_distance = np.hypot(ys - lake_y, xs - lake_x) / lake_radius
    lake = lake_distance + 0.3 * _smooth_noise(rng, (h, w), lake_radius / 2 / gsd_m, 2) < 1.0
    water = river | lake
    riparian = _dilate(water, (river_width + 2 * rng.uniform(20.0, 50.0)) / gsd_m) & ~water

    # Trunk roads: through the town centre, gently curved.
    trunk = np.zeros((h, w), dtype=bool)
    n_trunk = int(rng.integers(2, 4))
    first_heading = rng.uniform(0, math.pi)
    for k in range(n_trunk):
        # Spread headings so that roads leave the town in different directions.
        heading = first_heading + k * math.pi / n_trunk + rng.uniform(-0.2, 0.2)
        road_along = np.array([math.cos(heading), math.sin(heading)])
        road_normal = np.array([-road_along[1], road_along[0]])
        s = np.linspace(-diagonal, diagonal, 200)
        bend = rng.uniform(30.0, 150.0) * np.sin(2 * np.pi * s / rng.uniform(2000, 5000))
        origin = np.array([centre_x, centre_y]) + rng.normal(0, 60.0, 2)
        road_xy = origin + s[:, None] * road_along + bend[:, None] * road_normal
        trunk |= _draw_polyline((h, w), road_xy / gsd_m - 0.5, 20.0 / gsd_m)

    # Farmsteads: small building clusters next to rural roads.
    farms = np.zeros((h, w), dtype=bool)
    farm_ids = np.zeros((h, w), dtype=np.int32)
    candidates = np.flatnonzero(rural_road & ~urban & ~forest & ~water)
    n_farms = int(rng.poisson(extent_x * extent_y / 1e6 * 0.6)) if candidates.size else 0
    for index in range(n_farms):
        row, col = divmod(int(candidates[rng.integers(0, candidates.size)]), w)
        for _ in range(int(rng.integers(1, 4))):
            side_u = max(1, int(round(rng.uniform(12.0, 30.0) / gsd_m)))
            side_v = max(1, int(round(rng.uniform(12.0, 30.0) / gsd_m)))
            r0 = row + int(round(rng.uniform(-40.0, 40.0) / gsd_m))
            c0 = col + int(round(rng.uniform(-40.0, 40.0) / gsd_m))
            r0, c0 = max(r0, 0), max(c0, 0)
            farms[r0 : r0 + side_v, c0 : c0 + side_u] = True
            farm_ids[r0 : r0 + side_v, c0 : c0 + side_u] = index + 1

    # Paint, back to front; object ids: fields, then town lots, farms, river, lake.
    parcels = fields.astype(np.int32)
    landcover = np.where(forest, forest_class, landcover)
    landcover[town_rows, town_cols] = town_cover
    _, lot_index = np.unique(town_lots, return_inverse=True)
    parcels[town_rows, town_cols] = n_fields + lot_index.astype(np.int32)
    next_id = n_fields + (int(lot_index.max()) + 1 if lot_index.size else 0)
    landcover[riparian & ((landcover == CROP) | (landcover == BARE))] = GRASS
    farms &= ~urban
    landcover[farms] = BUILDING
    parcels[farms] = next_id + farm_ids[farms] - 1
    next_id += n_farms
    landcover[rural_road & ~urban] = ROAD
    landcover[water] = WATER
    parcels[river] = next_id
    parcels[lake & ~river] = next_id + 1
    landcover[trunk] = ROAD
    return landcover.astype(np.uint8), parcels


def generate_landcover(
    size: int | tuple[int, int], *, seed: int, gsd_m: float = 10.0
) -> np.ndarray:
    """Procedural land-cover map.

    Args:
        size: Side length in pixels, or (height, width); at least 16.
        seed: Random seed (same seed, size and GSD -> identical map).
        gsd_m: Ground sampling distance in metres; feature sizes are physical (fields ~250 m,
            town ~1 km, river 25-60 m wide, buildings 10-35 m), capped to fit small scenes.

    Returns:
        (H, W) uint8 class ids into :data:`LANDCOVER_CLASSES`.
    """
    height, width = _parse_size(size)
    return _layout(height, width, _check_gsd(gsd_m), int(seed))[0]


def generate_layout(
    size: int | tuple[int, int], *, seed: int, gsd_m: float = 10.0
) -> tuple[np.ndarray, np.ndarray]:
    """Land cover plus object ids (the parcels the renderers vary per object).

    Args:
        size: Side length in pixels, or (height, width); at least 16.
        seed: Random seed (same as :func:`generate_landcover`).
        gsd_m: Pixel size in metres.

    Returns:
        ((H, W) uint8 land cover, (H, W) int32 object ids 0..n-1: field parcels / forest stands,
        town lots, farmsteads, river, lake).
    """
    height, width = _parse_size(size)
    return _layout(height, width, _check_gsd(gsd_m), int(seed))


# --------------------------------------------------------------------------------------------
# Optical rendering
# --------------------------------------------------------------------------------------------


def _double_logistic(doy: np.ndarray, start: float, end: float, rate: float) -> np.ndarray:
    rising: np.ndarray = expit((doy - start) / rate)
    falling: np.ndarray = expit((end - doy) / rate)
    product: np.ndarray = rising * falling
    return product


def green_fraction(class_id: int, doy: Any, crop_type: Any = 0) -> np.ndarray:
    """Green-canopy fraction (0-1) of a vegetation class on day(s) of year (NDVI phenology).

    The rendered spectrum is ``background + f * (green - background)``, so NDVI follows f.

    Args:
        class_id: Class id (conifer, broadleaf, grass or crop; others return 1).
        doy: Day(s) of year (scalar or array, may be fractional).
        crop_type: For crops: 0 winter cereal (green Mar-Jun, harvest early July),
            1 maize-like summer crop (green Jun-Sep), 2 root crop (green May-Oct).

    Returns:
        Array of green fractions, broadcast of ``doy`` and ``crop_type``.
    """
    d = np.asarray(doy, dtype=np.float32)
    if class_id == CONIFER:
        return 0.75 + 0.25 * _double_logistic(d, 110.0, 290.0, 15.0)
    if class_id == BROADLEAF:
        return 0.05 + 0.95 * _double_logistic(d, 125.0, 285.0, 8.0)
    if class_id == GRASS:
        return 0.25 + 0.75 * _double_logistic(d, 95.0, 305.0, 12.0)
    if class_id == CROP:
        kind = np.asarray(crop_type)
        winter = 0.3 * (expit((d - 285.0) / 10.0) + expit((50.0 - d) / 10.0))
        winter_cereal = np.maximum(_double_logistic(d, 80.0, 185.0, 7.0), winter)
        summer = _double_logistic(d, 150.0, 265.0, 8.0)
        root = _double_logistic(d, 130.0, 290.0, 10.0)
        return np.where(kind == 0, winter_cereal, np.where(kind == 1, summer, root))
    return np.ones_like(d)


def _check_landcover(landcover: np.ndarray) -> np.ndarray:
    lc = np.asarray(landcover)
    if lc.ndim != 2:
        raise InputError(f"expected (H, W), got shape {lc.shape}", parameter="landcover")
    if lc.size == 0 or lc.min() < 0 or lc.max() >= NUM_CLASSES:
        raise InputError(f"class ids must be 0..{NUM_CLASSES - 1}", parameter="landcover")
    return lc.astype(np.intp)


def _parcel_index(landcover: np.ndarray, parcels: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Object ids as 0..n-1 indices; without ``parcels`` use connected regions of each class."""
    if parcels is None:
        combined = np.zeros(landcover.shape, dtype=np.int32)
        offset = 0
        for class_id in range(NUM_CLASSES):
            labels, count = ndimage.label(landcover == class_id)
            combined += np.where(labels > 0, labels + offset, 0).astype(np.int32)
            offset += count
        return combined - 1, offset
    parcels = np.asarray(parcels)
    if parcels.shape != landcover.shape:
        raise InputError(
            f"shape {parcels.shape} differs from landcover {landcover.shape}", parameter="parcels"
        )
    if np.issubdtype(parcels.dtype, np.integer):
        low, high = int(parcels.min()), int(parcels.max())
        if low >= 0 and high < landcover.size:  # already small ids: use them as they are
            return parcels.astype(np.int32, copy=False), high + 1
    _, inverse = np.unique(parcels.ravel(), return_inverse=True)
    index = inverse.reshape(landcover.shape).astype(np.int32)
    return index, int(index.max()) + 1


def render_reflectance(
    landcover: np.ndarray,
    *,
    seed: int,
    season_doy: float = 180,
    domain: SensorDomain | None = None,
    gsd_m: float = 10.0,
    parcels: np.ndarray | None = None,
) -> np.ndarray:
    """Surface reflectance for a land-cover map.

    Per pixel: the class spectrum mixed between its green and background spectra by the
    phenology of ``season_doy`` (per-parcel crop type and +-7 day shift, within-field vigour
    noise), building roofs from a per-building material, times a per-parcel brightness factor
    and within-class texture; then :func:`apply_domain` (sensor noise, gain, blur...).

    Args:
        landcover: (H, W) class ids into :data:`LANDCOVER_CLASSES`.
        seed: Random seed.
        season_doy: Day of year (1-366).
        domain: Sensor domain (default :class:`SensorDomain()`: 0.005 noise, nothing else).
        gsd_m: Pixel size in metres (sets the texture scale).
        parcels: Optional (H, W) object ids (fields, lots); default connected class regions.

    Returns:
        (6, H, W) float32 reflectance in [0, 1], bands :data:`BANDS`.
    """
    lc = _check_landcover(landcover)
    gsd_m = _check_gsd(gsd_m)
    if not 1 <= season_doy <= 366:
        raise InputError(f"must be a day of year 1-366, got {season_doy}", parameter="season_doy")
    domain = SensorDomain() if domain is None else domain
    rng = np.random.default_rng([int(seed), 1])
    parcel, n_parcels = _parcel_index(lc, parcels)
    crop_type = rng.choice(3, size=n_parcels, p=(0.45, 0.35, 0.2))
    doy = season_doy + rng.normal(0.0, 7.0, n_parcels).astype(np.float32)
    brightness = rng.standard_normal(n_parcels).astype(np.float32)
    roof = rng.choice(len(_ROOFS), size=n_parcels, p=_ROOF_PROBABILITIES)

    fraction_table = np.ones((NUM_CLASSES, n_parcels), dtype=np.float32)
    for class_id in _VEGETATION:
        fraction_table[class_id] = green_fraction(class_id, doy, crop_type)
    shape = lc.shape
    vigour = _smooth_noise(rng, shape, max(60.0 / gsd_m, 1.0), octaves=3)
    fraction = fraction_table[lc, parcel]
    is_vegetation = np.isin(lc, _VEGETATION)
    fraction = np.where(is_vegetation, np.clip(fraction * (1 + 0.08 * vigour), 0, 1), fraction)
    del vigour

    texture = _smooth_noise(rng, shape, max(30.0 / gsd_m, 1.0), octaves=3)
    factor = 1.0 + _PARCEL_BRIGHTNESS_STD[lc] * brightness[parcel]
    factor *= 1.0 + _TEXTURE_AMPLITUDE[lc] * texture
    np.clip(factor, 0.5, 1.5, out=factor)
    del texture
    roofs = lc == BUILDING
    roof_spectra = _ROOFS[roof[parcel[roofs]]]  # (n_roof_pixels, 6)
    # Band by band keeps the temporaries at (H, W) for large scenes.
    reflectance = np.empty((len(BANDS),) + shape, dtype=np.float32)
    for band in range(len(BANDS)):
        background = _BACKGROUND[:, band][lc]
        layer = background + fraction * (_GREEN[:, band][lc] - background)
        layer[roofs] = roof_spectra[:, band]
        np.multiply(layer, factor, out=reflectance[band])
    return _apply_domain_in_place(reflectance, domain, seed=seed)


def apply_domain(
    reflectance: np.ndarray, domain: SensorDomain, *, seed: int, keep_shape: bool = True
) -> np.ndarray:
    """Apply sensor-domain effects to reflectance.

    Order: Gaussian blur (PSF, ``blur_sigma`` px) -> block average over ``downsample`` px
    (edge-padded to a multiple) -> ``gain * max(x, 0) ** gamma + offset`` -> additive Gaussian
    noise -> nearest-neighbour upsampling back to (H, W) (so labels stay aligned) -> clip [0, 1].

    Args:
        reflectance: (C, H, W) reflectance.
        domain: The sensor domain.
        seed: Seed of the noise.
        keep_shape: False returns the block-averaged array at the lower resolution
            (C, ceil(H/d), ceil(W/d)) instead of upsampling it back.

    Returns:
        float32 array in [0, 1].
    """
    x = np.array(reflectance, dtype=np.float32, copy=True)
    if x.ndim != 3:
        raise InputError(f"expected (C, H, W), got shape {x.shape}", parameter="reflectance")
    return _apply_domain_in_place(x, domain, seed=seed, keep_shape=keep_shape)


def _apply_domain_in_place(
    x: np.ndarray, domain: SensorDomain, *, seed: int, keep_shape: bool = True
) -> np.ndarray:
    """:func:`apply_domain` on a float32 (C, H, W) array it may overwrite."""
    rng = np.random.default_rng([int(seed), 3])
    channels, height, width = x.shape
    if domain.blur_sigma > 0:
        for band in range(channels):
            x[band] = ndimage.gaussian_filter(x[band], sigma=domain.blur_sigma, mode="reflect")
    d = int(domain.downsample)
    if d > 1:
        pad_h, pad_w = (-height) % d, (-width) % d
        if pad_h or pad_w:
            x = np.pad(x, ((0, 0), (0, pad_h), (0, pad_w)), mode="edge")
        x = x.reshape(channels, x.shape[1] // d, d, x.shape[2] // d, d).mean(axis=(2, 4))
        x = x.astype(np.float32, copy=False)
    if domain.gamma != 1.0:
        np.maximum(x, 0.0, out=x)
        np.power(x, np.float32(domain.gamma), out=x)
    if domain.gain != 1.0:
        x *= np.float32(domain.gain)
    if domain.offset != 0.0:
        x += np.float32(domain.offset)
    if domain.noise_std > 0:
        for band in range(channels):
            noise = rng.standard_normal(x.shape[1:], dtype=np.float32)
            noise *= np.float32(domain.noise_std)
            x[band] += noise
    if d > 1 and keep_shape:
        x = np.repeat(np.repeat(x, d, axis=1), d, axis=2)[:, :height, :width]
        x = np.ascontiguousarray(x)
    np.clip(x, 0.0, 1.0, out=x)
    return x


def ndvi(reflectance: np.ndarray) -> np.ndarray:
    """NDVI (NIR - red) / (NIR + red) of a (6, H, W) reflectance array; NaN where both are 0."""
    red = reflectance[_RED].astype(np.float32)
    nir = reflectance[_NIR].astype(np.float32)
    total = nir + red
    out = np.full(red.shape, np.nan, dtype=np.float32)
    np.divide(nir - red, total, out=out, where=total > 0)
    return out


# --------------------------------------------------------------------------------------------
# SAR rendering
# --------------------------------------------------------------------------------------------


def render_sar(
    landcover: np.ndarray,
    *,
    seed: int,
    looks: float = 4,
    gsd_m: float = 10.0,
    parcels: np.ndarray | None = None,
) -> np.ndarray:
    """C-band VV backscatter sigma0 in dB with multiplicative speckle.

    sigma0 = class mean (:data:`SAR_SIGMA0_DB`) + per-parcel offset + smooth texture (dB); then
    in linear power it is multiplied by Gamma(shape=L, scale=1/L) speckle (mean 1, coefficient
    of variation 1/sqrt(L)) and converted back to dB. No geometry (layover, shadow), no
    incidence-angle trend, no season.

    Args:
        landcover: (H, W) class ids.
        seed: Random seed.
        looks: Equivalent number of looks L (> 0; 1 = single-look intensity).
        gsd_m: Pixel size in metres (sets the texture scale).
        parcels: Optional (H, W) object ids; default connected class regions.

    Returns:
        (H, W) float32 sigma0 in dB.
    """
    lc = _check_landcover(landcover)
    gsd_m = _check_gsd(gsd_m)
    if not (math.isfinite(looks) and looks > 0):
        raise InputError(f"must be > 0, got {looks}", parameter="looks")
    rng = np.random.default_rng([int(seed), 2])
    parcel, n_parcels = _parcel_index(lc, parcels)
    parcel_offset = rng.standard_normal(n_parcels).astype(np.float32)
    texture = _smooth_noise(rng, lc.shape, max(40.0 / gsd_m, 1.0), octaves=2)
    sigma0_db = (
        SAR_SIGMA0_DB[lc]
        + _SAR_PARCEL_STD_DB[lc] * parcel_offset[parcel]
        + _SAR_TEXTURE_DB[lc] * texture
    )
    speckle = rng.gamma(shape=looks, scale=1.0 / looks, size=lc.shape).astype(np.float32)
    power = np.power(np.float32(10.0), sigma0_db / np.float32(10.0)) * speckle
    sigma0_speckled_db: np.ndarray = 10.0 * np.log10(np.maximum(power, np.float32(1e-10)))
    return sigma0_speckled_db.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Whole scenes
# --------------------------------------------------------------------------------------------


def _projected_grid(
    crs: Any, origin: tuple[float, float], gsd_m: float, height: int, width: int
) -> Grid:
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        crs_obj = CRS.from_user_input(crs)
    except (CRSError, ValueError, TypeError):
        raise InputError(f"not a valid CRS: {crs!r}", parameter="crs") from None
    if not crs_obj.is_projected:
        raise InputError(
            f"{crs} is not a projected CRS; use one in metres such as a UTM zone (EPSG:326xx)",
            parameter="crs",
        )
    x0, y0 = (float(o) for o in origin)
    transform = Affine(gsd_m, 0.0, x0, 0.0, -gsd_m, y0)
    return Grid(crs=crs_obj, transform=transform, width=width, height=height)


def generate_scene(
    size: int | tuple[int, int] = 256,
    *,
    seed: int = 0,
    gsd_m: float = 10.0,
    season_doy: float = 180,
    domain: SensorDomain | None = None,
    crs: Any = "EPSG:32633",
    origin: tuple[float, float] = (500000.0, 5000000.0),
    looks: float = 4,
) -> Scene:
    """Generate a complete georeferenced scene (labels, reflectance, SAR).

    Args:
        size: Side length in pixels, or (height, width).
        seed: Random seed; the same arguments give bit-identical arrays.
        gsd_m: Pixel size in metres.
        season_doy: Day of year of the optical image (phenology).
        domain: Sensor domain applied to the reflectance (default: 0.005 noise only).
        crs: Projected CRS (default UTM zone 33N).
        origin: (x, y) of the top-left corner in CRS units.
        looks: SAR equivalent number of looks.

    Returns:
        The :class:`Scene`.
    """
    height, width = _parse_size(size)
    gsd_m = _check_gsd(gsd_m)
    grid = _projected_grid(crs, origin, gsd_m, height, width)
    domain = SensorDomain() if domain is None else domain
    landcover, parcels = _layout(height, width, gsd_m, int(seed))
    reflectance = render_reflectance(
        landcover, seed=seed, season_doy=season_doy, domain=domain, gsd_m=gsd_m, parcels=parcels
    )
    sar_db = render_sar(landcover, seed=seed, looks=looks, gsd_m=gsd_m, parcels=parcels)
    logger.debug("generated %dx%d scene, seed %d", height, width, seed)
    return Scene(
        reflectance=reflectance,
        landcover=landcover,
        sar_db=sar_db,
        grid=grid,
        class_names=LANDCOVER_CLASSES,
        parcels=parcels,
        seed=int(seed),
        season_doy=int(season_doy),
        domain=domain,
        looks=float(looks),
    )


def _legend(class_names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {"id": index, "name": name, "color": list(CLASS_COLORS.get(name, (128, 128, 128)))}
        for index, name in enumerate(class_names)
    ]


def write_scene(scene: Scene, out_dir: str | Path) -> dict[str, Path]:
    """Write a scene as GeoTIFFs plus a JSON legend, each file atomically.

    Files: ``reflectance.tif`` (6-band float32 COG, band names), ``landcover.tif`` (uint8 COG
    with a colour table, GDAL category names in ``landcover.tif.aux.xml`` and the names also in
    tags ``CLASS_<id>``), ``sar_vv_db.tif``
    (float32 COG, dB) and ``classes.json`` (id, name, colour; plus generation parameters).

    Args:
        scene: The scene.
        out_dir: Output folder (created if missing).

    Returns:
        {"reflectance", "landcover", "sar_vv_db", "classes"} -> path.
    """
    from eokit.core.raster import atomic_write, write_raster

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", path=out)
    provenance = {
        "generator": "eokit.core.synth.scene",
        "seed": scene.seed,
        "season_doy": scene.season_doy,
        "gsd_m": scene.grid.pixel_size_m,
        "sar_looks": scene.looks,
        "domain": json.dumps(asdict(scene.domain)),
    }
    paths = {
        "reflectance": out / "reflectance.tif",
        "landcover": out / "landcover.tif",
        "sar_vv_db": out / "sar_vv_db.tif",
        "classes": out / "classes.json",
    }
    write_raster(
        paths["reflectance"],
        scene.reflectance,
        scene.grid,
        dtype="float32",
        cog=True,
        band_names=list(BANDS),
        tags={
            **provenance,
            "units": "surface reflectance 0-1",
            "wavelength_nm": ",".join(map(str, BAND_CENTRES_NM)),
        },
    )
    class_tags = {f"CLASS_{i}": name for i, name in enumerate(scene.class_names)}
    write_raster(
        paths["landcover"],
        scene.landcover,
        scene.grid,
        dtype="uint8",
        cog=True,
        band_names=["landcover"],
        class_names=list(scene.class_names),
        class_colors=[
            tuple(c / 255 for c in CLASS_COLORS.get(n, (128, 128, 128)))
            for n in scene.class_names
        ],
        tags={**provenance, **class_tags, "class_names": json.dumps(list(scene.class_names))},
    )
    write_raster(
        paths["sar_vv_db"],
        scene.sar_db,
        scene.grid,
        dtype="float32",
        cog=True,
        band_names=["sigma0_vv_db"],
        tags={**provenance, "units": "dB", "polarisation": "VV"},
    )
    legend = {
        "classes": _legend(scene.class_names),
        "bands": list(BANDS),
        "band_centres_nm": list(BAND_CENTRES_NM),
        "crs": scene.grid.crs.to_string() if scene.grid.crs is not None else None,
        "pixel_size_m": scene.grid.pixel_size_m,
        "class_fractions": scene.class_fractions(),
        "provenance": {**provenance, "domain": asdict(scene.domain)},
    }
    with atomic_write(paths["classes"]) as tmp:
        tmp.write_text(json.dumps(legend, indent=2) + "\n")
    logger.info("wrote scene to %s", out)
    return paths


def quicklook_figure(scene: Scene) -> Figure:
    """Matplotlib figure with an RGB quick-look, the land cover and the SAR image side by side."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rgb = np.moveaxis(scene.reflectance[[2, 1, 0]], 0, -1)
    low, high = np.percentile(rgb, (2, 98))
    rgb = np.clip((rgb - low) / max(high - low, 1e-6), 0, 1)
    colors = np.array([CLASS_COLORS[n] for n in scene.class_names]) / 255.0
    figure = Figure(figsize=(15, 6.0), dpi=100)
    axes = figure.subplots(1, 3)
    extent_km = (
        0,
        scene.grid.width * scene.grid.pixel_size_m / 1000,
        0,
        scene.grid.height * scene.grid.pixel_size_m / 1000,
    )
    axes[0].imshow(rgb, extent=extent_km, interpolation="nearest")
    axes[0].set_title(f"RGB, day {scene.season_doy}")
    axes[1].imshow(
        scene.landcover,
        cmap=ListedColormap(colors),
        vmin=-0.5,
        vmax=len(colors) - 0.5,
        extent=extent_km,
        interpolation="nearest",
    )
    axes[1].set_title("land cover")
    handles = [Patch(color=c, label=n) for n, c in zip(scene.class_names, colors, strict=True)]
    axes[1].legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12),
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    image = axes[2].imshow(
        scene.sar_db, cmap="gray", vmin=-25, vmax=5, extent=extent_km, interpolation="nearest"
    )
    axes[2].set_title(f"SAR VV sigma0 (dB), {scene.looks:g} looks")
    figure.colorbar(image, ax=axes[2], fraction=0.046, pad=0.04)
    for axis in axes:
        axis.set_xlabel("km")
    figure.tight_layout()
    return figure
