"""Simulated object scenes for detection and grounding: objects, boxes, referring expressions.

Objects (ships, planes, storage tanks, vehicles, buildings, bridges, tennis courts) with a colour,
a size relative to their class ("small"/"large") and a position are painted onto a land-cover
background from :mod:`eokit.core.synth.scene`; every object's axis-aligned box is the tight box
of its painted pixels. Ships lie on water, bridges span water with both ends on land, every
other object stands on land; when a scene draws ships or bridges but has little open water, a
channel is cut across it first. Objects never overlap (3 px apart at least). Each class has a
recognisable footprint: a hull with a pointed bow, a plane's fuselage, wings and tail, a round
tank with a darker rim, a court with white lines and a net, a gabled roof, a car's windscreen,
a bridge deck with parapets.

Referring expressions come from the grammar of :mod:`eokit.core.synth.referring` (attributes,
superlatives, ordinals, relations); each is kept only when its meaning, evaluated on the scene's
objects, picks exactly one object.

Domain knobs (:class:`ObjectDomain`): the sensor (gain, blur, noise... of
:class:`~eokit.core.synth.scene.SensorDomain`), the ground sampling distance, the object
vocabulary, the mix of expression kinds and their phrasing. Deterministic for a seed.

What is not realistic: objects are flat colour shapes with a soft shadow, axis-aligned (ships
and planes point along rows or columns), vehicles stand anywhere on land, not only on roads;
expressions are templated, not free text.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eokit.core.errors import InputError
from eokit.core.synth.referring import (
    COLOURS,
    EXPRESSION_MIXES,
    FIXED_SIZE_CLASSES,
    OBJECT_CLASSES,
    PHRASINGS,
    Query,
    Referring,
    SimObject,
    parse_expression,
    render_expression,
    resolve,
    write_expressions,
)
from eokit.core.synth.scene import (
    WATER,
    SensorDomain,
    _projected_grid,
    apply_domain,
    generate_layout,
    render_reflectance,
)
from eokit.core.types import Grid

logger = logging.getLogger(__name__)

__all__ = [
    "COLOURS",
    "EXPRESSION_MIXES",
    "OBJECT_CLASSES",
    "ObjectDomain",
    "ObjectScene",
    "Query",
    "Referring",
    "SimObject",
    "generate_object_dataset",
    "generate_object_scene",
    "parse_expression",
    "render_expression",
    "resolve",
    "write_object_scene",
]

_CLASS_COLOURS: dict[str, tuple[str, ...]] = {
    "ship": ("white", "grey", "red", "blue", "dark"),
    "plane": ("white", "grey", "yellow"),
    "storage tank": ("white", "grey", "green"),
    "vehicle": ("white", "grey", "red", "blue", "yellow", "dark"),
    "building": ("red", "grey", "white", "blue"),
    "bridge": ("grey", "white"),
    "tennis court": ("green", "blue", "red"),
}

#: Where each class may stand: on water, across water (ends on land), or on land.
_SURFACE: dict[str, str] = {"ship": "water", "bridge": "span"}
#: Open-water share below which a channel is cut for ships and bridges.
_MIN_WATER_FRACTION = 0.12
#: Gap in pixels kept free around every object.
_GAP_PX = 3


@dataclass(frozen=True)
class ObjectDomain:
    """How a simulated dataset looks: sensor, resolution, vocabulary and expression style.

    Attributes:
        gsd_m: Pixel size in metres.
        sensor: Radiometric/optical effects applied after painting.
        classes: Object classes that may appear.
        expression_mix: A key of :data:`EXPRESSION_MIXES`.
        phrasing: ``"plain"`` ("left of") or ``"wordy"`` ("located to the left of").
        objects_per_scene: (min, max) number of objects.
        waterway: Cut a channel across scenes that draw ships or bridges but have less than
            12 % open water (False: such objects are placed only where water already is).
    """

    gsd_m: float = 1.0
    sensor: SensorDomain = field(default_factory=SensorDomain)
    classes: tuple[str, ...] = tuple(OBJECT_CLASSES)
    expression_mix: str = "mixed"
    phrasing: str = "plain"
    objects_per_scene: tuple[int, int] = (4, 9)
    waterway: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gsd_m) and 0.1 <= self.gsd_m <= 5.0):
            raise InputError(f"must be 0.1-5 m for object scenes, got {self.gsd_m}",
                             parameter="gsd_m")
        unknown = [c for c in self.classes if c not in OBJECT_CLASSES]
        if unknown or not self.classes:
            raise InputError(f"unknown or no object classes {unknown}; choose from "
                             f"{', '.join(OBJECT_CLASSES)}", parameter="classes")
        if self.expression_mix not in EXPRESSION_MIXES:
            raise InputError(f"must be one of {', '.join(EXPRESSION_MIXES)}, got "
                             f"{self.expression_mix!r}", parameter="expression_mix")
        if self.phrasing not in PHRASINGS:
            raise InputError(f"must be one of {', '.join(PHRASINGS)}, got {self.phrasing!r}",
                             parameter="phrasing")
        low, high = self.objects_per_scene
        if not 1 <= low <= high <= 40:
            raise InputError(f"need 1 <= min <= max <= 40, got {self.objects_per_scene}",
                             parameter="objects_per_scene")


@dataclass
class ObjectScene:
    """A simulated image with objects and referring expressions.

    Attributes:
        image: (3, H, W) float32 RGB reflectance 0-1.
        objects: Painted objects.
        expressions: Referring expressions, each with a unique target.
        grid: Georeference.
        seed: Seed of the scene.
        domain: The domain it was drawn from.
        landcover: (H, W) uint8 background land cover (ids of
            :data:`~eokit.core.synth.scene.LANDCOVER_CLASSES`; 0 = water), objects not included.
    """

    image: np.ndarray
    objects: list[SimObject]
    expressions: list[Referring]
    grid: Grid
    seed: int
    domain: ObjectDomain
    landcover: np.ndarray | None = None

    def boxes(self) -> np.ndarray:
        """(N, 4) float32 xyxy pixel boxes."""
        return np.array([o.box for o in self.objects], dtype=np.float32).reshape(-1, 4)

    def labels(self) -> list[str]:
        """Class name of each object."""
        return [o.class_name for o in self.objects]

    def attributes(self) -> list[dict[str, str | None]]:
        """``{"colour": ..., "size": ...}`` of each object (size None for fixed-size classes)."""
        return [{"colour": o.colour, "size": o.size} for o in self.objects]


# --------------------------------------------------------------------------------------------
# Painting
# --------------------------------------------------------------------------------------------


def _shape_mask(class_name: str, length_px: int, width_px: int, vertical: bool) -> np.ndarray:
    """Boolean footprint of an object, long axis along columns (or rows when ``vertical``)."""
    h, w = width_px, length_px
    yy, xx = np.mgrid[0:h, 0:w]
    u = (xx + 0.5) / w * 2 - 1  # -1..1 along the length
    v = (yy + 0.5) / h * 2 - 1
    if class_name == "ship":  # pointed bow: an ellipse sharpened on one end
        mask = (u**2 + v**2 * (1 + 0.6 * np.clip(u, 0, 1)) ** 2) <= 1.0
        mask |= (np.abs(v) <= 0.7) & (u <= 0.2) & (u >= -0.9)
    elif class_name == "plane":  # fuselage along the length plus wings and tail across
        mask = (np.abs(v) <= 0.14) | ((np.abs(u + 0.1) <= 0.16) & (np.abs(v) <= 1.0))
        mask |= (np.abs(u + 0.8) <= 0.08) & (np.abs(v) <= 0.4)
    elif class_name == "storage tank":
        mask = (u**2 + v**2) <= 1.0
    else:
        mask = np.ones((h, w), dtype=bool)
    if vertical:
        mask = mask.T
    return np.ascontiguousarray(mask)


def _along(shape: tuple[int, int], vertical: bool) -> tuple[np.ndarray, np.ndarray]:
    """(u along the long axis, v across it), both -1..1 on the object's pixels."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    x = (xx + 0.5) / w * 2 - 1
    y = (yy + 0.5) / h * 2 - 1
    return (y, x) if vertical else (x, y)


def _paint(image: np.ndarray, obj_mask: np.ndarray, top: int, left: int, rgb: np.ndarray,
           class_name: str, vertical: bool, rng: np.random.Generator) -> None:
    h, w = obj_mask.shape
    region = image[:, top:top + h, left:left + w]
    # Soft shadow one or two pixels down-right: darkens the ground, not the object.
    shadow = np.zeros_like(obj_mask)
    shift = 1 if max(h, w) < 12 else 2
    if h > shift and w > shift:
        shadow[shift:, shift:] = obj_mask[:-shift, :-shift]
    region[:, shadow & ~obj_mask] *= 0.55
    texture = 1.0 + 0.04 * rng.standard_normal(obj_mask.shape).astype(np.float32)
    for band in range(3):
        region[band][obj_mask] = (rgb[band] * texture)[obj_mask]
    u, v = _along(obj_mask.shape, vertical)
    if class_name == "tennis court":  # white boundary and net lines
        lines = np.zeros_like(obj_mask)
        lines[[0, -1], :] = True
        lines[:, [0, -1]] = True
        if vertical:
            lines[h // 2, :] = True
        else:
            lines[:, w // 2] = True
        region[:, lines] = 0.7
    elif class_name == "storage tank":  # darker rim of the roof
        radius = np.hypot(u, v)
        region[:, obj_mask & (radius > 0.75)] *= 0.75
    elif class_name == "building":  # gabled roof: the half away from the sun is darker
        region[:, obj_mask & (v > 0)] *= 0.8
    elif class_name == "vehicle":  # dark windscreen across the front third
        region[:, obj_mask & (u > 0.25) & (u < 0.5)] = 0.05
    elif class_name == "bridge":  # lighter parapets along both edges of the deck
        edge = np.abs(v) > 1 - 2.0 / max(min(h, w), 1)
        region[:, obj_mask & edge] = np.clip(region[:, obj_mask & edge] * 1.6, 0, 1)


def _add_waterway(rng: np.random.Generator, landcover: np.ndarray, parcels: np.ndarray,
                  gsd_m: float) -> None:
    """Cut a gently meandering channel 16-26 m wide across the scene (in place)."""
    height, width = landcover.shape
    horizontal = bool(rng.random() < 0.5)
    across, along = (height, width) if horizontal else (width, height)
    half_px = rng.uniform(8.0, 13.0) / gsd_m
    centre = rng.uniform(0.35, 0.65) * across
    amplitude = rng.uniform(1.0, 5.0) / gsd_m
    wavelength = rng.uniform(1.5, 3.0) * along
    phase = rng.uniform(0, 2 * math.pi)
    position = np.arange(along, dtype=np.float32) + 0.5
    line = centre + amplitude * np.sin(2 * math.pi * position / wavelength + phase)
    offsets = np.arange(across, dtype=np.float32)[:, None] + 0.5
    channel = np.abs(offsets - line[None, :]) <= half_px  # (across, along)
    if not horizontal:
        channel = channel.T
    landcover[channel] = WATER
    parcels[channel] = int(parcels.max()) + 1


def _fits_surface(class_name: str, water: np.ndarray, mask: np.ndarray, vertical: bool) -> bool:
    """Whether the footprint stands where its class belongs (``water`` is under the footprint)."""
    share = float(water[mask].mean())
    surface = _SURFACE.get(class_name, "land")
    if surface == "water":
        return share >= 0.95
    if surface == "land":
        return share <= 0.05
    # a bridge: water under the middle of the deck, land under both ends
    profile = (water & mask).sum(axis=1 if vertical else 0) / np.maximum(
        mask.sum(axis=1 if vertical else 0), 1)
    cap = max(2, round(0.15 * profile.size))
    return bool(profile[:cap].mean() <= 0.2 and profile[-cap:].mean() <= 0.2
                and profile[cap:-cap].mean() >= 0.5)


def _draw_dimensions(rng: np.random.Generator, class_name: str,
                     gsd_m: float) -> tuple[int, int, str | None]:
    """(length_px, width_px, size word) of one object."""
    (l0, l1), (w0, w1) = OBJECT_CLASSES[class_name]
    if class_name in FIXED_SIZE_CLASSES:
        size, band = None, (0.0, 1.0)
    else:  # a gap between the bands keeps "small" and "large" apart
        size = "large" if rng.random() < 0.5 else "small"
        band = (0.6, 1.0) if size == "large" else (0.0, 0.4)
    length_m = l0 + rng.uniform(*band) * (l1 - l0)
    if class_name == "storage tank":
        width_m = length_m
    elif class_name == "plane":
        width_m = length_m * rng.uniform(0.8, 1.1)
    else:
        width_m = w0 + rng.uniform(*band) * (w1 - w0)
    return max(3, round(length_m / gsd_m)), max(2, round(width_m / gsd_m)), size


def _place_objects(rng: np.random.Generator, chosen: Sequence[str], water: np.ndarray,
                   domain: ObjectDomain) -> list[tuple[str, str, str | None, np.ndarray, int, int,
                                                       bool]]:
    """(class, colour, size, mask, top, left, vertical) of each placed object."""
    height, width = water.shape
    low, high = domain.objects_per_scene
    target = int(rng.integers(low, high + 1))
    water_pixels, land_pixels = np.flatnonzero(water), np.flatnonzero(~water)
    occupied = np.zeros((height, width), dtype=bool)
    placed: list[tuple[str, str, str | None, np.ndarray, int, int, bool]] = []
    attempts = 0
    while len(placed) < target and attempts < target * 60:
        attempts += 1
        class_name = chosen[int(rng.integers(len(chosen)))]
        length_px, width_px, size = _draw_dimensions(rng, class_name, domain.gsd_m)
        vertical = bool(rng.random() < 0.5)
        mask = _shape_mask(class_name, length_px, width_px, vertical)
        h, w = mask.shape
        pool = water_pixels if class_name in _SURFACE else land_pixels
        if h + 4 > height or w + 4 > width or pool.size == 0:
            continue
        row, col = divmod(int(pool[int(rng.integers(pool.size))]), width)
        top, left = row - h // 2, col - w // 2
        if top < 2 or left < 2 or top + h > height - 2 or left + w > width - 2:
            continue
        window = occupied[max(0, top - _GAP_PX):top + h + _GAP_PX,
                          max(0, left - _GAP_PX):left + w + _GAP_PX]
        if window.any():
            continue
        if not _fits_surface(class_name, water[top:top + h, left:left + w], mask, vertical):
            continue
        occupied[top:top + h, left:left + w] = True
        colours = _CLASS_COLOURS[class_name]
        colour = colours[int(rng.integers(len(colours)))]
        placed.append((class_name, colour, size, mask, top, left, vertical))
    if len(placed) < low:
        logger.debug("placed %d of %d objects (scene too small or crowded)", len(placed), target)
    return placed


# --------------------------------------------------------------------------------------------
# Scenes and datasets
# --------------------------------------------------------------------------------------------


def generate_object_scene(
    size: int = 128,
    *,
    seed: int = 0,
    domain: ObjectDomain | None = None,
    n_expressions: int = 3,
    crs: Any = "EPSG:32633",
    origin: tuple[float, float] = (500000.0, 5000000.0),
) -> ObjectScene:
    """One simulated image with objects and referring expressions.

    Args:
        size: Side length in pixels (32-2048).
        seed: Random seed; the same arguments give identical scenes.
        domain: Sensor, resolution, vocabulary and expression style.
        n_expressions: Expressions to write (fewer when the scene allows fewer unique ones).
        crs: Projected CRS of the grid.
        origin: Top-left corner in CRS units.

    Returns:
        The :class:`ObjectScene`: ``image`` (3, H, W) RGB 0-1, ``boxes()`` (N, 4) xyxy pixels,
        ``labels()`` class names, ``attributes()`` colour and size, ``expressions``.
    """
    if not 32 <= int(size) <= 2048:
        raise InputError(f"must be 32-2048 pixels, got {size}", parameter="size")
    if n_expressions < 0:
        raise InputError(f"must be >= 0, got {n_expressions}", parameter="n_expressions")
    domain = ObjectDomain() if domain is None else domain
    size = int(size)
    rng = np.random.default_rng([int(seed), 40])
    landcover, parcels = generate_layout(size, seed=seed, gsd_m=domain.gsd_m)
    # A few classes with several instances each, so that ordinals and relations have material.
    n_classes = int(rng.integers(1, min(4, len(domain.classes)) + 1))
    chosen = [domain.classes[int(i)]
              for i in rng.choice(len(domain.classes), size=n_classes, replace=False)]
    needs_water = any(c in _SURFACE for c in chosen)
    if domain.waterway and needs_water and (landcover == WATER).mean() < _MIN_WATER_FRACTION:
        _add_waterway(rng, landcover, parcels, domain.gsd_m)
    clean = SensorDomain(noise_std=0.0)
    reflectance = render_reflectance(landcover, seed=seed, gsd_m=domain.gsd_m, parcels=parcels,
                                     domain=clean)
    image = np.ascontiguousarray(reflectance[[2, 1, 0]])  # red, green, blue
    objects: list[SimObject] = []
    for class_name, colour, size_word, mask, top, left, vertical in _place_objects(
            rng, chosen, landcover == WATER, domain):
        rgb = np.asarray(COLOURS[colour], dtype=np.float32) * rng.uniform(0.9, 1.1)
        _paint(image, mask, top, left, rgb, class_name, vertical, rng)
        rows, cols = np.nonzero(mask)
        box = (float(left + cols.min()), float(top + rows.min()), float(left + cols.max() + 1),
               float(top + rows.max() + 1))
        objects.append(SimObject(class_name, colour, box, size_word))
    image = apply_domain(image, domain.sensor, seed=seed)
    grid = _projected_grid(crs, origin, domain.gsd_m, size, size)
    expressions = write_expressions(rng, objects, n_expressions, mix=domain.expression_mix,
                                    phrasing=domain.phrasing)
    return ObjectScene(image=image, objects=objects, expressions=expressions, grid=grid,
                       seed=int(seed), domain=domain, landcover=landcover)


def generate_object_dataset(n_scenes: int, size: int = 128, *, seed: int = 0,
                            domain: ObjectDomain | None = None,
                            n_expressions: int = 3) -> list[ObjectScene]:
    """``n_scenes`` scenes with seeds ``seed * 100003 + i`` (disjoint across dataset seeds)."""
    if n_scenes < 1:
        raise InputError(f"must be >= 1, got {n_scenes}", parameter="n_scenes")
    return [generate_object_scene(size, seed=seed * 100003 + i, domain=domain,
                                  n_expressions=n_expressions) for i in range(n_scenes)]


def _box_polygon(grid: Grid, box: Sequence[float]) -> dict[str, Any]:
    x0, y0, x1, y1 = box
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    transform = grid.transform
    ring = [[transform.c + transform.a * c + transform.b * r,
             transform.f + transform.d * c + transform.e * r] for c, r in corners]
    return {"type": "Polygon", "coordinates": [ring]}


def write_object_scene(scene: ObjectScene, out_dir: str | Path) -> dict[str, Path]:
    """Write ``image.tif`` (COG, RGB reflectance), ``objects.geojson`` and ``expressions.json``.

    ``expressions.json`` holds the pixel boxes, class names, attributes and expressions (what
    :func:`eokit.grounding.data.read_synth_scene` reads back); ``objects.geojson`` the boxes as
    polygons for a GIS.
    """
    from eokit.core.raster import atomic_write, write_geojson, write_raster

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image = write_raster(out / "image.tif", scene.image, scene.grid, cog=True,
                         band_names=["red", "green", "blue"])
    features = [
        {"geometry": _box_polygon(scene.grid, o.box),
         "properties": {"id": i, "class": o.class_name, "colour": o.colour, "size": o.size,
                        "box_px": list(o.box)}}
        for i, o in enumerate(scene.objects)
    ]
    geojson = write_geojson(out / "objects.geojson", features, scene.grid.crs)
    record = {
        "image": "image.tif",
        "size": [scene.grid.height, scene.grid.width],
        "gsd_m": scene.domain.gsd_m,
        "seed": scene.seed,
        "domain": {**asdict(scene.domain), "classes": list(scene.domain.classes)},
        "objects": [{"class": o.class_name, "colour": o.colour, "size": o.size,
                     "box_xyxy": list(o.box)} for o in scene.objects],
        "expressions": [asdict(e) for e in scene.expressions],
    }
    path = out / "expressions.json"
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    return {"image": image, "objects": geojson, "expressions": path}
