"""``eokit openvocab fit|predict|evaluate``: a round trip on a COG and the bad-input cases."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import write_test_geotiff

RunCli = Callable[[list[str]], tuple[int, str, str]]
FIT = ["--simulate", "1", "--size", "128", "--tile", "64", "--epochs", "1", "--model-size",
       "small", "--batch-size", "4", "--trainer.logger=false"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model fitted once by the CLI on two simulated scenes (seen classes of the sim split)."""
    from eokit.cli import main

    out = tmp_path_factory.mktemp("ovrun")
    try:
        main(["openvocab", "fit", "--out", str(out), *FIT])
    except SystemExit as stop:
        assert not stop.code
    return out


@pytest.fixture(scope="module")
def scene_tif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-band uint8 GeoTIFF of a simulated scene, 96 x 160 px (not a tile multiple), UTM."""
    from eokit.openvocab.pipeline import simulated_scenes

    scene = simulated_scenes(1, 160, 4242)[0]
    data = (np.asarray(scene.image)[:, :96, :] * 255).round().astype(np.uint8)
    return write_test_geotiff(tmp_path_factory.mktemp("img") / "scene.tif", data,
                              pixel_size=0.5)


def test_fit_predict_evaluate_round_trip_keeps_the_grid(run_dir: Path, scene_tif: Path,
                                                        tmp_path: Path, run_cli: RunCli) -> None:
    import rasterio

    from eokit.core.raster import read_category_names

    config = json.loads((run_dir / "model.json").read_text())
    seen = [c["name"] for c in config["trained_classes"]]
    assert seen == config["seen"] and not set(seen) & set(config["unseen"])
    names = [seen[0], config["unseen"][0], "swimming pool"]
    code, out, err = run_cli(["openvocab", "predict", str(run_dir), str(scene_tif), "--out",
                              str(tmp_path / "p"), "--classes", ",".join(names), "--tile", "64",
                              "--overlap", "32"])
    assert code == 0, err
    summary = json.loads(out)
    with rasterio.open(scene_tif) as src, rasterio.open(summary["classes"]) as cls, \
            rasterio.open(summary["probability"]) as prob:
        assert cls.crs == src.crs and cls.transform == src.transform
        assert cls.shape == src.shape and prob.shape == src.shape and prob.count == 3
        assert cls.colormap(1)[0][:3] != cls.colormap(1)[1][:3]
        assert cls.overviews(1) or max(cls.shape) < 512  # a COG (overviews only when large)
        labels, p = cls.read(1), prob.read()
    assert read_category_names(summary["classes"]) == dict(enumerate(names))
    assert np.allclose(p.sum(0), 1.0, atol=1e-3)
    assert np.array_equal(labels, p.argmax(0))
    area = summary["class_area"]
    assert sum(area.values()) == pytest.approx(96 * 160 * 0.25)
    rows = {r["class"]: r for r in summary["similarity"]}
    assert rows[seen[0]]["seen"] and rows[seen[0]]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert not rows["swimming pool"]["seen"]
    report = Path(summary["report"]).read_text()
    assert "swimming pool" in report and "m2" in report
    code, out, err = run_cli(["openvocab", "evaluate", str(run_dir), "--simulate", "1",
                              "--size", "128", "--out", str(tmp_path / "e")])
    assert code == 0, err
    scores = json.loads(out)
    s, u = scores["seen_miou"], scores["unseen_miou"]
    assert 0 <= s <= 1 and 0 <= u <= 1
    assert scores["h_miou"] == pytest.approx(0 if s + u == 0 else 2 * s * u / (s + u))
    csv = (tmp_path / "e" / "per_class_iou.csv").read_text().splitlines()
    assert len(csv) == 1 + len(config["seen"]) + len(config["unseen"])


@pytest.mark.parametrize(("classes", "message"), [
    ("", "empty"), ("road,Road", "listed twice"), ("road, ,water", "empty after stripping"),
    (",", "empty after stripping")])
def test_predict_rejects_bad_class_lists(run_dir: Path, scene_tif: Path, tmp_path: Path,
                                         run_cli: RunCli, classes: str, message: str) -> None:
    code, out, err = run_cli(["openvocab", "predict", str(run_dir), str(scene_tif), "--out",
                              str(tmp_path / "p"), "--classes", classes])
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p" / "classes.tif").exists()


def test_predict_rejects_a_band_count_the_encoder_cannot_take(run_dir: Path, tmp_path: Path,
                                                               run_cli: RunCli) -> None:
    two = write_test_geotiff(tmp_path / "two.tif", np.zeros((2, 64, 64), np.uint8))
    code, _, err = run_cli(["openvocab", "predict", str(run_dir), str(two), "--out",
                            str(tmp_path / "p"), "--classes", "road,water"])
    assert code == 2 and "2 bands" in err and "two.tif" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["openvocab", "predict", str(run_dir), str(two), "--out",
                            str(tmp_path / "p"), "--classes", "road", "--bands", "1,2,3"])
    assert code == 2 and "--bands" in err


def test_label_value_without_a_class_name_is_refused() -> None:
    from eokit.core.errors import InputError
    from eokit.openvocab.pipeline import check_labels

    check_labels(np.array([[0, 1], [255, 2]]), 3, "ok.tif")
    with pytest.raises(InputError, match="label value 3 has no class name"):
        check_labels(np.array([[0, 3]]), 3, "labels/a.tif")


def test_open_clip_weights_that_do_not_match_the_named_model(tmp_path: Path,
                                                             run_cli: RunCli) -> None:
    pytest.importorskip("open_clip")
    import torch
    from open_clip import factory
    from safetensors.torch import save_file
    from tests.openvocab.test_backbones import TINY_CLIP

    factory._MODEL_CONFIGS["eokit-ov-cli-clip"] = TINY_CLIP
    bad = tmp_path / "other.safetensors"
    save_file({"visual.conv1.weight": torch.zeros(4, 3, 2, 2)}, str(bad))
    code, _, err = run_cli(["openvocab", "fit", "--out", str(tmp_path / "r"), "--encoder",
                            "open_clip", "--clip-model", "eokit-ov-cli-clip", "--clip-weights",
                            str(bad), *FIT])
    assert code == 2 and "do not match 'eokit-ov-cli-clip'" in err and "other.safetensors" in err
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_class_colours_are_distinct_and_keep_the_simulator_colours() -> None:
    from eokit.core.synth.vocab import vocab_class
    from eokit.openvocab.pipeline import class_colours

    names = ["background", "bareland", "grass", "pavement", "road", "tree", "water", "cropland",
             "building"]
    colours = class_colours(names)
    assert colours[names.index("building")] == vocab_class("building").colour
    rgb = np.array([[int(c[k:k + 2], 16) for k in (1, 3, 5)] for c in colours], float)
    gaps = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(names)) * 1e3
    assert gaps.min() >= 60
