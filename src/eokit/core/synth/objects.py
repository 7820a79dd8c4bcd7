"""Simulated object scenes for detection and grounding: objects, boxes, referring expressions.

Objects (ships, planes, storage tanks, vehicles, buildings, bridges, tennis courts) with a colour,
a physical size and a position are painted onto a land-cover background from
:mod:`eokit.core.synth.scene`; every object's axis-aligned box is the tight box of its painted
pixels. Referring expressions come from a small grammar with attributes ("the red ship"),
superlatives ("the largest white ship"), ordinals ("the second plane from the top") and relations
("the storage tank left of the red building", "the vehicle nearest to the blue ship"). An
expression is kept only when :func:`resolve` -- which parses the text back and evaluates it on all
objects of the scene -- finds exactly one object, the target. Ambiguous cases (two candidates of
almost the same size, two centres almost in line) count as not unique, so a kept expression
never hinges on a few pixels.

Domain knobs (:class:`ObjectDomain`): the sensor (gain, blur, noise... of
:class:`~eokit.core.synth.scene.SensorDomain`), the ground sampling distance, the object
vocabulary, the mix of expression kinds and their phrasing. Deterministic for a seed.

What is not realistic: objects are flat colour shapes with a soft shadow, placed without regard
to land cover (a ship may sit on a field), and axis-aligned (ships and planes point along rows or
columns); expressions are templated, not free text.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eokit.core.errors import InputError
from eokit.core.synth.scene import (
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
    "resolve",
    "write_object_scene",
]

#: Object classes and their (length, width) ranges in metres; the order is the class id.
OBJECT_CLASSES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "ship": ((18.0, 48.0), (6.0, 12.0)),
    "plane": ((18.0, 40.0), (18.0, 40.0)),
    "storage tank": ((7.0, 22.0), (7.0, 22.0)),
    "vehicle": ((5.0, 12.0), (3.0, 5.0)),
    "building": ((9.0, 30.0), (8.0, 24.0)),
    "bridge": ((32.0, 70.0), (6.0, 10.0)),
    "tennis court": ((22.0, 26.0), (10.0, 12.0)),
}

#: Colour names and their RGB reflectance (0-1).
COLOURS: dict[str, tuple[float, float, float]] = {
    "white": (0.62, 0.62, 0.60),
    "grey": (0.28, 0.28, 0.30),
    "red": (0.50, 0.09, 0.07),
    "blue": (0.08, 0.16, 0.50),
    "green": (0.10, 0.38, 0.12),
    "yellow": (0.55, 0.48, 0.08),
}

_CLASS_COLOURS: dict[str, tuple[str, ...]] = {
    "ship": ("white", "grey", "red", "blue"),
    "plane": ("white", "grey", "yellow"),
    "storage tank": ("white", "grey", "green"),
    "vehicle": ("white", "grey", "red", "blue", "yellow"),
    "building": ("red", "grey", "white", "blue"),
    "bridge": ("grey", "white"),
    "tennis court": ("green", "blue", "red"),
}

#: Expression kinds and how often each is tried, per mix.
EXPRESSION_MIXES: dict[str, dict[str, float]] = {
    "mixed": {"attribute": 0.3, "superlative": 0.2, "ordinal": 0.2, "relation": 0.3},
    "attribute": {"attribute": 0.6, "superlative": 0.4},
    "relation": {"relation": 0.6, "ordinal": 0.25, "superlative": 0.15},
}

_ORDINALS = ("first", "second", "third")
_AXES = ("top", "bottom", "left", "right")
_RELATIONS = ("left of", "right of", "above", "below", "nearest to")
#: Phrasing variants: canonical relation word -> the words a phrasing writes.
_PHRASINGS: dict[str, dict[str, str]] = {
    "plain": {r: r for r in _RELATIONS},
    "wordy": {
        "left of": "located to the left of",
        "right of": "located to the right of",
        "above": "located north of",
        "below": "located south of",
        "nearest to": "that is closest to",
    },
}
# The margin (in pixels) by which an ordinal or relation must hold, and the ratio by which the
# largest must beat the runner-up: below it the expression counts as ambiguous.
_MARGIN_PX = 3.0
_SIZE_RATIO = 1.25
_NEAREST_RATIO = 1.3


@dataclass(frozen=True)
class SimObject:
    """One painted object.

    Attributes:
        class_name: One of :data:`OBJECT_CLASSES`.
        colour: One of :data:`COLOURS`.
        box: ``(x_min, y_min, x_max, y_max)`` in pixels (tight box of the painted pixels).
    """

    class_name: str
    colour: str
    box: tuple[float, float, float, float]

    @property
    def area(self) -> float:
        """Box area in pixels."""
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    @property
    def centre(self) -> tuple[float, float]:
        """Box centre (x, y) in pixels."""
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


@dataclass(frozen=True)
class Query:
    """The meaning of a referring expression (what :func:`parse_expression` returns).

    Attributes:
        class_name: Class of the referred object.
        colour: Its colour, or None.
        superlative: ``"largest"``, ``"smallest"`` or None.
        ordinal: 1-based rank along ``axis``, or None.
        axis: ``"top"``, ``"bottom"``, ``"left"`` or ``"right"`` (with ``ordinal``).
        relation: One of ``left of, right of, above, below, nearest to``, or None.
        anchor_class: Class of the anchor object of ``relation``.
        anchor_colour: Colour of the anchor object.
    """

    class_name: str
    colour: str | None = None
    superlative: str | None = None
    ordinal: int | None = None
    axis: str | None = None
    relation: str | None = None
    anchor_class: str | None = None
    anchor_colour: str | None = None

    @property
    def kind(self) -> str:
        """``relation``, ``ordinal``, ``superlative`` or ``attribute``."""
        if self.relation:
            return "relation"
        if self.ordinal:
            return "ordinal"
        if self.superlative:
            return "superlative"
        return "attribute"


@dataclass(frozen=True)
class Referring:
    """A referring expression and its unique target.

    Attributes:
        text: The expression.
        target: Index of the referred object in the scene's ``objects``.
        kind: Expression kind (``attribute``, ``superlative``, ``ordinal``, ``relation``).
    """

    text: str
    target: int
    kind: str


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
    """

    gsd_m: float = 1.0
    sensor: SensorDomain = field(default_factory=SensorDomain)
    classes: tuple[str, ...] = ("ship", "plane", "storage tank", "vehicle", "building")
    expression_mix: str = "mixed"
    phrasing: str = "plain"
    objects_per_scene: tuple[int, int] = (4, 9)

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
        if self.phrasing not in _PHRASINGS:
            raise InputError(f"must be one of {', '.join(_PHRASINGS)}, got {self.phrasing!r}",
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
    """

    image: np.ndarray
    objects: list[SimObject]
    expressions: list[Referring]
    grid: Grid
    seed: int
    domain: ObjectDomain

    def boxes(self) -> np.ndarray:
        """(N, 4) float32 xyxy pixel boxes."""
        return np.array([o.box for o in self.objects], dtype=np.float32).reshape(-1, 4)

    def labels(self) -> list[str]:
        """Class name of each object."""
        return [o.class_name for o in self.objects]


# --------------------------------------------------------------------------------------------
# Meaning of an expression
# --------------------------------------------------------------------------------------------


def _members(objects: Sequence[SimObject], class_name: str, colour: str | None) -> list[int]:
    return [i for i, o in enumerate(objects)
            if o.class_name == class_name and (colour is None or o.colour == colour)]


def _ordinal_pick(objects: Sequence[SimObject], candidates: list[int], rank: int,
                  axis: str) -> list[int]:
    if len(candidates) < rank:
        return []

    def key(i: int) -> float:
        cx, cy = objects[i].centre
        return {"top": cy, "bottom": -cy, "left": cx, "right": -cx}[axis]

    order = sorted(candidates, key=key)
    values = [key(i) for i in order]
    picked = order[rank - 1]
    near = [order[j] for j in range(len(order))
            if j != rank - 1 and abs(values[j] - values[rank - 1]) < _MARGIN_PX]
    return [picked, *near]


def _superlative_pick(objects: Sequence[SimObject], candidates: list[int],
                      which: str) -> list[int]:
    if len(candidates) < 2:
        return []  # "the largest X" of a single X is not how people speak; never generated
    sign = 1.0 if which == "largest" else -1.0
    order = sorted(candidates, key=lambda i: -sign * objects[i].area)
    first, second = objects[order[0]].area, objects[order[1]].area
    big, small = max(first, second), max(min(first, second), 1e-9)
    return [order[0]] if big / small >= _SIZE_RATIO else order[:2]


def _relation_holds(target: SimObject, anchor: SimObject, relation: str) -> bool:
    cx, cy = target.centre
    ax0, ay0, ax1, ay1 = anchor.box
    if relation == "left of":
        return cx < ax0 - _MARGIN_PX
    if relation == "right of":
        return cx > ax1 + _MARGIN_PX
    if relation == "above":
        return cy < ay0 - _MARGIN_PX
    if relation == "below":
        return cy > ay1 + _MARGIN_PX
    raise ValueError(relation)


def resolve(query: Query, objects: Sequence[SimObject]) -> list[int]:
    """Indices of every object the query may refer to (exactly one for a usable expression).

    Near-ties (sizes within 25 %, centres within 3 px along an ordinal axis, two objects almost
    equally near an anchor, an anchor that is not unique) return more than one index or none, so
    that an expression is accepted only when it is clear-cut.
    """
    candidates = _members(objects, query.class_name, query.colour)
    if query.relation:
        anchors = _members(objects, query.anchor_class or "", query.anchor_colour)
        if len(anchors) != 1:
            return []
        anchor = anchors[0]
        candidates = [i for i in candidates if i != anchor]
        if query.relation == "nearest to":
            if not candidates:
                return []
            ax, ay = objects[anchor].centre

            def distance(i: int) -> float:
                x, y = objects[i].centre
                return math.hypot(x - ax, y - ay)

            order = sorted(candidates, key=distance)
            if len(order) > 1 and distance(order[1]) < _NEAREST_RATIO * distance(order[0]):
                return order[:2]
            return order[:1] if len(order) > 1 else []  # "nearest" of one is never generated
        candidates = [i for i in candidates
                      if _relation_holds(objects[i], objects[anchor], query.relation)]
        # Candidates near the boundary of the relation make it ambiguous: count them too.
        return candidates
    if query.ordinal:
        return _ordinal_pick(objects, candidates, query.ordinal, query.axis or "top")
    if query.superlative:
        return _superlative_pick(objects, candidates, query.superlative)
    return candidates


def render_expression(query: Query, phrasing: str = "plain") -> str:
    """The text of a query (inverse of :func:`parse_expression`)."""
    words = _PHRASINGS[phrasing]
    if query.relation:
        return (f"the {query.class_name} {words[query.relation]} the "
                f"{query.anchor_colour + ' ' if query.anchor_colour else ''}{query.anchor_class}")
    if query.ordinal:
        return f"the {_ORDINALS[query.ordinal - 1]} {query.class_name} from the {query.axis}"
    colour = f"{query.colour} " if query.colour else ""
    if query.superlative:
        return f"the {query.superlative} {colour}{query.class_name}"
    return f"the {colour}{query.class_name}"


def _alternation(words: Sequence[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_CLS = _alternation(list(OBJECT_CLASSES))
_COL = _alternation(list(COLOURS))
_REL_WORDS = {text: canonical for table in _PHRASINGS.values() for canonical, text in table.items()}
_PATTERNS = (
    ("relation", re.compile(rf"^the (?P<cls>{_CLS}) (?P<rel>{_alternation(list(_REL_WORDS))}) "
                            rf"the (?:(?P<acol>{_COL}) )?(?P<acls>{_CLS})$")),
    ("ordinal", re.compile(rf"^the (?P<ord>{_alternation(_ORDINALS)}) (?P<cls>{_CLS}) from the "
                           rf"(?P<axis>{_alternation(_AXES)})$")),
    ("superlative", re.compile(rf"^the (?P<sup>largest|smallest) (?:(?P<col>{_COL}) )?"
                               rf"(?P<cls>{_CLS})$")),
    ("attribute", re.compile(rf"^the (?:(?P<col>{_COL}) )?(?P<cls>{_CLS})$")),
)


def parse_expression(text: str) -> Query | None:
    """Parse a grammar expression back into its :class:`Query` (None if it is not one)."""
    clean = " ".join(text.lower().strip().rstrip(".").split())
    for kind, pattern in _PATTERNS:
        match = pattern.match(clean)
        if match is None:
            continue
        g = match.groupdict()
        if kind == "relation":
            return Query(g["cls"], relation=_REL_WORDS[g["rel"]], anchor_class=g["acls"],
                         anchor_colour=g["acol"])
        if kind == "ordinal":
            return Query(g["cls"], ordinal=_ORDINALS.index(g["ord"]) + 1, axis=g["axis"])
        if kind == "superlative":
            return Query(g["cls"], colour=g["col"], superlative=g["sup"])
        return Query(g["cls"], colour=g["col"])
    return None


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
    elif class_name == "plane":  # fuselage along the length plus wings across
        mask = (np.abs(v) <= 0.14) | ((np.abs(u + 0.1) <= 0.16) & (np.abs(v) <= 1.0))
        mask |= (np.abs(u + 0.8) <= 0.08) & (np.abs(v) <= 0.4)
    elif class_name == "storage tank":
        mask = (u**2 + v**2) <= 1.0
    else:
        mask = np.ones((h, w), dtype=bool)
    if vertical:
        mask = mask.T
    return mask


def _paint(image: np.ndarray, obj_mask: np.ndarray, top: int, left: int, rgb: np.ndarray,
           class_name: str, rng: np.random.Generator) -> None:
    h, w = obj_mask.shape
    region = image[:, top:top + h, left:left + w]
    # Soft shadow one or two pixels down-right: darkens the ground, not the object.
    shadow = np.zeros_like(obj_mask)
    shift = 1 if max(h, w) < 12 else 2
    shadow[shift:, shift:] = obj_mask[:-shift, :-shift] if h > shift and w > shift else False
    region[:, shadow & ~obj_mask] *= 0.55
    texture = 1.0 + 0.04 * rng.standard_normal(obj_mask.shape).astype(np.float32)
    for band in range(3):
        region[band][obj_mask] = (rgb[band] * texture)[obj_mask]
    if class_name == "tennis court":  # white boundary and net lines
        lines = np.zeros_like(obj_mask)
        lines[[0, -1], :] = True
        lines[:, [0, -1]] = True
        if w >= h:
            lines[:, w // 2] = True
        else:
            lines[h // 2, :] = True
        region[:, lines] = 0.7
    elif class_name == "storage tank":  # darker rim of the roof
        yy, xx = np.mgrid[0:h, 0:w]
        r = np.hypot((yy + 0.5) / h * 2 - 1, (xx + 0.5) / w * 2 - 1)
        region[:, obj_mask & (r > 0.75)] *= 0.75


def _place_objects(rng: np.random.Generator, height: int, width: int,
                   domain: ObjectDomain) -> list[tuple[str, str, np.ndarray, int, int]]:
    low, high = domain.objects_per_scene
    target = int(rng.integers(low, high + 1))
    # A few classes with several instances each, so that ordinals and relations have material.
    n_classes = int(rng.integers(1, min(4, len(domain.classes)) + 1))
    chosen = list(rng.choice(len(domain.classes), size=n_classes, replace=False))
    occupied = np.zeros((height, width), dtype=bool)
    placed: list[tuple[str, str, np.ndarray, int, int]] = []
    attempts = 0
    while len(placed) < target and attempts < target * 30:
        attempts += 1
        class_name = domain.classes[int(chosen[int(rng.integers(len(chosen)))])]
        (l0, l1), (w0, w1) = OBJECT_CLASSES[class_name]
        length_m = rng.uniform(l0, l1)
        width_m = length_m if class_name == "storage tank" else rng.uniform(w0, w1)
        if class_name == "plane":
            width_m = length_m * rng.uniform(0.8, 1.1)
        length_px = max(3, round(length_m / domain.gsd_m))
        width_px = max(2, round(width_m / domain.gsd_m))
        mask = _shape_mask(class_name, length_px, width_px, bool(rng.random() < 0.5))
        h, w = mask.shape
        if h + 4 > height or w + 4 > width:
            continue
        top = int(rng.integers(2, height - h - 1))
        left = int(rng.integers(2, width - w - 1))
        pad = 3
        window = occupied[max(0, top - pad):top + h + pad, max(0, left - pad):left + w + pad]
        if window.any():
            continue
        occupied[top:top + h, left:left + w] = True
        colour = _CLASS_COLOURS[class_name][int(rng.integers(len(_CLASS_COLOURS[class_name])))]
        placed.append((class_name, colour, mask, top, left))
    return placed


# --------------------------------------------------------------------------------------------
# Expressions
# --------------------------------------------------------------------------------------------


def _candidate_query(rng: np.random.Generator, kind: str, target: SimObject,
                     objects: Sequence[SimObject]) -> Query | None:
    cls = target.class_name
    if kind == "attribute":
        return Query(cls, colour=target.colour if rng.random() < 0.8 else None)
    if kind == "superlative":
        which = "largest" if rng.random() < 0.6 else "smallest"
        return Query(cls, colour=target.colour if rng.random() < 0.4 else None, superlative=which)
    if kind == "ordinal":
        return Query(cls, ordinal=int(rng.integers(1, 4)), axis=_AXES[int(rng.integers(4))])
    others = [o for o in objects if o is not target]
    if not others:
        return None
    anchor = others[int(rng.integers(len(others)))]
    relation = _RELATIONS[int(rng.integers(len(_RELATIONS)))]
    return Query(cls, relation=relation, anchor_class=anchor.class_name,
                 anchor_colour=anchor.colour if rng.random() < 0.85 else None)


def _expressions(rng: np.random.Generator, objects: list[SimObject], domain: ObjectDomain,
                 count: int) -> list[Referring]:
    mix = EXPRESSION_MIXES[domain.expression_mix]
    kinds, weights = list(mix), np.array(list(mix.values()))
    weights = weights / weights.sum()
    out: list[Referring] = []
    used_targets: set[int] = set()
    seen: set[str] = set()
    for _ in range(count * 40):
        if len(out) >= count or not objects:
            break
        free = [i for i in range(len(objects)) if i not in used_targets] or list(range(len(
            objects)))
        target = free[int(rng.integers(len(free)))]
        kind = kinds[int(rng.choice(len(kinds), p=weights))]
        query = _candidate_query(rng, kind, objects[target], objects)
        if query is None:
            continue
        text = render_expression(query, domain.phrasing)
        if text in seen or resolve(query, objects) != [target]:
            continue
        seen.add(text)
        used_targets.add(target)
        out.append(Referring(text=text, target=target, kind=query.kind))
    return out


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
        The :class:`ObjectScene`.
    """
    if not 32 <= int(size) <= 2048:
        raise InputError(f"must be 32-2048 pixels, got {size}", parameter="size")
    if n_expressions < 0:
        raise InputError(f"must be >= 0, got {n_expressions}", parameter="n_expressions")
    domain = ObjectDomain() if domain is None else domain
    size = int(size)
    rng = np.random.default_rng([int(seed), 40])
    landcover, parcels = generate_layout(size, seed=seed, gsd_m=domain.gsd_m)
    clean = SensorDomain(noise_std=0.0)
    reflectance = render_reflectance(landcover, seed=seed, gsd_m=domain.gsd_m, parcels=parcels,
                                     domain=clean)
    image = np.ascontiguousarray(reflectance[[2, 1, 0]])  # red, green, blue
    objects: list[SimObject] = []
    for class_name, colour, mask, top, left in _place_objects(rng, size, size, domain):
        rgb = np.asarray(COLOURS[colour], dtype=np.float32) * rng.uniform(0.9, 1.1)
        _paint(image, mask, top, left, rgb, class_name, rng)
        rows, cols = np.nonzero(mask)
        box = (float(left + cols.min()), float(top + rows.min()), float(left + cols.max() + 1),
               float(top + rows.max() + 1))
        objects.append(SimObject(class_name, colour, box))
    image = apply_domain(image, domain.sensor, seed=seed)
    grid = _projected_grid(crs, origin, domain.gsd_m, size, size)
    expressions = _expressions(rng, objects, domain, n_expressions)
    return ObjectScene(image=image, objects=objects, expressions=expressions, grid=grid,
                       seed=int(seed), domain=domain)


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

    ``expressions.json`` holds the pixel boxes, class names and expressions (what the grounding
    readers read back); ``objects.geojson`` the boxes as polygons for a GIS.
    """
    from eokit.core.raster import atomic_write, write_geojson, write_raster

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image = write_raster(out / "image.tif", scene.image, scene.grid, cog=True,
                         band_names=["red", "green", "blue"])
    features = [
        {"geometry": _box_polygon(scene.grid, o.box),
         "properties": {"id": i, "class": o.class_name, "colour": o.colour,
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
        "objects": [{"class": o.class_name, "colour": o.colour, "box_xyxy": list(o.box)}
                    for o in scene.objects],
        "expressions": [asdict(e) for e in scene.expressions],
    }
    path = out / "expressions.json"
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    return {"image": image, "objects": geojson, "expressions": path}
