"""Fast inference paths of the time-series backbone equal the plain masked-attention reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from eokit.core.errors import InputError
from eokit.timeseries.model import (
    FineTunedSeriesModel,
    PixelSeriesTransformer,
    SeriesModelConfig,
)


def _model(size: str = "tiny", bands: int = 4, seed: int = 0) -> PixelSeriesTransformer:
    torch.manual_seed(seed)
    model = PixelSeriesTransformer(SeriesModelConfig.from_size(size, bands, max_len=64))
    # Non-trivial LayerNorm affine parameters and biases, so every term of the block matters.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln" in name or name.startswith("ln_f"):
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def _batch(n: int = 9, t: int = 20, c: int = 4, seed: int = 0, p_valid: float = 0.6):
    gen = torch.Generator().manual_seed(seed)
    series = torch.rand(n, t, c, generator=gen)
    doy = (torch.arange(t, dtype=torch.float32) * 13 + 7)[None].repeat(n, 1) % 365 + 1
    valid = torch.rand(n, t, generator=gen) < p_valid
    valid[0] = True  # one series fully valid
    valid[1] = False  # one series without any valid date
    valid[2, :-1] = False  # one series valid only at its last date
    series[~valid] = torch.where(torch.rand_like(series[~valid]) > 0.5, 1e6, float("nan"))
    return series, doy, valid


def _reference_hidden(model: PixelSeriesTransformer, series, doy, valid) -> torch.Tensor:
    """The transformer written out with an explicit masked softmax (no fused kernels)."""
    valid = valid & torch.isfinite(series).all(-1)
    x = model.token_embed(model.tokens(series, doy, valid))
    length = series.shape[1]
    x = x + model.pos_embed.weight[:length][None]
    eye = torch.eye(length, dtype=torch.bool)
    allowed = torch.tril(torch.ones(length, length, dtype=torch.bool))[None] & (
        valid[:, None, :] | eye[None])
    for block in model.blocks:
        attn = block.attn
        h = block.ln1(x)
        q, k, v = attn.qkv(h).split(h.shape[-1], dim=-1)
        heads = attn.n_heads
        shape = (h.shape[0], length, heads, h.shape[-1] // heads)
        q, k, v = (z.reshape(shape).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(shape[-1])
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(h.shape)
        x = x + attn.proj(out)
        x = x + block.fc2(F.gelu(block.fc1(block.ln2(x))))
    return model.ln_f(x)


def _reference_embed(model, series, doy, valid) -> torch.Tensor:
    valid = valid & torch.isfinite(series).all(-1)
    hidden = _reference_hidden(model, series, doy, valid)
    weight = valid[..., None].to(hidden.dtype)
    return (hidden * weight).sum(1) / weight.sum(1).clamp_min(1.0)


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_forward_equals_reference_with_and_without_gradients(size, monkeypatch):
    import eokit.timeseries.model as model_module

    monkeypatch.setattr(model_module, "_FORWARD_CHUNK_TOKENS", 50)  # several inference chunks
    model = _model(size)
    series, doy, valid = _batch()
    with torch.no_grad():
        expected = _reference_hidden(model, series, doy, valid)
        fast = model(series, doy, valid)
    assert (fast - expected).abs().max() < 1e-5
    # Training path (fused kernel, autograd on) gives the same states.
    assert (model(series, doy, valid).detach() - expected).abs().max() < 1e-5
    # All dates valid: the plain causal mask path.
    full = torch.ones_like(valid)
    clean = torch.nan_to_num(series, nan=0.5, posinf=0.5)
    with torch.no_grad():
        expected = _reference_hidden(model, clean, doy, full)
        assert (model(clean, doy, full) - expected).abs().max() < 1e-5


@pytest.mark.parametrize("chunk_tokens", [1, 7, 4096])
@pytest.mark.parametrize("workers", [1, 2])
def test_embed_equals_reference_mean_over_valid_dates(chunk_tokens, workers):
    model = _model("small")
    series, doy, valid = _batch(n=13)
    expected = _reference_embed(model, series, doy, valid)
    fast = model.embed(series, doy, valid, chunk_tokens=chunk_tokens, workers=workers)
    assert fast.shape == (13, model.config.d_model) and fast.dtype == torch.float32
    assert (fast - expected).abs().max() < 1e-5
    assert torch.equal(fast[1], torch.zeros(model.config.d_model))  # no valid date: zeros
    assert not fast.is_inference()  # usable as an autograd input


def test_embed_ignores_values_at_invalid_dates_and_keeps_torch_threads():
    model = _model()
    series, doy, valid = _batch()
    threads = torch.get_num_threads()
    reference = model.embed(series, doy, valid, workers=2, chunk_tokens=16)
    assert torch.get_num_threads() == threads
    other = series.clone()
    other[~valid] = -3.0
    assert torch.equal(model.embed(other, doy, valid), model.embed(series, doy, valid))
    assert (model.embed(other, doy, valid) - reference).abs().max() < 1e-6
    # A value that is NaN at a date marked valid makes that date invalid (as before).
    nan_at_valid = series.clone()
    nan_at_valid[0, 5, 0] = float("nan")
    dropped = valid.clone()
    dropped[0, 5] = False
    assert torch.equal(model.embed(nan_at_valid, doy, valid), model.embed(series, doy, dropped))


def test_causality_holds_on_every_path():
    model = _model("small")
    series, doy, valid = _batch()
    k = 9
    changed = series.clone()
    changed[:, k:] = changed[:, k:] * 5.0 - 2.0
    flipped = valid.clone()
    flipped[:, k + 1:] = ~flipped[:, k + 1:]
    full = torch.ones_like(valid)
    clean = torch.nan_to_num(series, nan=0.5, posinf=0.5)
    clean_changed = torch.nan_to_num(changed, nan=0.5, posinf=0.5)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            before = model(series, doy, valid).detach()
            after = model(changed, doy, flipped).detach()
            assert torch.equal(before[:, :k], after[:, :k])
            assert not torch.allclose(before[:, k:], after[:, k:])
            before = model(clean, doy, full).detach()
            after = model(clean_changed, doy, full).detach()
            assert torch.equal(before[:, :k], after[:, :k])
            assert not torch.allclose(before[:, k:], after[:, k:])
    # The embedding of a prefix is the running mean of the full series' states at that date.
    with torch.no_grad():
        hidden = model(series, doy, valid)
    prefix = model.embed(series[:, :k], doy[:, :k], valid[:, :k])
    weight = (valid & torch.isfinite(series).all(-1))[:, :k, None].float()
    running = (hidden[:, :k] * weight).sum(1) / weight.sum(1).clamp_min(1.0)
    assert (prefix - running).abs().max() < 1e-5


def test_bfloat16_embeddings_and_class_predictions_agree_with_float32():
    model = _model("small", bands=6)
    series, doy, valid = _batch(n=256, t=24, c=6, p_valid=0.7)
    exact = model.embed(series, doy, valid)
    fast = model.embed(series, doy, valid, dtype="bfloat16")
    has = valid.any(1)
    cosine = F.cosine_similarity(exact[has], fast[has])
    assert float(cosine.min()) >= 0.999
    # A classifier head on top predicts the same classes at (nearly) every pixel and date.
    torch.manual_seed(1)
    classifier = FineTunedSeriesModel(model, 3, class_names=["a", "b", "c"]).eval()
    probs32 = classifier.predict(series, doy, valid)
    model.set_compute_dtype("bfloat16")
    try:
        probs16 = classifier.predict(series, doy, valid)
        # Training (gradients on) is never switched to bf16 by the inference setting.
        assert (model(series, doy, valid).detach()
                - _reference_hidden(model, series, doy, valid).detach()).abs().max() < 1e-5
    finally:
        model.set_compute_dtype(None)
    agree = (probs32.argmax(-1) == probs16.argmax(-1)).float().mean()
    assert float(agree) >= 0.99
    assert not torch.equal(probs32, probs16)  # bf16 really ran
    assert torch.equal(classifier.predict(series, doy, valid), probs32)


@pytest.mark.parametrize("dtype", [torch.float64])
def test_models_cast_to_another_dtype_still_run_without_gradients(dtype):
    # (bfloat16 inference goes through dtype="bfloat16" autocast, not a cast model.)
    model = _model("small")
    series, doy, valid = _batch()
    with torch.no_grad():
        expected = _reference_hidden(model, series, doy, valid)
        model.to(dtype)
        hidden = model(series.to(dtype), doy, valid)
    assert hidden.dtype == torch.promote_types(dtype, torch.float32)
    tolerance = 1e-5 if dtype == torch.float64 else 0.1
    assert (hidden.float() - expected).abs().max() < tolerance


def test_checkpoint_key_names_are_unchanged(tmp_path):
    from safetensors.torch import load_file

    from eokit.timeseries.model import load_model, save_model

    model = _model()
    path = save_model(model, tmp_path / "m.safetensors")
    keys = set(load_file(str(path)))
    assert {"blocks.0.attn.qkv.weight", "blocks.0.attn.proj.bias", "blocks.1.fc1.weight",
            "token_embed.0.weight", "pos_embed.weight", "ln_f.weight", "next_head.bias",
            "band_center", "band_half_range"} <= keys
    loaded, _ = load_model(path)
    series, doy, valid = _batch()
    assert torch.equal(loaded.embed(series, doy, valid), model.embed(series, doy, valid))


def test_embed_works_with_lora_wrapped_projections():
    from eokit.core.adapters import apply_lora

    model = _model()
    series, doy, valid = _batch()
    model = apply_lora(model, ["qkv", "proj", "fc1", "fc2"], r=2, alpha=4)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)  # make the adapters change the result
    assert any("lora" in name for name, _ in model.named_modules())  # injected in place
    exact = _reference_embed(model, series, doy, valid)
    assert (model.embed(series, doy, valid) - exact).abs().max() < 1e-5


def test_bad_inference_options_are_one_line_errors():
    model = _model()
    series, doy, valid = _batch()
    with pytest.raises(InputError, match="dtype"):
        model.embed(series, doy, valid, dtype="float16")
    with pytest.raises(InputError, match="chunk_tokens"):
        model.embed(series, doy, valid, chunk_tokens=0)
    with pytest.raises(InputError, match="workers"):
        model.embed(series, doy, valid, workers=0)
    with pytest.raises(InputError, match="max_len"):
        model.embed(*_batch(t=65))
