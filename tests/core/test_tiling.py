from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from eokit.core import raster as raster_module
from eokit.core.errors import InputError
from eokit.core.raster import read_raster
from eokit.core.tiling import (
    axis_weights,
    plan_windows,
    predict_array,
    predict_raster,
    resolve_device,
)


def small_net(in_channels: int = 3, out_channels: int = 4, seed: int = 0) -> nn.Module:
    """Three 3x3 convs: receptive-field radius 3 px."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, out_channels, 3, padding=1),
    ).eval()


class Bitemporal(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = small_net(6, 2, seed=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([a, b - a], dim=1))


def whole(model, *arrays: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        tensors = [torch.from_numpy(a.astype(np.float32))[None] for a in arrays]
        return model(*tensors)[0].numpy()


# --------------------------------------------------------------------------------- planning


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [(100, 130, 32, 8), (64, 64, 64, 16), (20, 300, 64, 16), (97, 41, 40, 39), (5, 5, 16, 0)],
)
def test_plan_windows_covers_everything_inside_bounds(height, width, tile, overlap):
    windows = plan_windows(height, width, tile=tile, overlap=overlap)
    covered = np.zeros((height, width), int)
    for r, c, h, w in windows:
        assert r >= 0 and c >= 0 and r + h <= height and c + w <= width
        assert (h, w) == (min(tile, height), min(tile, width))
        covered[r : r + h, c : c + w] += 1
    assert covered.min() >= 1
    assert windows == sorted(windows)


def test_plan_windows_overlap_at_least_requested():
    windows = plan_windows(100, 100, tile=32, overlap=8)
    rows = sorted({w[0] for w in windows})
    assert all(b - a <= 32 - 8 for a, b in zip(rows, rows[1:], strict=False))


@pytest.mark.parametrize(
    ("tile", "overlap", "match"), [(0, 0, "tile"), (32, 32, "overlap"), (32, -1, "overlap")]
)
def test_plan_windows_rejects_bad_parameters(tile, overlap, match):
    with pytest.raises(InputError, match=match):
        plan_windows(10, 10, tile=tile, overlap=overlap)


@pytest.mark.parametrize("blend", ["cosine", "linear", "none"])
def test_weights_zero_at_inner_edges_one_at_scene_edges(blend):
    w = axis_weights(32, 16, lead_inner=True, trail_inner=False, blend=blend)
    assert (w[:4] == 0).all() and w[-1] == 1.0 and (np.diff(w) >= 0).all()
    w = axis_weights(32, 16, lead_inner=False, trail_inner=False, blend=blend)
    assert (w == 1).all()


# ------------------------------------------------------------------------- equality with whole


@pytest.mark.parametrize("blend", ["cosine", "linear", "none"])
@pytest.mark.parametrize(("height", "width"), [(70, 90), (33, 120)])
def test_predict_array_equals_whole_image(rng, blend, height, width):
    image = rng.normal(size=(3, height, width)).astype(np.float32)
    model = small_net()
    tiled = predict_array(
        model, [image], out_channels=4, tile=32, overlap=12, batch_size=3, blend=blend
    )
    np.testing.assert_allclose(tiled, whole(model, image), atol=1e-5)


def test_predict_raster_equals_whole_image_and_keeps_georeference(make_geotiff, tmp_path, rng):
    image = rng.integers(0, 255, (3, 90, 110), dtype=np.uint8)
    source = make_geotiff(image)
    model = small_net()
    out = predict_raster(
        model,
        [source],
        tmp_path / "out.tif",
        out_channels=4,
        tile=40,
        overlap=16,
        batch_size=2,
        progress=False,
        band_names=list("abcd"),
    )
    result = read_raster(out)
    assert result.grid.same_as(read_raster(source).grid)
    assert result.band_names == list("abcd")
    np.testing.assert_allclose(result.data, whole(model, image), atol=1e-4)
    with rasterio.open(out) as dataset:
        assert dataset.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tif", "out.tif"]


def test_bitemporal_model(make_geotiff, tmp_path, rng):
    a = rng.normal(size=(3, 64, 80)).astype(np.float32)
    b = rng.normal(size=(3, 64, 80)).astype(np.float32)
    model = Bitemporal().eval()
    paths = [make_geotiff(a, name="a.tif"), make_geotiff(b, name="b.tif")]
    out = predict_raster(
        model,
        paths,
        tmp_path / "change.tif",
        out_channels=2,
        tile=32,
        overlap=12,
        progress=False,
        cog=False,
    )
    np.testing.assert_allclose(read_raster(out).data, whole(model, a, b), atol=1e-4)


def test_plain_callable_and_postprocess(rng):
    image = rng.normal(size=(3, 50, 50)).astype(np.float32)
    net = small_net()

    def model(x):
        return net(x)

    classes = predict_array(
        model,
        [image],
        out_channels=4,
        tile=24,
        overlap=12,
        postprocess=lambda p: p.argmax(0)[None],
        out_dtype="uint8",
    )
    assert classes.shape == (1, 50, 50) and classes.dtype == np.uint8
    np.testing.assert_array_equal(classes[0], whole(net, image).argmax(0))


def test_nodata_inputs_give_nodata_outputs(make_geotiff, tmp_path, rng):
    image = rng.normal(size=(3, 60, 60)).astype(np.float32)
    image[:, 10:20, 30:45] = -9999.0
    image[1, 50, 5] = np.nan
    source = make_geotiff(image, nodata=-9999.0)
    model = small_net()
    out = predict_raster(
        model,
        [source],
        tmp_path / "p.tif",
        out_channels=4,
        tile=24,
        overlap=12,
        progress=False,
        cog=False,
    )
    result = read_raster(out)
    invalid = np.zeros((60, 60), bool)
    invalid[10:20, 30:45] = True
    invalid[50, 5] = True
    np.testing.assert_array_equal(result.valid, ~invalid)
    assert np.isnan(result.data[:, invalid]).all()
    # valid pixels equal whole-image inference on the zero-filled input
    filled = np.where(invalid, 0.0, np.nan_to_num(image)).astype(np.float32)
    np.testing.assert_allclose(
        result.data[:, ~invalid], whole(model, filled)[:, ~invalid], atol=1e-4
    )


def test_class_map_nodata_uint8(make_geotiff, tmp_path):
    image = np.ones((3, 40, 40), np.uint8)
    image[:, :5] = 0
    source = make_geotiff(image, nodata=0)
    out = predict_raster(
        small_net(),
        source,
        tmp_path / "c.tif",
        out_channels=4,
        tile=16,
        overlap=4,
        postprocess=lambda p: p.argmax(0),
        out_dtype="uint8",
        progress=False,
    )
    with rasterio.open(out) as dataset:
        assert dataset.count == 1 and dataset.nodata == 255
        data = dataset.read(1)
    assert (data[:5] == 255).all() and (data[5:] < 4).all()


def test_streams_rows_before_the_scene_is_done(make_geotiff, tmp_path, rng, monkeypatch):
    image = rng.normal(size=(1, 600, 48)).astype(np.float32)
    source = make_geotiff(image)
    calls = {"windows": 0}
    net = small_net(1, 1)

    def model(x):
        calls["windows"] += x.shape[0]
        return net(x)

    writes = []
    original = raster_module.RasterWriter.write_window

    def spy(self, data, row_off, col_off):
        writes.append((row_off, data.shape[1], calls["windows"]))
        return original(self, data, row_off, col_off)

    monkeypatch.setattr(raster_module.RasterWriter, "write_window", spy)
    predict_raster(
        model,
        source,
        tmp_path / "s.tif",
        out_channels=1,
        tile=32,
        overlap=8,
        progress=False,
        cog=False,
    )
    total = len(plan_windows(600, 48, tile=32, overlap=8))
    assert len(writes) > 5
    # first rows written long before the last window ran (the writer thread lags by a few strips)
    assert total >= 50 and writes[0][2] <= 12
    assert all(h <= 32 for _, h, _ in writes)
    assert sum(h for _, h, _ in writes) == 600


# -------------------------------------------------------------------------------- bad input


def test_grid_mismatch_between_inputs(make_geotiff, tmp_path):
    a = make_geotiff(np.ones((3, 16, 16), np.float32), name="t1.tif")
    b = make_geotiff(np.ones((3, 16, 16), np.float32), name="t2.tif", crs="EPSG:32632")
    with pytest.raises(InputError, match=r"t1\.tif.*t2\.tif"):
        predict_raster(Bitemporal(), [a, b], tmp_path / "x.tif", out_channels=2, progress=False)
    assert not (tmp_path / "x.tif").exists()


def test_all_nodata_input_raises_and_writes_nothing(make_geotiff, tmp_path):
    source = make_geotiff(np.zeros((3, 16, 16), np.uint8), nodata=0)
    with pytest.raises(InputError, match="no valid"):
        predict_raster(
            small_net(),
            source,
            tmp_path / "x.tif",
            out_channels=4,
            tile=8,
            overlap=2,
            progress=False,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tif"]


def test_wrong_band_count_and_output_shape(make_geotiff, tmp_path):
    source = make_geotiff(np.ones((4, 16, 16), np.float32))
    with pytest.raises(InputError, match="4 bands but the model expects 3") as info:
        predict_raster(
            small_net(3),
            source,
            tmp_path / "x.tif",
            out_channels=4,
            tile=8,
            overlap=2,
            progress=False,
            expected_bands=3,
        )
    assert str(source) in str(info.value)
    with pytest.raises(InputError, match="out_channels"):
        predict_raster(
            small_net(4),
            source,
            tmp_path / "x.tif",
            out_channels=3,
            tile=8,
            overlap=2,
            progress=False,
        )
    assert not (tmp_path / "x.tif").exists()


def test_failure_midway_keeps_previous_output(make_geotiff, tmp_path):
    source = make_geotiff(np.ones((1, 64, 64), np.float32))
    out = tmp_path / "keep.tif"
    out.write_bytes(b"previous")
    seen = {"n": 0}

    def flaky(x):
        seen["n"] += 1
        if seen["n"] > 3:
            raise RuntimeError("model crashed")
        return x

    with pytest.raises(RuntimeError, match="crashed"):
        predict_raster(
            flaky, source, out, out_channels=1, tile=16, overlap=4, batch_size=1, progress=False
        )
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tif", "keep.tif"]


def test_unwritable_output_fails_before_reading(make_geotiff, tmp_path):
    source = make_geotiff(np.ones((1, 16, 16), np.float32))
    (tmp_path / "blocker").write_text("x")
    called = {"n": 0}

    def model(x):
        called["n"] += 1
        return x

    with pytest.raises(InputError, match="blocker"):
        predict_raster(
            model, source, tmp_path / "blocker" / "o.tif", out_channels=1, progress=False
        )
    assert called["n"] == 0


def test_bad_parameters(rng):
    image = np.zeros((1, 8, 8), np.float32)
    with pytest.raises(InputError, match="blend"):
        predict_array(lambda x: x, [image], out_channels=1, tile=4, overlap=1, blend="gauss")
    with pytest.raises(InputError, match="batch_size"):
        predict_array(lambda x: x, [image], out_channels=1, tile=4, overlap=1, batch_size=0)
    with pytest.raises(InputError, match="arrays"):
        predict_array(lambda x: x, [image, np.zeros((1, 9, 8))], out_channels=1, tile=4, overlap=1)


# ------------------------------------------------------------------------------- column bands


@pytest.mark.parametrize("band_width", [10, 20, 33])
def test_column_bands_equal_single_pass(rng, band_width):
    image = rng.normal(size=(3, 45, 100)).astype(np.float32)
    model = small_net()
    banded = predict_array(
        model, [image], out_channels=4, tile=24, overlap=12, band_width=band_width
    )
    single = predict_array(model, [image], out_channels=4, tile=24, overlap=12, band_width=1000)
    np.testing.assert_allclose(banded, single, atol=1e-5)
    np.testing.assert_allclose(banded, whole(model, image), atol=1e-5)


def test_wide_raster_is_written_in_block_aligned_bands(make_geotiff, tmp_path, rng, monkeypatch):
    image = rng.normal(size=(1, 24, 1300)).astype(np.float32)
    source = make_geotiff(image)
    net = small_net(1, 1)
    writes = []
    original = raster_module.RasterWriter.write_window

    def spy(self, data, row_off, col_off):
        writes.append((row_off, col_off, data.shape[2]))
        return original(self, data, row_off, col_off)

    monkeypatch.setattr(raster_module.RasterWriter, "write_window", spy)
    out = predict_raster(
        net,
        source,
        tmp_path / "wide.tif",
        out_channels=1,
        tile=64,
        overlap=16,
        band_width=500,
        progress=False,
        cog=False,
    )
    assert sorted({(c, w) for _, c, w in writes}) == [(0, 512), (512, 512), (1024, 276)]
    np.testing.assert_allclose(read_raster(out).data, whole(net, image), atol=1e-4)


def test_no_sliver_band_at_the_right_edge():
    from eokit.core.tiling import _plan_bands

    cols = sorted({w[1] for w in plan_windows(64, 1100, tile=64, overlap=16)})
    bands = _plan_bands(1100, cols, 64, 512)
    assert [(b.out_start, b.out_stop) for b in bands] == [(0, 512), (512, 1100)]
    cols = sorted({w[1] for w in plan_windows(64, 1300, tile=64, overlap=16)})
    assert len(_plan_bands(1300, cols, 64, 512)) == 3


# ------------------------------------------------------------------------------------ devices


def test_resolve_device_names_and_one_line_errors(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(InputError, match="no CUDA GPU") as info:
        resolve_device("cuda")
    assert info.value.parameter == "device" and "\n" not in str(info.value)
    with pytest.raises(InputError, match="MPS is not available"):
        resolve_device("mps")
    with pytest.raises(InputError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(InputError, match="has 1 CUDA GPU"):
        resolve_device("cuda:1")


def test_unavailable_device_fails_before_any_output(monkeypatch, make_geotiff, tmp_path, rng):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    source = make_geotiff(rng.integers(0, 255, (3, 20, 20), dtype=np.uint8))
    with pytest.raises(InputError, match="no CUDA GPU"):
        predict_raster(small_net(), [source], tmp_path / "out.tif", out_channels=4, tile=16,
                       overlap=4, device="cuda", progress=False)
    assert not (tmp_path / "out.tif").exists()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_inference_matches_cpu_and_restores_the_model(make_geotiff, tmp_path, rng):
    image = rng.integers(0, 255, (3, 90, 110), dtype=np.uint8)
    source = make_geotiff(image)
    model = small_net().train()
    out = predict_raster(model, [source], tmp_path / "gpu.tif", out_channels=4, tile=40,
                         overlap=16, batch_size=2, progress=False, device="cuda")
    np.testing.assert_allclose(read_raster(out).data, whole(model, image), atol=1e-3)
    assert next(model.parameters()).device.type == "cpu" and model.training


def test_each_submodules_mode_is_restored_after_tiled_inference():
    """A fresh wrapper (training mode) around an eval-mode model: the model stays in eval."""
    import torch

    from eokit.core.tiling import predict_array

    inner = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.BatchNorm2d(1)).eval()
    wrapper = torch.nn.Sequential(inner)
    assert wrapper.training and not inner.training
    predict_array(wrapper, [np.ones((1, 8, 8), np.float32)], out_channels=1, tile=4, overlap=0)
    assert wrapper.training and not inner.training and not inner[1].training


def test_align_makes_a_strided_model_tile_exactly():
    """A stride-8 model padding its input to a multiple of 8 (as CANet does): with align=8 the
    windows sit on its grid and the scene is edge-padded like a whole image, so tiled == whole
    on a size that is not a multiple of 8; without, the windows' grids disagree."""
    import torch
    import torch.nn.functional as F

    from eokit.core.errors import InputError
    from eokit.core.tiling import predict_array

    class Strided(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, w = x.shape[-2:]
            x = F.pad(x, (0, (-w) % 8, 0, (-h) % 8), mode="replicate")
            y = F.interpolate(F.avg_pool2d(x, 8), scale_factor=8, mode="nearest")
            return y[..., :h, :w]

    rng = np.random.default_rng(0)
    image = rng.random((1, 101, 93)).astype(np.float32)
    whole = Strided()(torch.from_numpy(image)[None])[0].numpy()
    aligned = predict_array(Strided(), [image], out_channels=1, tile=48, overlap=16, align=8,
                            blend="none")
    assert np.abs(aligned - whole).max() < 1e-6
    plain = predict_array(Strided(), [image], out_channels=1, tile=48, overlap=16, blend="none")
    assert np.abs(plain - whole).max() > 0.05
    with pytest.raises(InputError, match="multiples of 8"):
        predict_array(Strided(), [image], out_channels=1, tile=50, overlap=16, align=8)
