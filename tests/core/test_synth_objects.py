"""Simulated object scenes: tight boxes, plausible placement, expressions with one target."""

import numpy as np
import pytest

from eokit.core.errors import InputError
from eokit.core.synth.objects import (
    OBJECT_CLASSES,
    ObjectDomain,
    generate_object_dataset,
    generate_object_scene,
    parse_expression,
    resolve,
    write_object_scene,
)
from eokit.core.synth.referring import EXPRESSION_KINDS, FIXED_SIZE_CLASSES


@pytest.fixture(scope="module")
def scenes():
    return generate_object_dataset(8, size=112, seed=3, n_expressions=6)


def test_scene_is_deterministic_and_boxes_are_tight():
    a = generate_object_scene(96, seed=4)
    b = generate_object_scene(96, seed=4)
    assert np.array_equal(a.image, b.image) and a.objects == b.objects
    assert a.expressions == b.expressions
    assert a.image.shape == (3, 96, 96) and a.image.dtype == np.float32
    assert 0.0 <= a.image.min() and a.image.max() <= 1.0
    assert len(a.objects) >= 4
    assert a.boxes().shape == (len(a.objects), 4)
    assert a.labels() == [o.class_name for o in a.objects]
    assert a.attributes()[0] == {"colour": a.objects[0].colour, "size": a.objects[0].size}
    for obj in a.objects:
        x0, y0, x1, y1 = obj.box
        assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96


def test_every_kept_expression_parses_back_to_exactly_its_target(scenes):
    kinds = set()
    checked = 0
    for scene in scenes:
        for ref in scene.expressions:
            query = parse_expression(ref.text)
            assert query is not None, ref.text
            assert resolve(query, scene.objects) == [ref.target], ref.text
            assert query.kind == ref.kind
            kinds.add(ref.kind)
            checked += 1
    assert checked >= 30
    assert kinds == set(EXPRESSION_KINDS)


def test_objects_do_not_overlap_and_stand_on_the_right_surface(scenes):
    for scene in scenes:
        water = scene.landcover == 0
        boxes = scene.boxes()
        for i, obj in enumerate(scene.objects):
            x0, y0, x1, y1 = (int(v) for v in obj.box)
            share = water[y0:y1, x0:x1].mean()
            if obj.class_name == "ship":
                assert share > 0.9, (scene.seed, obj)
            elif obj.class_name == "bridge":
                assert 0.2 < share < 0.95, (scene.seed, obj)
            else:
                assert share < 0.1, (scene.seed, obj)
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                gap_x = max(a[0], b[0]) - min(a[2], b[2])
                gap_y = max(a[1], b[1]) - min(a[3], b[3])
                assert max(gap_x, gap_y) >= 3, (scene.seed, i, j)


def test_sizes_are_relative_to_the_class(scenes):
    seen = set()
    for scene in scenes:
        gsd = scene.domain.gsd_m
        for obj in scene.objects:
            if obj.class_name in FIXED_SIZE_CLASSES:
                assert obj.size is None
                continue
            assert obj.size in ("small", "large")
            seen.add(obj.size)
            if obj.class_name not in ("ship", "vehicle", "bridge", "storage tank"):
                continue  # length may be the shorter side of planes and buildings
            (l0, l1), _ = OBJECT_CLASSES[obj.class_name]
            long_side_m = max(obj.box[2] - obj.box[0], obj.box[3] - obj.box[1]) * gsd
            if obj.size == "small":
                assert long_side_m <= l0 + 0.4 * (l1 - l0) + gsd
            else:
                assert long_side_m >= l0 + 0.6 * (l1 - l0) - gsd
    assert seen == {"small", "large"}


def test_all_classes_appear_and_a_channel_is_cut_for_ships():
    domain = ObjectDomain(classes=("ship",), objects_per_scene=(3, 5))
    scene = generate_object_scene(96, seed=6, domain=domain, n_expressions=2)
    assert len(scene.objects) >= 3 and set(scene.labels()) == {"ship"}
    assert (scene.landcover == 0).mean() >= 0.12
    assert len(ObjectDomain().classes) == len(OBJECT_CLASSES) >= 7


def test_domain_checks_and_written_files(tmp_path):
    with pytest.raises(InputError, match="gsd_m"):
        ObjectDomain(gsd_m=50)
    with pytest.raises(InputError, match="classes"):
        ObjectDomain(classes=("dragon",))
    with pytest.raises(InputError, match="phrasing"):
        ObjectDomain(phrasing="poetic")
    scene = generate_object_scene(64, seed=2)
    paths = write_object_scene(scene, tmp_path / "scene")
    assert all(p.exists() for p in paths.values())


def _matching(scene, words):
    """Objects a noun phrase ("large white ship") describes, found without the grammar's code."""
    phrase = " ".join(words)
    name = next(c for c in sorted(OBJECT_CLASSES, key=len, reverse=True)
                if phrase == c or phrase.endswith(" " + c))
    adjectives = phrase[: len(phrase) - len(name)].split()
    return [i for i, o in enumerate(scene.objects) if o.class_name == name
            and all(a in (o.colour, o.size) for a in adjectives)]


def test_expressions_single_out_their_target_by_brute_force():
    # an independent reading of the non-relational expressions: count the objects that fit the
    # words, sort them by area or by centre coordinate, and check the target is the only answer
    ordinals = {"first": 0, "second": 1, "third": 2}
    checked = 0
    for scene in generate_object_dataset(12, size=112, seed=7, n_expressions=8):
        for ref in scene.expressions:
            words = ref.text.split()
            if ref.kind == "attribute":
                assert _matching(scene, words[1:]) == [ref.target], ref.text
            elif ref.kind == "superlative":
                members = _matching(scene, words[2:])
                areas = [scene.objects[i].area for i in members]
                best = max(areas) if words[1] == "largest" else min(areas)
                assert len(members) >= 2 and areas.count(best) == 1, ref.text
                assert members[areas.index(best)] == ref.target, ref.text
            elif ref.kind == "ordinal":
                side = words[-1]
                members = _matching(scene, words[2:-3])
                axis = 0 if side in ("left", "right") else 1
                coords = [scene.objects[i].centre[axis] for i in members]
                order = sorted(range(len(members)), key=lambda k: coords[k],
                               reverse=side in ("right", "bottom"))
                rank = ordinals[words[1]]
                assert members[order[rank]] == ref.target, ref.text
                assert len(set(coords)) == len(coords), ref.text  # no tie along the axis
            else:
                continue
            checked += 1
    assert checked >= 30
