"""Causal transformer: no future leakage, masked loss, forecast, embed, save/load, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eokit.core.errors import InputError
from eokit.timeseries.model import (
    FineTunedSeriesModel,
    PixelSeriesTransformer,
    SeriesModelConfig,
    forward_flops_per_token,
    prefix_features,
)


def _model(bands: int = 4, seed: int = 0) -> PixelSeriesTransformer:
    torch.manual_seed(seed)
    model = PixelSeriesTransformer(SeriesModelConfig.from_size("tiny", bands, max_len=64))
    model.eval()
    return model


def _batch(n: int = 3, t: int = 20, c: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    series = torch.rand(n, t, c, generator=gen)
    doy = (torch.arange(t, dtype=torch.float32) * 12 + 5)[None].repeat(n, 1) % 365 + 1
    valid = torch.rand(n, t, generator=gen) > 0.3
    valid[:, 0] = True
    return series, doy, valid


def test_changing_a_later_token_never_changes_earlier_predictions():
    model = _model()
    series, doy, valid = _batch()
    k = 11
    before = model.predict_next(series, doy, valid)
    changed = series.clone()
    changed[:, k:] = changed[:, k:] * 7.0 + 3.0  # every token from k on
    flipped = valid.clone()
    flipped[:, k + 1:] = ~flipped[:, k + 1:]
    after = model.predict_next(changed, doy, flipped)
    # Positions < k never see token k or later (the next-date DOY they see is unchanged).
    assert torch.equal(before[:, :k], after[:, :k])
    assert not torch.allclose(before[:, k:], after[:, k:])


def test_invalid_tokens_excluded_from_loss_and_from_attention():
    model = _model()
    series, doy, valid = _batch()
    loss = model.next_token_loss(series, doy, valid)
    garbage = series.clone()
    garbage[~valid] = torch.where(torch.rand_like(garbage[~valid]) > 0.5, 1e6, float("nan"))
    assert torch.equal(model.next_token_loss(garbage, doy, valid), loss)
    # But a valid target does count.
    moved = series.clone()
    first_valid_target = int(torch.nonzero(valid[0, 1:])[0]) + 1
    moved[0, first_valid_target] += 1.0
    assert not torch.equal(model.next_token_loss(moved, doy, valid), loss)


def test_loss_with_no_valid_target_is_zero_not_nan():
    model = _model()
    series, doy, valid = _batch()
    valid[:] = False
    loss = model.next_token_loss(series, doy, valid)
    assert torch.isfinite(loss) and float(loss.detach()) == 0.0


def test_forecast_shapes_and_no_mutation():
    model = _model()
    series, doy, valid = _batch(n=2, t=15)
    copy = series.clone()
    values, offsets = model.forecast(series, doy, valid, 4, step_days=10)
    assert values.shape == (2, 4, 4)
    assert torch.isfinite(values).all()
    assert torch.equal(offsets[0], torch.tensor([10.0, 20.0, 30.0, 40.0]))
    assert torch.equal(series, copy)
    # Forecasting one step equals the next-token prediction at the last position (unscaled).
    one, _ = model.forecast(series, doy, valid, 1, step_days=10)
    nxt = torch.cat((doy[:, 1:], doy[:, -1:] + 10), 1)
    direct = model.unscale(model.predict_next(series, doy, valid, nxt)[:, -1])
    assert torch.allclose(one[:, 0], direct)
    with pytest.raises(InputError, match="n_steps"):
        model.forecast(series, doy, valid, 0)


def test_forecast_beyond_max_len_uses_last_window():
    model = _model()
    series, doy, valid = _batch(n=1, t=60)
    values, _ = model.forecast(series, doy, valid, 10)
    assert values.shape == (1, 10, 4)


def test_embed_is_mean_of_last_layer_over_valid_dates():
    model = _model()
    series, doy, valid = _batch()
    hidden = model(series, doy, valid)
    emb = model.embed(series, doy, valid)
    expected = torch.stack([hidden[i][valid[i]].mean(0) for i in range(series.shape[0])])
    assert torch.allclose(emb, expected, atol=1e-6)
    # The running mean of the prefix features at the last date is the embedding.
    assert torch.allclose(prefix_features(hidden, valid)[:, -1, hidden.shape[-1]:], emb, atol=1e-6)


def test_scaling_maps_to_about_unit_range_and_is_saved(tmp_path):
    from eokit.timeseries.model import load_model, save_model

    model = _model()
    rng = np.random.default_rng(0)
    raw = rng.uniform(100, 5000, size=(50, 10, 4)).astype(np.float32)
    model.set_scaling(raw, np.ones((50, 10), bool))
    scaled = model.scale(torch.from_numpy(raw))
    assert -1.3 < float(scaled.min()) and float(scaled.max()) < 1.3
    path = save_model(model, tmp_path / "m.safetensors", extra={"note": {"a": 1}})
    loaded, meta = load_model(path)
    assert isinstance(loaded, PixelSeriesTransformer)
    assert torch.equal(loaded.band_center, model.band_center)
    series, doy, valid = _batch()
    assert torch.equal(loaded(series, doy, valid), model(series, doy, valid))
    assert meta["note"] == {"a": 1}
    assert meta["band_scaling"]["center"] == pytest.approx(model.scaling_dict()["center"])


def test_finetuned_roundtrip(tmp_path):
    from eokit.timeseries.model import load_model, save_model

    model = FineTunedSeriesModel(_model(), 3, class_names=["none", "conifer", "broadleaf"])
    model.eval()
    path = save_model(model, tmp_path / "f.safetensors")
    loaded, _ = load_model(path)
    assert isinstance(loaded, FineTunedSeriesModel)
    assert loaded.class_names == ["none", "conifer", "broadleaf"]
    series, doy, valid = _batch()
    probs = loaded.predict(series, doy, valid)
    assert probs.shape == (3, 20, 3)
    assert torch.allclose(probs.sum(-1), torch.ones(3, 20))
    assert torch.equal(probs, model.predict(series, doy, valid))


def test_load_rejects_non_model_files(tmp_path):
    from eokit.timeseries.model import load_model

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="bad.safetensors"):
        load_model(bad)
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing.safetensors")


def test_band_count_mismatch_is_one_line_error():
    model = _model(bands=4)
    series, doy, valid = _batch(c=5)
    with pytest.raises(InputError, match="5 bands but the model was trained on 4"):
        model(series, doy, valid)


def test_sizes_and_flops():
    tiny = SeriesModelConfig.from_size("tiny", 6)
    small = SeriesModelConfig.from_size("small", 6)
    assert forward_flops_per_token(small, 100) > forward_flops_per_token(tiny, 100)
    assert forward_flops_per_token(tiny, 200) > forward_flops_per_token(tiny, 10)
    with pytest.raises(InputError, match="size"):
        SeriesModelConfig.from_size("huge", 6)


def test_moving_average_prefix_features_are_causal_and_track_changes():
    hidden = torch.zeros(1, 6, 2)
    hidden[0, 3:] = 1.0
    valid = torch.ones(1, 6, dtype=torch.bool)
    valid[0, 4] = False
    mean = prefix_features(hidden, valid)[0, :, 2:]
    ema = prefix_features(hidden, valid, memory=2)[0, :, 2:]
    assert torch.allclose(ema[:3], torch.zeros(3, 2))
    assert torch.allclose(ema[3], torch.full((2,), 0.5))
    assert torch.allclose(ema[4], ema[3])  # invalid date: unchanged
    assert torch.allclose(ema[5], torch.full((2,), 0.75))
    assert float(mean[5, 0]) == pytest.approx(2 / 5)
    assert (ema[5] > mean[5]).all()  # reacts faster than the running mean


def test_forecast_residual_is_the_causal_one_step_error_of_valid_dates():
    model = _model()
    series, doy, valid = _batch()
    residual = model.forecast_residual(series, doy, valid)
    assert residual.shape == valid.shape
    assert torch.isnan(residual[:, 0]).all() and torch.isnan(residual[:, 1:][~valid[:, 1:]]).all()
    expected = (model.scale(series[:, 1:]) - model.predict_next(series, doy, valid)[:, :-1]
                ).pow(2).mean(-1)
    ok = valid[:, 1:]
    assert torch.allclose(residual[:, 1:][ok], expected[ok], atol=1e-6)
    # A jump at date k raises the residual there and changes nothing before it.
    k = int(torch.nonzero(valid[0, 5:])[0]) + 5
    jumped = series.clone()
    jumped[:, k:] += 3.0
    after = model.forecast_residual(jumped, doy, valid)
    assert torch.equal(after[:, :k].nan_to_num(-1.0), residual[:, :k].nan_to_num(-1.0))
    assert (after[0, k] > residual[0, k] + 1.0).item()
