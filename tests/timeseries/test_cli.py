"""End-to-end CLI: simulate -> pretrain -> finetune -> predict -> forecast, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "timeseries" / "pretrain_tiny_cpu.yaml"


@pytest.mark.slow
def test_cli_pipeline(tmp_path, run_cli, monkeypatch):
    sim = tmp_path / "sim"
    code, out, err = run_cli(["timeseries", "simulate", str(sim), "--size", "16", "--years", "1",
                             "--seed", "2"])
    assert code == 0, err
    run = tmp_path / "run"
    code, out, err = run_cli(["timeseries", "pretrain", str(sim / "stack"), "--out", str(run),
                             "--config", str(CONFIG), "--epochs", "1", "--batch-size", "64",
                             "--trainer.enable_progress_bar", "false"])
    assert code == 0, err
    assert "pretraining:" in out and (run / "backbone.safetensors").is_file()
    code, out, err = run_cli(["timeseries", "finetune", str(sim / "stack"), "--backbone",
                             str(run / "backbone.safetensors"), "--labels",
                             str(sim / "canopy_last.tif"), "--classes", "none,conifer,broadleaf",
                             "--label-fraction", "0.1", "--epochs", "2", "--memory", "4",
                             "--residuals", "--input-lags", "6",
                             "--out", str(run / "ft"),
                             "--trainer.enable_progress_bar", "false"])
    assert code == 0, err
    assert "% of pretraining" in out
    from eokit.timeseries.model import load_model

    backbone, _ = load_model(run / "backbone.safetensors")
    assert backbone.config.d_model == 32 and backbone.config.n_layers == 2  # from the config
    model, meta = load_model(run / "ft" / "model.safetensors")
    assert meta["compute"]["flops_ratio"] > 0
    assert model.memory == 4
    assert model.feature_config.residuals and model.feature_config.input_lags == 6
    assert meta["compute"]["pretraining"]["tokens"] > meta["compute"]["finetuning"]["tokens"]
    assert meta["compute"]["finetuning"]["phase"] == "finetuning (head)"
    maps = tmp_path / "maps"
    code, out, err = run_cli(["timeseries", "predict", str(sim / "stack"), "--model",
                             str(run / "ft" / "model.safetensors"), "--out", str(maps),
                             "--dates", "2019-06-30,2019-12-10", "--labels",
                             str(sim / "canopy_last.tif"), "--rows-per-block", "5"])
    assert code == 0, err
    assert "forecasting head was not" not in err  # head-only fine-tuning: no caveat
    dates = json.loads((sim / "events.json").read_text())["dates"]
    june = min(dates, key=lambda d: abs(np.datetime64(d) - np.datetime64("2019-06-30")))
    assert f"dates: 2019-06-30 -> {june}" in out
    with rasterio.open(maps / f"probability_{june}.tif") as src:
        probs = src.read()
        assert src.count == 3 and src.crs.to_epsg() == 32633
        assert src.descriptions == ("none", "conifer", "broadleaf")
        assert src.nodata == -1
    ok = probs[0] >= 0
    assert np.allclose(probs[:, ok].sum(0), 1.0, atol=1e-4)
    assert (maps / "becomes_forest.tif").is_file() and (maps / "stops_forest.tif").is_file()
    with rasterio.open(maps / "stops_forest.tif") as a, \
            rasterio.open(maps / "stops_forest_refined.tif") as b:
        assert b.crs == a.crs and b.transform == a.transform
        assert ((b.read(1) == 0) == (a.read(1) == 0)).all() and (b.read(1) <= a.read(1)).all()
    half = tmp_path / "maps_bf16"
    code, out, err = run_cli(["timeseries", "predict", str(sim / "stack"), "--model",
                             str(run / "ft" / "model.safetensors"), "--out", str(half),
                             "--dates", "2019-06-30", "--dtype", "bfloat16"])
    assert code == 0, err
    with rasterio.open(half / f"probability_{june}.tif") as src:
        assert np.abs(src.read()[:, ok] - probs[:, ok]).max() < 0.05
    html = (maps / "report.html").read_text()
    assert "ROC" in html and "Forecast" in html
    smooth = tmp_path / "maps_3x3"
    code, out, err = run_cli(["timeseries", "predict", str(sim / "stack"), "--model",
                             str(run / "ft" / "model.safetensors"), "--out", str(smooth),
                             "--dates", "2019-06-30", "--spatial-window", "3",
                             "--no-refine-dates"])
    assert code == 0, err
    with rasterio.open(smooth / f"probability_{june}.tif") as src:
        averaged = src.read()
    from eokit.timeseries.predict import spatial_mean

    expected = spatial_mean(np.where(probs < 0, np.nan, probs).transpose(1, 2, 0), 3)
    assert np.allclose(averaged[:, ok], expected.transpose(2, 0, 1)[:, ok], atol=1e-5)
    assert "3 x 3 pixel neighbourhoods" in (smooth / "report.html").read_text()
    code, out, err = run_cli(["timeseries", "predict", str(sim / "stack"), "--model",
                             str(run / "ft" / "model.safetensors"), "--out",
                             str(tmp_path / "bad"), "--spatial-window", "4"])
    assert code != 0 and "spatial_window: must be an odd integer >= 1, got 4" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    code, out, err = run_cli(["timeseries", "predict", str(sim / "stack"), "--model",
                             str(run / "ft" / "model.safetensors"), "--out",
                             str(tmp_path / "bad_labels"), "--labels",
                             str(sim / "canopy_last.tif"), "--label-map", "*:7"])
    assert code != 0 and "canopy_last.tif: label values [7] are outside the 3 classes" in err
    assert not (tmp_path / "bad_labels").exists()  # labels are read before any map is written
    fc = tmp_path / "fc"
    code, out, err = run_cli(["timeseries", "forecast", str(sim / "stack"), "--model",
                             str(run / "backbone.safetensors"), "--steps", "2", "--out", str(fc)])
    assert code == 0, err
    assert len(list(fc.glob("forecast_*.tif"))) == 2 and (fc / "forecast_pixels.csv").is_file()
    with rasterio.open(fc / "departure_peak.tif") as a, \
            rasterio.open(fc / "departure_date.tif") as b:
        assert a.crs == b.crs and a.crs.to_epsg() == 32633 and a.transform == b.transform
        peak, when = a.read(1), b.read(1)
    observed = peak != -9999.0
    assert observed.any() and (peak[observed] >= 0).all() and ((when != 0) == observed).all()
    first, last = (int(d.replace("-", "")) for d in (dates[0], dates[-1]))
    assert ((when[observed] > first) & (when[observed] <= last)).all()

    # One-line errors: band count, labels outside the classes, dates not increasing.
    bad = tmp_path / "bad_stack"
    bad.mkdir()
    with rasterio.open(sim / "stack" / f"S2_{dates[0]}.tif") as src:
        profile = src.profile
        data = src.read()
    profile.update(count=2)
    for d in dates[:3]:
        with rasterio.open(bad / f"x_{d}.tif", "w", **profile) as dst:
            dst.write(data[:2])
    code, out, err = run_cli(["timeseries", "predict", str(bad), "--model",
                             str(run / "ft" / "model.safetensors"), "--out", str(tmp_path / "m2")])
    assert code == 2 and "2 bands but the model expects 6" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m2" / f"probability_{dates[0]}.tif").exists()
    code, out, err = run_cli(["timeseries", "finetune", str(sim / "stack"), "--backbone",
                             str(run / "backbone.safetensors"), "--labels",
                             str(sim / "landcover.tif"), "--classes", "none,forest",
                             "--out", str(tmp_path / "ft2")])
    assert code == 2 and "outside the 2 classes" in err and len(err.splitlines()) == 1
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for command in ("predict", "forecast"):
        code, out, err = run_cli(["timeseries", command, str(sim / "stack"), "--model",
                                 str(run / "ft" / "model.safetensors"), "--device", "cuda",
                                 "--out", str(tmp_path / "m3")])
        assert code == 2 and "no CUDA GPU" in err and len(err.splitlines()) == 1
        assert not (tmp_path / "m3").exists()


def test_cli_presto_regression(tmp_path, run_cli):
    folder = tmp_path / "fuel" / "npy"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.uniform(100, 3000, size=(40, 3, 18))
    np.save(folder / "s1_s2_era5_srtm.npy", x)
    np.save(folder / "month.npy", np.tile([4, 5, 6], (40, 1)))
    np.save(folder / "target.npy", x[:, -1, 8] / 30.0)
    np.save(folder / "is_test.npy", (np.arange(40) % 4 == 0).astype(int))
    run = tmp_path / "run"
    code, out, err = run_cli(["timeseries", "pretrain", str(tmp_path / "fuel"), "--out", str(run),
                             "--model-size", "tiny", "--epochs", "1",
                             "--trainer.enable_progress_bar", "false"])
    assert code == 0, err
    code, out, err = run_cli(["timeseries", "finetune", str(tmp_path / "fuel"), "--backbone",
                             str(run / "backbone.safetensors"), "--task", "regression",
                             "--mode", "full", "--backbone-lr-scale", "0.1", "--loss", "huber",
                             "--label-fraction", "0.7", "--epochs", "2", "--out", str(run / "ft"),
                             "--trainer.enable_progress_bar", "false"])
    assert code == 0, err
    assert "fine-tuning (full)" in out
    code, out, err = run_cli(["timeseries", "predict", str(tmp_path / "fuel"), "--model",
                             str(run / "ft" / "model.safetensors"), "--out", str(tmp_path / "p")])
    assert code == 0, err
    assert "test split: rmse" in out and "(n=10)" in out
    lines = (tmp_path / "p" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "sample,prediction,target,is_test" and len(lines) == 41


def test_refined_dates_carry_a_caveat_when_the_backbone_was_fine_tuned():
    from eokit.timeseries.cli import refinement_caveat

    def meta(phase):
        return {"compute": {"finetuning": {"phase": phase}}}

    assert refinement_caveat(meta("finetuning (head)")) is None
    assert refinement_caveat({}) is None  # no record: nothing to say
    for mode in ("full", "lora"):
        assert f"finetuning ({mode})" in refinement_caveat(meta(f"finetuning ({mode})"))


@pytest.mark.parametrize(("edit", "expected"), [
    ("pretrain:\n  epoch: 2\n", "pretrain: unknown key 'epoch' (did you mean 'epochs'?)"),
    ("trainer:\n  max_epoch: 2\n", "trainer: unknown Trainer option 'max_epoch'"),
    ("pretrian:\n  epochs: 2\n", "unknown key 'pretrian' (did you mean 'pretrain'?)"),
])
def test_pretrain_config_typos_are_named_before_the_data_are_read(tmp_path, run_cli, edit,
                                                                  expected):
    config = tmp_path / "pretrain.yaml"
    config.write_text(f"model:\n  class_path: eokit.timeseries.model.SeriesModelConfig\n{edit}")
    run = tmp_path / "run"
    # the input does not exist: the config error must come first
    code, _, err = run_cli(["timeseries", "pretrain", str(tmp_path / "missing"), "--out",
                            str(run), "--config", str(config)])
    assert code == 2 and expected in err, err
    assert len(err.strip().splitlines()) == 1 and not run.exists()


DATES = ["2020-01-05", "2020-03-01", "2020-05-20", "2020-08-01"]


@pytest.fixture
def tiny_stack_and_model(tmp_path, write_test_geotiff):
    """A 2-band, 4-date GeoTIFF stack and an untrained fine-tuned model saved for it."""
    import torch

    from eokit.timeseries.model import (
        FineTunedSeriesModel,
        PixelSeriesTransformer,
        SeriesModelConfig,
        save_model,
    )

    stack = tmp_path / "stack"
    stack.mkdir()
    rng = np.random.default_rng(0)
    for date in DATES:
        write_test_geotiff(stack / f"img_{date}.tif",
                           rng.uniform(0, 0.5, size=(2, 6, 5)).astype(np.float32), nodata=np.nan)
    torch.manual_seed(0)
    backbone = PixelSeriesTransformer(SeriesModelConfig.from_size("tiny", 2, max_len=16))
    model = FineTunedSeriesModel(backbone, 2, class_names=["none", "forest"]).eval()
    return stack, save_model(model, tmp_path / "model.safetensors")


def test_predict_says_which_acquisition_each_date_maps_to(tmp_path, run_cli,
                                                         tiny_stack_and_model):
    stack, model = tiny_stack_and_model
    out_dir = tmp_path / "maps"
    code, out, err = run_cli(["timeseries", "predict", str(stack), "--model", str(model),
                             "--out", str(out_dir), "--dates", "2020-05-12,2020-08-01",
                             "--no-refine-dates"])
    assert code == 0, err
    assert "dates: 2020-05-12 -> 2020-05-20 (8 days later)" in out
    assert "dates: 2020-08-01 -> 2020-08-01 (same day)" in out
    with rasterio.open(out_dir / "probability_2020-05-20.tif") as src:
        assert src.tags()["requested_dates"] == "2020-05-12"
    html = (out_dir / "report.html").read_text()
    assert "mapped at acquisition" in html and "2020-05-12" in html
    # Far from every acquisition: one line naming --dates, nothing written.
    for value, where in (("2020-04-10", "in a gap"), ("2021-06-30", "after the last")):
        refused = tmp_path / f"refused_{value}"
        code, out, err = run_cli(["timeseries", "predict", str(stack), "--model", str(model),
                                 "--out", str(refused), "--dates", value])
        assert code == 2 and f"dates: {value} is {where}" in err, err
        assert len(err.strip().splitlines()) == 1 and not refused.exists()
    code, out, err = run_cli(["timeseries", "predict", str(stack), "--model", str(model),
                             "--out", str(tmp_path / "wide"), "--dates", "2020-04-10",
                             "--date-tolerance-days", "60", "--no-refine-dates"])
    assert code == 0 and "dates: 2020-04-10 -> 2020-03-01 (40 days earlier)" in out, err


def _presto(folder: Path, n: int = 40) -> np.ndarray:
    """A Presto-format export whose test samples (every 4th) have inputs 100x the others'."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.uniform(100, 3000, size=(n, 3, 18))
    is_test = (np.arange(n) % 4 == 0).astype(int)
    x[is_test == 1] *= 100.0
    np.save(folder / "s1_s2_era5_srtm.npy", x)
    np.save(folder / "month.npy", np.tile([4, 5, 6], (n, 1)))
    np.save(folder / "target.npy", x[:, -1, 8] / 30.0)
    np.save(folder / "is_test.npy", is_test)
    return is_test


def test_presto_pretraining_never_sees_the_test_inputs(tmp_path, run_cli):
    is_test = _presto(tmp_path / "fuel" / "npy")
    run = tmp_path / "run"
    code, out, err = run_cli(["timeseries", "pretrain", str(tmp_path / "fuel"), "--out", str(run),
                             "--model-size", "tiny", "--epochs", "1",
                             "--trainer.enable_progress_bar", "false"])
    assert code == 0, err
    from eokit.timeseries.model import load_model

    backbone, meta = load_model(run / "backbone.safetensors")
    # The band scaling comes from the pretraining inputs: with the test samples (x100) in them
    # the 99th percentile, and so centre + half range, would reach far above 3000.
    top = (backbone.band_center + backbone.band_half_range)[:13]
    assert float(top.max()) < 3100
    pixels = meta["compute"]["pretraining"]["pixels"]
    assert pixels <= int((is_test == 0).sum())  # training samples only (minus validation)


def test_finetune_defaults_suit_the_task_and_take_lr_patience_seed(tmp_path, run_cli,
                                                                   monkeypatch):
    _presto(tmp_path / "fuel" / "npy")
    from eokit.timeseries import task as task_module
    from eokit.timeseries.model import PixelSeriesTransformer, SeriesModelConfig, save_model

    backbone = PixelSeriesTransformer(SeriesModelConfig.from_size("tiny", 18, max_len=16))
    path = save_model(backbone, tmp_path / "backbone.safetensors")
    seen: dict = {}
    real = task_module.finetune

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.update(kwargs, n=len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(task_module, "finetune", recording)
    code, out, err = run_cli(["timeseries", "finetune", str(tmp_path / "fuel"), "--backbone",
                             str(path), "--task", "regression", "--epochs", "2", "--lr", "1e-3",
                             "--patience", "3", "--seed", "5", "--out", str(tmp_path / "ft"),
                             "--trainer.enable_progress_bar", "false"])
    assert code == 0, err
    # Every one of the 30 training samples, not 3 % of all 40 (1 sample).
    assert seen["n"] == 30 and "30 labelled pixels" in out
    assert (seen["lr"], seen["patience"], seen["seed"]) == (1e-3, 3, 5)
    from eokit.timeseries.cli import default_label_fraction
    from eokit.timeseries.data import SeriesData

    raster = SeriesData(series=np.zeros((4, 2, 1), np.float32), valid=np.ones((4, 2), bool),
                        doy=np.ones((4, 2), np.float32), band_names=["b"], shape=(2, 2))
    assert default_label_fraction("classification", raster) == 0.03
    assert default_label_fraction("regression", raster) == 1.0
    assert "0.03 for classification of a raster" in " ".join(
        run_cli(["timeseries", "finetune", "--help"])[1].split())


def test_finetune_ensemble_averages_its_heads(tmp_path, run_cli):
    import torch

    from eokit.timeseries.data import read_presto_npy
    from eokit.timeseries.model import (
        PixelSeriesTransformer,
        SeriesModelConfig,
        load_model,
        save_model,
    )

    _presto(tmp_path / "fuel" / "npy")
    torch.manual_seed(0)
    backbone = PixelSeriesTransformer(SeriesModelConfig.from_size("tiny", 18, max_len=16))
    path = save_model(backbone, tmp_path / "backbone.safetensors")
    base = ["timeseries", "finetune", str(tmp_path / "fuel"), "--backbone", str(path), "--task",
            "regression", "--epochs", "3", "--trainer.enable_progress_bar", "false"]
    code, out, err = run_cli([*base, "--ensemble", "3", "--out", str(tmp_path / "ens")])
    assert code == 0, err
    assert "fine-tuning (head, 3 heads): 30 labelled pixels" in out
    model, _ = load_model(tmp_path / "ens" / "model.safetensors")
    assert model.members == 3
    data = read_presto_npy(tmp_path / "fuel")
    series, doy, valid = data.tensors()
    with torch.no_grad():
        features = model.features(series, doy, valid)
        each = [h(features)[..., 0] * model.target_std + model.target_mean
                for h in (model.head, *model.extra_heads)]
    assert not torch.allclose(each[0], each[1])  # other seeds, other heads
    assert torch.allclose(model.predict(series, doy, valid), torch.stack(each).mean(0),
                          atol=1e-5)
    # The first member is the single-seed model of the same seed.
    code, out, err = run_cli([*base, "--out", str(tmp_path / "one")])
    assert code == 0, err
    single, _ = load_model(tmp_path / "one" / "model.safetensors")
    assert torch.allclose(single.predict(series, doy, valid), each[0], atol=1e-5)
    code, out, err = run_cli([*base, "--ensemble", "2", "--mode", "full",
                             "--out", str(tmp_path / "bad")])
    assert code == 2 and "ensemble: averages heads on one frozen backbone" in err
    assert not (tmp_path / "bad").exists()
