"""Pretraining, head-only/LoRA fine-tuning, compute accounting, inference and change dating."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eokit.core.errors import InputError
from eokit.timeseries.data import SeriesData
from eokit.timeseries.task import (
    augment_series,
    compute_summary,
    embed_series,
    finetune,
    forecast_series,
    forest_change_dates,
    peak_departure,
    predict_series,
    pretrain,
    refine_change_dates,
)


def _data(n: int = 48, t: int = 16, c: int = 3, seed: int = 0) -> SeriesData:
    rng = np.random.default_rng(seed)
    dates = np.datetime64("2020-01-01") + np.cumsum(rng.integers(5, 20, size=t)).astype(
        "timedelta64[D]")
    doy = ((dates - dates.astype("datetime64[Y]")).astype(int) + 1).astype(np.float32)
    labels = rng.integers(0, 2, size=n)
    season = np.sin(2 * np.pi * doy / 365.0)
    series = (0.2 + 0.3 * labels[:, None, None] * season[None, :, None]
              + rng.normal(0, 0.02, size=(n, t, c))).astype(np.float32)
    valid = rng.uniform(size=(n, t)) > 0.25
    valid[-1] = False  # one pixel never observed
    return SeriesData(series=series, valid=valid, doy=doy[None], band_names=["a", "b", "c"],
                      dates=dates.astype("datetime64[s]"), targets=labels)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    data = _data()
    out = tmp_path_factory.mktemp("pre")
    backbone, account = pretrain(data, out, size="tiny", epochs=2, batch_size=16, progress=False,
                                 config_overrides={"max_len": 32}, augment=False)
    return data, backbone, account


def test_pretraining_counts_tokens_and_stores_scaling(pretrained):
    data, backbone, account = pretrained
    assert account.tokens > 0 and account.flops > 3 * account.tokens
    # Pixels with < 2 valid dates are skipped; some are held out for validation.
    assert account.tokens == 2 * account.pixels * data.n_dates
    assert not torch.equal(backbone.band_half_range, torch.ones(3))
    assert backbone.config.band_names == ["a", "b", "c"]


def test_augmented_pretraining_crops_and_counts_the_tokens_it_saw(tmp_path):
    data = _data(n=32)
    _, account = pretrain(data, tmp_path, size="tiny", epochs=2, batch_size=8, progress=False,
                          config_overrides={"max_len": 32}, augment=True, seed=1)
    full = 2 * account.pixels * data.n_dates
    # Random leading crops of up to half the series: fewer tokens, but more than half.
    assert full / 2 <= account.tokens < full


def test_interrupted_pretraining_resumes_to_the_uninterrupted_result(tmp_path):
    import lightning as L

    data = _data(n=40)
    common = {"size": "tiny", "epochs": 3, "batch_size": 8, "progress": False,
              "config_overrides": {"max_len": 32}, "augment": False, "seed": 2}

    class Interrupt(Exception):
        pass

    class InterruptAtEpoch2(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):  # noqa: ANN001, ANN202
            if trainer.current_epoch == 2:
                raise Interrupt

    straight, account = pretrain(data, tmp_path / "straight", **common)
    with pytest.raises(Interrupt):
        pretrain(data, tmp_path / "run", **common,
                 trainer_overrides={"callbacks": [InterruptAtEpoch2()]})
    resumed, resumed_account = pretrain(data, tmp_path / "run", **common, resume=True)
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                           strict=True):
        assert torch.equal(a, b), key
    assert resumed_account.tokens == account.tokens  # the two epochs before the resume count
    with pytest.raises(InputError, match="last.ckpt: checkpoint does not fit this model"):
        pretrain(data, tmp_path / "run", **{**common, "size": "small"}, resume=True)


def test_augment_series_crops_leading_dates_and_drops_some():
    series = torch.zeros(4, 20, 2)
    doy = torch.arange(1, 21, dtype=torch.float32).expand(4, 20)
    valid = torch.ones(4, 20, dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)
    lengths, dropped = set(), 0
    for _ in range(20):
        s, d, v = augment_series(series, doy, valid, max_crop=0.5, drop=0.2,
                                 generator=generator)
        assert s.shape[1] == d.shape[1] == v.shape[1] >= 10
        assert torch.equal(d[0], doy[0, 20 - d.shape[1]:])  # the LAST dates are kept
        lengths.add(s.shape[1])
        dropped += int((~v).sum())
    assert len(lengths) > 3
    assert 0.1 < dropped / (20 * 4 * np.mean(sorted(lengths))) < 0.3


def test_head_only_finetuning_leaves_backbone_bit_identical(pretrained, tmp_path):
    data, backbone, account = pretrained
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    labelled = data.subset(np.arange(12))
    model, fine = finetune(backbone, labelled, labelled.targets, tmp_path, class_names=["x", "y"],
                           epochs=3, batch_size=4, progress=False)
    after = model.backbone.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    head_changed = any(p.abs().sum() > 0 for p in model.head.parameters())
    assert head_changed
    summary = compute_summary(account, fine)
    assert 0 < summary["flops_ratio"] < 1
    assert summary["finetuning"]["pixels"] == 12
    probs = predict_series(model, data)
    assert probs.shape == (len(data), data.n_dates, 2)
    assert np.isnan(probs[-1]).all()  # never-observed pixel: masked, not a number
    assert np.allclose(probs[:-1].sum(-1), 1.0, atol=1e-5)


def test_lora_finetuning_trains_adapters_only(pretrained, tmp_path):
    data, backbone, _ = pretrained
    import copy

    base = copy.deepcopy(backbone)
    labelled = data.subset(np.arange(12))
    model, account = finetune(base, labelled, labelled.targets, tmp_path, class_names=["x", "y"],
                              mode="lora", epochs=1, batch_size=4, progress=False)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or n.startswith("head.") for n in names)
    assert account.phase == "finetuning (lora)" and account.flops > 0


def test_full_finetuning_with_a_lower_backbone_learning_rate(pretrained, tmp_path,
                                                              monkeypatch):
    data, backbone, _ = pretrained
    import copy

    labelled = data.subset(np.arange(12))
    values = np.linspace(10.0, 40.0, 12).astype(np.float32)
    captured = {}
    from eokit.core.train import BaseTask

    original = BaseTask.configure_optimizers

    def spy(self):  # noqa: ANN001, ANN202
        out = original(self)
        captured["groups"] = [g["lr"] for g in
                              (out["optimizer"] if isinstance(out, dict) else out).param_groups]
        return out

    monkeypatch.setattr(BaseTask, "configure_optimizers", spy)
    # Frozen in place (as a head-only run leaves it): full mode trains it again.
    frozen = copy.deepcopy(backbone).requires_grad_(False)
    model, _ = finetune(frozen, labelled, values, tmp_path, task="regression",
                        mode="full", epochs=1, batch_size=4, lr=1e-2, backbone_lr_scale=0.1,
                        val_fraction=0, progress=False)
    assert captured["groups"] == pytest.approx([1e-2, 1e-3])
    changed = [not torch.equal(a, b) for a, b in zip(backbone.parameters(),
                                                      model.backbone.parameters(), strict=True)]
    assert any(changed)  # the backbone trains too, only slower
    with pytest.raises(InputError, match="backbone_lr_scale"):
        finetune(copy.deepcopy(backbone), labelled, values, tmp_path, task="regression",
                 mode="full", epochs=1, backbone_lr_scale=0, progress=False)


def test_regression_huber_loss_is_quadratic_then_linear(pretrained, tmp_path):
    from eokit.timeseries.task import _regression_loss

    target = torch.zeros(2)
    output = torch.tensor([0.5, 3.0]).reshape(2, 1, 1)
    mse = _regression_loss("mse")(output, target)
    huber = _regression_loss("huber", delta=1.0)(output, target)
    assert float(mse) == pytest.approx((0.25 + 9.0) / 2)
    assert float(huber) == pytest.approx((0.5 * 0.25 + (3.0 - 0.5)) / 2)
    data, backbone, _ = pretrained
    labelled = data.subset(np.arange(12))
    values = np.linspace(10.0, 40.0, 12).astype(np.float32)
    model, _ = finetune(backbone, labelled, values, tmp_path, task="regression", loss="huber",
                        huber_delta=0.5, epochs=2, batch_size=4, progress=False)
    assert np.isfinite(predict_series(model, labelled)[:, -1]).all()
    with pytest.raises(InputError, match="loss"):
        finetune(backbone, labelled, values, tmp_path, task="regression", loss="l1",
                 epochs=1, progress=False)


def test_finetune_rejects_bad_labels_and_bands(pretrained, tmp_path):
    data, backbone, _ = pretrained
    labelled = data.subset(np.arange(6))
    with pytest.raises(InputError, match=r"label values \[5\]"):
        finetune(backbone, labelled, np.array([0, 1, 5, 0, 1, 0]), tmp_path,
                 class_names=["x", "y"], epochs=1, progress=False)
    wrong = SeriesData(series=np.zeros((6, 16, 2), np.float32), valid=np.ones((6, 16), bool),
                       doy=np.arange(16, dtype=np.float32)[None], band_names=["a", "b"])
    with pytest.raises(InputError, match="2 bands"):
        finetune(backbone, wrong, np.zeros(6, int), tmp_path, class_names=["x", "y"],
                 epochs=1, progress=False)
    with pytest.raises(InputError, match="2 bands but the model expects 3"):
        embed_series(backbone, wrong)
    for names in (["x", "x"], ["x", ""]):
        with pytest.raises(InputError, match="class names must be non-empty and unique"):
            finetune(backbone, labelled, np.zeros(6, int), tmp_path / "none",
                     class_names=names, epochs=1, progress=False)
    with pytest.raises(InputError, match=r"epochs: must be an integer >= 1, got 0"):
        finetune(backbone, labelled, np.zeros(6, int), tmp_path / "none",
                 class_names=["x", "y"], epochs=0, progress=False)
    for bad in ({"epochs": 0}, {"max_pixels": 1}, {"epochs": 1.5}):
        with pytest.raises(InputError, match=f"{next(iter(bad))}: must be an integer"):
            pretrain(data, tmp_path / "none", size="tiny", progress=False, **bad)
    assert not (tmp_path / "none").exists()


def test_forecast_and_embed_series(pretrained):
    data, backbone, _ = pretrained
    values, future = forecast_series(backbone, data, 3)
    assert values.shape == (len(data), 3, 3)
    assert np.isnan(values[-1]).all() and np.isfinite(values[:-1]).all()
    assert future is not None and len(future) == 3
    assert (future > data.dates[-1].astype("datetime64[D]")).all()
    assert (np.diff(future).astype(int) > 0).all()
    emb = embed_series(backbone, data)
    assert emb.shape == (len(data), backbone.config.d_model)
    assert np.isnan(emb[-1]).all() and np.isfinite(emb[:-1]).all()
    # Two single-threaded streams give the same float32 embeddings; bfloat16 stays close to them.
    two = embed_series(backbone, data, workers=2, batch_size=7)
    np.testing.assert_allclose(two[:-1], emb[:-1], atol=1e-5)
    half = embed_series(backbone, data, dtype="bfloat16")
    norms = np.linalg.norm(half[:-1], axis=1) * np.linalg.norm(emb[:-1], axis=1)
    cos = (half[:-1] * emb[:-1]).sum(1) / norms
    assert cos.min() > 0.99 and np.isnan(half[-1]).all()


def test_forest_change_dates():
    valid = np.ones((4, 10), bool)
    prob = np.zeros((4, 10), np.float32)
    prob[0, 4:] = 0.9          # becomes forest at 4
    prob[1, :6] = 0.9          # stops being forest at 6
    prob[2, 3] = 0.9           # a one-date blip: no change
    prob[3, 5:] = 0.9
    valid[3, 5] = False        # the first forest date is cloudy: dated at the next valid one
    becomes, stops = forest_change_dates(prob, valid, persistence=2)
    assert becomes.tolist() == [4, -1, -1, 6]
    assert stops.tolist() == [-1, 6, -1, -1]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_inference_on_cuda_matches_cpu(pretrained, tmp_path):
    import copy

    data, backbone, _ = pretrained
    labelled = data.subset(np.arange(12))
    model, _ = finetune(copy.deepcopy(backbone), labelled, labelled.targets, tmp_path,
                        class_names=["x", "y"], epochs=1, batch_size=4, progress=False)
    expected = (predict_series(model, data), embed_series(model.backbone, data),
                forecast_series(model.backbone, data, 3)[0])
    model.to("cuda")
    got = (predict_series(model, data), embed_series(model.backbone, data),
           forecast_series(model.backbone, data, 3)[0])
    for cpu, gpu in zip(expected, got, strict=True):
        assert np.array_equal(np.isnan(cpu), np.isnan(gpu))
        np.testing.assert_allclose(gpu, cpu, atol=2e-3, equal_nan=True)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_augmented_pretraining_on_cuda(tmp_path, precision):
    data = _data()
    backbone, account = pretrain(data, tmp_path, size="tiny", epochs=2, batch_size=16,
                                 progress=False, config_overrides={"max_len": 32}, augment=True,
                                 trainer_overrides={"accelerator": "gpu", "devices": 1,
                                                    "precision": precision})
    assert account.tokens > 0 and np.isfinite(account.flops)
    series, doy, valid = data.tensors()
    assert torch.isfinite(backbone.embed(series, doy, valid)).all()


def test_class_weights_follow_the_logits_device():
    from eokit.timeseries.task import _classification_loss

    loss = _classification_loss(torch.tensor([1.0, 3.0]))
    # "meta" stands in for a GPU: the weights live on the CPU, the logits elsewhere.
    value = loss(torch.randn(4, 3, 2, device="meta"),
                 torch.zeros(4, 3, dtype=torch.long, device="meta"))
    assert value.device.type == "meta" and value.shape == ()
    logits = torch.randn(4, 3, 2)
    target = torch.randint(0, 2, (4, 3))
    weighted = torch.nn.functional.cross_entropy(logits.reshape(-1, 2), target.reshape(-1),
                                                 weight=torch.tensor([1.0, 3.0]))
    assert torch.allclose(loss(logits.to(torch.bfloat16), target),
                          weighted, atol=2e-2)


def test_refine_change_dates_picks_the_largest_residual_in_the_year_before_detection():
    dates = np.array(["2020-01-01", "2020-03-01", "2020-06-01", "2020-09-01", "2021-02-01",
                      "2021-04-01", "2021-07-01"], dtype="datetime64[D]")
    nan = np.nan
    score = np.array([
        [nan, 0.1, 0.2, 5.0, 0.3, 0.2, 0.1],  # cut in Sep 2020, detected Apr 2021
        [nan, 0.1, 9.0, 0.2, 0.3, 0.2, 0.1],  # nothing detected
        [nan, 9.0, 0.2, 0.1, 0.4, 0.2, 0.1],  # largest value older than a year: not taken
        [nan, 0.1, 0.2, nan, nan, nan, nan],  # no valid date in the window: detection kept
    ], dtype=np.float32)
    detected = np.array([5, -1, 6, 6])
    refined = refine_change_dates(detected, score, dates)
    assert refined.tolist() == [3, -1, 4, 6]
    assert refine_change_dates(detected, score, dates, window_days=60).tolist() == [4, -1, 6, 6]
    with pytest.raises(InputError, match="score"):
        refine_change_dates(detected[:2], score, dates)
    with pytest.raises(InputError, match="dates"):
        refine_change_dates(detected, score, dates[:5])
    with pytest.raises(InputError, match="window_days"):
        refine_change_dates(detected, score, dates, window_days=0)


def test_peak_departure_skips_the_warm_up_and_unobserved_pixels():
    dates = np.array(["2020-01-01", "2020-03-01", "2020-08-01", "2020-10-01"],
                     dtype="datetime64[D]")
    nan = np.nan
    score = np.array([[nan, 9.0, 0.5, 2.0],    # the large early value is in the warm-up
                      [nan, 0.1, 3.0, nan],
                      [nan, 1.0, nan, nan]], dtype=np.float32)  # nothing after the warm-up
    peak, index = peak_departure(score, dates)
    assert index.tolist() == [3, 2, -1]
    assert peak[:2].tolist() == [2.0, 3.0] and np.isnan(peak[2])
    peak, index = peak_departure(score, dates, warmup_days=0)
    assert index.tolist() == [1, 2, 1]
    with pytest.raises(InputError, match="score"):
        peak_departure(score, dates[:3])
    with pytest.raises(InputError, match="warmup_days"):
        peak_departure(score, dates, warmup_days=-1)
