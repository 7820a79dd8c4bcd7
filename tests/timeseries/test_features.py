"""Head features (pooled prefix, lagged inputs), early stopping, validation split, dating."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eokit.core.errors import InputError
from eokit.timeseries.data import SeriesData
from eokit.timeseries.features import (
    HeadFeatureConfig,
    elapsed_days,
    head_features,
    lagged_inputs,
    running_stats,
)
from eokit.timeseries.model import (
    FineTunedSeriesModel,
    PixelSeriesTransformer,
    SeriesModelConfig,
    load_model,
    save_model,
)
from eokit.timeseries.task import (
    finetune,
    forest_change_dates,
    predict_series,
    smooth_valid,
    validation_split,
)


def test_running_stats_are_causal_and_skip_invalid_dates():
    hidden = torch.tensor([[[1.0], [5.0], [100.0], [3.0]]])
    valid = torch.tensor([[True, True, False, True]])
    mean, high, low = running_stats(hidden, valid)
    assert mean[0, :, 0].tolist() == pytest.approx([1.0, 3.0, 3.0, 3.0])
    assert high[0, :, 0].tolist() == [1.0, 5.0, 5.0, 5.0]  # the invalid 100 never counts
    assert low[0, :, 0].tolist() == [1.0, 1.0, 1.0, 1.0]
    # Before the first valid date every statistic is 0, not +-inf.
    _, high, low = running_stats(hidden, torch.tensor([[False, True, True, True]]))
    assert high[0, 0, 0] == 0 and low[0, 0, 0] == 0


def test_lagged_inputs_pick_the_last_valid_observation_at_each_lag():
    # Dates every 10 days; lag 20 days.
    doy = torch.tensor([[1.0, 11.0, 21.0, 31.0, 41.0]])
    scaled = torch.tensor([[[0.1], [0.2], [0.3], [0.4], [0.5]]])
    valid = torch.tensor([[True, True, False, True, True]])
    out = lagged_inputs(scaled, valid, doy, n_lags=2, lag_days=20.0)
    assert out.shape == (1, 5, 4)
    # lag 0: last valid on or before t (date 2 is cloudy -> date 1's value).
    assert out[0, :, 0].tolist() == pytest.approx([0.1, 0.2, 0.2, 0.4, 0.5])
    # lag 1: on or before t - 20 days; missing for the first two dates (flag 1).
    assert out[0, :, 2].tolist() == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.2])
    assert out[0, :, 3].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_elapsed_days_unwrap_the_year_end():
    days = elapsed_days(torch.tensor([[350.0, 360.0, 5.0, 20.0]]))
    assert days[0].tolist() == pytest.approx([0.0, 10.0, 20.25, 35.25])


def test_head_features_are_causal_and_have_the_announced_width():
    config = HeadFeatureConfig(pooling="stats", memory=4.0, input_lags=3, lag_days=15.0)
    torch.manual_seed(0)
    hidden, scaled = torch.randn(2, 9, 8), torch.randn(2, 9, 3)
    doy = torch.arange(1, 10, dtype=torch.float32).mul(10).expand(2, 9)
    valid = torch.ones(2, 9, dtype=torch.bool)
    full = head_features(hidden, scaled, valid, doy, config)
    assert full.shape[-1] == config.n_features(8, 3)
    # Changing the future does not change today's features.
    later = hidden.clone()
    later[:, 6:] += 10
    changed = head_features(later, scaled, valid, doy, config)
    assert torch.equal(full[:, :6], changed[:, :6])
    assert not torch.equal(full[:, 6:], changed[:, 6:])


def test_head_feature_config_rejects_bad_values():
    with pytest.raises(InputError, match="pooling"):
        HeadFeatureConfig(pooling="max")
    with pytest.raises(InputError, match="input_lags"):
        HeadFeatureConfig(input_lags=-1)


def test_validation_split_takes_whole_groups_and_is_seeded():
    groups = np.repeat(np.arange(10), 5)
    train, val = validation_split(50, fraction=0.2, groups=groups, seed=3)
    assert np.intersect1d(train, val).size == 0 and train.size + val.size == 50
    assert set(groups[val]).isdisjoint(groups[train])
    assert 10 <= val.size <= 15
    again = validation_split(50, fraction=0.2, groups=groups, seed=3)[1]
    assert np.array_equal(val, again)
    assert validation_split(50, fraction=0.0)[1].size == 0
    with pytest.raises(InputError, match="val_groups"):
        validation_split(50, fraction=0.2, groups=np.zeros(3))


def _series(n: int = 40, t: int = 12, seed: int = 0) -> SeriesData:
    rng = np.random.default_rng(seed)
    dates = np.datetime64("2021-01-01") + (np.arange(t) * 30).astype("timedelta64[D]")
    doy = ((dates - dates.astype("datetime64[Y]")).astype(int) + 1).astype(np.float32)
    labels = rng.integers(0, 2, size=n)
    series = (0.2 + 0.3 * labels[:, None, None] + rng.normal(0, 0.03, (n, t, 2))).astype(
        np.float32)
    valid = rng.uniform(size=(n, t)) > 0.2
    return SeriesData(series=series, valid=valid, doy=doy[None], band_names=["a", "b"],
                      dates=dates.astype("datetime64[s]"), targets=labels)


def test_finetune_with_lagged_inputs_early_stopping_and_round_trip(tmp_path):
    data = _series()
    backbone = PixelSeriesTransformer(SeriesModelConfig.from_size("tiny", 2, max_len=16))
    backbone.set_scaling(data.series, data.valid)
    backbone.eval()
    groups = np.arange(len(data)) // 4
    model, account = finetune(backbone, data, data.targets, tmp_path / "ft",
                              class_names=["a", "b"], pooling="stats", input_lags=4,
                              lag_days=30.0, epochs=40, batch_size=8, val_fraction=0.25,
                              val_groups=groups, patience=3, progress=False)
    assert account.tokens == len(data) * data.n_dates  # one backbone pass, cached features
    probs = predict_series(model, data)
    assert probs.shape == (len(data), data.n_dates, 2)
    # Separable classes: the last-date probability ranks them.
    assert probs[data.targets == 1, -1, 1].mean() > probs[data.targets == 0, -1, 1].mean() + 0.2
    assert not torch.equal(model.head.feature_scale, torch.ones_like(model.head.feature_scale))
    path = save_model(model, tmp_path / "m.safetensors")
    loaded, meta = load_model(path)
    assert isinstance(loaded, FineTunedSeriesModel)
    assert loaded.feature_config == model.feature_config
    assert meta["head"]["input_lags"] == 4
    np.testing.assert_allclose(predict_series(loaded, data), probs, atol=1e-6)


def test_smooth_valid_is_a_running_median_over_valid_dates_only():
    valid = np.array([[1, 1, 0, 1, 1, 1, 1, 0, 1, 1]], dtype=bool)
    values = np.array([[0, 0, 9, 1, 0, 1, 1, 9, 1, 1]], dtype=np.float32)
    out = smooth_valid(values, valid, 3)
    # The lone 1 at index 3 (between valid 0s) is removed; invalid dates keep their value.
    assert out[0].tolist() == [0, 0, 9, 0, 1, 1, 1, 9, 1, 1]


def test_smoothing_and_hysteresis_remove_flicker_but_keep_the_change_date():
    t = 30
    prob = np.full((2, t), 0.9, dtype=np.float32)
    prob[:, 15:] = 0.1  # a clear-cut at index 15
    prob[0, 5] = 0.2  # one-date dip (e.g. a shadow)
    prob[0, 6] = 0.3
    prob[1, 20:22] = 0.55  # noise inside the hysteresis band after the cut
    valid = np.ones((2, t), dtype=bool)
    becomes, stops = forest_change_dates(prob, valid, persistence=2)
    assert stops[0] == 5  # the dip alone fires without smoothing
    becomes, stops = forest_change_dates(prob, valid, persistence=2, smooth=5, hysteresis=0.1)
    assert stops.tolist() == [15, 15]
    assert becomes.tolist() == [-1, -1]
    with pytest.raises(InputError, match="hysteresis"):
        forest_change_dates(prob, valid, hysteresis=0.6)


def test_forecast_residuals_compare_each_date_with_the_previous_prediction():
    scaled = torch.tensor([[[1.0], [2.0], [4.0], [8.0]]])
    predicted = torch.tensor([[[2.0], [3.0], [9.0], [0.0]]])  # made at t for t + 1
    valid = torch.tensor([[True, True, False, True]])
    config = HeadFeatureConfig(residuals=True, memory=None)
    hidden = torch.zeros(1, 4, 2)
    out = head_features(hidden, scaled, valid, torch.arange(1.0, 5.0)[None], config, predicted)
    assert out.shape[-1] == config.n_features(2, 1)
    residual, running = out[0, :, -2], out[0, :, -1]
    # t=0: nothing predicted it; t=2 invalid; t=3: 8 - 9.
    assert residual.tolist() == [0.0, 0.0, 0.0, -1.0]
    assert running.tolist() == pytest.approx([0.0, 0.0, 0.0, -1.0 / 3.0])
    with pytest.raises(InputError, match="predicted"):
        head_features(hidden, scaled, valid, torch.arange(1.0, 5.0)[None], config)


def test_finetuned_model_with_residual_features_round_trips(tmp_path):
    data = _series(n=16)
    backbone = PixelSeriesTransformer(SeriesModelConfig.from_size("tiny", 2, max_len=16))
    backbone.set_scaling(data.series, data.valid)
    backbone.eval()
    model, _ = finetune(backbone, data, data.targets, tmp_path / "ft", class_names=["a", "b"],
                        residuals=True, epochs=2, batch_size=8, val_fraction=0.0,
                        progress=False)
    loaded, _ = load_model(save_model(model, tmp_path / "m.safetensors"))
    assert isinstance(loaded, FineTunedSeriesModel) and loaded.feature_config.residuals
    np.testing.assert_allclose(predict_series(loaded, data), predict_series(model, data),
                               atol=1e-6)
