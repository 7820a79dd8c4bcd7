import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml

from eokit.change.model import build_canet
from eokit.change.task import prepare_adapt, save_domain_adapter, save_model
from eokit.cli import main
from eokit.core.raster import write_raster
from eokit.core.synth.change import change_pair, write_change_dataset


def _run(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as done:
        code = done.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def model_file(tmp_path):
    model = build_canet(["sim_buildings", "sim_landcover"], in_channels=6)
    return save_model(model, tmp_path / "model.safetensors")


@pytest.fixture
def pair_files(tmp_path):
    pair = change_pair(72, seed=5, domain="sim_buildings")
    folder = tmp_path / "pair"
    folder.mkdir()
    return {
        "A": write_raster(folder / "A.tif", pair.image_a, pair.grid),
        "B": write_raster(folder / "B.tif", pair.image_b, pair.grid),
        "label": write_raster(folder / "label.tif", (pair.label * 255).astype(np.uint8),
                              pair.grid),
    }


def test_predict_writes_georeferenced_cogs_and_report(tmp_path, model_file, pair_files, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = _run(
        ["change", "predict", str(pair_files["A"]), str(pair_files["B"]), "--checkpoint",
         str(model_file), "--domain", "sim_buildings", "--label", str(pair_files["label"]),
         "-o", str(out), "--tile", "64", "--overlap", "32"],
        capsys,
    )
    assert code == 0, stderr
    with rasterio.open(pair_files["A"]) as src_a:
        transform, crs = src_a.transform, src_a.crs
    for name, dtype in (("change_probability.tif", "float32"), ("change_binary.tif", "uint8")):
        with rasterio.open(out / name) as src:
            assert src.crs == crs and src.transform == transform
            assert src.dtypes[0] == dtype and src.shape == (72, 72)
            data = src.read(1)
    assert set(np.unique(data)) <= {0, 1}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pixels"] == 72 * 72 and 0 <= metrics["oa"] <= 1
    html = (out / "report.html").read_text()
    assert "Change between the two dates" in html and "kappa" in html
    assert html.count("<img") >= 5  # A, B, probability, label, binary
    assert "F1" in stdout


def test_predict_bad_inputs_one_line_errors_nothing_written(
    tmp_path, model_file, pair_files, capsys, grid_factory
):
    out = tmp_path / "bad"
    base = ["change", "predict", str(pair_files["A"]), str(pair_files["B"]), "--checkpoint",
            str(model_file), "-o", str(out)]
    code, _, err = _run([*base, "--domain", "levir"], capsys)
    assert code == 2 and "unknown dataset 'levir'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    other = write_raster(tmp_path / "other.tif", np.zeros((6, 30, 30), np.float32) + 0.1,
                         grid_factory(width=30, height=30))
    code, _, err = _run(["change", "predict", str(pair_files["A"]), str(other), "--checkpoint",
                         str(model_file), "--domain", "sim_buildings", "-o", str(out)], capsys)
    assert code == 2 and "not on the same grid" in err
    assert not (out / "change_probability.tif").exists()
    # adapter trained on another base model
    other_model = build_canet(["sim_buildings", "sim_landcover"], in_channels=6)
    prepare_adapt(other_model, "sim_new")
    adapter = save_domain_adapter(other_model, "sim_new", tmp_path / "a.safetensors")
    code, _, err = _run([*base, "--domain", "sim_new", "--adapter", str(adapter)], capsys)
    assert code == 2 and "base" in err
    assert not (out / "change_probability.tif").exists()
    # a label with a value outside {0, 1, 255}: refused before any output is written
    label = write_raster(tmp_path / "label3.tif", np.full((1, 72, 72), 3, np.uint8),
                         grid_factory(width=72, height=72))
    code, _, err = _run([*base, "--domain", "sim_buildings", "--label", str(label)], capsys)
    assert code == 2 and "label3.tif" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    for option, value, message in (("--tile", "0", "tile: must be a positive integer"),
                                   ("--overlap", "800", "overlap: must be in 0..tile-1"),
                                   ("--threshold", "1", "Invalid value for '--threshold'")):
        code, _, err = _run([*base, "--domain", "sim_buildings", option, value], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
        assert not out.exists()


def test_predict_and_evaluate_on_a_missing_gpu_fail_before_writing(
    tmp_path, model_file, pair_files, capsys, monkeypatch
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu"
    code, _, err = _run(["change", "predict", str(pair_files["A"]), str(pair_files["B"]),
                         "--checkpoint", str(model_file), "--domain", "sim_buildings",
                         "-o", str(out), "--device", "cuda"], capsys)
    assert code == 2 and "no CUDA GPU" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    root = tmp_path / "levir"
    write_change_dataset(root, count=3, size=32, seed=1)
    code, _, err = _run(["change", "evaluate", str(root), "--checkpoint", str(model_file),
                         "--domain", "sim_buildings", "-o", str(out), "--device", "cuda:1"],
                        capsys)
    assert code == 2 and "no CUDA GPU" in err and not out.exists()


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_predict_and_evaluate_on_cuda_match_cpu(tmp_path, model_file, pair_files, capsys):
    probabilities, metrics = {}, {}
    root = tmp_path / "levir"
    write_change_dataset(root, count=3, size=32, seed=1)
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        code, _, err = _run(["change", "predict", str(pair_files["A"]), str(pair_files["B"]),
                             "--checkpoint", str(model_file), "--domain", "sim_buildings",
                             "-o", str(out), "--tile", "64", "--overlap", "32",
                             "--device", device], capsys)
        assert code == 0, err
        with rasterio.open(out / "change_probability.tif") as src:
            probabilities[device] = src.read(1)
        code, _, err = _run(["change", "evaluate", str(root), "--checkpoint", str(model_file),
                             "--domain", "sim_buildings", "-o", str(out / "ev"),
                             "--device", device], capsys)
        assert code == 0, err
        metrics[device] = json.loads((out / "ev" / "metrics.json").read_text())
    np.testing.assert_allclose(probabilities["cuda"], probabilities["cpu"], atol=1e-3)
    assert abs(metrics["cuda"]["f1"] - metrics["cpu"]["f1"]) < 0.01


def test_evaluate_on_levir_layout(tmp_path, model_file, capsys):
    root = tmp_path / "levir"
    write_change_dataset(root, count=3, size=32, seed=1)
    code, stdout, stderr = _run(
        ["change", "evaluate", str(root), "--checkpoint", str(model_file), "--domain",
         "sim_buildings", "--split", "test", "-o", str(tmp_path / "ev")], capsys)
    assert code == 0, stderr
    record = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert record["pairs"] == 1 and record["pixels"] == 32 * 32
    (root / "list" / "test.txt").write_text("\n")
    code, _, err = _run(
        ["change", "evaluate", str(root), "--checkpoint", str(model_file), "--domain",
         "sim_buildings", "-o", str(tmp_path / "ev2")], capsys)
    assert code == 2 and "empty" in err


@pytest.mark.slow
@pytest.mark.parametrize("lora_rank", [0, 4])
def test_fit_then_adapt_cli(tmp_path, capsys, lora_rank):
    fit_config = {
        "seed": 0,
        "model": {"in_channels": 6, "lora_rank": lora_rank},
        "datasets": [
            {"name": "sim_buildings", "source": "sim", "count": 2, "size": 32},
            {"name": "sim_sensor", "source": "sim", "count": 2, "size": 32},
        ],
        "train": {"batch_size": 2},
        "trainer": {"max_epochs": 1, "enable_progress_bar": False, "logger": False},
    }
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(fit_config))
    code, stdout, stderr = _run(["change", "fit", "--config", str(tmp_path / "fit.yaml"),
                                 "-o", str(tmp_path / "run")], capsys)
    assert code == 0, stderr
    model = tmp_path / "run" / "model.safetensors"
    assert model.exists()
    adapt_config = {**fit_config, "datasets": [
        {"name": "sim_new", "source": "sim", "count": 2, "size": 32}],
        "train": {"batch_size": 2, "pos_weight": "auto", "init_from": "auto",
                  "placement": "decoder"}}
    (tmp_path / "adapt.yaml").write_text(yaml.safe_dump(adapt_config))
    code, stdout, stderr = _run(["change", "adapt", "--config", str(tmp_path / "adapt.yaml"),
                                 "--checkpoint", str(model), "-o", str(tmp_path / "new"),
                                 "--trainer.max_steps", "1"], capsys)
    assert code == 0, stderr
    assert "trainable parameters for sim_new" in stdout
    adapter = tmp_path / "new" / "adapter_sim_new.safetensors"
    assert adapter.exists() and adapter.stat().st_size < model.stat().st_size / 5
    from safetensors import safe_open

    with safe_open(str(adapter), framework="pt") as handle:
        threshold = float(handle.metadata()["threshold"])  # chosen on the training labels
    assert 0.0 < threshold < 1.0
    bad = {**adapt_config, "train": {"pos_weight": "lots"}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    code, _, err = _run(["change", "adapt", "--config", str(tmp_path / "bad.yaml"),
                         "--checkpoint", str(model), "-o", str(tmp_path / "bad")], capsys)
    assert code == 2 and "train.pos_weight" in err


def test_stacked_adapters_predict_and_evaluate_each_domain(tmp_path, pair_files, capsys):
    from eokit.change.task import load_model

    base = build_canet(["sim_buildings", "sim_landcover"], in_channels=6)
    model_file = save_model(base, tmp_path / "model.safetensors")
    adapters = {}
    for name, scale in (("site_a", 0.5), ("site_b", 2.0)):  # two separate adapt runs
        run = load_model(model_file)
        prepare_adapt(run, name)
        index = run.domain_index(name)
        head = run.base.head.heads[index]
        head.bias.data.fill_(scale)  # distinguishable adapters
        run.thresholds[name] = 0.4 if name == "site_a" else 0.6
        adapters[name] = save_domain_adapter(run, name, tmp_path / f"{name}.safetensors")
    stack = ["--adapter", str(adapters["site_a"]), "--adapter", str(adapters["site_b"])]
    probabilities = {}
    for name in ("site_a", "site_b"):
        out = tmp_path / f"pred_{name}"
        code, _, err = _run(["change", "predict", str(pair_files["A"]), str(pair_files["B"]),
                             "--checkpoint", str(model_file), *stack, "--domain", name,
                             "-o", str(out), "--tile", "64", "--overlap", "32"], capsys)
        assert code == 0, err
        with rasterio.open(out / "change_probability.tif") as src:
            probabilities[name] = src.read(1)
    assert probabilities["site_b"].mean() > probabilities["site_a"].mean()

    root = tmp_path / "levir"
    write_change_dataset(root, count=3, size=32, seed=1)
    for name, threshold in (("site_a", 0.4), ("site_b", 0.6)):
        code, _, err = _run(["change", "evaluate", str(root), "--checkpoint", str(model_file),
                             *stack, "--domain", name, "-o", str(tmp_path / f"ev_{name}")],
                            capsys)
        assert code == 0, err
        record = json.loads((tmp_path / f"ev_{name}" / "metrics.json").read_text())
        assert record["domain"] == name and record["threshold"] == pytest.approx(threshold)

    # the same adapter twice: a one-line name clash; under another name it loads
    out = tmp_path / "clash"
    code, _, err = _run(["change", "predict", str(pair_files["A"]), str(pair_files["B"]),
                         "--checkpoint", str(model_file), *stack, "--adapter",
                         str(adapters["site_a"]), "--domain", "site_a", "-o", str(out)], capsys)
    assert code == 2 and "already in this model" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    code, _, err = _run(["change", "predict", str(pair_files["A"]), str(pair_files["B"]),
                         "--checkpoint", str(model_file), *stack, "--adapter",
                         f"site_a_copy={adapters['site_a']}", "--domain", "site_a_copy",
                         "-o", str(out), "--tile", "64", "--overlap", "32"], capsys)
    assert code == 0, err
    with rasterio.open(out / "change_probability.tif") as src:
        np.testing.assert_allclose(src.read(1), probabilities["site_a"], atol=1e-6)


def test_shipped_configs_are_valid():
    from pathlib import Path

    from eokit.change.cli import _pos_weights, load_config

    configs = sorted((Path(__file__).resolve().parents[2] / "configs" / "change").glob("*.yaml"))
    assert configs
    for path in configs:
        config = load_config(path)
        names = [d["name"] for d in config["datasets"]]
        if "model" in config:
            assert build_canet(names, **config["model"]).domains == names
        train = config.get("train", {})
        assert train.get("placement") in (None, "all", "decoder", "finest"), path
        _pos_weights(train.get("pos_weight"), [])  # raises on a bad value


def test_fit_rejects_a_mistyped_trainer_option_in_one_line(tmp_path, capsys):
    config = tmp_path / "fit.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"in_channels": 6},
        "datasets": [{"name": "sim_buildings", "source": "sim", "count": 2, "size": 32}],
    }))
    out = tmp_path / "run"
    code, _, err = _run(["change", "fit", "--config", str(config), "-o", str(out),
                         "--trainer.max_epoch", "3"], capsys)
    assert code == 2 and "unknown Trainer option 'max_epoch'" in err and "max_epochs" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize(("section", "key", "expected"), [
    ("model", "lora_rnk", "model: unknown argument 'lora_rnk' (did you mean 'lora_rank'?)"),
    ("train", "batchsize", "train: unknown key 'batchsize' (did you mean 'batch_size'?)"),
    ("trainer", "max_epoch", "trainer: unknown Trainer option 'max_epoch' (did you mean "
                             "'max_epochs'?)"),
    (None, "trian", "unknown key 'trian' (did you mean 'train'?)"),
    ("datasets", "sizee", "datasets[1]: unknown key 'sizee' (did you mean 'size'?)"),
])
def test_mistyped_config_keys_are_one_line_errors(tmp_path, capsys, section, key, expected):
    """A key the command would ignore, or that would fail deep in the model build, is named."""
    config = {"model": {"in_channels": 6}, "train": {"batch_size": 2}, "trainer": {},
              "datasets": [{"name": "sim_buildings", "source": "sim", "count": 2, "size": 32}]}
    (config["datasets"][0] if section == "datasets" else config[section] if section
     else config)[key] = 8
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    code, _, err = _run(["change", "fit", "--config", str(path), "-o", str(out)], capsys)
    assert code == 2 and expected in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


SIM = {"name": "sim_buildings", "source": "sim", "count": 2}


def test_fit_warns_that_adapt_only_keys_are_ignored(tmp_path, capsys, caplog, monkeypatch):
    from eokit.change import cli as change_cli
    from eokit.core.errors import InputError

    def stop(*_args, **_kwargs):
        raise InputError("stopped before training")

    monkeypatch.setattr(change_cli, "_run_training", stop)
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump({"model": {"in_channels": 6}, "datasets": [SIM],
                                    "train": {"placement": "decoder", "batch_size": 2}}))
    with caplog.at_level("WARNING", logger="eokit.change.cli"):
        code, _, _ = _run(["change", "fit", "--config", str(path), "-o", str(tmp_path / "r")],
                          capsys)
    assert code == 2
    assert "train.placement applies to 'eokit change adapt' only" in caplog.text
    assert "batch_size" not in caplog.text


@pytest.mark.parametrize(("entries", "expected"), [
    ([{"source": "sim", "count": 2}], "datasets[1] needs a 'name'"),
    ([{"name": "x", "source": "simm"}], "datasets[1] (x) needs either 'root: FOLDER' or"),
    ([{"name": "x", "root": "a", "source": "sim"}], "needs either"),
    ([SIM, SIM], "dataset names must be unique"),
])
def test_bad_dataset_entries_are_one_line_errors(tmp_path, capsys, entries, expected):
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump({"model": {"in_channels": 6}, "datasets": entries}))
    out = tmp_path / "run"
    code, _, err = _run(["change", "fit", "--config", str(path), "-o", str(out)], capsys)
    assert code == 2 and expected in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("lr", -1, "train.lr must be a number > 0, got -1"),
    ("crop", 0, "train.crop must be an integer >= 8"),
    ("pos_weight", -2, "train.pos_weight must be 'auto' or a number > 0"),
    ("placement", "middle", "train.placement must be all, decoder or finest"),
    ("batch_size", 2.5, "train.batch_size must be an integer >= 1"),
])
def test_out_of_range_train_values_are_one_line_errors(tmp_path, capsys, key, value, expected):
    """Before: a negative lr or a zero crop ended in a traceback, a negative pos_weight trained."""
    config = {"model": {"in_channels": 6}, "train": {key: value},
              "datasets": [{"name": "sim_buildings", "source": "sim", "count": 2, "size": 32}]}
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    code, _, err = _run(["change", "fit", "--config", str(path), "-o", str(out)], capsys)
    assert code == 2 and expected in err and "fit.yaml" in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_fit_resumed_within_an_epoch_trains_the_rest_of_it(tmp_path, monkeypatch):
    """Step checkpoints (`--trainer.checkpoint_every_n_steps`): a fit interrupted in its second
    epoch and resumed trains that epoch's remaining batches and ends bit-identical."""
    from eokit.change import cli as change_cli
    from eokit.change.lit import ChangeTask
    from eokit.core.train import resume_position

    config = {"seed": 0, "resume": True, "model": {"in_channels": 6},
              "datasets": [{"name": "sim_buildings", "source": "sim", "count": 6, "size": 32}],
              "train": {"batch_size": 2, "crop": 24, "tune_threshold": False},
              "trainer": {"max_epochs": 2, "enable_progress_bar": False, "logger": False}}
    seen: list[tuple[int, float]] = []
    stop_at: list[int] = []

    class Interrupt(Exception):
        pass

    original = ChangeTask.training_step

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN202
        if stop_at and self.global_step == stop_at[0]:
            raise Interrupt
        seen.append((self.global_step, float(batch["image_a"].sum())))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ChangeTask, "training_step", training_step)

    def fit(out: Path):  # noqa: ANN202
        from eokit.core.train import seed_everything

        seed_everything(0)
        model = build_canet(["sim_buildings"], in_channels=6)
        change_cli._run_training(config, out, {"checkpoint_every_n_steps": 1}, model=model,
                                 mode="joint", domain=None)
        return model

    straight = fit(tmp_path / "straight")  # 3 batches per epoch, steps 0-5
    reference, seen[:] = list(seen), []
    stop_at.append(4)  # interrupted before step 4 (second batch of epoch 1)
    with pytest.raises(Interrupt):
        fit(tmp_path / "resumed")
    assert resume_position(tmp_path / "resumed" / "checkpoints" / "last.ckpt") == (1, 1)
    stop_at.clear()
    seen.clear()
    resumed = fit(tmp_path / "resumed")
    assert seen == reference[4:]  # the same batches as the uninterrupted run's steps 4 and 5
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                           strict=True):
        assert torch.equal(a, b), key
    # A one-epoch fit's last step checkpoint (after the epoch's last batch) resumes at epoch 1.
    config["trainer"]["max_epochs"] = 1
    fit(tmp_path / "extended")
    assert resume_position(tmp_path / "extended" / "checkpoints" / "last.ckpt") == (1, 0)
    config["trainer"]["max_epochs"] = 2
    seen.clear()
    extended = fit(tmp_path / "extended")
    assert seen == reference[3:]
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(),
                                                 extended.state_dict().values(), strict=True))


@pytest.mark.slow
def test_resumed_fit_equals_an_uninterrupted_one_with_worker_processes(tmp_path, capsys):
    """The first resumed epoch must get its own order and crops, also in worker processes.

    Lightning builds that epoch's iterator (and the workers' copies of the datasets) before any
    epoch hook runs; without being told the epoch it would replay epoch 0's augmentations.
    """
    from safetensors.torch import load_file

    def config(epochs: int) -> Path:
        path = tmp_path / f"fit{epochs}.yaml"
        path.write_text(yaml.safe_dump({
            "seed": 0, "resume": True,
            "model": {"in_channels": 6},
            "datasets": [{"name": "sim_buildings", "source": "sim", "count": 4, "size": 32}],
            "train": {"batch_size": 2, "crop": 24, "num_workers": 1, "tune_threshold": False},
            "trainer": {"max_epochs": epochs, "enable_progress_bar": False, "logger": False},
        }))
        return path

    for argv in (["--config", str(config(2)), "-o", str(tmp_path / "straight")],
                 ["--config", str(config(1)), "-o", str(tmp_path / "resumed")],
                 ["--config", str(config(2)), "-o", str(tmp_path / "resumed")]):
        code, _, err = _run(["change", "fit", *argv], capsys)
        assert code == 0, err
    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_an_output_path_that_is_a_file_is_one_line(tmp_path, model_file, pair_files, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    code, _, err = _run(["change", "predict", str(pair_files["A"]), str(pair_files["B"]),
                         "--checkpoint", str(model_file), "--domain", "sim_buildings",
                         "-o", str(blocker)], capsys)
    assert code == 2 and "afile" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
