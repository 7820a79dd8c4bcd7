"""Imagette readers (PNG quick-looks, sigma0 GeoTIFFs), normalisation, probes, and the CLI chain."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from tests.conftest import write_test_geotiff

from eokit.cli import main
from eokit.core.errors import InputError
from eokit.core.synth.sar_wave_mode import sar_wave_mode, write_imagette_folder
from eokit.curation.data import Normalisation, list_imagettes, load_imagettes
from eokit.curation.probe import classification_probe, regression_probe


def _run(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as done:
        code = done.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_quicklook_png_and_sigma0_geotiff(tmp_path):
    image = (np.arange(40 * 50) % 256).astype(np.uint8).reshape(40, 50)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    cv2.imwrite(str(tmp_path / "b.png"), image[::-1])
    stack = load_imagettes(list_imagettes(tmp_path), 32, Normalisation())
    assert stack.shape == (2, 1, 32, 32)
    expected = (image[4:36, 9:41].astype(np.float32) - 103.49) / 56.75
    assert np.allclose(stack[0, 0], expected, atol=1e-5)
    tif = tmp_path / "tif"
    tif.mkdir()
    db = np.full((24, 24), -18.0, dtype=np.float32)
    write_test_geotiff(tif / "s.tif", db)
    linear = 10 ** (db / 10)
    write_test_geotiff(tif / "t.tif", linear)
    as_db = load_imagettes([tif / "s.tif"], None, Normalisation.for_kind("sigma0_db"))
    as_linear = load_imagettes([tif / "t.tif"], None, Normalisation.for_kind("sigma0_linear"))
    assert np.allclose(as_db, (-18 + 15) / 6, atol=1e-4)
    assert np.allclose(as_linear, as_db, atol=1e-3)


def test_mixed_sizes_and_channels_are_refused(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 40), np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((30, 40), np.uint8))
    with pytest.raises(InputError, match="mixed sizes"):
        load_imagettes(list_imagettes(tmp_path), None, Normalisation())
    with pytest.raises(InputError, match="smaller than the crop size 32"):
        load_imagettes(list_imagettes(tmp_path), 32, Normalisation())
    cv2.imwrite(str(tmp_path / "c.png"), np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(InputError, match="3 channels"):
        load_imagettes([tmp_path / "c.png"], 16, Normalisation())


def test_probes_separate_easy_classes():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 6)) * 4
    y = np.repeat(np.arange(4), 60)
    x = centres[y] + rng.normal(size=(240, 6))
    train, test = np.arange(0, 240, 2), np.arange(1, 240, 2)
    for method in ("linear", "knn"):
        out = classification_probe(x[train], y[train], x[test], y[test], method=method,
                                   rare_classes=[3])
        assert out["balanced_accuracy"] > 0.95 and out["rare_class_accuracy"] > 0.9
    target = x @ np.arange(6) + 0.1 * rng.normal(size=240)
    reg = regression_probe(x[train], target[train], x[test], target[test])
    assert reg["rmse"] < 0.2 < reg["target_std"]
    shuffled = classification_probe(x[train], rng.permutation(y[train]), x[test], y[test])
    assert shuffled["balanced_accuracy"] < 0.5


@pytest.mark.slow
def test_simulate_pretrain_embed_probe_cluster(tmp_path, capsys):
    sims = tmp_path / "sim"
    assert _run(["curation", "simulate", "-o", str(sims), "--count", "48", "--size", "24"],
                capsys)[0] == 0
    run = tmp_path / "run"
    code, out, err = _run(["curation", "pretrain", str(sims), "-o", str(run), "--epochs", "2",
                           "--warmup", "1", "--period", "1", "--keep", "0.5", "--levels", "6,2",
                           "--labels", str(sims / "labels.csv"), "--batch-size", "16",
                           "--trainer.enable_progress_bar", "false"], capsys)
    assert code == 0, err
    rounds = json.loads((run / "curation_rounds.json").read_text())["rounds"]
    assert [r["epoch"] for r in rounds] == [1] and rounds[0]["kept"] == 24
    code, out, err = _run(["curation", "embed", str(run / "backbone.safetensors"), str(sims),
                           "-o", str(tmp_path / "emb.npy")], capsys)
    assert code == 0, err
    emb = np.load(tmp_path / "emb.npy")
    assert emb.shape[0] == 48 and np.isfinite(emb).all()
    code, out, err = _run(["curation", "probe", str(tmp_path / "emb.npy"),
                           str(sims / "labels.csv"), "-o", str(tmp_path / "scores.json")],
                          capsys)
    assert code == 0, err
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert "linear" in scores and "wind_speed_m_s_ridge" in scores
    code, out, err = _run(["curation", "cluster", str(tmp_path / "emb.npy"), "--levels", "6,2",
                           "-o", str(tmp_path / "cl"), "--images",
                           str(tmp_path / "emb.npy.files.txt")], capsys)
    assert code == 0, err


def test_pretrain_refuses_mixed_sizes_in_one_line(tmp_path, capsys):
    data = sar_wave_mode(4, size=16, seed=0)
    folder = write_imagette_folder(data, tmp_path / "sim")
    cv2.imwrite(str(folder / "zz.png"), np.zeros((20, 20), np.uint8))
    code, _, err = _run(["curation", "pretrain", str(folder), "-o", str(tmp_path / "run"),
                         "--epochs", "1"], capsys)
    assert code == 2 and "mixed sizes" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(["curation", "pretrain", str(folder), "-o", str(tmp_path / "run"),
                         "--keep", "1.5"], capsys)
    assert code == 2 and "keep" in err
