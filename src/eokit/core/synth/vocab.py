"""Simulated very-high-resolution RGB scenes with a named, described open vocabulary of classes.

Each class of :data:`VOCABULARY` has a name, synonyms, a one-sentence description of how it looks
from above, and a renderer that draws exactly that appearance: a river is an elongated meandering
water band, an orchard a regular grid of round crowns on grass, a solar farm rows of dark
blue-grey panels, a parking lot grey asphalt with painted stall lines, and so on. Scenes are
built in metres (default 1 m pixels, aerial-like), so texture periods and object sizes stay
physical when the pixel size changes; periodic patterns finer than about three pixels are drawn
as their mean colour instead of aliasing.

Layout, in drawing order: natural/agricultural parcels (Voronoi cells, forests merged into larger
stands) -> road network along parcel edges plus a through road -> a lake with its shore -> a
meandering river -> rectangular facilities (parking lots, sports fields, greenhouse blocks, solar
farms), placed where they overlap water and roads least -> building clusters with cast shadows.

Restricting ``classes`` removes the others from the layout, so only those classes are labelled.
Parcels are filled with the selected area classes (conifer/broadleaf forest, grassland, cropland,
orchard, bare soil, sand); when none is selected, the selected classes fill the parcels
themselves. Lake shore without water body becomes a beach along one scene edge whose lake lies
outside the scene.

What is not realistic: no relief or illumination geometry beyond crown and roof shading and
building shadows, no seasons, no atmosphere, one sun direction (north-west), RGB only.

All randomness comes from ``numpy.random.default_rng([seed, stream])``; the same arguments give
bit-identical arrays.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eokit.core.errors import InputError
from eokit.core.synth.scene import (
    SensorDomain,
    _apply_domain_in_place,
    _check_gsd,
    _parse_size,
    _projected_grid,
    _smooth_noise,
)
from eokit.core.types import Grid

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

__all__ = [
    "VOCABULARY",
    "VOCABULARY_NAMES",
    "VocabClass",
    "VocabScene",
    "generate_vocab_scene",
    "quicklook_figure",
    "vocab_class",
    "write_vocab_scene",
]


@dataclass(frozen=True)
class VocabClass:
    """One class of the simulated open vocabulary.

    Attributes:
        name: Canonical class name (lower case, words separated by spaces).
        description: How the class looks in a nadir RGB image at about 1 m.
        synonyms: Other names for the same thing.
        colour: Display colour ``"#rrggbb"`` (legend and GeoTIFF colour table).
    """

    name: str
    description: str
    synonyms: tuple[str, ...]
    colour: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        """Display colour as 0-255 integers."""
        h = self.colour.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


#: The simulated vocabulary; the order is the default class order of a scene.
VOCABULARY: tuple[VocabClass, ...] = (
    VocabClass(
        "water body",
        "still open water such as a lake or pond: a dark, smooth, bluish area with rounded shores",
        ("lake", "pond", "standing water", "reservoir"),
        "#1f5fbf",
    ),
    VocabClass(
        "river",
        "flowing water: a long, narrow, meandering band of dark greenish-blue water",
        ("stream", "watercourse", "creek"),
        "#36a3e0",
    ),
    VocabClass(
        "lake shore",
        "a narrow margin of sand and wet soil along the edge of a lake, darker where wet",
        ("shoreline", "beach", "lake margin", "bank"),
        "#e8d9a0",
    ),
    VocabClass(
        "conifer forest",
        "dense evergreen needle-leaf trees: dark green, fine-grained texture of small pointed "
        "crowns with deep shadows",
        ("coniferous forest", "pine forest", "spruce forest", "evergreen forest"),
        "#0f4d2a",
    ),
    VocabClass(
        "broadleaf forest",
        "deciduous trees: brighter green, large rounded sunlit crowns with soft shadows",
        ("deciduous forest", "broad-leaved forest", "woodland", "trees"),
        "#3fa34d",
    ),
    VocabClass(
        "grassland",
        "meadow or pasture: an even light green surface with gentle patchy variation",
        ("grass", "meadow", "pasture", "lawn", "low vegetation"),
        "#a6d96a",
    ),
    VocabClass(
        "cropland",
        "cultivated field parcels with straight parallel crop rows, green, yellow or brown",
        ("agricultural field", "arable land", "farmland", "crop field", "agriculture"),
        "#f2c94c",
    ),
    VocabClass(
        "orchard",
        "fruit trees planted in a regular grid: evenly spaced round crowns on grass",
        ("fruit orchard", "plantation", "tree rows"),
        "#9c6b30",
    ),
    VocabClass(
        "bare soil",
        "exposed brown earth without vegetation, mottled with darker and lighter patches",
        ("barren land", "bare ground", "earth", "dirt", "barren"),
        "#a0522d",
    ),
    VocabClass(
        "sand",
        "bright pale yellow sand with fine ripples, as on dunes or beaches",
        ("sandy area", "dune", "sand deposit"),
        "#f5e6a1",
    ),
    VocabClass(
        "building",
        "roofed structures: rectangles with sharp edges, red, grey or dark roofs, a ridge line "
        "and a shadow on one side",
        ("house", "roof", "built-up structure"),
        "#d7263d",
    ),
    VocabClass(
        "road",
        "paved roads: long grey asphalt strips of constant width with a dashed white centre "
        "line, forming a network",
        ("street", "highway", "paved road", "lane"),
        "#5a5a5a",
    ),
    VocabClass(
        "parking lot",
        "grey asphalt area with rows of painted white stall lines and parked cars",
        ("car park", "parking area", "parking"),
        "#9e9e9e",
    ),
    VocabClass(
        "sports field",
        "a bright green rectangular pitch with white boundary and centre lines, sometimes "
        "inside a red oval running track",
        ("football pitch", "soccer field", "playing field", "athletics track", "stadium"),
        "#7fff00",
    ),
    VocabClass(
        "greenhouse",
        "glass or plastic greenhouses: very bright white translucent rectangles in parallel rows",
        ("glasshouse", "polytunnel", "plastic greenhouse"),
        "#f0f0ff",
    ),
    VocabClass(
        "solar farm",
        "photovoltaic power plant: long parallel rows of dark blue-grey solar panels",
        ("solar park", "photovoltaic plant", "solar panels", "pv array"),
        "#2b3a67",
    ),
)
VOCABULARY_NAMES: tuple[str, ...] = tuple(c.name for c in VOCABULARY)
_BY_NAME = {c.name: c for c in VOCABULARY}

#: Classes that fill parcels; the rest are drawn as objects over them.
_AREA_CLASSES = (
    "conifer forest",
    "broadleaf forest",
    "grassland",
    "cropland",
    "orchard",
    "bare soil",
    "sand",
)
_FACILITIES = ("parking lot", "sports field", "greenhouse", "solar farm")

# Base RGB reflectance (red, green, blue) per material.
_RGB = {
    "water body": (0.030, 0.050, 0.075),
    "river": (0.050, 0.075, 0.080),
    "dry sand": (0.340, 0.300, 0.215),
    "wet sand": (0.140, 0.125, 0.095),
    "conifer crown": (0.030, 0.060, 0.035),
    "conifer gap": (0.012, 0.020, 0.014),
    "broadleaf crown": (0.075, 0.130, 0.050),
    "broadleaf gap": (0.025, 0.045, 0.020),
    "grass": (0.090, 0.140, 0.060),
    "orchard crown": (0.050, 0.100, 0.040),
    "bare soil": (0.200, 0.145, 0.095),
    "sand": (0.420, 0.370, 0.250),
    "asphalt": (0.110, 0.110, 0.115),
    "old asphalt": (0.150, 0.150, 0.150),
    "paint": (0.600, 0.600, 0.580),
    "pitch": (0.070, 0.190, 0.060),
    "track": (0.380, 0.140, 0.090),
    "glass": (0.660, 0.690, 0.710),
    "glass frame": (0.420, 0.440, 0.450),
    "panel": (0.045, 0.065, 0.115),
    "gravel": (0.170, 0.165, 0.160),
    "shadow": (0.020, 0.022, 0.030),
}
_CROP_COLOURS = (
    (0.070, 0.150, 0.050),  # green cereal
    (0.300, 0.260, 0.110),  # ripe cereal
    (0.170, 0.120, 0.080),  # tilled soil
    (0.120, 0.170, 0.060),  # young maize
)
_ROOF_COLOURS = (
    (0.300, 0.110, 0.080),  # clay tile
    (0.220, 0.220, 0.230),  # concrete
    (0.080, 0.080, 0.090),  # bitumen
    (0.330, 0.340, 0.360),  # metal
)


@dataclass
class VocabScene:
    """A simulated open-vocabulary scene.

    Attributes:
        image: (3, H, W) float32 RGB reflectance in [0, 1] (red, green, blue).
        label: (H, W) int64 class indices into ``class_names``.
        class_names: Names of the classes the scene was drawn with (label i -> name i).
        grid: Georeference (projected CRS, metres).
        seed: Seed the scene was generated with.
        domain: Sensor domain applied to ``image``.
    """

    image: np.ndarray
    label: np.ndarray
    class_names: tuple[str, ...]
    grid: Grid
    seed: int
    domain: SensorDomain

    def class_fractions(self) -> dict[str, float]:
        """Fraction of the pixels of each class."""
        counts = np.bincount(self.label.ravel(), minlength=len(self.class_names))
        total = max(int(counts.sum()), 1)
        return {n: float(c) / total for n, c in zip(self.class_names, counts, strict=False)}

    @property
    def colours(self) -> tuple[str, ...]:
        """Display colour of each class."""
        return tuple(_BY_NAME[n].colour for n in self.class_names)


def vocab_class(name: str) -> VocabClass:
    """The :class:`VocabClass` of a name or synonym (case-insensitive); InputError if unknown."""
    key = " ".join(str(name).lower().replace("_", " ").split())
    if key in _BY_NAME:
        return _BY_NAME[key]
    for item in VOCABULARY:
        if key in item.synonyms:
            return item
    raise InputError(
        f"unknown class {name!r}; known: {', '.join(VOCABULARY_NAMES)}", parameter="classes"
    )


def _resolve_classes(classes: Sequence[str] | None) -> tuple[str, ...]:
    if classes is None:
        return VOCABULARY_NAMES
    if isinstance(classes, str):
        classes = [c for c in classes.split(",")]
    names: list[str] = []
    for raw in classes:
        if not str(raw).strip():
            raise InputError("empty class name in the list", parameter="classes")
        name = vocab_class(raw).name
        if name in names:
            raise InputError(f"class {name!r} is given twice", parameter="classes")
        names.append(name)
    if not names:
        raise InputError("give at least one class", parameter="classes")
    return tuple(names)


# --------------------------------------------------------------------------------------------
# Small drawing helpers (coordinates in metres, pixel centres)
# --------------------------------------------------------------------------------------------


class _Canvas:
    """Label and colour layers being painted, plus metre coordinates of the pixel centres."""

    def __init__(self, height: int, width: int, gsd_m: float, names: tuple[str, ...]) -> None:
        self.height, self.width, self.gsd = height, width, gsd_m
        self.names = names
        self.index = {n: i for i, n in enumerate(names)}
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        self.x = (xs + 0.5) * np.float32(gsd_m)
        self.y = (ys + 0.5) * np.float32(gsd_m)
        self.label = np.full((height, width), -1, dtype=np.int64)
        self.rgb = np.zeros((3, height, width), dtype=np.float32)
        #: Pixels that carry a man-made object or water (placement avoids them).
        self.taken = np.zeros((height, width), dtype=bool)

    @property
    def extent_m(self) -> tuple[float, float]:
        return self.height * self.gsd, self.width * self.gsd

    def has(self, name: str) -> bool:
        return name in self.index

    def paint(self, mask: np.ndarray, name: str, colour: np.ndarray | None = None) -> None:
        self.label[mask] = self.index[name]
        if colour is not None:
            self.rgb[:, mask] = colour[:, mask] if colour.ndim == 3 else colour[:, None]


def _rgb(name: str) -> np.ndarray:
    return np.asarray(_RGB[name], dtype=np.float32)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(3, H, W) blend of colours ``a`` and ``b`` (3,) or (3, H, W) with weight ``t`` (H, W)."""
    a3 = a if a.ndim == 3 else a[:, None, None]
    b3 = b if b.ndim == 3 else b[:, None, None]
    out: np.ndarray = a3 * (1 - t)[None] + b3 * t[None]
    return out.astype(np.float32)


def _stripes(coord_m: np.ndarray, period_m: float, duty: float, gsd_m: float) -> np.ndarray:
    """1 on the "on" part of a periodic pattern, 0 off; the mean ``duty`` when under-sampled."""
    if period_m < 3 * gsd_m:
        return np.full(coord_m.shape, duty, dtype=np.float32)
    phase = np.mod(coord_m / period_m, 1.0)
    return (phase < duty).astype(np.float32)


def _line(coord_m: np.ndarray, centre_m: float, width_m: float, gsd_m: float) -> np.ndarray:
    """Coverage (0-1) of a straight line of ``width_m`` at ``centre_m`` along ``coord_m``."""
    half = max(width_m, gsd_m) / 2
    cover = np.abs(coord_m - centre_m) <= half
    return cover.astype(np.float32) * min(1.0, width_m / gsd_m)


def _rotated(canvas: _Canvas, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u along, v across) in metres of a frame rotated by ``angle`` about (cx, cy)."""
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = canvas.x - cx, canvas.y - cy
    return dx * c + dy * s, -dx * s + dy * c


def _texture(
    rng: np.random.Generator, canvas: _Canvas, scale_m: float, octaves: int = 2
) -> np.ndarray:
    return _smooth_noise(
        rng, (canvas.height, canvas.width), max(scale_m / canvas.gsd, 1.0), octaves
    )


def _crowns(
    canvas: _Canvas, centres: np.ndarray, radii: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Dome height (0-1, 0 outside crowns) and sun shading (about 0.5-1.3) of round crowns.

    Each pixel takes its nearest crown centre; the dome is ``sqrt(1 - (d / r)^2)``. Shading is
    the dome's slope towards a sun in the north-west.
    """
    from scipy.spatial import cKDTree

    if len(centres) == 0:
        zero = np.zeros((canvas.height, canvas.width), dtype=np.float32)
        return zero, zero + 1
    tree = cKDTree(centres)
    points = np.stack([canvas.x.ravel(), canvas.y.ravel()], axis=1)
    dist, nearest = tree.query(points, k=1)
    r = radii[nearest]
    rel = np.clip(dist / r, 0, 1).reshape(canvas.height, canvas.width)
    dome = np.sqrt(np.clip(1 - rel**2, 0, 1)).astype(np.float32)
    gy, gx = np.gradient(dome)
    # Brighter on the slope facing the sun (up-left in the image).
    shade = 1.0 + 1.5 * (-(gx + gy)) * min(1.0, 2.0 * float(np.median(radii)) / canvas.gsd / 4)
    return dome, np.clip(shade, 0.5, 1.4).astype(np.float32)


def _poisson_centres(
    rng: np.random.Generator, canvas: _Canvas, spacing_m: float, jitter: float = 0.45
) -> np.ndarray:
    """Jittered-grid points over the scene (plus a margin) about ``spacing_m`` apart."""
    h_m, w_m = canvas.extent_m
    gy, gx = np.mgrid[-1 : int(h_m / spacing_m) + 2, -1 : int(w_m / spacing_m) + 2]
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float64) + 0.5
    pts += rng.uniform(-jitter, jitter, size=pts.shape)
    return pts * spacing_m


# --------------------------------------------------------------------------------------------
# Layout and rendering
# --------------------------------------------------------------------------------------------


def _parcels(rng: np.random.Generator, canvas: _Canvas, size_m: float) -> tuple[np.ndarray, int]:
    """Anisotropic Voronoi parcels; returns ids (H, W) and their count."""
    from scipy.spatial import cKDTree

    h_m, w_m = canvas.extent_m
    n = max(4, int(round(h_m * w_m / size_m**2)))
    seeds = np.stack([rng.uniform(0, w_m, n), rng.uniform(0, h_m, n)], axis=1)
    stretch = rng.uniform(1.0, 1.8)
    angle = rng.uniform(0, math.pi)
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]]) @ np.diag([1.0, stretch])
    # A smooth warp makes parcel edges slightly irregular, like field boundaries.
    warp_x = _texture(rng, canvas, size_m, 1) * np.float32(size_m * 0.06)
    warp_y = _texture(rng, canvas, size_m, 1) * np.float32(size_m * 0.06)
    points = np.stack([(canvas.x + warp_x).ravel(), (canvas.y + warp_y).ravel()], axis=1)
    _, ids = cKDTree(seeds @ rot).query(points @ rot, k=1)
    return ids.reshape(canvas.height, canvas.width).astype(np.int64), n


def _assign_areas(
    rng: np.random.Generator, n: int, fill: tuple[str, ...], ids: np.ndarray
) -> list[str]:
    """A fill class per parcel: every fill class gets parcels, large parcels first."""
    sizes = np.bincount(ids.ravel(), minlength=n)
    order = np.argsort(-sizes, kind="stable")
    cycle = list(rng.permutation(len(fill)))
    chosen: list[str] = [fill[0]] * n
    for rank, parcel in enumerate(order):
        if rank < len(cycle):
            chosen[parcel] = fill[cycle[rank]]
        else:
            # Forests and grassland are more common than sand and bare soil.
            weights = np.array(
                [
                    3.0 if f.endswith("forest") or f in ("grassland", "cropland") else 1.0
                    for f in fill
                ]
            )
            chosen[parcel] = fill[int(rng.choice(len(fill), p=weights / weights.sum()))]
    return chosen


def _render_area(
    rng: np.random.Generator,
    canvas: _Canvas,
    name: str,
    mask: np.ndarray,
    parcel_ids: np.ndarray,
    parcels: Sequence[int],
) -> None:
    """Paint one area class over ``mask`` (pixels of the given parcels)."""
    gsd = canvas.gsd
    if not mask.any():
        return
    if name == "conifer forest":
        centres = _poisson_centres(rng, canvas, 3.2, 0.4)
        radii = rng.uniform(1.2, 1.9, len(centres))
        dome, shade = _crowns(canvas, centres, radii)
        colour = _mix(_rgb("conifer gap"), _rgb("conifer crown"), np.sqrt(dome))
        colour *= shade[None] * (1 + 0.08 * _texture(rng, canvas, 30.0))[None]
    elif name == "broadleaf forest":
        centres = _poisson_centres(rng, canvas, 6.5, 0.35)
        radii = rng.uniform(3.2, 4.6, len(centres))
        dome, shade = _crowns(canvas, centres, radii)
        colour = _mix(_rgb("broadleaf gap"), _rgb("broadleaf crown"), np.clip(dome * 3, 0, 1))
        colour *= shade[None] * (1 + 0.10 * _texture(rng, canvas, 25.0))[None]
    elif name == "grassland":
        t = _texture(rng, canvas, 18.0, 3)
        colour = _rgb("grass")[:, None, None] * (1 + 0.07 * t)[None]
        colour = (
            colour
            + np.float32(0.012)
            * _texture(rng, canvas, 40.0)[None]
            * np.array([1.0, 0.6, 0.2], np.float32)[:, None, None]
        )
    elif name == "cropland":
        colour = np.zeros_like(canvas.rgb)
        fine = _texture(rng, canvas, 2.0, 1)
        for parcel in parcels:
            sel = parcel_ids == parcel
            base = np.asarray(_CROP_COLOURS[int(rng.integers(len(_CROP_COLOURS)))], np.float32)
            base = base * np.float32(rng.uniform(0.85, 1.15))
            angle = rng.uniform(0, math.pi)
            u, v = _rotated(canvas, 0.0, 0.0, angle)
            rows = _stripes(v, rng.uniform(2.5, 4.0), 0.5, gsd)
            tram = _stripes(v + rng.uniform(0, 20), 20.0, 0.08, gsd)
            shade = 1 + 0.12 * (rows - 0.5) - 0.25 * tram + 0.03 * fine
            colour[:, sel] = base[:, None] * shade[sel][None]
    elif name == "orchard":
        grass = _rgb("grass")[:, None, None] * (1 + 0.06 * _texture(rng, canvas, 15.0))[None]
        colour = grass.astype(np.float32).copy()
        for parcel in parcels:
            sel = parcel_ids == parcel
            ys, xs = np.nonzero(sel)
            cx, cy = float(xs.mean() * gsd), float(ys.mean() * gsd)
            spacing = float(rng.uniform(5.5, 7.0))
            angle = float(rng.uniform(0, math.pi / 2))
            # Regular rotated grid of trees over the parcel's bounding box.
            half = max(np.ptp(ys), np.ptp(xs)) * gsd + 2 * spacing
            k = np.arange(-half, half + spacing, spacing)
            gu, gv = np.meshgrid(k, k)
            c, s = math.cos(angle), math.sin(angle)
            centres = np.stack([cx + gu * c - gv * s, cy + gu * s + gv * c], axis=-1).reshape(-1, 2)
            keep = (
                (centres[:, 0] > -spacing)
                & (centres[:, 0] < canvas.width * gsd + spacing)
                & (centres[:, 1] > -spacing)
                & (centres[:, 1] < canvas.height * gsd + spacing)
            )
            centres = centres[keep]
            radii = np.full(len(centres), spacing * rng.uniform(0.28, 0.34))
            dome, shade = _crowns(canvas, centres, radii)
            tree = dome > 0
            crown = _rgb("orchard crown")[:, None, None] * shade[None]
            # A crown's own shadow falls to the south-east.
            shadow = np.roll(tree, (max(1, int(round(1.0 / gsd))),) * 2, axis=(0, 1)) & ~tree
            part = np.where(tree[None], crown, grass)
            part = np.where(shadow[None], part * 0.55, part)
            colour[:, sel] = part[:, sel]
    elif name == "bare soil":
        t = _texture(rng, canvas, 12.0, 4)
        colour = _rgb("bare soil")[:, None, None] * (1 + 0.14 * t)[None]
        tracks = _stripes(_rotated(canvas, 0, 0, rng.uniform(0, math.pi))[1], 12.0, 0.1, gsd)
        colour = colour * (1 - 0.12 * tracks)[None]
    elif name == "sand":
        u, v = _rotated(canvas, 0.0, 0.0, rng.uniform(0, math.pi))
        ripple = np.sin(2 * math.pi * (v + 0.8 * _texture(rng, canvas, 10.0, 1)) / 2.2)
        ripple = ripple if 2.2 >= 3 * gsd else ripple * 0
        colour = (
            _rgb("sand")[:, None, None]
            * (1 + 0.03 * ripple + 0.05 * _texture(rng, canvas, 40.0, 2))[None]
        )
    else:  # a non-area class used as parcel fill when no area class was selected
        _render_object_fill(rng, canvas, name, mask)
        return
    canvas.paint(mask, name, colour.astype(np.float32))


def _render_object_fill(
    rng: np.random.Generator, canvas: _Canvas, name: str, mask: np.ndarray
) -> None:
    """Fill parcels with an object class (only when no area class was selected)."""
    if name in ("water body", "river"):
        colour = _rgb(name)[:, None, None] * (1 + 0.04 * _texture(rng, canvas, 50.0))[None]
    elif name == "lake shore":
        colour = _mix(
            _rgb("wet sand"), _rgb("dry sand"), 0.5 + 0.5 * np.tanh(_texture(rng, canvas, 20.0))
        )
    elif name == "building":
        colour = _rgb("old asphalt")[:, None, None] + 0 * canvas.rgb
        canvas.paint(mask, name, colour.astype(np.float32))
        _draw_buildings(rng, canvas, clusters=4, within=mask)
        return
    else:
        canvas.paint(mask, name, None)
        _draw_facility(rng, canvas, name, mask=mask)
        return
    canvas.paint(mask, name, colour.astype(np.float32))


def _draw_roads(rng: np.random.Generator, canvas: _Canvas, parcel_ids: np.ndarray, n: int) -> None:
    """Roads along a subset of parcel edges plus one gently curved through road."""
    import cv2

    gsd = canvas.gsd
    h_m, w_m = canvas.extent_m
    edge = np.zeros(parcel_ids.shape, dtype=bool)
    right = parcel_ids[:, 1:] != parcel_ids[:, :-1]
    down = parcel_ids[1:, :] != parcel_ids[:-1, :]
    pair_r = np.minimum(parcel_ids[:, 1:], parcel_ids[:, :-1]) * n + np.maximum(
        parcel_ids[:, 1:], parcel_ids[:, :-1]
    )
    pair_d = np.minimum(parcel_ids[1:], parcel_ids[:-1]) * n + np.maximum(
        parcel_ids[1:], parcel_ids[:-1]
    )
    keep = rng.uniform(size=n * n) < 0.35
    edge[:, 1:] |= right & keep[pair_r]
    edge[1:, :] |= down & keep[pair_d]
    width_m = float(rng.uniform(5.0, 7.0))
    size = max(2, int(round(width_m / gsd)))
    network = cv2.dilate(edge.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)
    # Through road: a smooth curve from the left to the right edge.
    t = np.linspace(-0.1, 1.1, 200)
    y0 = rng.uniform(0.2, 0.8) * h_m
    yc = y0 + 0.15 * h_m * np.sin(2 * math.pi * (t * rng.uniform(0.3, 0.8) + rng.uniform(0, 1)))
    pts = np.stack([t * w_m / gsd, yc / gsd], axis=1)
    if rng.uniform() < 0.5:  # vertical instead
        pts = pts[:, ::-1] * np.array([w_m / h_m, h_m / w_m])
    canvas_mask = np.zeros(parcel_ids.shape, np.uint8)
    main_w = max(2, int(round(rng.uniform(7.0, 9.0) / gsd)))
    cv2.polylines(
        canvas_mask,
        [np.round(pts * 16).astype(np.int32).reshape(-1, 1, 2)],
        False,
        1,
        thickness=main_w,
        lineType=cv2.LINE_8,
        shift=4,
    )
    main = canvas_mask.astype(bool)
    centre = np.zeros(parcel_ids.shape, np.uint8)
    cv2.polylines(
        centre,
        [np.round(pts * 16).astype(np.int32).reshape(-1, 1, 2)],
        False,
        1,
        thickness=1,
        lineType=cv2.LINE_8,
        shift=4,
    )
    roads = network | main
    texture = 1 + 0.05 * _texture(rng, canvas, 6.0, 2)
    colour = _rgb("asphalt")[:, None, None] * texture[None]
    # Dashed centre line (3 m dash, 6 m gap) on the through road where pixels resolve it.
    dash = _stripes(canvas.x + canvas.y, 9.0, 0.35, gsd) if gsd <= 1.0 else 0.0
    line = centre.astype(bool) & (np.asarray(dash) > 0.5) if gsd <= 1.0 else np.zeros_like(main)
    colour = np.where(line[None], _rgb("paint")[:, None, None], colour)
    canvas.paint(roads, "road", colour.astype(np.float32))
    canvas.taken |= roads


def _lake(rng: np.random.Generator, canvas: _Canvas) -> None:
    """A lake (rounded, wobbly outline) and/or its shore band."""
    h_m, w_m = canvas.extent_m
    span = min(h_m, w_m)
    with_water = canvas.has("water body")
    radius = rng.uniform(0.14, 0.22) * span
    if with_water:
        cx, cy = rng.uniform(0.25, 0.75) * w_m, rng.uniform(0.25, 0.75) * h_m
    else:  # the lake lies beyond one edge; only its shore enters the scene
        side = int(rng.integers(4))
        cx = (
            -radius * 0.9,
            w_m + radius * 0.9,
            rng.uniform(0.3, 0.7) * w_m,
            rng.uniform(0.3, 0.7) * w_m,
        )[side]
        cy = (
            rng.uniform(0.3, 0.7) * h_m,
            rng.uniform(0.3, 0.7) * h_m,
            -radius * 0.9,
            h_m + radius * 0.9,
        )[side]
    angle = np.arctan2(canvas.y - cy, canvas.x - cx)
    wobble = sum(
        rng.uniform(0.04, 0.10) * np.cos(k * angle + rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5)
    )
    dist = np.hypot(canvas.x - cx, canvas.y - cy) / (radius * (1 + wobble))
    water = dist < 1.0
    shore_w = rng.uniform(6.0, 12.0) / radius
    shore = (dist >= 1.0) & (dist < 1.0 + shore_w)
    if with_water:
        depth = np.clip((1 - dist) * 4, 0, 1)
        colour = _mix(_rgb("water body") * 1.6, _rgb("water body"), depth)
        colour *= (1 + 0.03 * _texture(rng, canvas, 40.0))[None]
        canvas.paint(water, "water body", colour)
        canvas.taken |= water
    if canvas.has("lake shore"):
        wet = np.clip((1.0 + shore_w - dist) / shore_w, 0, 1) ** 2
        colour = _mix(_rgb("dry sand"), _rgb("wet sand"), wet)
        colour *= (1 + 0.06 * _texture(rng, canvas, 3.0, 2))[None]
        canvas.paint(shore, "lake shore", colour)
        canvas.taken |= shore


def _river(rng: np.random.Generator, canvas: _Canvas) -> np.ndarray:
    """A meandering river from one edge to the opposite one; returns its mask."""
    import cv2

    gsd = canvas.gsd
    h_m, w_m = canvas.extent_m
    span = min(h_m, w_m)
    width_m = float(np.clip(rng.uniform(0.04, 0.07) * span, 6.0, 60.0))
    wavelength = rng.uniform(0.5, 0.9) * span
    amplitude = rng.uniform(0.08, 0.14) * span
    t = np.linspace(-0.1, 1.1, 400)
    offset = rng.uniform(0.3, 0.7)
    along = t * w_m
    across = offset * h_m + amplitude * np.sin(
        2 * math.pi * along / wavelength + rng.uniform(0, 6.3)
    )
    across += (
        0.3 * amplitude * np.sin(2 * math.pi * along / (wavelength * 0.37) + rng.uniform(0, 6.3))
    )
    pts = np.stack([along, across], axis=1)
    if rng.uniform() < 0.5:  # flows north-south instead
        pts = np.stack([across / h_m * w_m, along / w_m * h_m], axis=1)
    mask = np.zeros((canvas.height, canvas.width), np.uint8)
    cv2.polylines(
        mask,
        [np.round(pts / gsd * 16).astype(np.int32).reshape(-1, 1, 2)],
        False,
        1,
        thickness=max(2, int(round(width_m / gsd))),
        lineType=cv2.LINE_8,
        shift=4,
    )
    river = mask.astype(bool)
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(river) * gsd / (width_m / 2)
    colour = _mix(_rgb("river") * 1.5, _rgb("river"), np.clip(depth * 2, 0, 1).astype(np.float32))
    colour *= (1 + 0.04 * _texture(rng, canvas, 15.0))[None]
    canvas.paint(river, "river", colour)
    canvas.taken |= river
    return river


def _place_rect(
    rng: np.random.Generator,
    canvas: _Canvas,
    length_m: float,
    width_m: float,
    within: np.ndarray | None = None,
    tries: int = 24,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A rotated rectangle placed where it overlaps taken pixels least; (mask, u, v) or None."""
    h_m, w_m = canvas.extent_m
    best: tuple[float, np.ndarray, np.ndarray, np.ndarray] | None = None
    for _ in range(tries):
        margin = min(length_m, width_m) / 2
        cx = rng.uniform(margin, max(margin + 1, w_m - margin))
        cy = rng.uniform(margin, max(margin + 1, h_m - margin))
        angle = rng.uniform(-0.6, 0.6) + (math.pi / 2 if rng.uniform() < 0.5 else 0)
        u, v = _rotated(canvas, cx, cy, angle)
        mask = (np.abs(u) <= length_m / 2) & (np.abs(v) <= width_m / 2)
        area = int(mask.sum())
        if area < 0.5 * length_m * width_m / canvas.gsd**2:
            continue  # mostly outside the scene
        bad = canvas.taken[mask].mean()
        if within is not None:
            bad += 1 - within[mask].mean()
        if best is None or bad < best[0]:
            best = (float(bad), mask, u, v)
        if bad == 0:
            break
    if best is None or best[0] > 0.25:
        return None
    return best[1], best[2], best[3]


def _draw_facility(
    rng: np.random.Generator, canvas: _Canvas, name: str, mask: np.ndarray | None = None
) -> bool:
    """Draw one parking lot, sports field, greenhouse block or solar farm."""
    gsd = canvas.gsd
    span = min(canvas.extent_m)
    if name == "sports field":
        track = span >= 300 and rng.uniform() < 0.4
        length, width = (rng.uniform(95, 105), rng.uniform(60, 68))
        if track:
            length, width = length + 70, width + 25
        elif span < 200:
            length, width = length * span / 220, width * span / 220
    elif name == "parking lot":
        length, width = rng.uniform(30, 60), rng.uniform(24, 40)
    elif name == "greenhouse":
        length, width = rng.uniform(40, 80), rng.uniform(30, 55)
    else:  # solar farm
        length, width = rng.uniform(50, 100), rng.uniform(40, 70)
    scale = min(1.0, 0.55 * span / max(length, width))
    length, width = length * scale, width * scale
    if mask is not None:  # whole-parcel fill: cover the parcel's bounding frame
        u, v = _rotated(canvas, 0.0, 0.0, 0.0)
        sel = mask
    else:
        placed = _place_rect(rng, canvas, length, width)
        if placed is None:
            return False
        sel, u, v = placed
    if name == "sports field":
        colour = (
            _rgb("pitch")[:, None, None]
            * (1 + 0.06 * _stripes(u, 10.0, 0.5, gsd) + 0.03 * _texture(rng, canvas, 8.0))[None]
        )
        pl, pw = (length - 70, width - 25) if length > 150 else (length - 4, width - 4)
        inside = (np.abs(u) <= pl / 2) & (np.abs(v) <= pw / 2)
        if length > 150:  # oval running track around the pitch
            straight = np.clip(np.abs(u) - pl / 2, 0, None)
            radial = np.hypot(straight, v)
            ring = (radial > pw / 2 + 4) & (radial < pw / 2 + 4 + 9) & sel
            colour = np.where(ring[None], _rgb("track")[:, None, None], colour)
            sel = sel & ((radial < pw / 2 + 13) | inside)
        lw = 0.15 if gsd < 0.3 else gsd  # painted lines are 12 cm; draw at least a pixel
        lines = inside & (
            (np.abs(np.abs(u) - pl / 2) < lw)
            | (np.abs(np.abs(v) - pw / 2) < lw)
            | (np.abs(u) < lw / 2 + 0.01)
            | (np.abs(np.hypot(u, v) - 9.15 * min(1, pw / 64)) < lw / 2 + 0.01)
        )
        colour = np.where(lines[None], _rgb("paint")[:, None, None] * 1.2, colour)
    elif name == "parking lot":
        colour = _rgb("old asphalt")[:, None, None] * (1 + 0.04 * _texture(rng, canvas, 5.0))[None]
        # Double rows of 5 m deep stalls (2.5 m wide) between 6 m aisles: period 16 m across.
        phase = np.mod(v + width / 2, 16.0)
        stall_zone = (phase < 5.0) | ((phase >= 11.0) & (phase < 16.0))
        # Stall lines are 12 cm wide; drawn one pixel wide down to 1.25 m pixels.
        stall_lines = (
            np.mod(u, 2.5) < max(0.12, 0.6 * gsd) if gsd <= 1.25 else np.zeros_like(u, bool)
        )
        paint = stall_zone & stall_lines
        colour = np.where(paint[None], _rgb("paint")[:, None, None], colour)
        # Parked cars (about 4.4 x 1.8 m) centred in about half of the stalls.
        from eokit.core.synth.scene import _hash_uniform

        zone = np.floor((v + width / 2) / 16.0).astype(np.int64) * 2 + (phase >= 8.0)
        depth = np.where(phase < 8.0, phase, phase - 11.0)
        slot = np.floor(u / 2.5).astype(np.int64) * 1009 + zone
        salt = int(rng.integers(1 << 30))
        occupied = _hash_uniform(slot, salt=salt) < 0.5
        car = (
            stall_zone
            & occupied
            & (np.abs(np.mod(u, 2.5) - 1.25) < 0.9)
            & (depth > 0.3)
            & (depth < 4.7)
        )
        palette = np.array(
            [
                [0.45, 0.45, 0.46],
                [0.04, 0.04, 0.05],
                [0.32, 0.05, 0.04],
                [0.07, 0.10, 0.26],
                [0.62, 0.62, 0.64],
            ],
            np.float32,
        )
        cars = palette[(_hash_uniform(slot, salt=salt + 1) * len(palette)).astype(np.int64)]
        if gsd <= 1.0:
            colour = np.where(car[None], np.moveaxis(cars, -1, 0), colour)
    elif name == "greenhouse":
        row_w = rng.uniform(7.0, 10.0)
        gap = rng.uniform(1.0, 2.0)
        period = row_w + gap
        glass = _stripes(v + width / 2, period, row_w / period, gsd)
        ridge = _stripes(v + width / 2 - row_w / 2 + 0.3, period, 0.6 / period, gsd)
        frames = _stripes(u, 3.0, 0.12, gsd)
        colour = _mix(_rgb("gravel"), _rgb("glass"), glass)
        colour = _mix(
            colour, _rgb("glass frame"), np.clip(ridge * 0.7 + frames * 0.25, 0, 1) * glass
        )
        colour *= (1 + 0.03 * _texture(rng, canvas, 20.0))[None]
    else:  # solar farm
        panel_w = rng.uniform(3.5, 4.5)
        gap = rng.uniform(1.8, 2.6)
        period = panel_w + gap
        panels = _stripes(v + width / 2, period, panel_w / period, gsd)
        cells = _stripes(u, 1.0, 0.06, gsd) * panels
        colour = _mix(_rgb("gravel") * 0.9, _rgb("panel"), panels)
        colour = _mix(colour, _rgb("panel") * 1.8, cells * 0.5)
        colour *= (1 + 0.02 * _texture(rng, canvas, 30.0))[None]
    canvas.paint(sel, name, colour.astype(np.float32))
    canvas.taken |= sel
    return True


def _draw_buildings(
    rng: np.random.Generator, canvas: _Canvas, clusters: int, within: np.ndarray | None = None
) -> None:
    """Clusters of rectangular buildings with gable-roof shading and south-east shadows."""
    gsd = canvas.gsd
    h_m, w_m = canvas.extent_m
    footprint = np.zeros((canvas.height, canvas.width), dtype=bool)
    colour = canvas.rgb.copy()
    for _ in range(clusters):
        cx, cy = rng.uniform(0.1, 0.9) * w_m, rng.uniform(0.1, 0.9) * h_m
        angle = rng.uniform(0, math.pi / 2)
        count, placed = int(rng.integers(6, 14)), 0
        for _ in range(3 * count):
            if placed >= count:
                break
            length, width = rng.uniform(10, 22), rng.uniform(7, 12)
            bx = cx + rng.normal(0, 22)
            by = cy + rng.normal(0, 22)
            u, v = _rotated(canvas, bx, by, angle + (math.pi / 2 if rng.uniform() < 0.3 else 0))
            mask = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
            if not mask.any():
                continue
            halo = (np.abs(u) <= length / 2 + 3) & (np.abs(v) <= width / 2 + 3)
            if (canvas.taken[halo] | footprint[halo]).mean() > 0.02:
                continue
            if within is not None and not within[mask].all():
                continue
            roof = np.asarray(
                _ROOF_COLOURS[int(rng.choice(len(_ROOF_COLOURS), p=[0.4, 0.3, 0.2, 0.1]))],
                np.float32,
            ) * np.float32(rng.uniform(0.85, 1.15))
            # Gable roof: the half facing the sun is brighter; a thin ridge line in between.
            side = np.where(v < 0, 1.12, 0.85).astype(np.float32)
            ridge = np.abs(v) < max(0.3, gsd / 2)
            part = roof[:, None, None] * side[None]
            part = np.where(ridge[None], part * 0.8, part)
            colour[:, mask] = part[:, mask]
            footprint |= mask
            placed += 1
    if not footprint.any():
        return
    shift = max(1, int(round(3.0 / gsd)))
    shadow = np.zeros_like(footprint)
    for k in range(1, shift + 1):
        shadow[k:, k:] |= footprint[:-k, :-k]
    shadow &= ~footprint
    colour = np.where(shadow[None], colour * 0.35 + _rgb("shadow")[:, None, None] * 0.3, colour)
    canvas.rgb[:] = colour
    canvas.paint(footprint, "building")
    canvas.taken |= footprint


def generate_vocab_scene(
    size: int | tuple[int, int] = 256,
    *,
    seed: int,
    classes: Sequence[str] | None = None,
    gsd_m: float = 1.0,
    domain: SensorDomain | None = None,
    crs: Any = "EPSG:32633",
    origin: tuple[float, float] = (500000.0, 5000000.0),
) -> VocabScene:
    """Generate a labelled RGB scene of the open vocabulary.

    Args:
        size: Side length in pixels, or (height, width) (at least 16).
        seed: Random seed; the same arguments give bit-identical arrays.
        classes: Names (or synonyms) of the classes to draw, in label order; default all of
            :data:`VOCABULARY` in its order. Only these classes appear.
        gsd_m: Pixel size in metres (the vocabulary is designed for 0.3-2 m).
        domain: Sensor domain applied to the image (default: 0.005 noise only).
        crs: Projected CRS.
        origin: (x, y) of the top-left corner in CRS units.

    Returns:
        The :class:`VocabScene`.
    """
    height, width = _parse_size(size)
    gsd_m = _check_gsd(gsd_m)
    names = _resolve_classes(classes)
    grid = _projected_grid(crs, origin, gsd_m, height, width)
    domain = SensorDomain() if domain is None else domain
    rng = np.random.default_rng([int(seed), 41])
    canvas = _Canvas(height, width, gsd_m, names)
    area_m2 = canvas.extent_m[0] * canvas.extent_m[1]
    units = max(1.0, area_m2 / 256.0**2)  # how many 256 m x 256 m tiles the scene spans

    fill = tuple(n for n in names if n in _AREA_CLASSES) or names
    parcel_ids, n = _parcels(rng, canvas, size_m=float(np.clip(min(canvas.extent_m) / 4, 30, 120)))
    assigned = _assign_areas(rng, n, fill, parcel_ids)
    for name in dict.fromkeys(assigned):
        parcels = [i for i, a in enumerate(assigned) if a == name]
        mask = np.isin(parcel_ids, parcels)
        _render_area(rng, canvas, name, mask, parcel_ids, parcels)
    object_fill = not any(n in _AREA_CLASSES for n in names)
    if canvas.has("road") and not (object_fill and fill == ("road",)):
        _draw_roads(rng, canvas, parcel_ids, n)
    if canvas.has("water body") or canvas.has("lake shore"):
        _lake(rng, canvas)
    if canvas.has("river"):
        _river(rng, canvas)
    for name in _FACILITIES:
        if canvas.has(name):
            for _ in range(max(1, int(round(units * 0.7)))):
                _draw_facility(rng, canvas, name)
    if canvas.has("building"):
        _draw_buildings(rng, canvas, clusters=max(3, int(round(3 * units))))

    if (canvas.label < 0).any():  # cannot happen: parcels cover the scene
        raise RuntimeError("unlabelled pixels left in the simulated scene")
    image = _apply_domain_in_place(
        np.clip(canvas.rgb, 0.0, 1.0).astype(np.float32), domain, seed=int(seed)
    )
    logger.debug("generated %dx%d vocabulary scene, seed %d", height, width, seed)
    return VocabScene(
        image=image,
        label=canvas.label,
        class_names=names,
        grid=grid,
        seed=int(seed),
        domain=domain,
    )


def write_vocab_scene(scene: VocabScene, out_dir: str | Path) -> dict[str, Path]:
    """Write a scene as an RGB COG, a label COG and a JSON legend, each file atomically.

    Files: ``image.tif`` (3-band float32 COG, bands red/green/blue), ``label.tif`` (uint8 COG with
    a colour table and GDAL category names; names also in the ``class_names`` tag) and
    ``classes.json`` (id, name, colour, description, synonyms; generation parameters).

    Args:
        scene: The scene.
        out_dir: Output folder (created if missing).

    Returns:
        {"image", "label", "classes"} -> path.
    """
    from eokit.core.raster import atomic_write, write_raster

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", path=out)
    if len(scene.class_names) > 255:
        raise InputError("at most 255 classes fit a uint8 label", parameter="class_names")
    provenance = {
        "generator": "eokit.core.synth.vocab",
        "seed": scene.seed,
        "gsd_m": scene.grid.pixel_size_m,
        "domain": json.dumps(asdict(scene.domain)),
    }
    paths = {
        "image": out / "image.tif",
        "label": out / "label.tif",
        "classes": out / "classes.json",
    }
    write_raster(
        paths["image"],
        scene.image,
        scene.grid,
        dtype="float32",
        cog=True,
        band_names=["red", "green", "blue"],
        tags={**provenance, "units": "reflectance 0-1"},
    )
    names = list(scene.class_names)
    write_raster(
        paths["label"],
        scene.label.astype(np.uint8),
        scene.grid,
        dtype="uint8",
        cog=True,
        band_names=["label"],
        class_names=names,
        class_colors=[tuple(c / 255 for c in _BY_NAME[n].rgb) for n in names],
        tags={**provenance, "class_names": json.dumps(names)},
    )
    legend = {
        "classes": [
            {
                "id": i,
                "name": n,
                "color": list(_BY_NAME[n].rgb),
                "description": _BY_NAME[n].description,
                "synonyms": list(_BY_NAME[n].synonyms),
            }
            for i, n in enumerate(names)
        ],
        "bands": ["red", "green", "blue"],
        "crs": scene.grid.crs.to_string() if scene.grid.crs is not None else None,
        "pixel_size_m": scene.grid.pixel_size_m,
        "class_fractions": scene.class_fractions(),
        "provenance": {**provenance, "domain": asdict(scene.domain)},
    }
    with atomic_write(paths["classes"]) as tmp:
        tmp.write_text(json.dumps(legend, indent=2) + "\n")
    logger.info("wrote vocabulary scene to %s", out)
    return paths


def quicklook_figure(scenes: VocabScene | Sequence[VocabScene]) -> Figure:
    """Figure with each scene's RGB image above its label map and one legend for all classes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    items = [scenes] if isinstance(scenes, VocabScene) else list(scenes)
    if not items:
        raise InputError("no scene to show", parameter="scenes")
    figure = Figure(figsize=(3.6 * len(items), 8.2), dpi=100)
    axes = np.asarray(figure.subplots(2, len(items), squeeze=False))
    shown: dict[str, tuple[int, int, int]] = {}
    for col, scene in enumerate(items):
        rgb = np.moveaxis(scene.image, 0, -1)
        high = float(np.percentile(rgb, 99))
        # A display gamma brightens the dark vegetation without clipping the bright roofs.
        shown_rgb = np.clip(rgb / max(high, 1e-6), 0, 1) ** 0.7
        axes[0, col].imshow(shown_rgb, interpolation="nearest")
        axes[0, col].set_title(f"seed {scene.seed}, {scene.grid.pixel_size_m:g} m", fontsize=9)
        colours = np.array([_BY_NAME[n].rgb for n in scene.class_names]) / 255.0
        axes[1, col].imshow(
            scene.label,
            cmap=ListedColormap(colours),
            vmin=-0.5,
            vmax=len(colours) - 0.5,
            interpolation="nearest",
        )
        for i in np.unique(scene.label):
            shown[scene.class_names[int(i)]] = _BY_NAME[scene.class_names[int(i)]].rgb
        for axis in axes[:, col]:
            axis.set_xticks([])
            axis.set_yticks([])
    order = [n for n in VOCABULARY_NAMES if n in shown]
    handles = [Patch(color=np.array(shown[n]) / 255.0, label=n) for n in order]
    figure.legend(
        handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=8, frameon=False
    )
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return figure
