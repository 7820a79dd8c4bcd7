"""Degenerate inputs: a one-line error naming the file or parameter (exit 2, nothing written), or a
loud warning where the run still means something."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eokit.timeseries.model import (
    FineTunedSeriesModel,
    PixelSeriesTransformer,
    SeriesModelConfig,
    save_model,
)

DATES = ["2020-01-05", "2020-03-01", "2020-05-20", "2020-08-01"]
SHAPE = (6, 5)


@pytest.fixture
def world(tmp_path, write_test_geotiff):
    """Stacks (random, all-NaN, one date, constant), label rasters and a tiny backbone/model."""
    rng = np.random.default_rng(0)

    def stack(name, dates, make):  # noqa: ANN001, ANN202
        folder = tmp_path / name
        folder.mkdir()
        for date in dates:
            write_test_geotiff(folder / f"img_{date}.tif", make(), nodata=np.nan)
        return folder

    paths = {
        "good": stack("good", DATES, lambda: rng.uniform(0, 0.5, (2, *SHAPE)).astype(np.float32)),
        "nan": stack("nan", DATES, lambda: np.full((2, *SHAPE), np.nan, np.float32)),
        "single": stack("single", DATES[:1],
                        lambda: rng.uniform(0, 0.5, (2, *SHAPE)).astype(np.float32)),
        "constant": stack("constant", DATES, lambda: np.full((2, *SHAPE), 0.2, np.float32)),
    }
    labels = np.zeros(SHAPE, np.uint8)
    labels[:3] = 1
    paths["labels"] = write_test_geotiff(tmp_path / "labels.tif", labels)
    paths["unlabelled"] = write_test_geotiff(tmp_path / "unlabelled.tif",
                                             np.full(SHAPE, 255, np.uint8))
    paths["one_class"] = write_test_geotiff(tmp_path / "one_class.tif", np.ones(SHAPE, np.uint8))
    paths["shifted"] = write_test_geotiff(tmp_path / "shifted.tif", labels,
                                          origin=(510_000.0, 5_000_000.0))
    torch.manual_seed(0)
    backbone = PixelSeriesTransformer(SeriesModelConfig.from_size("tiny", 2, max_len=16))
    paths["backbone"] = save_model(backbone, tmp_path / "backbone.safetensors")
    model = FineTunedSeriesModel(backbone, 2, class_names=["none", "forest"]).eval()
    paths["model"] = save_model(model, tmp_path / "model.safetensors")
    return paths


QUIET = ["--trainer.enable_progress_bar", "false"]


def _finetune(world, tmp_path, series, labels, *extra):  # noqa: ANN001, ANN202
    return ["timeseries", "finetune", str(world[series]), "--backbone", str(world["backbone"]),
            "--labels", str(world[labels]), "--label-fraction", "1", "--epochs", "1",
            "--out", str(tmp_path / "ft"), *extra, *QUIET]


@pytest.mark.parametrize(("argv", "expected"), [
    (lambda w, t: ["timeseries", "predict", str(w["nan"]), "--model", str(w["model"]),
                   "--out", str(t / "out")], "nan: no valid observation"),
    (lambda w, t: ["timeseries", "pretrain", str(w["constant"]), "--out", str(t / "out"),
                   "--model-size", "tiny", "--epochs", "1", *QUIET],
     "constant: every band is constant over all pixels and dates (nothing to pretrain on)"),
    (lambda w, t: ["timeseries", "forecast", str(w["single"]), "--model", str(w["backbone"]),
                   "--out", str(t / "out")], "step_days: "),
    (lambda w, t: ["timeseries", "predict", str(w["good"]), "--model", str(w["model"]),
                   "--labels", str(w["unlabelled"]), "--out", str(t / "out")],
     "unlabelled.tif: no labelled pixel"),
    (lambda w, t: ["timeseries", "predict", str(w["good"]), "--model", str(w["model"]),
                   "--labels", str(w["shifted"]), "--out", str(t / "out")],
     "labels/series: labels ("),
], ids=["predict-all-nan", "pretrain-constant", "forecast-one-date", "predict-no-label",
        "predict-labels-other-grid"])
def test_degenerate_inputs_are_one_line_errors(world, tmp_path, run_cli, argv, expected):
    code, _, err = run_cli(argv(world, tmp_path))
    assert code == 2 and expected in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("series", "labels", "expected"), [
    ("good", "one_class", "one_class.tif: every labelled pixel is 'forest' among the pixels"),
    ("good", "unlabelled", "unlabelled.tif: no labelled pixel"),
    ("good", "shifted", "not on the same grid"),
    ("constant", "labels", "nothing to fine-tune on"),
])
def test_finetune_refuses_labels_or_series_without_anything_to_learn(world, tmp_path, run_cli,
                                                                     series, labels, expected):
    code, _, err = run_cli(_finetune(world, tmp_path, series, labels))
    assert code == 2 and expected in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "ft").exists()


def test_a_label_fraction_that_draws_one_class_is_refused(world, tmp_path, run_cli):
    code, _, err = run_cli(_finetune(world, tmp_path, "good", "labels")[:-len(QUIET)]
                           + ["--label-fraction", "0.04", *QUIET])  # 1 pixel of 30
    assert code == 2 and "label_fraction: every labelled pixel is" in err, err
    assert "in the 1 pixels drawn (raise --label-fraction)" in err


def test_one_date_and_single_class_references_warn_loudly(world, tmp_path, run_cli, caplog):
    with caplog.at_level("WARNING"):
        code, _, err = run_cli(["timeseries", "predict", str(world["single"]), "--model",
                                str(world["model"]), "--out", str(tmp_path / "p1")])
    assert code == 0, err
    assert "a single date" in caplog.text and "cannot hold any change" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        code, _, err = run_cli(["timeseries", "predict", str(world["good"]), "--model",
                                str(world["model"]), "--labels", str(world["one_class"]),
                                "--out", str(tmp_path / "p2"), "--no-refine-dates"])
    assert code == 0, err
    assert "every labelled pixel is 'forest': ROC and PR curves are undefined" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        code, _, err = run_cli(_finetune(world, tmp_path, "single", "labels"))
    assert code == 0, err
    assert "a single date" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        code, _, err = run_cli(["timeseries", "forecast", str(world["single"]), "--model",
                                str(world["backbone"]), "--steps", "2", "--step-days", "10",
                                "--out", str(tmp_path / "fc")])
    assert code == 0, err
    assert "a single date" in caplog.text


def test_constant_bands_are_named(world, caplog):
    from eokit.timeseries.data import check_informative, constant_bands, read_series

    data = read_series(world["good"])
    data.series[..., 1] = 3.0
    assert constant_bands(data) == ["b2"]
    with caplog.at_level("WARNING"):
        check_informative(data, what="pretrain on")
    assert "['b2'] are constant" in caplog.text


def test_constant_regression_targets_are_refused(world, tmp_path):
    from eokit.core.errors import InputError
    from eokit.timeseries.data import read_series
    from eokit.timeseries.model import load_model
    from eokit.timeseries.task import finetune

    backbone, _ = load_model(world["backbone"])
    data = read_series(world["good"])
    with pytest.raises(InputError, match="targets: all 30 training targets equal 4: nothing"):
        finetune(backbone, data, np.full(len(data), 4.0), tmp_path / "r", task="regression",
                 epochs=1, progress=False)
