"""Referring-expression grammar: parsing, rendering and the uniqueness checker by hand."""

import numpy as np
import pytest

from eokit.core.synth.referring import (
    Query,
    SimObject,
    parse_expression,
    render_expression,
    resolve,
    write_expressions,
)


def obj(cls, colour, x, y, w=10, h=10, size=None):
    return SimObject(cls, colour, (float(x), float(y), float(x + w), float(y + h)), size)


SCENE = [
    obj("storage tank", "white", 10, 50),  # 0: left of the red building
    obj("storage tank", "grey", 90, 50),  # 1: right of it
    obj("building", "red", 50, 50, 12, 12, "large"),  # 2
    obj("plane", "white", 10, 5, 20, 20, "small"),  # 3: first plane from the top
    obj("plane", "grey", 65, 55, 20, 20, "large"),  # 4: second from the top
    obj("ship", "white", 10, 100, 30, 8, "large"),  # 5: largest white ship
    obj("ship", "white", 60, 100, 12, 6, "small"),  # 6
    obj("bridge", "grey", 100, 90, 8, 30, "large"),  # 7
]


@pytest.mark.parametrize(("text", "target"), [
    ("the storage tank left of the red building", 0),
    ("the storage tank right of the building", 1),
    ("the second plane from the top", 4),
    ("the first plane from the top", 3),
    ("the largest white ship", 5),
    ("the smallest ship", 6),
    ("the ship nearest the bridge", 6),
    ("The ship nearest to the grey bridge.", 6),
    ("the large plane", 4),
    ("the small white plane", 3),
    ("the plane located north of the large red building", 3),
])
def test_hand_made_expressions_resolve_to_their_target(text, target):
    query = parse_expression(text)
    assert query is not None
    assert resolve(query, SCENE) == [target]


def test_ambiguous_or_empty_expressions_do_not_resolve_to_one():
    assert len(resolve(parse_expression("the white storage tank"), SCENE + [  # two white tanks
        obj("storage tank", "white", 30, 80)])) == 2
    assert resolve(parse_expression("the blue ship"), SCENE) == []
    # an anchor that is not unique: two storage tanks
    assert resolve(parse_expression("the building left of the storage tank"), SCENE) == []
    # a lone candidate: no superlative, ordinal or "nearest" of a single object
    assert resolve(parse_expression("the largest building"), SCENE) == []
    assert resolve(parse_expression("the first building from the left"), SCENE) == []
    # sizes within 25 %: "largest" is ambiguous
    near_tie = [obj("ship", "red", 0, 0, 20, 8), obj("ship", "red", 40, 0, 21, 8)]
    assert len(resolve(Query("ship", superlative="largest"), near_tie)) == 2
    # a candidate 1 px from the relation's boundary makes it ambiguous
    boundary = [obj("vehicle", "red", 0, 0), obj("vehicle", "blue", 40, 40),
                obj("building", "grey", 8, 20)]  # red vehicle centre x=5, building x0=8
    assert resolve(parse_expression("the vehicle left of the building"), boundary) == []
    # two objects almost equally near the anchor
    nearly = [obj("ship", "red", 0, 0), obj("ship", "blue", 40, 0), obj("bridge", "grey", 20, 0)]
    assert len(resolve(parse_expression("the ship nearest the bridge"), nearly)) == 2


def test_render_and_parse_are_inverse():
    queries = [
        Query("ship", colour="white", size="large"),
        Query("plane", colour="grey", ordinal=2, axis="left"),
        Query("vehicle", superlative="smallest", colour="red"),
        Query("storage tank", relation="right of", anchor_class="tennis court",
              anchor_colour="green"),
        Query("ship", colour="dark", relation="nearest", anchor_class="bridge",
              anchor_size="small"),
    ]
    for query in queries:
        for phrasing in ("plain", "wordy"):
            assert parse_expression(render_expression(query, phrasing)) == query
    assert parse_expression("a ship") is None
    assert parse_expression("the purple ship") is None


def test_written_expressions_are_unique_and_typed():
    rng = np.random.default_rng(0)
    refs = write_expressions(rng, SCENE, 8)
    assert len(refs) >= 5
    assert len({r.text for r in refs}) == len(refs)
    for ref in refs:
        query = parse_expression(ref.text)
        assert resolve(query, SCENE) == [ref.target]
        assert ref.kind == query.kind
    assert write_expressions(np.random.default_rng(0), [], 3) == []
