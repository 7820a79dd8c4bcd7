"""`eokit change fit/adapt` as a user runs them: BN statistics, signals, resume, lists, adapters."""

import json
import os
import shutil
import signal

import pytest
import torch
import yaml
from safetensors.torch import load_file

from eokit.change.lit import ChangeTask
from eokit.change.model import build_canet
from eokit.change.task import save_model
from eokit.cli import main
from eokit.core.synth.change import write_change_dataset


def _run(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as done:
        code = done.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _config(tmp_path, name, datasets, epochs=1, **train):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "seed": 0, "model": {"in_channels": 6}, "datasets": datasets,
        "train": {"batch_size": 2, "crop": 24, **train},
        "trainer": {"max_epochs": epochs, "enable_progress_bar": False, "logger": False},
    }))
    return path


@pytest.fixture
def base_model(tmp_path):
    torch.manual_seed(0)
    return save_model(build_canet(["sim_buildings", "sim_sensor"], in_channels=6),
                      tmp_path / "base.safetensors")


def test_adapt_cli_re_estimates_the_new_datasets_bn_statistics(tmp_path, capsys, base_model):
    """The model `adapt` loads is in eval mode; its new dataset's BNs must still learn."""
    config = _config(tmp_path, "adapt", [{"name": "sim_new", "source": "sim", "count": 4,
                                          "size": 32}],
                     init_from="sim_buildings", placement="decoder", tune_threshold=False)
    code, _, err = _run(["change", "adapt", "--config", str(config), "--checkpoint",
                         str(base_model), "-o", str(tmp_path / "new")], capsys)
    assert code == 0, err
    base = load_file(str(base_model))
    adapter = load_file(str(tmp_path / "new" / "adapter_sim_new.safetensors"))
    stats = [k for k in adapter if k.endswith("running_mean") and ".encoder." in k]
    assert stats, sorted(adapter)[:5]
    moved = [k for k in stats
             if not torch.equal(adapter[k], base[k.replace(".bns.*.", ".bns.0.")])]
    assert len(moved) == len(stats)  # every encoder BN of the new dataset saw its data


def _interrupt_at(monkeypatch, step, how):
    original = ChangeTask.training_step

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN202
        if self.global_step == step:
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler notes it
            else:
                raise KeyboardInterrupt
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ChangeTask, "training_step", training_step)


@pytest.mark.parametrize("how,code", [("sigterm", 143), ("ctrl-c", 130)])
def test_a_stopped_fit_exits_non_zero_keeps_its_state_and_resumes(
    tmp_path, capsys, monkeypatch, how, code
):
    datasets = [{"name": "sim_buildings", "source": "sim", "count": 4, "size": 32}]
    config = _config(tmp_path, "fit", datasets, epochs=3, tune_threshold=False)
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 3, how)
        got, _, err = _run(["change", "fit", "--config", str(config), "-o", str(out)], capsys)
    assert got == code, err
    assert "resume with: eokit change fit" in err and "--resume" in err
    assert len(err.strip().splitlines()) == 1
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert not (out / "model.safetensors").exists()
    got, stdout, err = _run(["change", "fit", "--config", str(config), "-o", str(out),
                             "--resume"], capsys)
    assert got == 0, err
    assert (out / "model.safetensors").is_file()
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 6  # 3 epochs of 2 batches, none lost or repeated


def test_resume_with_nothing_left_reports_real_validation(tmp_path, capsys):
    datasets = [{"name": "sim_buildings", "source": "sim", "train_count": 2, "val_count": 5,
                 "size": 32}]
    config = _config(tmp_path, "fit", datasets, epochs=1, tune_threshold=False)
    out = tmp_path / "run"
    assert _run(["change", "fit", "--config", str(config), "-o", str(out)], capsys)[0] == 0
    first = json.loads((out / "val_metrics.json").read_text())
    code, stdout, err = _run(["change", "fit", "--config", str(config), "-o", str(out),
                              "--resume"], capsys)
    assert code == 0, err
    again = json.loads((out / "val_metrics.json").read_text())
    # Same weights, same five validation pairs; the sanity check would have seen two.
    assert again["sim_buildings"]["pixels"] == first["sim_buildings"]["pixels"] == 5 * 32 * 32
    assert again["sim_buildings"]["f1"] == pytest.approx(first["sim_buildings"]["f1"])


def test_folder_without_lists_uses_every_pair_and_adapt_takes_adapters(
    tmp_path, capsys, base_model, caplog
):
    root = tmp_path / "levir"
    write_change_dataset(root, count=4, size=32, seed=1)
    shutil.rmtree(root / "list")
    code, _, err = _run(["change", "evaluate", str(root), "--checkpoint", str(base_model),
                         "--domain", "sim_buildings", "-o", str(tmp_path / "ev")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["pairs"] == 4
    # A first adapted dataset lives in an adapter file; the second starts from it.
    first = _config(tmp_path, "a1", [{"name": "site_a", "root": str(root), "val": None}],
                    tune_threshold=False)
    assert _run(["change", "adapt", "--config", str(first), "--checkpoint", str(base_model),
                 "-o", str(tmp_path / "a1"), "--trainer.max_steps", "1"], capsys)[0] == 0
    second = _config(tmp_path, "a2", [{"name": "site_b", "root": str(root)}],
                     init_from="site_a", tune_threshold=False)
    code, _, err = _run(["change", "adapt", "--config", str(second), "--checkpoint",
                         str(base_model), "--adapter",
                         str(tmp_path / "a1" / "adapter_site_a.safetensors"),
                         "-o", str(tmp_path / "a2"), "--trainer.max_steps", "1"], capsys)
    assert code == 0, err
    assert "also training pairs" in caplog.text  # train and val both fell back to all pairs
    record = json.loads((tmp_path / "a2" / "adapt.json").read_text())
    assert record["domain"] == "site_b"
