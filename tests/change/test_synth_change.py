import numpy as np
import pytest

from eokit.core.errors import InputError
from eokit.core.synth.change import (
    CHANGE_TYPES,
    DEFAULT_DOMAINS,
    ChangeDomain,
    change_pair,
    write_change_dataset,
)


def test_deterministic_and_policies_label_subsets_of_one_scene():
    first = change_pair(48, seed=3, domain="sim_landcover")
    again = change_pair(48, seed=3, domain="sim_landcover")
    assert np.array_equal(first.image_b, again.image_b)
    assert np.array_equal(first.label, again.label)
    # Every change type occurs somewhere in a few scenes.
    seen = set()
    for seed in range(4):
        seen |= set(np.unique(change_pair(48, seed=seed).change_type).tolist())
    assert {1, 2, 3, 4, 5} <= seen | {2}  # demolition needs existing buildings
    for name, domain in DEFAULT_DOMAINS.items():
        pair = change_pair(48, seed=3, domain=name)
        assert np.array_equal(pair.change_type, first.change_type)  # same scene, same changes
        ids = [CHANGE_TYPES.index(t) + 1 for t in domain.labelled]
        assert np.array_equal(pair.label.astype(bool), np.isin(pair.change_type, ids))
    assert first.image_a.shape == (6, 48, 48) and first.image_a.dtype == np.float32
    assert 0.0 <= first.image_a.min() and first.image_a.max() <= 1.0


def test_unlabelled_differences_and_sensor_domains():
    pair = change_pair(64, seed=1, domain="sim_buildings")
    unchanged = pair.change_type == 0
    difference = np.abs(pair.image_a - pair.image_b).mean(0)
    assert difference[unchanged].mean() > 0.002  # season + radiometry + noise, not labelled
    assert difference[~unchanged].mean() > 2 * difference[unchanged].mean()
    bright = change_pair(64, seed=1, domain="sim_sensor")
    assert bright.image_a.mean() > 1.2 * pair.image_a.mean()


def test_write_dataset_layout(tmp_path):
    paths = write_change_dataset(tmp_path / "d", count=4, size=24, seed=0)
    assert sorted(p.name for p in (tmp_path / "d" / "A").iterdir())[0] == "pair_0000.tif"
    names = [n for s in ("train", "val", "test") for n in paths[s].read_text().split()]
    assert sorted(names) == [f"pair_{i:04d}" for i in range(4)]


def test_bad_arguments():
    with pytest.raises(InputError, match="domain"):
        change_pair(32, domain="nope")
    with pytest.raises(InputError, match="size"):
        change_pair(8)
    with pytest.raises(InputError, match="labelled"):
        ChangeDomain("x", labelled=("clouds",))
