"""Folder readers, vocabulary and split files of eokit.openvocab.data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eokit.core.errors import InputError
from eokit.core.types import IGNORE_INDEX
from eokit.openvocab.data import (
    ISAID,
    load_split,
    load_vocabulary,
    packaged_splits,
    read_folder,
)


def _png(path: Path, data: np.ndarray) -> Path:
    import rasterio

    data = data if data.ndim == 3 else data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="PNG", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype="uint8") as dst:
        dst.write(data)
    return path


def _image(h: int = 16, w: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8)


def test_loveda_values_map_to_classes_and_zero_is_ignored(tmp_path: Path) -> None:
    root = tmp_path / "loveda_sample"
    label = np.zeros((16, 24), np.uint8)
    label[:, 8:16], label[:, 16:] = 2, 7  # building, agriculture
    for split in ("train", "val"):
        _png(root / "img_dir" / split / "a.png", _image())
        _png(root / "ann_dir" / split / "a.png", label)
    data = read_folder(root)  # the layout comes from the folder name
    assert data.layout == "loveda" and len(data) == 2
    image, ids = data[0]
    assert image.shape == (3, 16, 24) and image.dtype == np.float32 and image.max() <= 1.0
    names = data.classes.names
    assert (ids[:, :8] == IGNORE_INDEX).all()
    assert names[ids[0, 10]] == "building" and names[ids[0, 20]] == "agriculture"
    assert len(read_folder(root, split="val")) == 1
    with pytest.raises(InputError, match="under a 'test' folder"):
        read_folder(root, split="test")


def test_a_value_without_a_class_name_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _png(root / "img_dir" / "a.png", _image())
    _png(root / "ann_dir" / "a.png", np.full((16, 24), 9, np.uint8))
    data = read_folder(root, layout="loveda")
    with pytest.raises(InputError, match=r"label values \[9\] have no class name"):
        data[0]


def test_isaid_colour_masks_decode_and_unknown_colours_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "sample" / "train" / "images"
    mask = np.zeros((3, 16, 24), np.uint8)  # background (0, 0, 0)
    mask[:, :, 12:] = np.array([0, 0, 127], np.uint8)[:, None, None]  # small vehicle
    _png(root / "P0001.png", _image())
    _png(root / "P0001_instance_color_RGB.png", mask)
    data = read_folder(tmp_path / "sample")  # found by the mask suffix
    assert data.layout == "isaid"
    _, ids = data[0]
    assert {ISAID.names[i] for i in np.unique(ids)} == {"background", "small vehicle"}
    mask[:, 0, 0] = (1, 2, 3)
    _png(root / "P0001_instance_color_RGB.png", mask)
    with pytest.raises(InputError, match="#010203"):
        data[0]


def test_generic_layout_reads_classes_yaml(tmp_path: Path) -> None:
    root = tmp_path / "g"
    _png(root / "images" / "x.png", _image())
    _png(root / "labels" / "x.png", np.array([[0, 10, 20] * 8] * 16, np.uint8))
    (root / "classes.yaml").write_text(
        "ignore: [0]\nclasses:\n  - {name: roof, value: 10}\n  - {name: lawn, value: 20}\n")
    data = read_folder(root)
    assert data.layout == "generic" and data.classes.names == ("roof", "lawn")
    _, ids = data[0]
    assert ids[0, :3].tolist() == [IGNORE_INDEX, 0, 1]
    assert data.class_pixels() == {"roof": 128, "lawn": 128}
    (root / "classes.yaml").write_text("classes: [roof, Roof]\n")
    with pytest.raises(InputError, match="listed twice"):
        read_folder(root)


def test_a_folder_of_unknown_layout_gets_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    with pytest.raises(InputError, match="give --layout"):
        read_folder(tmp_path / "stuff")
    with pytest.raises(InputError, match="unknown layout"):
        read_folder(tmp_path / "stuff", layout="coco")


def test_packaged_splits_are_disjoint_and_name_known_classes() -> None:
    vocab = {k.lower() for k in load_vocabulary()}
    assert {"sim", "loveda", "isprs", "isaid", "openearthmap", "dlrsd"} <= set(packaged_splits())
    for name in packaged_splits():
        split = load_split(name)
        assert split.seen and split.unseen and split.version == "1"
        assert not {s.lower() for s in split.seen} & {u.lower() for u in split.unseen}
        assert {c.lower() for c in split.seen + split.unseen} <= vocab, name
        assert len(split.sha256) == 64


def test_split_files_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("seen: [a, b]\nunseen: [B]\n")
    with pytest.raises(InputError, match="both seen and unseen"):
        load_split(path)
    path.write_text("seen: [a]\n")
    with pytest.raises(InputError, match="unseen: expected a non-empty list"):
        load_split(path)
    with pytest.raises(InputError, match="packaged: .*sim"):
        load_split("no-such-split")
    path.write_text("name: mine\nversion: 3\nseen: [a]\nunseen: [b]\n")
    split = load_split(path)
    assert (split.name, split.version, split.seen, split.unseen) == ("mine", "3", ("a",), ("b",))


def test_vocabulary_files_give_synonyms_and_descriptions(tmp_path: Path) -> None:
    path = tmp_path / "v.yaml"
    path.write_text("classes:\n  roof:\n    synonyms: [house, building]\n"
                    "    description: a red roof\n  lawn: short grass\n")
    vocab = load_vocabulary(path)
    assert vocab["roof"].synonyms == ("house", "building")
    assert vocab["roof"].description == "a red roof" and vocab["lawn"].description == "short grass"
    path.write_text("classes: [roof, ROOF]\n")
    with pytest.raises(InputError, match="listed twice"):
        load_vocabulary(path)
    packaged = load_vocabulary()
    assert "lake" in packaged["water body"].synonyms  # the simulator's classes
    assert packaged["swimming pool"].description  # and the dataset layouts' classes


def test_openearthmap_dlrsd_and_isprs_colour_layouts(tmp_path: Path) -> None:
    oem = tmp_path / "oem"
    label = np.zeros((16, 24), np.uint8)
    label[:, 12:] = 8  # building
    for region in ("aachen", "koeln"):
        _png(oem / region / "images" / f"{region}_1.png", _image())
        _png(oem / region / "labels" / f"{region}_1.png", label)
    data = read_folder(oem, layout="openearthmap")
    assert len(data) == 2
    _, ids = data[1]
    assert (ids[:, :12] == IGNORE_INDEX).all() and data.classes.names[ids[0, 20]] == "building"

    dlrsd = tmp_path / "d"
    _png(dlrsd / "Images" / "harbor" / "harbor01.png", _image())
    _png(dlrsd / "Labels" / "harbor" / "harbor01.png", np.full((16, 24), 13, np.uint8))
    data = read_folder(dlrsd)  # Images/ + Labels/ means DLRSD
    assert data.layout == "dlrsd" and data.classes.names[int(data[0][1][0, 0])] == "sea"

    isprs = tmp_path / "potsdam"
    colour = np.zeros((3, 16, 24), np.uint8)
    colour[2] = 255  # (0, 0, 255): building
    colour[:, :, :6] = 255  # (255, 255, 255): impervious surface
    _png(isprs / "img_dir" / "t.png", _image())
    _png(isprs / "ann_dir" / "t.png", colour)
    data = read_folder(isprs)
    _, ids = data[0]
    assert data.layout == "isprs"
    assert [data.classes.names[i] for i in (ids[0, 0], ids[0, 10])] == ["impervious surface",
                                                                          "building"]
