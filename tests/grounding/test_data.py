"""Dataset readers on tiny fixtures in the real layouts, and on the shared samples if present."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eokit.core.errors import InputError
from eokit.grounding.data import (
    ISAID_PALETTE,
    canonical_class_name,
    read_coco,
    read_dior_rsvg,
    read_dota,
    read_dota_labels,
    read_index_split,
    read_isaid,
    read_isaid_masks,
    read_opt_rsvg,
    read_rsvg_xml,
    read_synth_scene,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def write_image(path: Path, width: int, height: int, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.full((height, width, 3), value, dtype=np.uint8)
    rgb[: height // 2, : width // 2, 0] = 200  # some content, so images differ by value
    Image.fromarray(rgb).save(path)
    return path


def rsvg_xml(filename: str, width: int, height: int, objects: list[tuple], *,
             description: bool = True) -> str:
    parts = [f"<annotation><filename>{filename}</filename><source><database>DIOR</database>"
             f"</source><size><width>{width}</width><height>{height}</height><depth>3</depth>"
             "</size><segmented>0</segmented>"]
    for name, (x0, y0, x1, y1), text in objects:
        desc = f"<description>{text}</description>" if description else ""
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose><bndbox><xmin>{x0}"
                     f"</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>"
                     f"{desc}</object>")
    return "".join(parts) + "</annotation>"


@pytest.fixture
def dior(tmp_path: Path) -> Path:
    root = tmp_path / "DIOR_RSVG"
    (root / "Annotations").mkdir(parents=True)
    # written out of order: indices must follow sorted file names, not creation order
    (root / "Annotations" / "00002.xml").write_text(rsvg_xml("00002.jpg", 64, 48, [
        ("vehicle", (1, 2, 20, 30), "the  vehicle on the left"),
        ("storagetank", (30, 5, 60, 40), "a white storage tank")]))
    (root / "Annotations" / "00001.xml").write_text(rsvg_xml("00001.jpg", 64, 48, [
        ("golffield", (0, 0, 64, 48), "A green and brown golf field")]))
    write_image(root / "JPEGImages" / "00001.jpg", 64, 48)
    write_image(root / "JPEGImages" / "00002.jpg", 64, 48, value=40)
    (root / "train.txt").write_text("0\n2\n")
    (root / "test.txt").write_text("1\n")
    return root


def test_dior_rsvg_indices_follow_sorted_files_and_objects(dior: Path) -> None:
    records = read_dior_rsvg(dior, check_images=True)
    assert [r.index for r in records] == [0, 1, 2]
    assert [r.image.name for r in records] == ["00001.jpg", "00002.jpg", "00002.jpg"]
    assert records[1].expression == "the vehicle on the left"  # blanks collapsed
    assert records[1].box == (1.0, 2.0, 20.0, 30.0)
    assert records[2].class_name == "storagetank"
    assert canonical_class_name(records[2].class_name) == "storage tank"
    assert (records[0].width, records[0].height) == (64, 48)
    train = read_dior_rsvg(dior, "train")
    assert [r.expression for r in train] == ["A green and brown golf field",
                                             "a white storage tank"]
    assert [r.index for r in read_dior_rsvg(dior, "test")] == [1]


def test_dior_rsvg_refuses_bad_annotations(dior: Path) -> None:
    bad = dior / "Annotations" / "00003.xml"
    bad.write_text(rsvg_xml("00003.jpg", 64, 48, [("ship", (1, 1, 9, 9), "x")],
                            description=False))
    with pytest.raises(InputError, match=r"00003\.xml: <object> 0 has no <description>"):
        read_dior_rsvg(dior)
    bad.write_text(rsvg_xml("00003.jpg", 64, 48, [("ship", (10, 10, 90, 20), "a ship")]))
    with pytest.raises(InputError, match=r"00003\.xml.*outside the 64x48 image"):
        read_dior_rsvg(dior)
    bad.write_text("<annotation><filename>")
    with pytest.raises(InputError, match=r"00003\.xml: not readable as XML"):
        read_dior_rsvg(dior)
    bad.unlink()
    (dior / "val.txt").write_text("0\n7\n")
    with pytest.raises(InputError, match=r"val\.txt: lists 1 indices beyond the 3 objects"):
        read_dior_rsvg(dior, "val")
    assert [r.index for r in read_dior_rsvg(dior, "val", strict=False)] == [0]
    (dior / "val.txt").write_text("0\nseven\n")
    with pytest.raises(InputError, match=r"val\.txt: line 2 is not a sample index"):
        read_index_split(dior / "val.txt")
    with pytest.raises(InputError, match="split"):
        read_dior_rsvg(dior, "holdout")
    # the XML size must match the image when asked to check
    (dior / "Annotations" / "00001.xml").write_text(rsvg_xml("00001.jpg", 80, 48, [
        ("golffield", (0, 0, 64, 48), "a golf field")]))
    with pytest.raises(InputError, match=r"<size> says 80x48 but 00001\.jpg is 64x48"):
        read_dior_rsvg(dior, check_images=True)


def test_opt_rsvg_layout(tmp_path: Path) -> None:
    root = tmp_path / "OPT-RSVG"
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "1.xml").write_text(rsvg_xml("1.jpg", 100, 80, [
        ("ship", (10.5, 20.25, 40.0, 30.0), "the ship at the top"),
        ("harbor", (0, 0, 100, 80), "the harbor")]))
    write_image(root / "Image" / "1.jpg", 100, 80)
    (root / "split").mkdir()
    (root / "split" / "test.txt").write_text("1\n")
    (root / "split" / "train.txt").write_text("0\n")
    train = read_opt_rsvg(root, "train", check_images=True)
    assert len(train) == 1 and train[0].box == (10.5, 20.25, 40.0, 30.0)
    assert train[0].image == root / "Image" / "1.jpg"
    assert read_opt_rsvg(root, "test")[0].class_name == "harbor"


def test_xml_without_size_takes_it_from_the_image(dior: Path) -> None:
    xml = dior / "Annotations" / "00001.xml"
    xml.write_text(xml.read_text().replace("<size><width>64</width><height>48</height>"
                                           "<depth>3</depth></size>", ""))
    assert read_rsvg_xml(xml)[1:3] == (None, None)
    assert read_dior_rsvg(dior)[0].width == 64


def dota_fixture(root: Path) -> Path:
    (root / "labelTxt").mkdir(parents=True)
    (root / "labelTxt" / "P0001.txt").write_text(
        "imagesource:GoogleEarth\ngsd:0.5\n"
        "10 20 30 10 40 30 20 40 ship 0\n"
        "50 50 60 50 60 58 50 58 small-vehicle 1\n"
        "79 0 80.5 0 80.5 5 79 5 small-vehicle 0\n")  # 0.5 px beyond the border: clipped
    write_image(root / "images" / "P0001.png", 80, 60)
    return root


def test_dota_polygons_become_enclosing_boxes(tmp_path: Path) -> None:
    root = dota_fixture(tmp_path / "DOTA")
    [record] = read_dota(root)
    assert record.labels == ("ship", "small-vehicle", "small-vehicle")
    np.testing.assert_allclose(record.boxes, [[10, 10, 40, 40], [50, 50, 60, 58],
                                              [79, 0, 80, 5]])
    assert record.difficult == (False, True, False)
    assert record.meta == {"imagesource": "GoogleEarth", "gsd": 0.5}
    assert (record.width, record.height) == (80, 60)
    assert read_dota(root, skip_difficult=True)[0].labels == ("ship", "small-vehicle")
    assert canonical_class_name("small-vehicle") == "small vehicle"


def test_dota_refuses_bad_lines_missing_images_and_far_boxes(tmp_path: Path) -> None:
    root = dota_fixture(tmp_path / "DOTA")
    label = root / "labelTxt" / "P0001.txt"
    label.write_text("gsd:null\n1 2 3 4 5 6 ship 0\n")
    with pytest.raises(InputError, match=r"P0001\.txt: line 2: expected"):
        read_dota_labels(label)
    label.write_text("gsd:null\n0 0 10 0 10 10 0 10 ship 0\n")
    assert read_dota_labels(label)[3] == {"gsd": None}
    label.write_text("0 0 100 0 100 10 0 10 ship 0\n")
    with pytest.raises(InputError, match=r"P0001\.txt.*outside the 80x60 image"):
        read_dota(root)
    (root / "labelTxt" / "P0002.txt").write_text("0 0 10 0 10 10 0 10 plane 0\n")
    label.write_text("0 0 10 0 10 10 0 10 ship 0\n")
    with pytest.raises(InputError, match=r"P0002\.txt: no image P0002"):
        read_dota(root)
    records = read_dota(root, require_images=False)
    assert records[1].width is None and records[1].labels == ("plane",)


def test_isaid_masks_give_one_box_per_instance_colour(tmp_path: Path) -> None:
    colours = {v: k for k, v in ISAID_PALETTE.items()}
    instance = np.zeros((40, 50, 3), np.uint8)
    semantic = np.zeros((40, 50, 3), np.uint8)
    instance[5:10, 3:20] = (75, 120, 150)
    semantic[5:10, 3:20] = colours["ship"]
    instance[20:35, 30:32] = (85, 60, 100)  # two parts of one instance
    instance[20:22, 40:45] = (85, 60, 100)
    semantic[20:35, 30:32] = colours["small_vehicle"]
    semantic[20:22, 40:45] = colours["small_vehicle"]
    instance[38, 0] = (3, 0, 0)  # id 3 < 1000: not an instance (devkit rule)
    folder = tmp_path / "iSAID" / "val" / "images"
    folder.mkdir(parents=True)
    Image.fromarray(instance).save(folder / "P0009_instance_id_RGB.png")
    Image.fromarray(semantic).save(folder / "P0009_instance_color_RGB.png")
    [record] = read_isaid(tmp_path / "iSAID")
    assert record.image == folder / "P0009.png"
    assert sorted(zip(record.labels, record.boxes.tolist(), strict=True)) == [
        ("ship", [3, 5, 20, 10]), ("small_vehicle", [30, 20, 45, 35])]
    assert len(read_isaid_masks(folder / "P0009_instance_id_RGB.png",
                                folder / "P0009_instance_color_RGB.png", min_pixels=50)) == 1
    semantic[0, 0] = (9, 9, 9)
    Image.fromarray(semantic).save(folder / "P0009_instance_color_RGB.png")
    with pytest.raises(InputError, match=r"instance_color_RGB\.png: colour \(9, 9, 9\)"):
        read_isaid(folder)


def coco_file(path: Path) -> Path:
    data = {
        "images": [{"id": 7, "file_name": "a.png", "width": 50, "height": 40},
                   {"id": 8, "file_name": "b.png", "width": 50, "height": 40}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 2, "bbox": [10, 5, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 1},
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [30, 30, 20, 10]},
        ],
        "categories": [{"id": 1, "name": "plane"}, {"id": 2, "name": "ship"}],
    }
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("with_pycocotools", [True, False])
def test_coco_reader_with_and_without_pycocotools(tmp_path: Path, monkeypatch,
                                                  with_pycocotools: bool) -> None:
    if with_pycocotools:
        pytest.importorskip("pycocotools")
    else:
        monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    records = read_coco(coco_file(tmp_path / "instances.json"), tmp_path / "img")
    assert [r.image.name for r in records] == ["a.png", "b.png"]
    assert records[0].labels == ("ship", "plane")
    np.testing.assert_allclose(records[0].boxes, [[10, 5, 30, 15], [30, 30, 50, 40]])
    assert len(records[1]) == 0 and records[1].boxes.shape == (0, 4)
    assert read_coco(tmp_path / "instances.json", skip_crowd=False)[0].labels == (
        "ship", "plane", "plane")


def test_coco_variants_and_errors(tmp_path: Path) -> None:
    single = {"image_info": {"id": 3, "file_name": "P1.png", "width": 30, "height": 30},
              "categories": {"1": "ship"},
              "annotations": [{"id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0}]}
    path = tmp_path / "single.json"
    path.write_text(json.dumps(single))
    [record] = read_coco(path)
    assert record.labels == ("ship",) and record.boxes.tolist() == [[1, 1, 6, 6]]
    single["annotations"][0]["bbox"] = [20, 20, 30, 30]
    path.write_text(json.dumps(single))
    with pytest.raises(InputError, match=r"single\.json.*outside the 30x30 image"):
        read_coco(path)
    path.write_text("{")
    with pytest.raises(InputError, match=r"single\.json: not readable as json"):
        read_coco(path)
    path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(InputError, match="not a COCO annotation file"):
        read_coco(path)


def test_simulator_scene_reads_back(tmp_path: Path) -> None:
    from eokit.core.synth.objects import generate_object_scene, write_object_scene

    scene = generate_object_scene(64, seed=5, n_expressions=3)
    write_object_scene(scene, tmp_path / "scene")
    detection, grounding = read_synth_scene(tmp_path / "scene")
    np.testing.assert_allclose(detection.boxes, scene.boxes())
    assert list(detection.labels) == scene.labels()
    assert list(detection.attributes) == scene.attributes()
    assert [g.expression for g in grounding] == [e.text for e in scene.expressions]
    for g, e in zip(grounding, scene.expressions, strict=True):
        assert g.box == scene.objects[e.target].box and g.kind == e.kind
    with pytest.raises(InputError, match="no expressions.json"):
        read_synth_scene(tmp_path)


# ---------------------------------------------------------------------------------------------
# The shared samples (skipped where absent)
# ---------------------------------------------------------------------------------------------

DIOR_SAMPLE = SHARED / "grounding" / "dior_rsvg_sample"
DOTA_SAMPLE = SHARED / "grounding" / "dota_v1_sample" / "example"
ISAID_SAMPLE = SHARED / "segmentation" / "isaid" / "preprocess" / "dataset" / "iSAID"
ISAID_JSON = SHARED / "grounding" / "isaid_annotation_sample" / "P0707_annotations.json"


@pytest.mark.skipif(not DIOR_SAMPLE.is_dir(), reason="shared DIOR-RSVG sample absent")
def test_dior_rsvg_sample() -> None:
    [record] = read_dior_rsvg(DIOR_SAMPLE, check_images=True)
    assert record.box == (133.0, 237.0, 684.0, 672.0) and record.class_name == "golffield"
    assert record.expression == "A green and brown golf field" and record.index == 0
    split_file = DIOR_SAMPLE / "splits_DIOR_RSVG" / "test.txt"
    assert len(read_dior_rsvg(DIOR_SAMPLE, split_file=split_file, strict=False)) == 1
    with pytest.raises(InputError, match="beyond the 1 objects"):
        read_dior_rsvg(DIOR_SAMPLE, split_file=split_file)


@pytest.mark.skipif(not DOTA_SAMPLE.is_dir(), reason="shared DOTA sample absent")
def test_dota_sample() -> None:
    records = {r.image.stem: r for r in read_dota(DOTA_SAMPLE, require_images=False)}
    assert len(records) == 7
    ship = records["P0706"]
    assert (ship.width, ship.height) == (1111, 1182)
    assert ship.meta["gsd"] == pytest.approx(0.2556, abs=1e-4)
    assert ship.labels.count("ship") == 531 and ship.labels.count("harbor") == 5
    vehicles = records["P1888"]
    assert len(vehicles) == 64 and vehicles.boxes[:, 2].max() <= 712


@pytest.mark.skipif(not ISAID_SAMPLE.is_dir(), reason="shared iSAID sample absent")
def test_isaid_sample() -> None:
    records = {r.image.stem: r for r in read_isaid(ISAID_SAMPLE)}
    assert {k: len(v) for k, v in records.items()} == {"P0003": 59, "P0004": 116, "P0005": 131}
    assert "storage_tank" in records["P0003"].labels
    assert all(r.image.is_file() for r in records.values())


@pytest.mark.skipif(not ISAID_JSON.is_file(), reason="shared iSAID json sample absent")
def test_isaid_coco_json_sample() -> None:
    [record] = read_coco(ISAID_JSON)
    assert (record.width, record.height) == (1422, 1098) and len(record) == 113
    assert record.labels.count("ship") == 77
