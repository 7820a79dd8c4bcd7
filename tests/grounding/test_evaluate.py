"""fit from records folders, evaluate, the HTML reports, and bad input at those commands."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.grounding.test_data import rsvg_xml, write_image

RunCli = Callable[[list[str]], tuple[int, str, str]]
SMOKE = ["--size", "64", "--det-epochs", "1", "--head-epochs", "1", "--no-pretrained"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from eokit.core.synth.objects import generate_object_scene, write_object_scene

    root = tmp_path_factory.mktemp("scenes")
    for seed in range(8):
        write_object_scene(generate_object_scene(64, seed=seed, n_expressions=3),
                           root / f"scene{seed}")
    return root


@pytest.fixture(scope="module")
def trained(scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from eokit.grounding.pipeline import fit_records

    out = tmp_path_factory.mktemp("fit") / "model"
    fit_records(out, scenes, "synth", size=64, det_epochs=1, head_epochs=1, pretrained=False,
                dim=32, head_dim=32, branch_layers=1, reasoner_layers=1)
    return out


def one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not
             ln.startswith(("INFO", "WARNING"))]
    assert len(lines) == 1, err
    return lines[0]


def test_cli_formats_are_the_dataset_formats() -> None:
    from eokit.grounding.cli import FORMATS as CLI_FORMATS
    from eokit.grounding.dataset import FORMATS

    assert CLI_FORMATS == FORMATS


def test_fit_from_records_builds_an_image_disjoint_split(trained: Path, scenes: Path) -> None:
    from eokit.grounding.split import read_split, verify_split

    config = json.loads((trained / "model.json").read_text())
    assert config["head_trained"] and config["input_view"] == "resize"
    assert config["trained_on"]["format"] == "synth"
    counts = verify_split(trained / "split")
    assert sum(counts.values()) == 8
    entries = read_split(trained / "split")
    images = [p for rows in entries.values() for _, p in rows]
    assert len(images) == len(set(images)) == 8  # no image in two splits
    train_hash = hashlib.sha256((trained / "split" / "train.txt").read_bytes()).hexdigest()
    assert config["trained_on"]["split_file"] == str(trained / "split" / "train.txt")
    assert config["trained_on"]["split_file_sha256"] == train_hash


def test_evaluate_on_the_test_split_names_it_and_writes_csv(trained: Path, scenes: Path,
                                                          tmp_path: Path,
                                                          run_cli: RunCli) -> None:
    out = tmp_path / "eval"
    code, stdout, err = run_cli(["grounding", "evaluate", str(trained), "-o", str(out),
                                 "--data", str(scenes), "--format", "synth", "--split",
                                 str(trained / "split"), "--tile", "64", "--overlap", "16"])
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    split_file = trained / "split" / "test.txt"
    assert metrics["split"]["split"] == "test"
    assert metrics["split"]["split_file_sha256"] == hashlib.sha256(
        split_file.read_bytes()).hexdigest()
    assert json.loads(stdout)["split"]["split_file"] == str(split_file)
    test_images = {line.split("  ", 1)[1] for line in split_file.read_text().splitlines()}
    rows = list(csv.DictReader((out / "expressions.csv").open()))
    assert rows and {Path(r["image"]).parent.name for r in rows} == {
        Path(p).parent.name for p in test_images}
    # the CSV's IoU is the IoU of its two boxes, and the dataset scores are their summary
    ious = []
    for row in rows:
        a = [float(v) for v in row["target_box_px"].split()]
        b = [float(v) for v in row["predicted_box_px"].split()]
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
        assert float(row["iou"]) == pytest.approx(iw * ih / union, abs=2e-3)
        ious.append(float(row["iou"]))
    grounding = metrics["grounding"]
    assert grounding["count"] == len(rows)
    assert grounding["meanIoU"] == pytest.approx(np.mean(ious), abs=1e-3)
    assert grounding["Pr@0.5"] == pytest.approx(np.mean(np.array(ious) >= 0.5), abs=1e-3)
    assert {"mAP@0.5", "mAP@[.5:.95]"} <= set(metrics["detection"])
    assert all(0 <= metrics["detection"][k] <= 1 for k in ("mAP@0.5", "mAP@[.5:.95]"))


def test_evaluate_on_simulated_scenes(trained: Path, tmp_path: Path, run_cli: RunCli) -> None:
    code, stdout, err = run_cli(["grounding", "evaluate", str(trained), "-o", str(tmp_path),
                                 "--simulate", "2", "--size", "64", "--seed", "9"])
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["split"] == {"split": "simulated", "scenes": 2, "size": 64, "seed": 9,
                                "expression_mix": "mixed"}
    assert summary["grounding"]["count"] >= 2


def test_detection_data_trains_the_detector_only(tmp_path: Path, run_cli: RunCli,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "dota"
    (root / "labelTxt").mkdir(parents=True)
    for n in range(4):
        write_image(root / "images" / f"P{n}.png", 96, 80, value=30 + 40 * n)
        (root / "labelTxt" / f"P{n}.txt").write_text(
            "imagesource:GoogleEarth\ngsd:0.5\n10 10 30 10 30 24 10 24 small-vehicle 0\n"
            "50 40 90 40 90 70 50 70 storage-tank 1\n")
    (root / "labelTxt" / "P9.txt").write_text("1 1 5 1 5 5 1 5 plane 0\n")  # label only
    model = tmp_path / "model"
    code, stdout, err = run_cli(["grounding", "fit", "-o", str(model), "--data", str(root),
                                 "--format", "dota", *SMOKE])
    assert code == 0, err
    assert "without an image are left out" in caplog.text
    summary = json.loads(stdout)
    assert summary["head_fit"] is None and summary["classes"] == ["small vehicle",
                                                                  "storage tank"]
    # 96 x 80 images in 64 px windows: several windows per training image
    assert summary["train_samples"] > summary["split"]["images_per_split"]["train"]
    code, _, err = run_cli(["grounding", "ground", str(model), str(root / "images" / "P0.png"),
                            "the vehicle", "-o", str(tmp_path / "a.geojson")])
    assert code == 2 and "untrained" in one_line(err)
    code, stdout, err = run_cli(["grounding", "evaluate", str(model), "-o", str(tmp_path / "e"),
                                 "--data", str(root), "--format", "dota", "--split",
                                 str(model / "split"), "--split-name", "train"])
    assert code == 0, err
    assert json.loads(stdout)["grounding"] is None


def test_ground_and_detect_reports(trained: Path, scenes: Path, tmp_path: Path,
                                   run_cli: RunCli) -> None:
    image = scenes / "scene0" / "image.tif"
    code, stdout, err = run_cli(["grounding", "ground", str(trained), str(image),
                                 "the largest ship", "-o", str(tmp_path / "a.geojson")])
    assert code == 0, err
    summary = json.loads(stdout)
    html = Path(summary["report"]).read_text()
    assert Path(summary["report"]) == tmp_path / "a.html"
    assert "data:image/png;base64" in html and "the largest ship" in html
    assert str(summary["box_px"][0]) in html and summary["crs"] in html
    assert "Top proposals" in html and '"Polygon"' in html.replace("&quot;", '"')
    code, stdout, err = run_cli(["grounding", "detect", str(trained), str(image), "-o",
                                 str(tmp_path / "b.geojson"), "--classes", "ship,volcano crater",
                                 "--score-threshold", "0"])
    assert code == 0, err
    summary = json.loads(stdout)
    html = Path(summary["report"]).read_text()
    assert "volcano crater" in html and "no (far)" in html and "data:image/png" in html
    code, stdout, _ = run_cli(["grounding", "detect", str(trained), str(image), "-o",
                               str(tmp_path / "c.geojson"), "--no-report"])
    assert "report" not in json.loads(stdout) and not (tmp_path / "c.html").exists()


def test_a_long_expression_is_truncated_with_a_warning(trained: Path, scenes: Path,
                                                       tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    from eokit.grounding.pipeline import ground_image, load_model

    model = load_model(trained)
    limit = model.text.encoder.max_length
    text = "the ship " + " ".join(["near the large white building"] * limit)
    with caplog.at_level(logging.WARNING):
        summary = ground_image(model, scenes / "scene0" / "image.tif", text,
                               tmp_path / "a.geojson", report_path=None)
    assert any("truncated" in r.getMessage() for r in caplog.records)
    assert summary["box_px"][2] > summary["box_px"][0]


def write_dior(root: Path, *, description: bool = True, box: tuple = (5, 5, 30, 30)) -> Path:
    (root / "Annotations").mkdir(parents=True)
    for n in range(3):
        write_image(root / "JPEGImages" / f"0000{n}.jpg", 64, 64, value=40 + 50 * n)
        (root / "Annotations" / f"0000{n}.xml").write_text(rsvg_xml(
            f"0000{n}.jpg", 64, 64, [("vehicle", box, "the vehicle on the left")],
            description=description))
    return root


@pytest.mark.parametrize("case,message", [
    ("no-description", "has no <description>"),
    ("box-outside", "outside"),
    ("missing", "not found"),
    ("no-format", "format"),
    ("leaky-split", "in more than one split"),
])
def test_fit_bad_input_is_one_line_exit_2(case: str, message: str, tmp_path: Path,
                                          run_cli: RunCli) -> None:
    root = tmp_path / "DIOR_RSVG"
    extra: list[str] = []
    if case == "no-description":
        write_dior(root, description=False)
    elif case == "box-outside":
        write_dior(root, box=(5, 5, 130, 30))
    elif case == "missing":
        root = tmp_path / "nowhere"
    else:
        write_dior(root)
    fmt = [] if case == "no-format" else ["--format", "dior-rsvg"]
    if case == "leaky-split":
        split = tmp_path / "split"
        split.mkdir()
        images = sorted((root / "JPEGImages").glob("*.jpg"))
        shutil.copy(images[0], root / "JPEGImages" / "copy.jpg")

        def line(p: Path) -> str:
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            return f"{digest}  ../DIOR_RSVG/JPEGImages/{p.name}\n"

        (split / "train.txt").write_text(line(images[0]) + line(images[1]))
        (split / "test.txt").write_text(line(root / "JPEGImages" / "copy.jpg") + line(images[2]))
        extra = ["--split", str(split)]
    out = tmp_path / "model"
    code, _, err = run_cli(["grounding", "fit", "-o", str(out), "--data", str(root), *fmt,
                            *extra, *SMOKE])
    assert code == 2
    line_ = one_line(err)
    assert message in line_, err
    if case == "leaky-split":
        assert "00000.jpg" in line_ and "copy.jpg" in line_
    assert not (out / "model.safetensors").exists()


def test_evaluate_bad_input(trained: Path, scenes: Path, tmp_path: Path,
                            run_cli: RunCli) -> None:
    base = ["grounding", "evaluate", str(trained), "-o", str(tmp_path / "e")]
    for argv, message in [
        ([], "either"),
        (["--data", str(scenes), "--simulate", "2"], "either"),
        (["--data", str(scenes), "--format", "synth", "--split", str(trained / "split"),
          "--split-name", "holdout"], "no split 'holdout'"),
    ]:
        code, _, err = run_cli([*base, *argv])
        assert code == 2 and message in one_line(err), err
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_open_set_names_are_allowed_and_far_ones_warn(trained: Path, scenes: Path,
                                                      tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from eokit.grounding.pipeline import detect_image, load_model

    with caplog.at_level(logging.WARNING):
        summary = detect_image(load_model(trained), scenes / "scene0" / "image.tif",
                               tmp_path / "d.geojson", classes=["boat", "volcano crater"],
                               score_threshold=0.0)
    assert set(summary["per_class"]) == {"boat", "volcano crater"}  # unseen names are searched
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'volcano crater' is far" in w for w in warned)
    assert not any("'boat'" in w for w in warned)  # close to "ship": no warning
    assert summary["vocabulary_similarity"]["boat"]["closest"] == "ship"


def test_agent_evaluate_tool_is_the_evaluate_function(trained: Path, scenes: Path,
                                                      tmp_path: Path) -> None:
    from eokit.core.tools import ToolSpec
    from eokit.grounding.tools import TOOLS, grounding_evaluate

    assert "grounding_evaluate" in {t.name for t in TOOLS if isinstance(t, ToolSpec)}
    result = grounding_evaluate(str(trained), str(tmp_path), str(scenes), "synth",
                                split_dir=str(trained / "split"), split_name="val")
    assert result["split"]["split"] == "val" and (tmp_path / "metrics.json").is_file()
