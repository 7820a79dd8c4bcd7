"""DINO with dynamic curation: sampler sharding, schedule, loss, rounds and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eokit.core.errors import InputError
from eokit.core.synth.sar_wave_mode import SAR_PHENOMENA, sar_wave_mode
from eokit.curation.data import MultiCrop, Normalisation
from eokit.curation.ssl import (
    CurationSchedule,
    DINOLoss,
    DynamicCurationSampler,
    pretrain,
)


def test_sampler_is_deterministic_and_disjoint_across_ranks():
    subset = np.arange(3, 200, 3)
    shards = []
    for rank in range(3):
        sampler = DynamicCurationSampler(200, subset, num_replicas=3, rank=rank, seed=7)
        sampler.set_epoch(4)
        first = list(sampler)
        again = DynamicCurationSampler(200, subset, num_replicas=3, rank=rank, seed=7)
        again.set_epoch(4)
        assert first == list(again)
        shards.append(first)
    flat = [i for shard in shards for i in shard]
    assert set(flat) == set(subset.tolist())
    # Disjoint up to the padding that makes the shards equal (66 indices over 3 ranks: none).
    assert len(flat) == len(set(flat)) == len(subset)
    other = DynamicCurationSampler(200, subset, num_replicas=3, rank=0, seed=7)
    other.set_epoch(5)
    assert list(other) != shards[0]


def test_sampler_without_subset_covers_everything_and_checks_indices():
    sampler = DynamicCurationSampler(10, None, num_replicas=1, rank=0)
    assert sorted(sampler) == list(range(10))
    with pytest.raises(InputError, match="subset"):
        DynamicCurationSampler(10, [3, 10], num_replicas=1, rank=0)


def test_schedule_rounds_and_checks():
    schedule = CurationSchedule(warmup_epochs=2, period_epochs=3)
    assert [e for e in range(10) if schedule.is_round(e)] == [2, 5, 8]
    assert not any(CurationSchedule(enabled=False).is_round(e) for e in range(10))
    for bad in ({"keep_fraction": 0.0}, {"keep_fraction": 1.2}, {"levels": (4, 8)},
                {"strategy": "furthest"}, {"keep_fraction": 0.6, "subset_for_embedding": 0.5}):
        with pytest.raises(InputError):
            CurationSchedule(**bad)


def test_dino_loss_centre_and_sharpening():
    loss = DINOLoss(8, teacher_temperature=0.04)
    one_view = torch.randn(4, 8)
    teacher = torch.cat([one_view, one_view])  # two global views of 4 images
    # A student that agrees with the sharpened teacher pays less than a random one.
    low = loss(teacher * 4, teacher, 2, epoch=0)
    high = loss(torch.randn(8, 8) * 4, teacher, 2, epoch=0)
    assert low < high
    assert loss.center.abs().sum() > 0  # the centre follows the teacher mean


def _data(count=96, seed=0):
    sim = sar_wave_mode(count, size=24, seed=seed)
    images = Normalisation.for_kind("sigma0_db").apply(sim.images)
    return sim, images


def test_dino_loss_decreases_on_a_tiny_run(tmp_path):
    _, images = _data(64)
    pretrain(images, tmp_path / "run", schedule=CurationSchedule(enabled=False), epochs=5,
             batch_size=32, seed=0, multicrop=MultiCrop(20, 12, 2), lr=3e-3, out_dim=64)
    import pandas as pd

    metrics = pd.read_csv(tmp_path / "run" / "logs" / "version_0" / "metrics.csv")
    epochs = metrics["train/loss_epoch"].dropna().to_numpy()
    print(epochs)
    assert len(epochs) == 5
    assert epochs[-2:].mean() < epochs[0] - 0.1


def test_curation_rounds_are_logged(tmp_path):
    sim, images = _data()
    schedule = CurationSchedule(warmup_epochs=2, period_epochs=2, keep_fraction=0.5,
                                levels=(12, 3))
    task, callback, trainer = pretrain(
        images, tmp_path / "run", schedule=schedule, epochs=6, batch_size=32, seed=0,
        multicrop=MultiCrop(20, 12, 2), labels=sim.label, lr=3e-3, out_dim=64)
    assert [r.epoch for r in callback.rounds] == [2, 4]
    assert all(r.kept == 48 for r in callback.rounds)
    assert callback.rounds[1].overlap_with_previous is not None
    assert len(callback.rounds[0].class_counts) <= len(SAR_PHENOMENA)
    # Images processed: 2 epochs x 96 + 4 epochs x 48 (the curated half).
    assert task.images_seen == 2 * 96 + 4 * 48


def test_resume_restores_the_curated_subset(tmp_path):
    sim, images = _data(64)
    schedule = CurationSchedule(warmup_epochs=1, period_epochs=10, keep_fraction=0.25,
                                levels=(8, 2))
    kwargs = dict(schedule=schedule, batch_size=16, seed=3, multicrop=MultiCrop(16, 8, 1),
                  out_dim=32)
    _, callback, _ = pretrain(images, tmp_path / "run", epochs=2, **kwargs)
    subset = callback.datamodule.subset.copy()
    assert len(subset) == 16
    task, resumed, trainer = pretrain(images, tmp_path / "run", epochs=3, resume=True, **kwargs)
    assert trainer.current_epoch == 3
    assert np.array_equal(resumed.datamodule.subset, subset)  # no new round was due
    assert [r.epoch for r in resumed.rounds] == [1]
    assert task.images_seen == 64 + 2 * 16


def test_simulator_is_deterministic_and_heavy_tailed():
    a = sar_wave_mode(400, size=16, seed=5)
    b = sar_wave_mode(400, size=16, seed=5)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.label, b.label)
    counts = np.bincount(a.label, minlength=10)
    assert counts[0] == counts.max() and counts[0] > 5 * counts[-1]
    assert 0.15 < (a.duplicate_of >= 0).mean() < 0.45
    dup = np.flatnonzero(a.duplicate_of >= 0)
    assert (a.label[dup] == a.label[a.duplicate_of[dup]]).all()
    assert -45 < a.images.mean() < 0
    low_wind = a.images[a.label == SAR_PHENOMENA.index("low_wind_area")].mean()
    streaks = a.images[a.label == SAR_PHENOMENA.index("wind_streaks")].mean()
    assert low_wind < streaks - 5  # darker at low wind (dB)
    assert (a.wind_speed > 0).all() and (a.wave_height > 0).all()
