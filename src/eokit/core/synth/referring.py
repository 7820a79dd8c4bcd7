"""Referring-expression grammar of the object simulator: vocabulary, parser, checker, writer.

Expressions name one object of a simulated scene (:mod:`eokit.core.synth.objects`) by

* attributes: "the red ship", "the large white storage tank" (``kind="attribute"``);
* a superlative: "the largest white ship", "the smallest vehicle" (``kind="superlative"``);
* an ordinal along an image axis: "the second plane from the top" (``kind="ordinal"``);
* a spatial relation to another, unique, object: "the storage tank left of the red building",
  "the ship nearest the bridge" (``kind="relation"``).

:func:`parse_expression` reads the text back into a :class:`Query` and :func:`resolve` evaluates
its meaning on the scene's objects. An expression is written (:func:`write_expressions`) only
when :func:`resolve` finds exactly one object, the target, and that only when the case is
clear-cut: sizes within 25 % of each other, centres within 3 px along an ordinal axis, objects
within 3 px of the boundary of a relation, or two objects almost equally near an anchor all count
as ambiguous. Sizes ("small"/"large") are relative to the object's class: a small ship is longer
than a large vehicle.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "COLOURS",
    "EXPRESSION_KINDS",
    "EXPRESSION_MIXES",
    "FIXED_SIZE_CLASSES",
    "OBJECT_CLASSES",
    "PHRASINGS",
    "SIZES",
    "Query",
    "Referring",
    "SimObject",
    "parse_expression",
    "render_expression",
    "resolve",
    "write_expressions",
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

#: Classes with a standard size (no "small"/"large" attribute): a tennis court is a tennis court.
FIXED_SIZE_CLASSES: frozenset[str] = frozenset({"tennis court"})

#: Size words, relative to the class's length range (lower / upper 40 %).
SIZES: tuple[str, ...] = ("small", "large")

#: Colour names and their RGB reflectance (0-1).
COLOURS: dict[str, tuple[float, float, float]] = {
    "white": (0.62, 0.62, 0.60),
    "grey": (0.28, 0.28, 0.30),
    "dark": (0.06, 0.06, 0.07),
    "red": (0.50, 0.09, 0.07),
    "blue": (0.08, 0.16, 0.50),
    "green": (0.10, 0.38, 0.12),
    "yellow": (0.55, 0.48, 0.08),
}

#: Expression kinds, in the order :attr:`Query.kind` tests them.
EXPRESSION_KINDS: tuple[str, ...] = ("relation", "ordinal", "superlative", "attribute")

#: Expression kinds and how often each is tried, per mix.
EXPRESSION_MIXES: dict[str, dict[str, float]] = {
    "mixed": {"attribute": 0.3, "superlative": 0.2, "ordinal": 0.2, "relation": 0.3},
    "attribute": {"attribute": 0.6, "superlative": 0.4},
    "relation": {"relation": 0.6, "ordinal": 0.25, "superlative": 0.15},
}

_ORDINALS = ("first", "second", "third")
_AXES = ("top", "bottom", "left", "right")
_RELATIONS = ("left of", "right of", "above", "below", "nearest")
#: Phrasing variants: canonical relation word -> the words a phrasing writes.
PHRASINGS: dict[str, dict[str, str]] = {
    "plain": {r: r for r in _RELATIONS},
    "wordy": {
        "left of": "located to the left of",
        "right of": "located to the right of",
        "above": "located north of",
        "below": "located south of",
        "nearest": "that is closest to",
    },
}
#: Other spellings the parser accepts.
_SYNONYMS = {"nearest to": "nearest", "closest to": "nearest", "to the left of": "left of",
             "to the right of": "right of"}
# The margin (in pixels) by which an ordinal or relation must hold, and the ratio by which the
# largest must beat the runner-up: below it the expression counts as ambiguous.
_MARGIN_PX = 3.0
_SIZE_RATIO = 1.25
_NEAREST_RATIO = 1.3
_TRIES_PER_KIND = 12


@dataclass(frozen=True)
class SimObject:
    """One painted object.

    Attributes:
        class_name: One of :data:`OBJECT_CLASSES`.
        colour: One of :data:`COLOURS`.
        box: ``(x_min, y_min, x_max, y_max)`` in pixels (tight box of the painted pixels).
        size: ``"small"`` or ``"large"`` for its class, None for :data:`FIXED_SIZE_CLASSES`.
    """

    class_name: str
    colour: str
    box: tuple[float, float, float, float]
    size: str | None = None

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
        size: Its size word (``"small"``/``"large"``), or None.
        superlative: ``"largest"``, ``"smallest"`` or None.
        ordinal: 1-based rank along ``axis``, or None.
        axis: ``"top"``, ``"bottom"``, ``"left"`` or ``"right"`` (with ``ordinal``).
        relation: One of ``left of, right of, above, below, nearest``, or None.
        anchor_class: Class of the anchor object of ``relation``.
        anchor_colour: Colour of the anchor object.
        anchor_size: Size word of the anchor object.
    """

    class_name: str
    colour: str | None = None
    size: str | None = None
    superlative: str | None = None
    ordinal: int | None = None
    axis: str | None = None
    relation: str | None = None
    anchor_class: str | None = None
    anchor_colour: str | None = None
    anchor_size: str | None = None

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
        kind: Expression kind, one of :data:`EXPRESSION_KINDS`; benchmarks split on it
            (``"relation"`` needs a second object to resolve).
    """

    text: str
    target: int
    kind: str


# --------------------------------------------------------------------------------------------
# Meaning of an expression
# --------------------------------------------------------------------------------------------


def _members(objects: Sequence[SimObject], class_name: str | None, colour: str | None,
             size: str | None) -> list[int]:
    return [i for i, o in enumerate(objects)
            if o.class_name == class_name and (colour is None or o.colour == colour)
            and (size is None or o.size == size)]


def _ordinal_pick(objects: Sequence[SimObject], candidates: list[int], rank: int,
                  axis: str) -> list[int]:
    if len(candidates) < max(rank, 2):
        return []  # "the first X from the left" of a single X is never generated

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


def _relation_holds(target: SimObject, anchor: SimObject, relation: str, margin: float) -> bool:
    """Whether the target's centre lies beyond the anchor's box edge by ``margin`` pixels."""
    cx, cy = target.centre
    ax0, ay0, ax1, ay1 = anchor.box
    if relation == "left of":
        return cx < ax0 - margin
    if relation == "right of":
        return cx > ax1 + margin
    if relation == "above":
        return cy < ay0 - margin
    if relation == "below":
        return cy > ay1 + margin
    raise ValueError(relation)


def _nearest_pick(objects: Sequence[SimObject], candidates: list[int], anchor: int) -> list[int]:
    if len(candidates) < 2:
        return []  # "the X nearest the Y" of a single X is never generated
    ax, ay = objects[anchor].centre

    def distance(i: int) -> float:
        x, y = objects[i].centre
        return math.hypot(x - ax, y - ay)

    order = sorted(candidates, key=distance)
    if distance(order[1]) < _NEAREST_RATIO * distance(order[0]):
        return order[:2]
    return order[:1]


def resolve(query: Query, objects: Sequence[SimObject]) -> list[int]:
    """Indices of every object the query may refer to (exactly one for a usable expression).

    Near-ties (sizes within 25 %, centres within 3 px along an ordinal axis or of a relation's
    boundary, two objects almost equally near an anchor, an anchor that is not unique) return
    more than one index or none, so that an expression is accepted only when it is clear-cut.

    Args:
        query: The meaning of an expression (see :func:`parse_expression`).
        objects: All objects of the scene.

    Returns:
        Indices into ``objects``.
    """
    candidates = _members(objects, query.class_name, query.colour, query.size)
    if query.relation:
        anchors = _members(objects, query.anchor_class, query.anchor_colour, query.anchor_size)
        if len(anchors) != 1:
            return []
        anchor = anchors[0]
        candidates = [i for i in candidates if i != anchor]
        if query.relation == "nearest":
            return _nearest_pick(objects, candidates, anchor)
        strict = [i for i in candidates
                  if _relation_holds(objects[i], objects[anchor], query.relation, _MARGIN_PX)]
        loose = [i for i in candidates
                 if _relation_holds(objects[i], objects[anchor], query.relation, -_MARGIN_PX)]
        if loose != strict:  # someone sits on the boundary: ambiguous, or nobody clearly holds
            return loose if len(loose) > 1 else []
        return strict
    if query.ordinal:
        return _ordinal_pick(objects, candidates, query.ordinal, query.axis or "top")
    if query.superlative:
        return _superlative_pick(objects, candidates, query.superlative)
    return candidates


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def _noun(class_name: str | None, colour: str | None = None, size: str | None = None) -> str:
    return " ".join(w for w in (size, colour, class_name) if w)


def render_expression(query: Query, phrasing: str = "plain") -> str:
    """The text of a query (inverse of :func:`parse_expression`).

    Args:
        query: What to say.
        phrasing: A key of :data:`PHRASINGS` (``"plain"``: "left of", ``"wordy"``: "located to
            the left of").

    Returns:
        The expression, lower case, without a final full stop.
    """
    target = _noun(query.class_name, query.colour, query.size)
    if query.relation:
        words = PHRASINGS[phrasing][query.relation]
        anchor = _noun(query.anchor_class, query.anchor_colour, query.anchor_size)
        return f"the {target} {words} the {anchor}"
    if query.ordinal:
        noun = _noun(query.class_name, query.colour)
        return f"the {_ORDINALS[query.ordinal - 1]} {noun} from the {query.axis}"
    if query.superlative:
        return f"the {query.superlative} {_noun(query.class_name, query.colour)}"
    return f"the {target}"


def _alternation(words: Sequence[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def _noun_pattern(tag: str, sized: bool = True) -> str:
    size = rf"(?:(?P<{tag}size>{_alternation(SIZES)}) )?" if sized else ""
    return (rf"{size}(?:(?P<{tag}col>{_alternation(list(COLOURS))}) )?"
            rf"(?P<{tag}cls>{_alternation(list(OBJECT_CLASSES))})")


_REL_WORDS = {text: canonical for table in PHRASINGS.values() for canonical, text in table.items()}
_REL_WORDS.update(_SYNONYMS)
_PATTERNS = (
    ("relation", re.compile(rf"^the {_noun_pattern('t')} (?P<rel>{_alternation(list(_REL_WORDS))})"
                            rf" the {_noun_pattern('a')}$")),
    ("ordinal", re.compile(rf"^the (?P<ord>{_alternation(_ORDINALS)}) {_noun_pattern('t', False)}"
                           rf" from the (?P<axis>{_alternation(_AXES)})$")),
    ("superlative", re.compile(rf"^the (?P<sup>largest|smallest) {_noun_pattern('t', False)}$")),
    ("attribute", re.compile(rf"^the {_noun_pattern('t')}$")),
)


def parse_expression(text: str) -> Query | None:
    """Parse a grammar expression back into its :class:`Query` (None if it is not one).

    Case, surrounding blanks, repeated blanks and a final full stop are ignored.
    """
    clean = " ".join(text.lower().strip().rstrip(".").split())
    for kind, pattern in _PATTERNS:
        match = pattern.match(clean)
        if match is None:
            continue
        g = match.groupdict()
        target = Query(g["tcls"], colour=g["tcol"], size=g.get("tsize"))
        if kind == "relation":
            return replace(target, relation=_REL_WORDS[g["rel"]], anchor_class=g["acls"],
                           anchor_colour=g["acol"], anchor_size=g["asize"])
        if kind == "ordinal":
            return replace(target, ordinal=_ORDINALS.index(g["ord"]) + 1, axis=g["axis"])
        if kind == "superlative":
            return replace(target, superlative=g["sup"])
        return target
    return None


# --------------------------------------------------------------------------------------------
# Writing expressions for a scene
# --------------------------------------------------------------------------------------------


def _maybe(rng: np.random.Generator, value: str | None, probability: float) -> str | None:
    return value if value is not None and rng.random() < probability else None


def _candidate_query(rng: np.random.Generator, kind: str, target: SimObject,
                     objects: Sequence[SimObject]) -> Query | None:
    cls = target.class_name
    if kind == "attribute":
        return Query(cls, colour=_maybe(rng, target.colour, 0.8),
                     size=_maybe(rng, target.size, 0.5))
    if kind == "superlative":
        which = "largest" if rng.random() < 0.6 else "smallest"
        return Query(cls, colour=_maybe(rng, target.colour, 0.4), superlative=which)
    if kind == "ordinal":
        return Query(cls, colour=_maybe(rng, target.colour, 0.3),
                     ordinal=int(rng.integers(1, 4)), axis=_AXES[int(rng.integers(4))])
    others = [o for o in objects if o is not target]
    if not others:
        return None
    anchor = others[int(rng.integers(len(others)))]
    relation = _RELATIONS[int(rng.integers(len(_RELATIONS)))]
    return Query(cls, colour=_maybe(rng, target.colour, 0.3), relation=relation,
                 anchor_class=anchor.class_name, anchor_colour=_maybe(rng, anchor.colour, 0.85),
                 anchor_size=_maybe(rng, anchor.size, 0.3))


def write_expressions(rng: np.random.Generator, objects: Sequence[SimObject], count: int, *,
                      mix: str = "mixed", phrasing: str = "plain") -> list[Referring]:
    """Up to ``count`` distinct expressions, each resolving to exactly one object.

    Targets are spread over the objects (an object is referred to again only when every object
    already has an expression).

    Args:
        rng: Random generator (the caller's, so scenes stay deterministic for a seed).
        objects: The scene's objects.
        count: How many expressions to try to write.
        mix: A key of :data:`EXPRESSION_MIXES`.
        phrasing: A key of :data:`PHRASINGS`.

    Returns:
        The expressions (fewer than ``count`` when the scene allows fewer unique ones).
    """
    table = EXPRESSION_MIXES[mix]
    kinds, weights = list(table), np.array(list(table.values()))
    weights = weights / weights.sum()
    out: list[Referring] = []
    used_targets: set[int] = set()
    seen: set[str] = set()
    for _ in range(count * 10):
        if len(out) >= count or not objects:
            break
        free = [i for i in range(len(objects)) if i not in used_targets]
        free = free or list(range(len(objects)))
        target = free[int(rng.integers(len(free)))]
        kind = kinds[int(rng.choice(len(kinds), p=weights))]
        # Several tries per (target, kind): a relation needs the right anchor and direction.
        for _ in range(_TRIES_PER_KIND):
            query = _candidate_query(rng, kind, objects[target], objects)
            if query is None:
                break
            text = render_expression(query, phrasing)
            if text not in seen and resolve(query, objects) == [target]:
                seen.add(text)
                used_targets.add(target)
                out.append(Referring(text=text, target=target, kind=query.kind))
                break
    return out
