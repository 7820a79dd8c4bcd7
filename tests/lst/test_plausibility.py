"""Physically impossible LST inputs and outputs: refused with one line, or masked and counted."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import rasterio

from eokit.core.errors import DataError, InputError
from eokit.core.raster import write_raster
from eokit.core.synth.thermal import generate_thermal_scene, write_thermal_scene
from eokit.lst.planck import get_band
from eokit.lst.scene import LST_MAX_K, LST_MIN_K, RetrievalConfig, retrieve_scene

BAND = get_band("L8_B10")
SC = RetrievalConfig(method="sc")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    data = generate_thermal_scene(
        32, seed=5, tau=0.85, up=1.1, down=1.9, water_vapour=1.2, air_temperature_k=290.0,
        radiance_fn=BAND.radiance,
    )
    out = tmp_path_factory.mktemp("plausibility")
    paths = write_thermal_scene(data, out)
    paths["radiance"] = write_raster(out / "radiance.tif", data.radiance.astype(np.float32),
                                     data.grid, nodata=float("nan"))
    return data, paths


def _retrieve(thermal, out, **kwargs):
    return retrieve_scene(thermal, out, config=kwargs.pop("config", SC), progress=False,
                          **{"water_vapour": 1.2, "emissivity": 0.97, **kwargs})


def _refused(error_type, match, thermal, out, **kwargs):
    with pytest.raises(error_type, match=match) as info:
        _retrieve(thermal, out, **kwargs)
    assert "\n" not in str(info.value)
    assert not out.exists()  # nothing half-written
    return str(info.value)


def test_level1_dn_without_mtl_is_refused(scene, tmp_path):
    data, paths = scene
    message = _refused(InputError, "looks like Level-1 DN", paths["B10"], tmp_path / "dn.tif")
    assert str(paths["B10"]) in message and "pass --mtl" in message
    # the same file with its MTL is fine
    ok = _retrieve(paths["B10"], tmp_path / "ok.tif", mtl=paths["MTL"])
    assert ok.implausible_masked == 0 and ok.valid_pixels == data.dn.size


def test_eight_bit_image_is_not_a_thermal_band(scene, tmp_path):
    data, paths = scene
    jpeg_like = np.random.default_rng(0).integers(0, 256, data.dn.shape).astype(np.uint8)
    path = write_raster(tmp_path / "photo.tif", jpeg_like, data.grid)
    message = _refused(InputError, "8-bit", path, tmp_path / "x.tif")
    assert str(path) in message
    from PIL import Image

    photo = tmp_path / "photo.jpg"  # a real JPEG: three 8-bit bands, no georeference
    Image.fromarray(np.stack([jpeg_like] * 3, axis=-1)).save(photo)
    _refused(InputError, "JPEG/PNG", photo, tmp_path / "z.tif")
    # a float copy of the same values is no radiance either
    as_float = write_raster(tmp_path / "photo_f.tif", jpeg_like.astype(np.float32), data.grid)
    _refused(InputError, "does not look like a thermal radiance band", as_float,
             tmp_path / "y.tif")


def test_brightness_temperature_given_as_radiance(scene, tmp_path):
    data, paths = scene
    bt = write_raster(tmp_path / "bt.tif", BAND.brightness_temperature(data.radiance)
                      .astype(np.float32), data.grid)
    _refused(InputError, "look like brightness temperatures", bt, tmp_path / "x.tif")


def test_thermal_raster_must_have_one_band(scene, tmp_path):
    data, paths = scene
    two = write_raster(tmp_path / "two.tif", np.stack([data.radiance, data.radiance])
                       .astype(np.float32), data.grid)
    message = _refused(InputError, "has 2 bands", two, tmp_path / "x.tif")
    assert message.startswith(str(two))


@pytest.mark.parametrize("which", ["thermal", "red", "nir", "emissivity", "water_vapour"])
def test_all_nodata_input_names_the_file(scene, tmp_path, which):
    data, paths = scene
    empty = write_raster(tmp_path / f"{which}_empty.tif",
                         np.full(data.dn.shape, np.nan, np.float32), data.grid,
                         nodata=float("nan"))
    kwargs = {"thermal": paths["radiance"], "emissivity": 0.97, "water_vapour": 1.2}
    if which in ("red", "nir"):
        kwargs.update(emissivity=None, red=paths["red"], nir=paths["nir"])
    kwargs[which] = empty
    thermal = kwargs.pop("thermal")
    message = _refused(InputError, "no valid pixel", thermal, tmp_path / "x.tif", **kwargs)
    assert message.startswith(str(empty))


def test_emissivity_raster_outside_zero_one_names_the_file(scene, tmp_path):
    data, paths = scene
    eps = write_raster(tmp_path / "eps_percent.tif",
                       (100 * data.emissivity).astype(np.float32), data.grid)
    message = _refused(InputError, r"emissivity must lie in \(0, 1\]", paths["radiance"],
                       tmp_path / "x.tif", emissivity=eps)
    assert str(eps) in message
    assert "in percent or scaled? give a fraction" in message
    slightly = write_raster(tmp_path / "eps_round.tif", np.full(data.dn.shape, 1.0004, np.float32),
                            data.grid)
    assert _retrieve(paths["radiance"], tmp_path / "ok.tif", emissivity=slightly).valid_pixels
    above = write_raster(tmp_path / "eps_above.tif", np.full(data.dn.shape, 1.01, np.float32),
                         data.grid)
    _refused(InputError, "emissivity must lie", paths["radiance"], tmp_path / "y.tif",
             emissivity=above)


def test_unscaled_reflectance_is_refused(scene, tmp_path):
    data, paths = scene
    red_dn = write_raster(tmp_path / "red_dn.tif",
                          ((data.red + 0.2) / 2.75e-5).astype(np.float32), data.grid)
    message = _refused(InputError, "DN not scaled to reflectance", paths["radiance"],
                       tmp_path / "x.tif", emissivity=None, red=red_dn, nir=paths["nir"])
    assert message.startswith(str(red_dn))


def test_radiance_given_with_mtl_is_a_data_error_with_the_cause(scene, tmp_path):
    data, paths = scene
    message = _refused(DataError, "drop --mtl", paths["radiance"], tmp_path / "x.tif",
                       mtl=paths["MTL"])
    assert "outside the plausible 180-380 K" in message and str(paths["radiance"]) in message


def test_a_few_implausible_pixels_are_masked_and_counted(scene, tmp_path):
    data, paths = scene
    radiance = data.radiance.astype(np.float32).copy()
    radiance[0, :5] = 0.05  # a 130 K surface: not a land surface
    path = write_raster(tmp_path / "few.tif", radiance, data.grid, nodata=float("nan"))
    result = _retrieve(path, tmp_path / "few_lst.tif")
    assert result.implausible_masked == 5 and result.implausible_low == 5
    assert result.valid_pixels == radiance.size - 5
    with rasterio.open(result) as src:  # path-like
        lst = src.read(1)
    assert np.isnan(lst[0, :5]).all()
    finite = lst[np.isfinite(lst)]
    assert finite.size == result.valid_pixels
    assert LST_MIN_K <= finite.min() and finite.max() <= LST_MAX_K


def test_tool_summary_and_report_state_the_masked_count(scene, tmp_path):
    from eokit.lst.tools import TOOLS

    data, paths = scene
    radiance = data.radiance.astype(np.float32).copy()
    radiance[1, :3] = 0.05
    path = write_raster(tmp_path / "few.tif", radiance, data.grid, nodata=float("nan"))
    summary = TOOLS[0].function(str(path), str(tmp_path / "lst.tif"), emissivity=0.97,
                                method="sc", water_vapour=1.2)
    assert summary["implausible_masked"] == 3
    assert summary["plausibility"]["implausible_below_180k"] == 3
    assert summary["lst"]["valid_pixels"] == radiance.size - 3
    html = (tmp_path / "lst.html").read_text()
    assert "3 of 1024 retrievable pixels" in html


def test_cli_dn_without_mtl_exits_2_with_one_line(scene, tmp_path):
    data, paths = scene
    out = tmp_path / "cli.tif"
    run = subprocess.run(
        [sys.executable, "-c", "from eokit.cli import main; main()", "lst", "retrieve",
         "--thermal", str(paths["B10"]), "--emissivity", "0.97", "--method", "sc", "-o", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 2, run.stderr
    # the progress bar shares stderr; the error itself is one line
    lines = [line for line in run.stderr.splitlines() if line.startswith("eokit:")]
    assert len(lines) == 1 and "pass --mtl" in lines[0]
    assert "Traceback" not in run.stderr
    assert not out.exists()
