"""The EM task on core.train: every loss trains, the posterior store resumes with the checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eokit.core.errors import InputError
from eokit.core.types import Grid
from eokit.noisy.data import LabelledImage, TileDataset
from eokit.noisy.store import dataset_fingerprint
from eokit.noisy.task import NoisySegTask, fit_noisy


def tiles(n: int = 6, size: int = 32, seed: int = 0) -> TileDataset:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        label = np.zeros((size, size), dtype=np.int64)
        label[4:14, 6:20] = 1
        image = rng.random((3, size, size)).astype(np.float32) * 0.2
        image[:, label == 1] += 0.6
        items.append(LabelledImage(f"t{i}", image, label, Grid.plain(size, size, 1.0), label))
    return TileDataset(items)


def make_task(data: TileDataset, loss: str = "kms", **kw: object) -> NoisySegTask:
    return NoisySegTask(loss=loss, num_images=len(data), tile_shape=data.shape,
                        fingerprint=dataset_fingerprint(data.keys, data.shape), estep=2,
                        pretrained=False, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("loss", ["ce", "smooth", "gce", "confusion"])
def test_baselines_train(loss: str, tmp_path: Path) -> None:
    data = tiles()
    task = make_task(data, loss)
    before = [p.detach().clone() for p in task.model.head.parameters()]
    trainer = fit_noisy(task, data, data, tmp_path, max_epochs=1, batch_size=3)
    assert trainer.global_step == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, task.model.head.parameters(),
                                                     strict=True))


def test_kms_store_is_updated_checkpointed_and_resumed(tmp_path: Path) -> None:
    data = tiles()
    task = make_task(data)
    fit_noisy(task, data, data, tmp_path, max_epochs=1, batch_size=3)
    assert task.store is not None
    assert task.store.steps.tolist() == [2] * 6  # every tile visited once, 2 E-steps each
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    torch.testing.assert_close(state["state_dict"]["store.params"], task.store.params)
    assert torch.equal(state["noise_generator"], task._noise.get_state())  # the draw stream
    resumed = make_task(data)
    fit_noisy(resumed, data, data, tmp_path, max_epochs=2, batch_size=3, resume=True)
    assert resumed.store is not None
    assert resumed.store.steps.tolist() == [4] * 6  # continued, not restarted


def test_memory_mapped_store_trains_and_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    data = tiles()
    task = make_task(data, store_dir=str(tmp_path / "posterior"))
    fit_noisy(task, data, data, tmp_path, max_epochs=1, batch_size=3)
    assert task.store is not None
    on_disk = np.load(tmp_path / "posterior" / "params.npy", mmap_mode="r")
    assert on_disk.shape == (6, 2, 32, 32)
    np.testing.assert_array_equal(on_disk, task.store.params.numpy())  # the file is the store
    assert not np.all(on_disk[:, 0] == -5.0)  # the E-step wrote into the mapped file
    resumed = make_task(data, store_dir=str(tmp_path / "posterior2"))
    fit_noisy(resumed, data, data, tmp_path, max_epochs=2, batch_size=3, resume=True)
    assert resumed.store is not None and resumed.store.steps.tolist() == [4] * 6


def test_seed_sets_the_augmentation_and_noise_stream() -> None:
    data = tiles()
    batch = {"image": torch.rand(8, 3, 32, 32), "mask": torch.zeros(8, 32, 32, dtype=torch.long)}
    ops = [make_task(data, seed=s)._augment(batch)[2] for s in (0, 0, 1)]
    assert ops[0] == ops[1] and ops[0] != ops[2]


def test_store_stays_on_the_host_in_float32_when_the_model_moves() -> None:
    data = tiles()
    task = make_task(data).to(torch.float64).to("meta")
    assert task.store is not None
    assert next(task.model.parameters()).device.type == "meta"
    assert task.store.params.device.type == "cpu" and task.store.params.dtype == torch.float32
    assert task.store.steps.device.type == "cpu"


def test_resume_with_another_training_set_refused(tmp_path: Path) -> None:
    data = tiles()
    fit_noisy(make_task(data), data, data, tmp_path, max_epochs=1, batch_size=3)
    other = tiles(seed=1)
    other.items = [LabelledImage(f"x{i}", it.image, it.label, it.grid, it.clean)
                   for i, it in enumerate(other.items)]
    with pytest.raises(InputError, match="another training set"):
        fit_noisy(make_task(other), other, other, tmp_path, max_epochs=2, batch_size=3,
                  resume=True)


def test_bad_rho_and_loss_refused() -> None:
    data = tiles(2)
    with pytest.raises(InputError, match="rho"):
        make_task(data, rho=1.0)
    with pytest.raises(InputError, match="loss"):
        make_task(data, "dice")
