"""Simulated object scenes: tight boxes, deterministic, expressions that resolve to one object."""

import numpy as np
import pytest

from eokit.core.errors import InputError
from eokit.core.synth.objects import (
    ObjectDomain,
    generate_object_dataset,
    generate_object_scene,
    parse_expression,
    resolve,
    write_object_scene,
)


def test_scene_is_deterministic_and_boxes_are_tight():
    a = generate_object_scene(96, seed=4)
    b = generate_object_scene(96, seed=4)
    assert np.array_equal(a.image, b.image) and a.objects == b.objects
    assert len(a.objects) >= 4
    for obj in a.objects:
        x0, y0, x1, y1 = obj.box
        assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96


def test_every_kept_expression_parses_back_to_exactly_its_target():
    scenes = generate_object_dataset(6, size=96, seed=1)
    checked = 0
    for scene in scenes:
        for ref in scene.expressions:
            query = parse_expression(ref.text)
            assert query is not None, ref.text
            assert resolve(query, scene.objects) == [ref.target], ref.text
            checked += 1
    assert checked >= 6


def test_domain_checks_and_written_files(tmp_path):
    with pytest.raises(InputError, match="gsd_m"):
        ObjectDomain(gsd_m=50)
    with pytest.raises(InputError, match="classes"):
        ObjectDomain(classes=("dragon",))
    scene = generate_object_scene(64, seed=2)
    paths = write_object_scene(scene, tmp_path / "scene")
    assert all(p.exists() for p in paths.values())
