import json
import math

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from eokit.core.errors import InputError
from eokit.core.raster import read_raster
from eokit.core.synth import scene as sc
from eokit.core.synth.cli import synth

CLASS = {name: index for index, name in enumerate(sc.LANDCOVER_CLASSES)}


@pytest.fixture(scope="module")
def scene256():
    return sc.generate_scene(256, seed=1)


def _class_median(values, landcover, name):
    return float(np.nanmedian(values[landcover == CLASS[name]]))


def test_contract_names():
    assert sc.LANDCOVER_CLASSES == (
        "water",
        "conifer",
        "broadleaf",
        "grass",
        "crop",
        "bare",
        "building",
        "road",
    )
    assert sc.BANDS == ("blue", "green", "red", "nir", "swir1", "swir2")
    assert sc.SensorDomain() == sc.SensorDomain(1.0, 0.0, 1.0, 0.0, 1, 0.005)


def test_package_lazily_reexports_exactly_the_scene_names():
    # eokit.core.synth lists the names itself so that importing it stays cheap; keep in step.
    import eokit.core.synth as synth_package

    assert synth_package.__all__ == sorted(sc.__all__)
    assert all(getattr(synth_package, name) is getattr(sc, name) for name in sc.__all__)


def test_same_seed_is_bit_identical_and_other_seed_differs():
    a = sc.generate_scene(96, seed=7, season_doy=150)
    b = sc.generate_scene(96, seed=7, season_doy=150)
    for name in ("reflectance", "landcover", "sar_db", "parcels"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    c = sc.generate_scene(96, seed=8, season_doy=150)
    assert (a.landcover != c.landcover).mean() > 0.2
    assert not np.array_equal(a.reflectance, c.reflectance)
    assert np.array_equal(sc.generate_landcover(96, seed=7), a.landcover)
    landcover, parcels = sc.generate_layout(96, seed=7)
    assert np.array_equal(landcover, a.landcover) and np.array_equal(parcels, a.parcels)
    assert parcels.dtype == np.int32 and parcels.min() >= 0


def test_shapes_dtypes_and_grid(scene256):
    s = scene256
    assert s.reflectance.shape == (6, 256, 256) and s.reflectance.dtype == np.float32
    assert s.landcover.shape == (256, 256) and s.landcover.dtype == np.uint8
    assert s.sar_db.shape == (256, 256) and s.sar_db.dtype == np.float32
    assert 0.0 <= s.reflectance.min() and s.reflectance.max() <= 1.0
    assert s.grid.crs.to_epsg() == 32633 and s.grid.pixel_size_m == pytest.approx(10.0)
    assert s.grid.bounds == pytest.approx((500000.0, 5000000.0 - 2560.0, 502560.0, 5000000.0))
    rect = sc.generate_landcover((64, 100), seed=0, gsd_m=20.0)
    assert rect.shape == (64, 100)


@pytest.mark.parametrize(
    ("size", "gsd_m", "seed"), [(256, 10.0, 0), (256, 10.0, 3), (128, 30.0, 1), (160, 3.0, 2)]
)
def test_every_class_present(size, gsd_m, seed):
    landcover = sc.generate_landcover(size, seed=seed, gsd_m=gsd_m)
    fractions = np.bincount(landcover.ravel(), minlength=8) / landcover.size
    for name, fraction in zip(sc.LANDCOVER_CLASSES, fractions, strict=True):
        assert fraction > 0.002, f"{name} covers only {fraction:.4f}"


def test_reflectance_is_physically_plausible(scene256):
    refl, lc = scene256.reflectance, scene256.landcover
    index = sc.ndvi(refl)
    for name in ("conifer", "broadleaf", "grass"):
        assert _class_median(index, lc, name) > 0.5, name
    assert _class_median(refl[3], lc, "water") < 0.05
    assert _class_median(index, lc, "water") < 0.0
    for name in ("bare", "building", "road"):
        assert _class_median(index, lc, name) < 0.3, name
    # Water is darker than land in the SWIR; vegetation brighter in NIR than red.
    assert _class_median(refl[4], lc, "water") < 0.03 < _class_median(refl[4], lc, "bare")


def test_season_modulates_deciduous_and_crops_not_conifers():
    lc = sc.generate_landcover(128, seed=2)
    winter = sc.ndvi(sc.render_reflectance(lc, seed=2, season_doy=20))
    summer = sc.ndvi(sc.render_reflectance(lc, seed=2, season_doy=200))
    change = {
        n: _class_median(summer, lc, n) - _class_median(winter, lc, n)
        for n in ("conifer", "broadleaf", "grass")
    }
    assert change["broadleaf"] > 0.25
    assert change["grass"] > 0.15
    assert abs(change["conifer"]) < 0.1
    doy = np.arange(1, 366)
    assert sc.green_fraction(CLASS["conifer"], doy).min() >= 0.75
    maize = sc.green_fraction(CLASS["crop"], doy, crop_type=1)
    assert maize[200] > 0.9 and maize[20] < 0.05 and maize[330] < 0.05
    cereal = sc.green_fraction(CLASS["crop"], doy, crop_type=0)
    assert np.argmax(cereal) < np.argmax(maize)  # winter cereal peaks before maize


def test_sar_speckle_statistics_on_homogeneous_patch():
    water = np.zeros((256, 256), dtype=np.uint8)
    for looks in (1, 4):
        power = 10.0 ** (sc.render_sar(water, seed=3, looks=looks).astype(np.float64) / 10.0)
        cv = power.std() / power.mean()
        assert cv == pytest.approx(1.0 / math.sqrt(looks), rel=0.06)
    single = 10.0 ** (sc.render_sar(water, seed=4, looks=1).astype(np.float64) / 10.0)
    many = 10.0 ** (sc.render_sar(water, seed=4, looks=16).astype(np.float64) / 10.0)
    # Speckle has mean 1 in linear power: averaging looks does not bias sigma0.
    assert many.mean() / single.mean() == pytest.approx(1.0, rel=0.03)
    # Single-look intensity is exponential: P(I < mean) = 1 - 1/e.
    assert (single < single.mean()).mean() == pytest.approx(1 - math.exp(-1), abs=0.02)


def test_sar_class_ordering(scene256):
    power = 10.0 ** (scene256.sar_db.astype(np.float64) / 10.0)
    mean_db = {
        n: 10 * math.log10(power[scene256.landcover == CLASS[n]].mean())
        for n in sc.LANDCOVER_CLASSES
    }
    assert mean_db["water"] < -17
    assert mean_db["water"] < mean_db["bare"] < mean_db["grass"] < mean_db["conifer"]
    assert mean_db["building"] > -3 and mean_db["building"] > mean_db["broadleaf"] + 4


def _smooth_reflectance():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.4, (6, 1, 1)).astype(np.float32)
    pattern = np.indices((48, 50)).sum(axis=0) % 2 * 0.1  # checkerboard: pure high frequency
    return (base + pattern[None]).astype(np.float32)


def test_domain_radiometry():
    x = _smooth_reflectance()
    quiet = sc.SensorDomain(noise_std=0.0)
    np.testing.assert_array_equal(sc.apply_domain(x, quiet, seed=0), x)
    out = sc.apply_domain(x, sc.SensorDomain(gain=1.5, noise_std=0.0), seed=0)
    np.testing.assert_allclose(out, np.clip(1.5 * x, 0, 1), rtol=1e-6)
    out = sc.apply_domain(x, sc.SensorDomain(offset=0.05, noise_std=0.0), seed=0)
    np.testing.assert_allclose(out, x + 0.05, rtol=1e-6)
    out = sc.apply_domain(x, sc.SensorDomain(gamma=2.0, noise_std=0.0), seed=0)
    np.testing.assert_allclose(out, x**2, rtol=1e-5)
    noisy = sc.apply_domain(x, sc.SensorDomain(noise_std=0.02), seed=0)
    assert float((noisy - x).std()) == pytest.approx(0.02, rel=0.05)
    assert not np.array_equal(noisy, sc.apply_domain(x, sc.SensorDomain(noise_std=0.02), seed=1))


def test_domain_blur_and_downsampling():
    x = _smooth_reflectance()
    blurred = sc.apply_domain(x, sc.SensorDomain(blur_sigma=1.5, noise_std=0.0), seed=0)
    assert blurred.std(axis=(1, 2)).max() < 0.2 * x.std(axis=(1, 2)).min()
    np.testing.assert_allclose(blurred.mean(axis=(1, 2)), x.mean(axis=(1, 2)), rtol=1e-3)

    d = 4
    coarse = sc.apply_domain(x, sc.SensorDomain(downsample=d, noise_std=0.0), seed=0)
    assert coarse.shape == x.shape
    block = coarse[:, :d, :d]
    assert np.all(block == block[:, :1, :1])  # nearest upsampling: constant blocks
    np.testing.assert_allclose(block[:, 0, 0], x[:, :d, :d].mean(axis=(1, 2)), rtol=1e-5)
    small = sc.apply_domain(
        x, sc.SensorDomain(downsample=d, noise_std=0.0), seed=0, keep_shape=False
    )
    assert small.shape == (6, 12, 13)  # ceil(48 / 4), ceil(50 / 4)

    lc = sc.generate_landcover(64, seed=0)
    bright = sc.render_reflectance(lc, seed=0, domain=sc.SensorDomain(gain=1.2, noise_std=0.0))
    plain = sc.render_reflectance(lc, seed=0, domain=sc.SensorDomain(noise_std=0.0))
    assert bright.mean() / plain.mean() == pytest.approx(1.2, rel=0.01)


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"gain": 0.0}, "gain"),
        ({"gamma": -1.0}, "gamma"),
        ({"blur_sigma": -1.0}, "blur_sigma"),
        ({"downsample": 0}, "downsample"),
        ({"downsample": 1.5}, "downsample"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"offset": float("nan")}, "offset"),
    ],
)
def test_bad_domain_parameters(kwargs, parameter):
    with pytest.raises(InputError, match=parameter):
        sc.SensorDomain(**kwargs)


def test_bad_scene_inputs():
    with pytest.raises(InputError, match="size"):
        sc.generate_landcover(8, seed=0)
    with pytest.raises(InputError, match="gsd_m"):
        sc.generate_landcover(64, seed=0, gsd_m=-1)
    with pytest.raises(InputError, match="crs"):
        sc.generate_scene(32, crs="EPSG:4326")
    with pytest.raises(InputError, match="crs"):
        sc.generate_scene(32, crs="not a crs")
    with pytest.raises(InputError, match="landcover"):
        sc.render_sar(np.full((20, 20), 9, dtype=np.uint8), seed=0)
    with pytest.raises(InputError, match="looks"):
        sc.render_sar(np.zeros((20, 20), dtype=np.uint8), seed=0, looks=0)
    with pytest.raises(InputError, match="season_doy"):
        sc.render_reflectance(np.zeros((20, 20), dtype=np.uint8), seed=0, season_doy=400)


def test_write_scene_geotiffs(tmp_path):
    scene = sc.generate_scene(
        (48, 64), seed=2, gsd_m=20.0, crs="EPSG:32632", origin=(400000.0, 5500000.0)
    )
    paths = sc.write_scene(scene, tmp_path / "out")
    assert set(paths) == {"reflectance", "landcover", "sar_vv_db", "classes"}
    refl = read_raster(paths["reflectance"])
    assert refl.grid.crs.to_epsg() == 32632
    assert tuple(refl.grid.transform)[:6] == (20.0, 0.0, 400000.0, 0.0, -20.0, 5500000.0)
    assert refl.band_names == list(sc.BANDS)
    np.testing.assert_array_equal(refl.data, scene.reflectance)
    lc = read_raster(paths["landcover"])
    np.testing.assert_array_equal(lc.data[0], scene.landcover)
    assert lc.grid.same_as(refl.grid)
    with rasterio.open(paths["landcover"]) as dataset:
        assert dataset.dtypes[0] == "uint8"
        assert dataset.colormap(1)[0][:3] == sc.CLASS_COLORS["water"]
        assert dataset.tags()["CLASS_6"] == "building"
    sar = read_raster(paths["sar_vv_db"])
    np.testing.assert_array_equal(sar.data[0], scene.sar_db)
    legend = json.loads(paths["classes"].read_text())
    assert [c["name"] for c in legend["classes"]] == list(sc.LANDCOVER_CLASSES)
    assert legend["provenance"]["seed"] == 2
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left


def test_write_scene_refuses_a_file_as_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="file"):
        sc.write_scene(sc.generate_scene(32, seed=0), blocker)


def test_cli_writes_files(tmp_path):
    out = tmp_path / "scene"
    result = CliRunner().invoke(
        synth,
        [
            "scene",
            "-o",
            str(out),
            "--size",
            "64",
            "--seed",
            "3",
            "--season-doy",
            "100",
            "--gain",
            "1.1",
            "--blur",
            "0.5",
            "--no-report",
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("reflectance.tif", "landcover.tif", "sar_vv_db.tif", "classes.json"):
        assert (out / name).is_file()
        assert str(out / name) in result.output
    legend = json.loads((out / "classes.json").read_text())
    assert legend["provenance"]["domain"]["gain"] == pytest.approx(1.1)
    assert legend["provenance"]["season_doy"] == 100


def test_cli_report_and_bad_input_via_main(tmp_path, capsys):
    from eokit.cli import main

    out = tmp_path / "r"
    with pytest.raises(SystemExit) as done:
        main(["synth", "scene", "-o", str(out), "--size", "48", "--gsd-m", "-5"])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "gsd_m" in err and len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())

    main(["synth", "scene", "-o", str(out), "--size", "48"])
    assert (out / "report.html").is_file()
