"""Training engine: sampler sharding, overrides, configs, fit/logs/checkpoints, kill+resume, DDP."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import logging
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import nn

from eokit.core import train as T
from eokit.core.errors import ConfigError, InputError

# A self-contained training script: run as a subprocess (kill, DDP) or imported (resume).
SCRIPT = textwrap.dedent(
    '''
    import json
    import os
    import sys
    from pathlib import Path

    import torch
    from lightning.pytorch.callbacks import Callback
    from torch import nn
    from torch.utils.data import Dataset

    from eokit.core import train as T


    class IndexDataset(Dataset):
        def __init__(self, n=32):
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(n, 4, generator=g)
            self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"index": i, "x": self.x[i], "y": self.y[i]}


    class RegressionTask(T.BaseTask):
        def __init__(self, hidden=8, backbone=None, lr=0.05):
            super().__init__(lr=lr, weight_decay=0.0, scheduler="cosine")
            self.net = backbone or nn.Sequential(
                nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 1)
            )

        def shared_step(self, batch, stage):
            return nn.functional.mse_loss(self.net(batch["x"]).squeeze(-1), batch["y"])


    class Recorder(Callback):
        def __init__(self, kill_at=None):
            self.kill_at = kill_at
            self.steps = []
            self.indices = []
            self.start_state = None

        def on_train_start(self, trainer, pl_module):
            self.start_state = {k: v.clone() for k, v in pl_module.state_dict().items()}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.steps.append(trainer.global_step)
            self.indices.extend(int(i) for i in batch["index"])

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if self.kill_at is not None and trainer.global_step >= self.kill_at:
                os._exit(3)  # simulated crash: no clean-up, no final checkpoint


    def run(out_dir, mode, resume=False):
        rec = Recorder(kill_at=5 if mode == "kill" else None)
        dm = T.SimpleDataModule(IndexDataset(), IndexDataset(8), batch_size=4, seed=1)
        task = RegressionTask()
        extra = {}
        if mode == "ddp":
            extra = {"strategy": "ddp", "devices": 2, "max_epochs": 1, "max_steps": -1}
        trainer = T.fit(task, dm, out_dir, resume=resume, seed=0, callbacks=[rec], progress=False,
                        max_steps=12, checkpoint_every_n_steps=2, log_every_n_steps=1,
                        enable_model_summary=False, trainer_overrides=extra)
        if mode == "ddp":
            rank = trainer.global_rank
            weights = {k: v.tolist() for k, v in task.state_dict().items()}
            Path(out_dir, f"rank{rank}.json").write_text(json.dumps(
                {"indices": rec.indices, "weights": weights, "world": trainer.world_size,
                 "start": {k: v.tolist() for k, v in rec.start_state.items()}}))
        return trainer, rec, task


    if __name__ == "__main__":
        run(sys.argv[1], sys.argv[2])
    '''
)


@pytest.fixture()
def script(tmp_path: Path) -> Path:
    path = tmp_path / "train_script.py"
    path.write_text(SCRIPT)
    return path


def import_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"train_script_{abs(hash(path))}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(script: Path, out: Path, mode: str, timeout: int = 400) -> subprocess.CompletedProcess:  # noqa: E501
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), str(out), mode], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=script.parent)


# ---------------------------------------------------------------------------------------------
def test_sampler_shards_are_disjoint_and_cover_the_dataset() -> None:
    shards = [list(T.DistributedAwareSampler(12, num_replicas=3, rank=r, seed=5)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(12))

    # uneven length: padded by repetition so every rank gets the same number of batches
    uneven = [T.DistributedAwareSampler(10, num_replicas=3, rank=r) for r in range(3)]
    assert [len(s) for s in uneven] == [4, 4, 4]
    assert set().union(*(set(s) for s in uneven)) == set(range(10))


def test_sampler_epochs_are_deterministic_and_different() -> None:
    a = T.DistributedAwareSampler(50, num_replicas=2, rank=1, seed=3)
    b = T.DistributedAwareSampler(50, num_replicas=2, rank=1, seed=3)
    e0 = list(a)
    assert e0 == list(b)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b) != e0
    ordered = T.DistributedAwareSampler(6, num_replicas=2, rank=0, shuffle=False)
    assert list(ordered) == [0, 2, 4]
    many = T.DistributedAwareSampler(5, num_replicas=1, rank=0, num_samples=12)
    assert len(list(many)) == 12 and set(many) == set(range(5))


def test_sampler_reads_environment_without_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    s = T.DistributedAwareSampler(16)
    assert (s.num_replicas, s.rank, len(s)) == (4, 2, 4)
    assert isinstance(s, torch.utils.data.DistributedSampler)  # Lightning will not re-shard it
    with pytest.raises(InputError, match="rank"):
        T.DistributedAwareSampler(16, num_replicas=2, rank=2)


def test_parse_trainer_overrides() -> None:
    got = T.parse_trainer_overrides([
        "--trainer.max_epochs", "3", "--trainer.accelerator=gpu", "--trainer.devices", "[0, 1]",
        "--trainer.num_nodes", "2", "--trainer.strategy", "ddp", "--trainer.fast_dev_run",
        "--trainer.precision", "bf16-mixed", "--trainer.deterministic=true",
    ])
    assert got == {"max_epochs": 3, "accelerator": "gpu", "devices": [0, 1], "num_nodes": 2,
                   "strategy": "ddp", "fast_dev_run": True, "precision": "bf16-mixed",
                   "deterministic": True}
    with pytest.raises(ConfigError, match="max_epoch.*max_epochs"):
        T.parse_trainer_overrides(["--trainer.max_epoch", "3"])
    with pytest.raises(ConfigError, match="unexpected argument"):
        T.parse_trainer_overrides(["--epochs", "3"])
    with pytest.raises(ConfigError, match="unknown Trainer option"):
        T.make_trainer("unused", not_an_option=1)
    # make_trainer's own step checkpointing is reachable from the command line too
    assert T.parse_trainer_overrides(["--trainer.checkpoint_every_n_steps", "50"]) == {
        "checkpoint_every_n_steps": 50}


def test_click_command_collects_trainer_options() -> None:
    import click
    from click.testing import CliRunner

    seen: dict[str, object] = {}

    @click.command(context_settings=T.TRAINER_CONTEXT_SETTINGS)
    @click.option("--out", required=True)
    @click.pass_context
    def train_cmd(ctx: click.Context, out: str) -> None:
        seen.update(T.parse_trainer_overrides(ctx.args), out=out)

    result = CliRunner().invoke(train_cmd, ["--trainer.max_epochs", "2", "--out", "x",
                                            "--trainer.accelerator=gpu"])
    assert result.exit_code == 0, result.output
    assert seen == {"max_epochs": 2, "accelerator": "gpu", "out": "x"}


def test_yaml_config_and_instantiate(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(textwrap.dedent("""
        model:
          class_path: torch.nn.Sequential
        layer:
          class_path: torch.nn.Linear
          init_args: {in_features: 3, out_features: 2, bias: false}
        bad_base: {class_path: collections.OrderedDict}
        bad_arg:
          class_path: torch.nn.Linear
          init_args: {in_features: 3, out_channels: 2}
    """))
    conf = T.load_yaml_config(cfg)
    layer = T.instantiate(conf["layer"], expected=nn.Module)
    assert isinstance(layer, nn.Linear) and layer.bias is None and layer.out_features == 2
    assert isinstance(T.instantiate(conf["model"], expected=nn.Module), nn.Sequential)
    with pytest.raises(ConfigError, match="is not a torch.nn.modules.module.Module"):
        T.instantiate(conf["bad_base"], expected=nn.Module)
    with pytest.raises(ConfigError, match=r"unknown argument.*out_channels"):
        T.instantiate(conf["bad_arg"])
    with pytest.raises(ConfigError, match="cannot import"):
        T.instantiate({"class_path": "no_such_pkg.Model"})
    with pytest.raises(ConfigError, match="class_path"):
        T.instantiate({"init_args": {}})
    (tmp_path / "broken.yaml").write_text("a: [1, 2\n")
    with pytest.raises(InputError, match="broken.yaml"):
        T.load_yaml_config(tmp_path / "broken.yaml")
    with pytest.raises(InputError, match="missing.yaml"):
        T.load_yaml_config(tmp_path / "missing.yaml")


def test_seed_everything_repeats() -> None:
    T.seed_everything(11)
    a = torch.rand(3)
    T.seed_everything(11)
    assert torch.equal(a, torch.rand(3))


def test_save_load_weights_and_checkpoint_safety(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    path = T.save_weights(model, tmp_path / "w.safetensors", {"bands": "B,G,R"})
    other = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert T.load_weights(other, path) == {"bands": "B,G,R"}
    x = torch.randn(5, 3)
    assert torch.equal(other(x), model(x))
    with pytest.raises(InputError, match="w.safetensors"):
        T.load_weights(nn.Sequential(nn.Linear(3, 5)), path)

    evil = tmp_path / "evil.ckpt"
    with evil.open("wb") as f:  # a pickled arbitrary object must not be loaded
        pickle.dump({"state_dict": {}, "obj": ConfigError("x")}, f)
    with pytest.raises(InputError, match="evil.ckpt"):
        T.load_checkpoint(evil)
    with pytest.raises(InputError, match="nothing.ckpt"):
        T.load_checkpoint(tmp_path / "nothing.ckpt")


def test_fit_logs_checkpoints_and_hparams(script: Path, tmp_path: Path) -> None:
    mod = import_script(script)
    out = tmp_path / "run"
    trainer, rec, task = mod.run(out, "plain")
    assert trainer.global_step == 12
    last = out / "checkpoints" / "last.ckpt"
    assert last.is_file()
    ckpt = T.load_checkpoint(last)  # weights_only=True load of a Lightning checkpoint
    assert ckpt["global_step"] == 12
    hp = ckpt["hyper_parameters"]
    assert hp["hidden"] == 8 and hp["lr"] == 0.05 and hp["scheduler"] == "cosine"
    assert "backbone" in hp and hp["backbone"] is None
    assert set(ckpt["state_dict"]) == set(task.state_dict())

    metrics = next((out / "logs").glob("version_*/metrics.csv"))
    rows = list(csv.DictReader(metrics.open()))
    losses = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    assert len(losses) >= 10 and losses[-1] < losses[0]
    assert any(r.get("val/loss") for r in rows)
    assert list((out / "tb").rglob("events.out.tfevents.*"))


def test_hparams_skip_objects(tmp_path: Path, script: Path) -> None:
    mod = import_script(script)
    task = mod.RegressionTask(backbone=nn.Sequential(nn.Linear(4, 1)), hidden=np.int64(4))
    assert "backbone" not in task.hparams
    assert task.hparams["hidden"] == 4 and type(task.hparams["hidden"]) is int


@pytest.mark.slow
def test_kill_then_resume_continues_from_checkpoint(script: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_script(script, out, "kill")
    assert proc.returncode == 3, proc.stderr[-2000:]
    last = out / "checkpoints" / "last.ckpt"
    assert last.is_file()
    saved = T.load_checkpoint(last)
    assert 0 < saved["global_step"] < 12

    mod = import_script(script)
    trainer, rec, task = mod.run(out, "resume", resume=True)
    assert rec.steps[0] == saved["global_step"]  # continued, not restarted
    assert trainer.global_step == 12
    assert len(rec.steps) == 12 - saved["global_step"]
    for key, value in saved["state_dict"].items():  # weights restored before the first step
        assert torch.equal(rec.start_state[key], value), key


def test_resume_without_checkpoint_starts_fresh(script: Path, tmp_path: Path) -> None:
    mod = import_script(script)
    trainer, rec, _ = mod.run(tmp_path / "fresh", "resume", resume=True)
    assert rec.steps[0] == 0 and trainer.global_step == 12


def test_fresh_run_in_a_used_folder_sets_the_earlier_checkpoints_aside(script: Path,
                                                                       tmp_path: Path) -> None:
    mod = import_script(script)
    out = tmp_path / "used"
    mod.run(out, "resume")
    old_names = sorted(p.name for p in (out / "checkpoints").glob("*.ckpt"))
    # stand-in for an interruption before the new run's first save: only the earlier run's
    # files are there when the fresh run starts, and none of them may stay in the way
    T.set_aside_checkpoints(out)
    assert not list((out / "checkpoints").glob("*.ckpt"))
    kept = sorted(p.name for p in (out / "checkpoints" / "previous").glob("*.ckpt"))
    assert kept == old_names
    trainer, rec, task = mod.run(out, "resume", resume=False)
    assert rec.steps[0] == 0  # started afresh
    new = T.load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert new["global_step"] == trainer.global_step == 12
    # a third run in the folder (fit itself sets aside now) replaces the set-aside copy with
    # the second run's files, and its own last.ckpt is not the second run's
    mod.run(out, "resume", resume=False)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    again = T.load_checkpoint(out / "checkpoints" / "previous" / "last.ckpt")
    assert torch.equal(next(iter(again["state_dict"].values())),
                       next(iter(new["state_dict"].values())))


@pytest.mark.slow
def test_ddp_two_cpu_processes_shard_data_and_sync_gradients(script: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    proc = run_script(script, out, "ddp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    seen = [set(r["indices"]) for r in ranks]
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == set(range(32))
    assert len(ranks[0]["indices"]) == len(ranks[1]["indices"]) == 16
    # gradients are all-reduced: both replicas start and end with identical weights, which moved
    assert ranks[0]["start"] == ranks[1]["start"]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["weights"] != ranks[0]["start"]


def test_keep_best_restores_best_weights_and_stops_after_patience():
    from types import SimpleNamespace

    from eokit.core.train import KeepBest

    module = torch.nn.Linear(2, 1)
    keep = KeepBest(module, patience=2)
    trainer = SimpleNamespace(callback_metrics={}, current_epoch=0, should_stop=False)
    keep.on_validation_epoch_end(trainer, None)  # no val/loss yet: nothing kept
    keep.restore()
    assert keep.state is None and not trainer.should_stop
    best = None
    for epoch, loss in enumerate([1.0, 0.5, 0.7, 0.6]):
        with torch.no_grad():
            module.weight.fill_(float(epoch))
        trainer.current_epoch = epoch
        trainer.callback_metrics = {"val/loss": torch.tensor(loss)}
        keep.on_validation_epoch_end(trainer, None)
        if epoch == 1:
            best = module.weight.clone()
        assert trainer.should_stop == (epoch == 3)
    assert keep.best_epoch == 1 and keep.best == 0.5
    keep.restore()
    assert torch.equal(module.weight, best)


def test_resume_position_reads_lightning_progress_and_rejects_corrupt_files(tmp_path: Path) -> None:
    progress = {"current": {"ready": 3, "started": 3, "processed": 3, "completed": 2}}
    torch.save({"epoch": 2, "loops": {"fit_loop": {"epoch_progress": progress}}},
               tmp_path / "a.ckpt")
    torch.save({"epoch": 4}, tmp_path / "b.ckpt")  # no loop state: the epoch after the saved one
    assert T.resume_position(tmp_path / "a.ckpt") == (3, 0)  # between epochs
    assert T.resume_position(tmp_path / "b.ckpt") == (5, 0)
    within = {"current": {"ready": 4, "started": 4, "processed": 3, "completed": 3}}
    batches = {"current": {"ready": 7, "started": 7, "processed": 6, "completed": 5}}
    torch.save({"epoch": 3, "loops": {"fit_loop": {"epoch_progress": within,
                                                   "epoch_loop.batch_progress": batches}}},
               tmp_path / "mid.ckpt")
    assert T.resume_position(tmp_path / "mid.ckpt") == (3, 6)  # epoch 3, 6 batches trained
    batches["is_last_batch"] = True  # a step checkpoint after the epoch's last batch
    torch.save({"epoch": 3, "loops": {"fit_loop": {"epoch_progress": within,
                                                   "epoch_loop.batch_progress": batches}}},
               tmp_path / "last_batch.ckpt")
    assert T.resume_position(tmp_path / "last_batch.ckpt") == (4, 0)
    (tmp_path / "c.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="c.ckpt"):
        T.resume_position(tmp_path / "c.ckpt")


@pytest.mark.slow
def test_resumed_epoch_gets_its_own_order_with_worker_processes(script: Path,
                                                               tmp_path: Path) -> None:
    """Lightning starts the first resumed epoch's workers before it calls ``set_epoch``."""
    mod = import_script(script)

    def run(out: Path, epochs: int, resume: bool) -> list[int]:
        rec = mod.Recorder()
        data = T.SimpleDataModule(mod.IndexDataset(16), batch_size=4, seed=1, num_workers=1)
        T.fit(mod.RegressionTask(), data, out, resume=resume, seed=0, callbacks=[rec],
              progress=False, max_epochs=epochs, enable_model_summary=False)
        return list(rec.indices)

    straight = run(tmp_path / "straight", 2, False)
    assert straight[:16] != straight[16:]  # each epoch has its own order
    first = run(tmp_path / "resumed", 1, False)
    assert first + run(tmp_path / "resumed", 2, True) == straight


def test_mid_epoch_resume_trains_the_rest_of_that_epoch_bit_identically(script: Path,
                                                                       tmp_path: Path) -> None:
    """A checkpoint written within an epoch: the resumed run sees that epoch's remaining batches
    (not its first ones again) and ends with the weights of an uninterrupted run."""
    mod = import_script(script)

    class Crash(Exception):
        pass

    class CrashAfterStep5(mod.Recorder):  # type: ignore[name-defined,misc]
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001, ANN202
            if trainer.global_step >= 5:
                raise Crash

    def run(out: Path, recorder: object, resume: bool = False) -> nn.Module:
        torch.manual_seed(0)
        task = mod.RegressionTask()
        data = T.SimpleDataModule(mod.IndexDataset(), batch_size=4, seed=1)  # 8 batches / epoch
        T.fit(task, data, out, resume=resume, seed=0, callbacks=[recorder], progress=False,
              max_steps=12, checkpoint_every_n_steps=2, enable_model_summary=False)
        return task

    straight = mod.Recorder()
    reference = run(tmp_path / "straight", straight)
    with pytest.raises(Crash):
        run(tmp_path / "crashed", CrashAfterStep5())
    assert T.resume_position(tmp_path / "crashed" / "checkpoints" / "last.ckpt") == (0, 4)
    resumed = mod.Recorder()
    task = run(tmp_path / "crashed", resumed, resume=True)
    assert resumed.steps == list(range(4, 12))
    assert resumed.indices == straight.indices[16:]  # batches 4-7 of epoch 0, then epoch 1
    for (key, a), b in zip(reference.state_dict().items(), task.state_dict().values(),
                           strict=True):
        assert torch.equal(a, b), key


def _handlers_reached(name: str) -> int:
    """How many handlers a record of logger ``name`` reaches (stops where propagation stops)."""
    count, current = 0, logging.getLogger(name)
    while current is not None:
        count += len(current.handlers)
        if not current.propagate:
            break
        current = current.parent  # type: ignore[assignment]
    return count


def test_lightning_messages_reach_one_handler_without_adverts(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    from eokit.core.train import make_trainer

    root = logging.getLogger()
    application = logging.StreamHandler(io.StringIO())
    root.addHandler(application)
    try:
        with caplog.at_level(logging.INFO):
            make_trainer(tmp_path, max_epochs=1, progress=False)
        reached = _handlers_reached("lightning.pytorch.utilities.rank_zero")
        assert reached == len(root.handlers)  # the application's handlers only, not Lightning's
    finally:
        root.removeHandler(application)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("lightning")]
    assert any("GPU available" in m for m in messages)
    assert not any("litlogger" in m.lower() for m in messages)
