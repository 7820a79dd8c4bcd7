"""eokit grounding fit / detect / ground: model folder, GeoJSON in the image CRS, bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio

RunCli = Callable[[list[str]], tuple[int, str, str]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from eokit.grounding.pipeline import fit_simulated

    out = tmp_path_factory.mktemp("grounding") / "model"
    summary = fit_simulated(out, scenes=6, size=64, det_epochs=1, head_epochs=1,
                            pretrained=False, dim=32, head_dim=32, branch_layers=1,
                            reasoner_layers=1)
    assert Path(summary["model"]).is_file()
    return out


@pytest.fixture(scope="module")
def scene_tif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from eokit.core.synth.objects import generate_object_scene, write_object_scene

    # 160 px with 64 px windows: several windows, each object seen whole in one of them
    scene = generate_object_scene(160, seed=3)
    return write_object_scene(scene, tmp_path_factory.mktemp("scene"))["image"]


def test_model_folder_round_trips(model_dir: Path) -> None:
    import torch

    from eokit.grounding.pipeline import load_model

    config = json.loads((model_dir / "model.json").read_text())
    assert config["class_names"][0] == "ship" and config["text_encoder"] == "minilm_l6"
    assert config["selection"] == "hard"  # the better answer in grounding_sim
    a, b = load_model(model_dir), load_model(model_dir)
    for (name, p), (_, q) in zip(a.detector.state_dict().items(), b.detector.state_dict().items(),
                                 strict=True):
        assert torch.equal(p, q), name


def test_ground_prints_pixel_and_map_box_and_writes_geojson(
        model_dir: Path, scene_tif: Path, tmp_path: Path, run_cli: RunCli) -> None:
    out = tmp_path / "answer.geojson"
    code, stdout, err = run_cli(["grounding", "ground", str(model_dir), str(scene_tif),
                              "the largest white ship", "-o", str(out), "--tile", "64",
                              "--overlap", "32"])
    assert code == 0, err
    summary = json.loads(stdout)
    x0, y0, x1, y1 = summary["box_px"]
    assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 160
    with rasterio.open(scene_tif) as src:
        left, top = src.transform @ (x0, y0)
        assert summary["crs"] == str(src.crs)
    assert np.allclose(summary["box_map"][0], left, atol=1e-3)
    assert np.allclose(summary["box_map"][3], top, atol=1e-3)
    assert 0 < summary["probability"] <= 1
    assert len(summary["top_proposals"]) >= 1
    data = json.loads(out.read_text())
    assert data["features"][0]["geometry"]["type"] == "Polygon"
    assert data["features"][0]["properties"]["expression"] == "the largest white ship"
    lon, lat = data["features"][0]["geometry"]["coordinates"][0][0]
    assert -180 <= lon <= 180 and -90 <= lat <= 90  # RFC 7946 lon/lat


def test_detect_merges_windows_and_flags_far_names(model_dir: Path, scene_tif: Path,
                                                   tmp_path: Path, run_cli: RunCli,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "boxes.geojson"
    code, stdout, err = run_cli(["grounding", "detect", str(model_dir), str(scene_tif), "-o",
                              str(out), "--tile", "64", "--overlap", "32",
                              "--classes", "ship,plane,volcano crater",
                              "--score-threshold", "0.0"])
    assert code == 0, err
    summary = json.loads(stdout)
    assert set(summary["per_class"]) == {"ship", "plane", "volcano crater"}
    assert summary["vocabulary_similarity"]["ship"]["closest"] == "ship"
    assert summary["vocabulary_similarity"]["ship"]["similarity"] > 0.99
    assert summary["vocabulary_similarity"]["volcano crater"]["similarity"] < 0.99
    boxes = [f["properties"]["box_px"] for f in json.loads(out.read_text())["features"]]
    assert all(0 <= b[0] < b[2] <= 160 and 0 <= b[1] < b[3] <= 160 for b in boxes)


@pytest.mark.parametrize("height,width,tile,overlap", [(160, 160, 64, 32), (100, 300, 64, 16),
                                                        (64, 64, 128, 32)])
def test_windows_cover_the_scene_with_the_requested_overlap(height: int, width: int, tile: int,
                                                            overlap: int) -> None:
    from eokit.grounding.pipeline import _windows

    cover = np.zeros((height, width), dtype=int)
    starts = set()
    for r, c, h, w in _windows(height, width, tile, overlap):
        assert r + h <= height and c + w <= width and h <= tile and w <= tile
        cover[r:r + h, c:c + w] += 1
        starts.add(c)
    assert cover.min() >= 1
    cols = sorted(starts)
    assert all(b - a <= tile - overlap for a, b in zip(cols, cols[1:], strict=False))


@pytest.mark.parametrize("argv,message", [
    (["ground", "{model}", "{image}", "   ", "-o", "{out}"], "expression is empty"),
    (["detect", "{model}", "{image}", "-o", "{out}", "--classes", "ship,ship"], "unique"),
    (["detect", "{model}", "{image}", "-o", "{out}", "--classes", "ship,,plane"], "non-empty"),
    (["ground", "{model}", "{gray}", "the ship", "-o", "{out}"], "bands"),
    (["detect", "{image}", "{image}", "-o", "{out}"], "not a grounding model"),
])
def test_bad_input_is_one_line_exit_2(argv: list[str], message: str, model_dir: Path,
                                      scene_tif: Path, tmp_path: Path, run_cli: RunCli) -> None:
    from tests.conftest import write_test_geotiff

    gray = tmp_path / "gray.tif"
    write_test_geotiff(gray, np.zeros((1, 64, 64), dtype=np.uint8))
    values = {"model": str(model_dir), "image": str(scene_tif), "out": str(tmp_path / "o.json"),
              "gray": str(gray)}
    code, _, err = run_cli(["grounding", *[a.format(**values) for a in argv]])
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "o.json").exists()


def test_interrupted_fit_exits_130_and_keeps_a_loadable_checkpoint(
        tmp_path: Path, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    from eokit.grounding import train
    from eokit.grounding.pipeline import CHECKPOINT_DIR, load_model

    calls = {"n": 0}
    loss = train.grounding_loss

    def interrupt_in_second_head_epoch(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 1:  # 6 scenes -> one step per head epoch
            raise KeyboardInterrupt
        return loss(*args, **kwargs)

    monkeypatch.setattr(train, "grounding_loss", interrupt_in_second_head_epoch)
    out = tmp_path / "run"
    code, _, _ = run_cli(["grounding", "fit", "-o", str(out), "--simulate", "6", "--size", "64",
                          "--det-epochs", "2", "--head-epochs", "3", "--no-pretrained"])
    assert code == 130
    assert not (out / "model.safetensors").exists()  # no final model from an interrupted run
    config = json.loads((out / CHECKPOINT_DIR / "model.json").read_text())
    # the last epoch of a stage is always saved; head epoch 1 came within the 60 s throttle
    assert config["checkpoint"] == {"stage": "detector", "epoch": 2, "of": 2}
    assert not config["head_trained"]
    assert load_model(out / CHECKPOINT_DIR).class_names == config["class_names"]
