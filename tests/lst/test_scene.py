import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from eokit.core.errors import InputError
from eokit.core.raster import read_raster, write_raster
from eokit.core.synth.thermal import generate_thermal_scene, write_thermal_scene
from eokit.lst.cli import lst
from eokit.lst.planck import get_band
from eokit.lst.scene import RetrievalConfig, ndvi_emissivity, parse_mtl, retrieve_scene

BAND = get_band("L8_B10")


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    scene = generate_thermal_scene(
        64,
        seed=3,
        tau=0.85,
        up=1.1,
        down=1.9,
        water_vapour=1.2,
        air_temperature_k=290.0,
        radiance_fn=BAND.radiance,
    )
    out = tmp_path_factory.mktemp("scene")
    paths = write_thermal_scene(scene, out)
    return scene, paths


def test_scene_files_are_georeferenced_and_consistent(scene_dir):
    scene, paths = scene_dir
    with rasterio.open(paths["B10"]) as src:
        assert src.crs is not None and src.dtypes[0] == "uint16" and src.nodata == 0
    calibration = parse_mtl(paths["MTL"], spacecraft="LANDSAT_8")
    assert calibration.radiance_mult == pytest.approx(3.342e-4)
    assert calibration.k1 == pytest.approx(774.8853)


def test_rte_retrieval_with_true_atmosphere_and_emissivity(scene_dir, tmp_path):
    scene, paths = scene_dir
    config = RetrievalConfig(method="rte", atmosphere=(0.85, 1.1, 1.9))
    out = retrieve_scene(
        paths["B10"],
        tmp_path / "lst.tif",
        config=config,
        mtl=paths["MTL"],
        emissivity=paths["emissivity_truth"],
        water_vapour=1.2,
        block=24,
        progress=False,
    )
    lst = read_raster(out)
    assert lst.grid.same_as(scene.grid)
    # only DN quantisation remains (~0.01 K)
    assert np.nanmax(np.abs(lst.data[0] - scene.lst)) < 0.05


def test_sc_with_ndvi_emissivity_is_close(scene_dir, tmp_path):
    scene, paths = scene_dir
    out = retrieve_scene(
        paths["B10"],
        tmp_path / "sc.tif",
        config=RetrievalConfig(method="sc"),
        mtl=paths["MTL"],
        red=paths["red"],
        nir=paths["nir"],
        water_vapour=1.2,
        progress=False,
    )
    error = read_raster(out).data[0] - scene.lst
    assert np.sqrt(np.nanmean(error**2)) < 2.0


def test_ndvi_emissivity_ranges():
    red = np.array([0.05, 0.2, 0.05, 0.04, 0.10])
    nir = np.array([0.03, 0.25, 0.45, 0.12, 0.20])
    eps = ndvi_emissivity(red, nir)
    assert eps[0] == pytest.approx(0.991)  # water
    assert eps[1] == pytest.approx(0.971)  # soil
    assert eps[2] == pytest.approx(0.992)  # dense vegetation
    assert 0.971 < eps[3] < 0.993 and 0.971 <= eps[4] < 0.993


def test_bad_inputs_are_one_line_errors(scene_dir, tmp_path):
    scene, paths = scene_dir
    config = RetrievalConfig(method="sc")
    other = tmp_path / "mtl_b11.txt"
    other.write_text(paths["MTL"].read_text().replace("BAND_10", "BAND_11"))
    cases = {
        "emissivity": dict(emissivity=1.3),
        "water": dict(emissivity=0.97, water_vapour=11.0),
        "mtl": dict(emissivity=0.97, mtl_override=other),
    }
    for key, kwargs in cases.items():
        mtl = kwargs.pop("mtl_override", paths["MTL"])
        with pytest.raises(InputError) as info:
            retrieve_scene(
                paths["B10"],
                tmp_path / f"{key}.tif",
                config=config,
                mtl=mtl,
                progress=False,
                **{"water_vapour": 1.0, **kwargs},
            )
        assert "\n" not in str(info.value)
        assert not (tmp_path / f"{key}.tif").exists()
    # thermal raster and emissivity on different grids
    shifted = scene.grid.window_grid(1, 1, 64, 64)
    eps_path = write_raster(tmp_path / "eps_shifted.tif", scene.emissivity, shifted)
    with pytest.raises(InputError, match="eps_shifted"):
        retrieve_scene(
            paths["B10"],
            tmp_path / "x.tif",
            config=config,
            mtl=paths["MTL"],
            emissivity=eps_path,
            progress=False,
        )
    # negative radiance (a radiance raster, no MTL)
    rad = write_raster(
        tmp_path / "rad.tif", np.full((8, 8), -1.0, np.float32), scene.grid.window_grid(0, 0, 8, 8)
    )
    with pytest.raises(InputError, match="negative radiance"):
        retrieve_scene(rad, tmp_path / "neg.tif", config=config, emissivity=0.97, progress=False)
    with pytest.raises(InputError, match="LANDSAT_9"):
        parse_mtl(paths["MTL"], spacecraft="LANDSAT_9")


def test_cli_writes_georeferenced_lst_cog(scene_dir, tmp_path):
    scene, paths = scene_dir
    out = tmp_path / "lst_cli.tif"
    result = CliRunner().invoke(
        lst,
        [
            "retrieve",
            "--thermal",
            str(paths["B10"]),
            "--mtl",
            str(paths["MTL"]),
            "--red",
            str(paths["red"]),
            "--nir",
            str(paths["nir"]),
            "--water-vapour",
            "1.2",
            "--method",
            "sc",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as src:
        assert src.crs == scene.grid.crs and src.transform == scene.grid.transform
        assert src.dtypes[0] == "float32"
        assert src.profile.get("tiled") or src.block_shapes[0][0] < src.height
        data = src.read(1)
    assert 270 < np.nanmean(data) < 320
    assert (tmp_path / "lst_cli.html").exists()


def test_cli_simulate_and_train_with_config(tmp_path):
    from pathlib import Path

    runner = CliRunner()
    samples = tmp_path / "samples.csv"
    atmospheres = [
        arg
        for name in (
            "tropical",
            "midlat_summer",
            "midlat_winter",
            "subarctic_summer",
            "subarctic_winter",
            "us76",
        )
        for arg in ("--atmosphere", name)
    ]
    result = runner.invoke(
        lst, ["simulate", *atmospheres, "--per-profile", "30", "-o", str(samples)]
    )
    assert result.exit_code == 0, result.output
    assert samples.read_text().count("\n") == 6 * 30 + 1
    config = Path(__file__).resolve().parents[2] / "configs" / "lst" / "piml.yaml"
    result = runner.invoke(
        lst,
        [
            "train",
            "--samples",
            str(samples),
            "--config",
            str(config),
            "--epochs",
            "1",
            "-o",
            str(tmp_path / "run"),
            "--trainer.enable_progress_bar",
            "false",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "piml.safetensors").exists()
    assert "test RMSE" in result.output


def test_retrieve_arrays_matches_windowed_scene(scene_dir, tmp_path, monkeypatch):
    import eokit.lst.scene as scene_module
    from eokit.lst.scene import parse_mtl, retrieve_arrays

    scene, paths = scene_dir
    config = RetrievalConfig(method="sc")
    out = retrieve_scene(
        paths["B10"],
        tmp_path / "w.tif",
        config=config,
        mtl=paths["MTL"],
        red=paths["red"],
        nir=paths["nir"],
        water_vapour=1.2,
        block=40,
        progress=False,
    )
    monkeypatch.setattr(scene_module, "_CHUNK_PIXELS", 100)  # many row chunks
    arrays = retrieve_arrays(
        scene.dn.astype(np.float32),
        config=config,
        calibration=parse_mtl(paths["MTL"]),
        red=scene.red,
        nir=scene.nir,
        water_vapour=1.2,
    )
    assert np.allclose(arrays, read_raster(out).data[0], atol=1e-4, equal_nan=True)
    with pytest.raises(InputError, match="emissivity"):
        retrieve_arrays(scene.radiance, config=config, water_vapour=1.0)


def test_train_settings_name_a_mistyped_key(tmp_path):
    from eokit.core.errors import ConfigError
    from eokit.lst.cli import _train_settings

    path = tmp_path / "lst.yaml"
    path.write_text("model:\n  init_args:\n    atm_wieght: 0.2\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'atm_wieght' \(did you mean "
                                          r"'atm_weight'\?\)"):
        _train_settings(path)
    path.write_text("task:\n  init_args:\n    atm_weight: 0.2\n")
    assert _train_settings(path)["atm_weight"] == 0.2


def test_train_needs_three_profiles_and_simulate_a_non_negative_noise(tmp_path):
    from eokit.lst.data import generate_samples
    from eokit.lst.profiles import standard_atmosphere

    runner = CliRunner()
    samples = tmp_path / "one_profile.csv"
    result = runner.invoke(lst, ["simulate", "--atmosphere", "tropical", "--per-profile", "10",
                                 "-o", str(samples)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(lst, ["train", "--samples", str(samples), "--epochs", "1",
                                 "-o", str(tmp_path / "run")])
    assert isinstance(result.exception, InputError)
    assert "1 atmosphere profile(s)" in str(result.exception) and "at least 3" in str(
        result.exception)
    assert not (tmp_path / "run").exists()
    with pytest.raises(InputError, match="bt_noise_k: must be >= 0 K"):
        generate_samples(standard_atmosphere("tropical"), per_profile=2, bt_noise_k=-1.0)
