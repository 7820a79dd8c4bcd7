import numpy as np
import pytest

from eokit.core.errors import InputError
from eokit.lst import fused
from eokit.lst.scene import (
    MtlCalibration,
    RetrievalConfig,
    ndvi_emissivity,
    retrieve_arrays,
    retrieve_block,
)

CALIBRATION = MtlCalibration("LANDSAT_8", 10, 3.342e-4, 0.1, 774.8853, 1321.0789)


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    dn = rng.integers(15000, 40000, shape, dtype=np.uint16)
    red = rng.uniform(0.01, 0.4, shape).astype(np.float32)
    nir = rng.uniform(0.01, 0.7, shape).astype(np.float32)
    dn.flat[::97] = 0  # fill
    red.flat[5] = nir.flat[5] = 0.0  # NDVI 0/0 -> NaN
    red.flat[7], nir.flat[7] = -0.1, 0.1  # NDVI ±inf -> NaN
    return dn, red, nir


def _reference(dn, red, nir, water):
    """The per-block numpy path: calibration, NDVI-THM and SingleChannel on whole arrays."""
    data = dn.astype(np.float32)
    radiance = np.where(data > 0, data * np.float32(3.342e-4) + np.float32(0.1), np.nan)
    return retrieve_block(
        radiance.astype(np.float32), ndvi_emissivity(red, nir), water, RetrievalConfig(method="sc")
    )


@pytest.mark.parametrize("water", [2.0, "array"])
def test_fused_sc_matches_numpy_reference(water):
    dn, red, nir = _inputs((300, 700))
    if water == "array":
        water = np.random.default_rng(1).uniform(0.2, 5.0, dn.shape).astype(np.float32)
    fast = retrieve_arrays(
        dn,
        config=RetrievalConfig(method="sc"),
        calibration=CALIBRATION,
        red=red,
        nir=nir,
        water_vapour=water,
    )
    expected = _reference(dn, red, nir, np.asarray(water, dtype=np.float32))
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(expected))
    assert np.isnan(fast.flat[5]) and np.isnan(fast.flat[7]) and np.isnan(fast.flat[0])
    np.testing.assert_allclose(fast, expected, rtol=0, atol=1e-4, equal_nan=True)


def test_threads_do_not_change_the_result(monkeypatch):
    dn, red, nir = _inputs((200, 2000), seed=2)
    config = RetrievalConfig(method="sc")
    kwargs = {"config": config, "calibration": CALIBRATION, "red": red, "nir": nir}
    monkeypatch.setattr(fused, "default_threads", lambda: 3)
    threaded = retrieve_arrays(dn, **kwargs)
    monkeypatch.setattr(fused, "default_threads", lambda: 1)
    single = retrieve_arrays(dn, **kwargs)
    np.testing.assert_array_equal(threaded, single)


def test_fused_emissivity_equals_ndvi_thm():
    _, red, nir = _inputs((50, 400), seed=3)
    ndvi = np.linspace(-0.6, 0.95, red.size, dtype=np.float32).reshape(red.shape)
    nir = red * (1 + ndvi) / (1 - ndvi)
    np.testing.assert_allclose(
        fused.ndvi_emissivity_chunk(red, nir), ndvi_emissivity(red, nir), atol=1e-6
    )


def test_fused_path_keeps_one_line_input_errors(monkeypatch):
    dn, red, nir = _inputs((300, 700), seed=4)
    monkeypatch.setattr(fused, "default_threads", lambda: 2)
    config = RetrievalConfig(method="sc")
    bad_eps = np.full(dn.shape, 0.98, np.float32)
    bad_eps[250, 3] = 1.5
    with pytest.raises(InputError, match="emissivity must lie in") as error:
        retrieve_arrays(dn, config=config, calibration=CALIBRATION, emissivity=bad_eps)
    assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="water vapour"):
        retrieve_arrays(
            dn, config=config, calibration=CALIBRATION, emissivity=0.98, water_vapour=12.0
        )
    negative = MtlCalibration("LANDSAT_8", 10, 3.342e-4, -20.0, 774.8853, 1321.0789)
    with pytest.raises(InputError, match="negative radiance"):
        retrieve_arrays(dn, config=config, calibration=negative, red=red, nir=nir)
