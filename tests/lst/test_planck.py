import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eokit.core.errors import InputError
from eokit.lst.planck import band_from_rsr_file, get_band, planck_spectral

BANDS = ["L8_B10", "L8_B11", "L9_B10"]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(BANDS), st.floats(180.0, 380.0))
def test_planck_forward_inverse_identity(name, temperature):
    band = get_band(name)
    radiance = band.radiance(np.float64(temperature))
    assert radiance > 0
    assert band.brightness_temperature(radiance) == pytest.approx(temperature, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(BANDS), st.floats(0.05, 25.0))
def test_planck_inverse_forward_identity(name, radiance):
    band = get_band(name)
    temperature = band.brightness_temperature(np.float64(radiance))
    assert band.radiance(temperature) == pytest.approx(radiance, rel=1e-9)


@pytest.mark.parametrize("name", BANDS)
def test_closed_form_matches_rsr_integration(name):
    band = get_band(name)
    temperature = np.linspace(200.0, 350.0, 31)
    exact = band.exact_radiance(temperature)
    assert np.abs(band.brightness_temperature(exact) - temperature).max() < 0.005


def test_torch_and_numpy_agree_and_differentiate():
    band = get_band("L8_B10")
    t = torch.tensor([250.0, 300.0, 330.0], dtype=torch.float64, requires_grad=True)
    radiance = band.radiance(t)
    radiance.sum().backward()
    assert np.allclose(radiance.detach().numpy(), band.radiance(t.detach().numpy()))
    slope = band.radiance_derivative(t.detach().numpy())
    assert np.allclose(t.grad.numpy(), slope, rtol=1e-6)


def test_band_10_effective_wavelength_and_mtl_pair():
    band = get_band("L8_B10")
    assert band.effective_wavelength_um == pytest.approx(10.90, abs=0.02)
    # the USGS K1/K2 closed form is ~0.1 K off the RSR integral, not more
    radiance = band.radiance(np.array([300.0]))
    assert abs(float(band.mtl_brightness_temperature(radiance)[0]) - 300.0) < 0.25
    assert planck_spectral(10.9, 300.0) == pytest.approx(9.6, abs=0.2)


def test_unknown_band_and_rsr_file(tmp_path):
    with pytest.raises(InputError, match="band"):
        get_band("L7_B6")
    wl = np.linspace(10.0, 12.0, 41)
    path = tmp_path / "rsr.csv"
    path.write_text(
        "wavelength,response\n"
        + "\n".join(f"{w * 1000:.1f},{np.exp(-(((w - 11.0) / 0.3) ** 4)):.5f}" for w in wl)
    )
    band = band_from_rsr_file(path)
    assert band.effective_wavelength_um == pytest.approx(11.0, abs=0.01)
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2\n")
    with pytest.raises(InputError, match="bad.txt"):
        band_from_rsr_file(bad)
