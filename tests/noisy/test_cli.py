"""eokit noisy corrupt/fit/predict/evaluate end to end, and one-line errors on bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from PIL import Image
from tests.conftest import write_test_geotiff

from eokit.cli import main


def _run(argv: list[str], capsys: Any) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def trained(xbd_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    from eokit.noisy.pipeline import corrupt_folder, fit_folder

    corrupt_folder(xbd_folder, run / "noisy", level="L2")
    fit_folder(xbd_folder, run / "fit", labels_dir=run / "noisy" / "labels", epochs=1, tile=32,
               batch_size=4, pretrained=False, estep=2)
    return run


def test_corrupt_writes_noisy_geotiffs_and_rates(trained: Path) -> None:
    record = json.loads((trained / "noisy" / "noise.json").read_text())
    assert record["level"] == "L2" and len(record["files"]) == 3
    for key in record["files"]:
        with rasterio.open(trained / "noisy" / "labels" / f"{key}.tif") as src:
            values = set(np.unique(src.read(1)).tolist())
            assert values <= {0, 1}
            assert src.colormap(1)[1][:3] == (230, 60, 40)


def test_fit_writes_model_error_maps_and_report(trained: Path) -> None:
    fit = trained / "fit"
    assert (fit / "model.safetensors").is_file() and (fit / "checkpoints" / "last.ckpt").is_file()
    maps = sorted((fit / "error_maps").glob("*.tif"))
    assert maps
    with rasterio.open(maps[0]) as src:
        error = src.read(1)
    assert error.shape == (32, 32) and 0.0 <= error.min() and error.max() <= 1.0
    html = (fit / "report.html").read_text()
    assert "label-error" in html and "Clean label" in html
    metrics = json.loads((fit / "metrics.json").read_text())
    assert {"val_noisy", "val_clean"} <= set(metrics)


def test_predict_streams_to_class_cog_on_the_input_grid(trained: Path, tmp_path: Path,
                                                        capsys: Any) -> None:
    image = write_test_geotiff(tmp_path / "scene.tif",
                               np.random.default_rng(0).integers(0, 255, (3, 70, 90),
                                                                 dtype=np.uint8),
                               pixel_size=0.5)
    code, out, err = _run(["noisy", "predict", str(trained / "fit"), str(image), "-o",
                           str(tmp_path / "pred"), "--tile", "64", "--overlap", "32"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    with rasterio.open(summary["classes"]) as src, rasterio.open(image) as ref:
        assert src.crs == ref.crs and src.transform == ref.transform
        assert src.shape == ref.shape and src.dtypes[0] == "uint8"
        assert src.colormap(1)[1][:3] == (230, 60, 40)
        classes = src.read(1)
    assert set(np.unique(classes).tolist()) <= {0, 1}
    total = sum(summary["class_area"].values())
    assert total == pytest.approx(70 * 90 * 0.25)
    with rasterio.open(summary["probability"]) as src:
        prob = src.read()
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-4)
    assert np.array_equal(prob.argmax(0), classes)


def test_predict_scales_uint16_reflectance_as_training_did(trained: Path, tmp_path: Path) -> None:
    from eokit.noisy.pipeline import predict_image

    rng = np.random.default_rng(1)
    byte = rng.integers(0, 255, (3, 64, 64), dtype=np.uint8)
    # the same 0-1 values as uint8 (/255) and as uint16 reflectance (/10000, as fit reads them)
    word = np.round(byte.astype(np.float64) / 255 * 10000).astype(np.uint16)
    a = predict_image(trained / "fit", write_test_geotiff(tmp_path / "b.tif", byte),
                      tmp_path / "a", tile=64, overlap=0)
    b = predict_image(trained / "fit", write_test_geotiff(tmp_path / "w.tif", word),
                      tmp_path / "b", tile=64, overlap=0)
    with rasterio.open(a["probability"]) as pa, rasterio.open(b["probability"]) as pb:
        np.testing.assert_allclose(pa.read(), pb.read(), atol=1e-3)


def test_evaluate_reports_dataset_level_iou(trained: Path, xbd_folder: Path,
                                            capsys: Any) -> None:
    code, out, err = _run(["noisy", "evaluate", str(trained / "fit"), str(xbd_folder)], capsys)
    assert code == 0, err
    metrics = json.loads(out.replace("NaN", "null"))
    assert metrics["tiles"] == 12 and metrics["n"] == 12 * 32 * 32


def _copy(xbd_folder: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(xbd_folder, root)
    return root


def test_label_value_outside_classes_is_one_line_exit_2(xbd_folder: Path, tmp_path: Path,
                                                        capsys: Any) -> None:
    root = _copy(xbd_folder, tmp_path)
    mask = next((root / "masks").glob("*.png"))
    data = np.array(Image.open(mask))
    data[0, 0] = 7
    Image.fromarray(data).save(mask)
    code, _, err = _run(["noisy", "corrupt", str(root), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "[7]" in err and mask.name in err and len(err.strip().splitlines()) == 1


def test_shape_mismatch_and_empty_folder_refused(xbd_folder: Path, tmp_path: Path,
                                                 capsys: Any) -> None:
    root = _copy(xbd_folder, tmp_path)
    mask = next((root / "masks").glob("*.png"))
    Image.fromarray(np.zeros((10, 12), dtype=np.uint8)).save(mask)
    code, _, err = _run(["noisy", "corrupt", str(root), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "12x10" not in err and "10x12" in err
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    code, _, err = _run(["noisy", "corrupt", str(empty), "-o", str(tmp_path / "o2")], capsys)
    assert code == 2 and "no image/label pairs" in err


def test_rho_outside_unit_interval_refused(xbd_folder: Path, tmp_path: Path,
                                           capsys: Any) -> None:
    code, _, err = _run(["noisy", "fit", str(xbd_folder), "-o", str(tmp_path / "r"),
                         "--rho", "1.0"], capsys)
    assert code == 2 and "--rho" in err
    assert not (tmp_path / "r").exists()


def test_simulate_writes_a_folder_corrupt_reads(tmp_path: Path, capsys: Any) -> None:
    from eokit.noisy.data import find_pairs, simulated_buildings

    code, out, _ = _run(["noisy", "simulate", "-o", str(tmp_path / "bld"), "--scenes", "2",
                         "--size", "96", "--seed", "3"], capsys)
    assert code == 0
    summary = json.loads(out)
    assert summary["files"] == 2 and 0.0 < summary["building_fraction"] < 1.0
    pairs = find_pairs(tmp_path / "bld")
    expected = {t.key: t for t in simulated_buildings(2, 96, seed=3)}
    assert sorted(key for key, _, _ in pairs) == sorted(expected)
    for key, image_path, label_path in pairs:
        with rasterio.open(label_path) as src:
            mask = src.read(1)
            assert src.crs == expected[key].grid.crs
        assert set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, expected[key].clean.astype(bool))
        with rasterio.open(image_path) as src:
            assert src.count == 3 and src.dtypes[0] == "uint8"
    code, out, _ = _run(["noisy", "corrupt", str(tmp_path / "bld"), "-o",
                         str(tmp_path / "noisy"), "--level", "L2"], capsys)
    assert code == 0 and json.loads(out)["files"] == 2


def test_issues_writes_maps_that_match_the_summary(trained: Path, xbd_folder: Path,
                                                   tmp_path: Path, capsys: Any) -> None:
    pytest.importorskip("cleanlab")
    out = tmp_path / "issues"
    code, text, _ = _run(["noisy", "issues", str(trained / "fit"), str(xbd_folder), "-o",
                          str(out), "--labels", str(trained / "noisy" / "labels")], capsys)
    assert code == 0, text
    summary = json.loads(text)
    assert summary["files"] == 3 and "against_clean_labels" in summary
    record = json.loads((out / "issues.json").read_text())
    flagged = labelled = 0
    for key, entry in record["per_file"].items():
        with rasterio.open(out / "issues" / f"{key}.tif") as src:
            data = src.read(1)
        assert data.shape == (64, 64) and set(np.unique(data)) <= {0, 1, 255}
        valid = data != 255
        assert entry["flagged_fraction"] == pytest.approx(float((data[valid] == 1).mean()))
        flagged += int((data == 1).sum())
        labelled += int(valid.sum())
    assert summary["flagged_fraction"] == pytest.approx(flagged / labelled)
    agreement = summary["against_clean_labels"]
    assert agreement["flagged"] == flagged
    code, _, err = _run(["noisy", "issues", str(tmp_path / "nothing"), str(xbd_folder), "-o",
                         str(tmp_path / "x")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
