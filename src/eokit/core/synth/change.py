"""Bitemporal change simulator: two dates of one scene, typed changes, per-dataset label policies.

``change_pair`` draws a land-cover map (``synth.scene.generate_landcover``), edits a copy of it
with five change types (new buildings, demolished buildings, vegetation loss, vegetation gain,
water change), renders both dates with ``render_reflectance`` at different seasons and with a
small radiometric difference between dates, then applies the dataset's sensor
(``apply_domain``: gain, offset, gamma, blur, lower resolution, noise).

The *label policy* of a dataset says which change types it marks as change. This reproduces the
main obstacle to training one change detector on several datasets: the same physical change is
"change" in one dataset and "no change" in another (e.g. LEVIR-CD labels only buildings,
DSIFN-CD labels every land-cover change).

What is realistic: per-class reflectance spectra and seasonality (from ``synth.scene``),
blob-shaped clear-cuts and regrowth confined to vegetation, building footprints on open land,
shoreline-attached water change, unlabelled seasonal and radiometric differences.
What is not: no misregistration, no shadows or relief displacement, no clouds, buildings are
axis-aligned rectangles, and changes are independent of each other.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from scipy import ndimage

from eokit.core.errors import InputError
from eokit.core.synth.scene import (
    LANDCOVER_CLASSES,
    SensorDomain,
    apply_domain,
    generate_landcover,
    render_reflectance,
)
from eokit.core.types import Grid

logger = logging.getLogger(__name__)

__all__ = [
    "CHANGE_TYPES",
    "ChangeDomain",
    "ChangePair",
    "DEFAULT_DOMAINS",
    "change_pair",
    "write_change_dataset",
]

#: Change types the simulator draws; ``ChangePair.change_type`` holds 1 + index (0 = none).
CHANGE_TYPES: tuple[str, ...] = (
    "new_building",
    "demolished_building",
    "vegetation_loss",
    "vegetation_gain",
    "water_change",
)

_CLS = {name: index for index, name in enumerate(LANDCOVER_CLASSES)}
_VEGETATION = [_CLS[c] for c in ("conifer", "broadleaf")]
_OPEN_LAND = [_CLS[c] for c in ("grass", "crop", "bare")]


@dataclass(frozen=True)
class ChangeDomain:
    """A simulated change dataset: sensor, label policy, seasons and change frequency.

    Args:
        name: Dataset name.
        labelled: Change types this dataset marks as change (others are labelled "no change").
        sensor: Radiometric/geometric sensor model applied to both dates.
        season_doy: Day of year of (date A, date B).
        date_jitter: Standard deviation of the extra gain difference between dates (unlabelled).
        events: Mean number of events per change type per 64 x 64 px.
        label_noise: Probability that a labelled change object is left out of the label.
    """

    name: str
    labelled: tuple[str, ...]
    sensor: SensorDomain = field(default_factory=SensorDomain)
    season_doy: tuple[int, int] = (170, 200)
    date_jitter: float = 0.04
    events: float = 3.0
    label_noise: float = 0.0

    def __post_init__(self) -> None:
        unknown = [t for t in self.labelled if t not in CHANGE_TYPES]
        if unknown or not self.labelled:
            raise InputError(
                f"labelled change types must be a non-empty subset of {CHANGE_TYPES}, got "
                f"{self.labelled}",
                parameter="labelled",
            )


#: Four simulated datasets with different label policies and sensors (see docs/change.md).
DEFAULT_DOMAINS: dict[str, ChangeDomain] = {
    "sim_buildings": ChangeDomain(
        "sim_buildings",
        labelled=("new_building", "demolished_building"),
        sensor=SensorDomain(),
        season_doy=(160, 200),
    ),
    "sim_landcover": ChangeDomain(
        "sim_landcover",
        labelled=CHANGE_TYPES,
        sensor=SensorDomain(gain=0.9, gamma=1.1, noise_std=0.006),
        season_doy=(120, 240),
    ),
    "sim_sensor": ChangeDomain(
        "sim_sensor",
        labelled=("new_building", "vegetation_loss"),
        sensor=SensorDomain(gain=1.35, offset=0.02, gamma=0.8, blur_sigma=0.8, noise_std=0.01),
        season_doy=(150, 210),
    ),
    "sim_new": ChangeDomain(
        "sim_new",
        labelled=("vegetation_loss", "water_change"),
        sensor=SensorDomain(gain=0.75, offset=0.01, gamma=1.2, blur_sigma=0.6, noise_std=0.008),
        season_doy=(140, 230),
    ),
}


@dataclass
class ChangePair:
    """Two simulated dates of one scene.

    Attributes:
        image_a: (6, H, W) float32 reflectance 0-1 at date A (bands ``synth.scene.BANDS``).
        image_b: (6, H, W) float32 reflectance 0-1 at date B.
        label: (H, W) uint8, 1 = change under the dataset's label policy, 0 = no change.
        change_type: (H, W) uint8, 0 = none, 1 + index into ``CHANGE_TYPES`` otherwise.
        landcover_a: (H, W) uint8 land cover at date A.
        landcover_b: (H, W) uint8 land cover at date B.
        grid: Georeference of both dates.
        domain: The dataset that produced the pair.
    """

    image_a: np.ndarray
    image_b: np.ndarray
    label: np.ndarray
    change_type: np.ndarray
    landcover_a: np.ndarray
    landcover_b: np.ndarray
    grid: Grid
    domain: ChangeDomain


def _blobs(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float, quantile: float
) -> tuple[np.ndarray, int]:
    """Connected random blobs: thresholded smooth noise, labelled components."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    mask = noise > np.quantile(noise, quantile)
    labels, count = ndimage.label(mask)
    return np.asarray(labels), int(count)


def _pick_blobs(
    rng: np.random.Generator,
    allowed: np.ndarray,
    count: int,
    *,
    sigma: float,
    min_px: int,
) -> np.ndarray:
    """Up to ``count`` blob regions restricted to ``allowed`` (each at least ``min_px`` pixels)."""
    out = np.zeros(allowed.shape, bool)
    if count <= 0 or not allowed.any():
        return out
    labels, n = _blobs(rng, allowed.shape, sigma, 0.8)
    candidates = []
    for index in range(1, n + 1):
        region = (labels == index) & allowed
        if region.sum() >= min_px:
            candidates.append(region)
    rng.shuffle(candidates)
    for region in candidates[:count]:
        out |= region
    return out


def _new_buildings(
    rng: np.random.Generator, landcover: np.ndarray, count: int, size_px: tuple[int, int]
) -> np.ndarray:
    """Rectangular footprints placed on open land (grass, crop, bare)."""
    height, width = landcover.shape
    open_land = np.isin(landcover, _OPEN_LAND)
    out = np.zeros(landcover.shape, bool)
    for _ in range(count * 6):
        if count <= 0:
            break
        h = int(rng.integers(size_px[0], size_px[1] + 1))
        w = int(rng.integers(size_px[0], size_px[1] + 1))
        if h >= height or w >= width:
            continue
        r = int(rng.integers(0, height - h))
        c = int(rng.integers(0, width - w))
        window = (slice(r, r + h), slice(c, c + w))
        if (
            open_land[window].mean() > 0.9
            and not out[max(r - 1, 0) : r + h + 1, max(c - 1, 0) : c + w + 1].any()
        ):
            out[window] = True
            count -= 1
    return out


def _demolished(
    rng: np.random.Generator, landcover: np.ndarray, count: int, size_px: tuple[int, int]
) -> np.ndarray:
    """Parts of existing building areas cleared to bare ground."""
    buildings = landcover == _CLS["building"]
    out = np.zeros(landcover.shape, bool)
    if count <= 0 or not buildings.any():
        return out
    rows, cols = np.nonzero(buildings)
    for _ in range(count):
        index = int(rng.integers(0, rows.size))
        h = int(rng.integers(size_px[0], size_px[1] + 1))
        w = int(rng.integers(size_px[0], size_px[1] + 1))
        r0 = max(int(rows[index]) - h // 2, 0)
        c0 = max(int(cols[index]) - w // 2, 0)
        out[r0 : r0 + h, c0 : c0 + w] = True
    return np.asarray(out & buildings)


def change_pair(
    size: int = 64,
    *,
    seed: int = 0,
    domain: str | ChangeDomain = "sim_buildings",
    gsd_m: float = 10.0,
    crs: str = "EPSG:32633",
    origin: tuple[float, float] = (500000.0, 5000000.0),
    events: float | None = None,
) -> ChangePair:
    """Simulate two dates of one scene with typed changes and the dataset's label.

    Args:
        size: Height and width in pixels (>= 16).
        seed: Random seed (the same seed gives the same pair).
        domain: A ``ChangeDomain`` or a key of ``DEFAULT_DOMAINS``.
        gsd_m: Pixel size in metres.
        crs: CRS of the grid.
        origin: (x, y) of the upper-left corner in CRS units.
        events: Override the domain's mean number of events per change type per 64 x 64 px.

    Returns:
        The pair with images, label, per-pixel change type and land cover at both dates.
    """
    if isinstance(domain, str):
        if domain not in DEFAULT_DOMAINS:
            raise InputError(
                f"unknown simulated dataset {domain!r}; use one of {', '.join(DEFAULT_DOMAINS)}",
                parameter="domain",
            )
        domain = DEFAULT_DOMAINS[domain]
    if size < 16:
        raise InputError(f"must be >= 16 pixels, got {size}", parameter="size")
    rng = np.random.default_rng([seed, 7411])
    landcover_a = np.asarray(generate_landcover(size, seed=seed, gsd_m=gsd_m), dtype=np.uint8)
    landcover_b = landcover_a.copy()
    change_type = np.zeros((size, size), np.uint8)
    rate = (domain.events if events is None else events) * (size / 64.0) ** 2
    scale = max(size / 64.0, 0.5)
    lo, hi = max(2, int(3 * scale)), max(3, int(7 * scale))

    def draw() -> int:
        return int(rng.poisson(rate))

    def commit(region: np.ndarray, kind: str, new_class: int | np.ndarray) -> None:
        region = region & (change_type == 0)
        if isinstance(new_class, np.ndarray):
            landcover_b[region] = new_class[region]
        else:
            landcover_b[region] = new_class
        change_type[region] = CHANGE_TYPES.index(kind) + 1

    commit(_new_buildings(rng, landcover_a, draw(), (lo, hi)), "new_building", _CLS["building"])
    commit(_demolished(rng, landcover_a, draw(), (lo, hi)), "demolished_building", _CLS["bare"])
    vegetation = np.isin(landcover_a, _VEGETATION)
    loss = _pick_blobs(rng, vegetation, draw(), sigma=2.0 * scale, min_px=6)
    commit(loss, "vegetation_loss", int(rng.choice([_CLS["bare"], _CLS["grass"]])))
    regrow = np.isin(landcover_a, [_CLS["bare"], _CLS["grass"], _CLS["crop"]])
    gain = _pick_blobs(rng, regrow, draw(), sigma=2.0 * scale, min_px=6)
    commit(gain, "vegetation_gain", int(rng.choice(_VEGETATION)))
    water = landcover_a == _CLS["water"]
    shore = ndimage.binary_dilation(water, iterations=max(2, int(3 * scale)))
    n_water = draw()
    if water.any() and n_water:
        # Flooding next to existing water, or drying of part of it.
        if rng.random() < 0.5:
            flood = _pick_blobs(
                rng,
                shore & ~water & (landcover_a != _CLS["building"]),
                n_water,
                sigma=1.5 * scale,
                min_px=4,
            )
            commit(flood, "water_change", _CLS["water"])
        else:
            dry = _pick_blobs(rng, water, n_water, sigma=1.5 * scale, min_px=4)
            commit(dry, "water_change", _CLS["bare"])

    # Both dates share parcels and texture (one seed); each change region is its own parcel so
    # new buildings get their own roof. Date B differs by season (crop phenology), a small gain
    # difference and independent sensor noise, none of which is labelled.
    parcels = _parcels(landcover_a, change_type)
    clean = SensorDomain(noise_std=0.0)
    reflectance_a = render_reflectance(
        landcover_a, seed=seed, season_doy=domain.season_doy[0], domain=clean, gsd_m=gsd_m,
        parcels=parcels,
    )
    reflectance_b = render_reflectance(
        landcover_b, seed=seed, season_doy=domain.season_doy[1], domain=clean, gsd_m=gsd_m,
        parcels=parcels,
    )
    jitter = float(rng.normal(0.0, domain.date_jitter))
    sensor_b = replace(domain.sensor, gain=domain.sensor.gain * (1.0 + jitter))
    image_a = apply_domain(reflectance_a, domain.sensor, seed=seed * 2 + 11)
    image_b = apply_domain(reflectance_b, sensor_b, seed=seed * 2 + 12)

    labelled_ids = [CHANGE_TYPES.index(t) + 1 for t in domain.labelled]
    label = np.isin(change_type, labelled_ids)
    if domain.label_noise > 0:
        objects, count = ndimage.label(label)
        for index in range(1, count + 1):
            if rng.random() < domain.label_noise:
                label[objects == index] = False
    grid = Grid(
        crs=_crs(crs),
        transform=Affine(gsd_m, 0.0, origin[0], 0.0, -gsd_m, origin[1]),
        width=size,
        height=size,
    )
    return ChangePair(
        image_a=np.clip(np.asarray(image_a, np.float32), 0.0, 1.0),
        image_b=np.clip(np.asarray(image_b, np.float32), 0.0, 1.0),
        label=label.astype(np.uint8),
        change_type=change_type,
        landcover_a=landcover_a,
        landcover_b=landcover_b,
        grid=grid,
        domain=domain,
    )


def _parcels(landcover: np.ndarray, change_type: np.ndarray) -> np.ndarray:
    """Parcel ids 0..n-1: class regions of date A; each change region is a parcel of its own."""
    parcels = np.full(landcover.shape, -1, np.int64)
    offset = 0
    for class_id in range(len(LANDCOVER_CLASSES)):
        labels, count = ndimage.label((landcover == class_id) & (change_type == 0))
        parcels[labels > 0] = labels[labels > 0] - 1 + offset
        offset += count
    labels, count = ndimage.label(change_type > 0)
    parcels[labels > 0] = labels[labels > 0] - 1 + offset
    offset += count
    parcels[parcels < 0] = offset  # pixels cut off by nothing (defensive; normally none)
    return parcels


def _crs(crs: str) -> Any:
    from rasterio.crs import CRS

    try:
        return CRS.from_user_input(crs)
    except Exception as error:  # rasterio raises CRSError subclasses
        raise InputError(f"not a CRS: {crs!r} ({error})", parameter="crs") from error


def write_change_dataset(
    out_dir: str | Path,
    *,
    count: int = 8,
    size: int = 64,
    seed: int = 0,
    domain: str | ChangeDomain = "sim_buildings",
    splits: Sequence[str] = ("train", "val", "test"),
    fractions: Sequence[float] = (0.5, 0.25, 0.25),
) -> dict[str, Path]:
    """Write ``count`` simulated pairs as GeoTIFFs in the LEVIR-CD/BIT layout.

    ``out_dir/{A,B,label}/<name>.tif`` (COGs) and ``out_dir/list/<split>.txt``; labels are 0/255
    uint8.
    Each pair lies at its own map position so the tiles do not overlap.

    Returns:
        ``{"root": out_dir, "<split>": list file, ...}``.
    """
    from eokit.core.raster import atomic_write, write_raster

    out = Path(out_dir)
    if count < len(splits):
        raise InputError(f"need at least {len(splits)} pairs, got {count}", parameter="count")
    for sub in ("A", "B", "label", "list"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        pair = change_pair(
            size,
            seed=seed * 100_003 + index,
            domain=domain,
            origin=(500000.0 + index * size * 10.0, 5000000.0),
        )
        name = f"pair_{index:04d}"
        write_raster(out / "A" / f"{name}.tif", pair.image_a, pair.grid, cog=True)
        write_raster(out / "B" / f"{name}.tif", pair.image_b, pair.grid, cog=True)
        write_raster(
            out / "label" / f"{name}.tif",
            (pair.label * 255).astype(np.uint8),
            pair.grid,
            cog=True,
            band_names=["change (255) / no change (0)"],
        )
        names.append(name)
    bounds = np.cumsum([0.0, *fractions])
    bounds = np.round(bounds / bounds[-1] * count).astype(int)
    paths: dict[str, Path] = {"root": out}
    for split, start, stop in zip(splits, bounds[:-1], bounds[1:], strict=True):
        path = out / "list" / f"{split}.txt"
        with atomic_write(path) as tmp:
            Path(tmp).write_text("".join(f"{n}\n" for n in names[start:stop]))
        paths[split] = path
    return paths
