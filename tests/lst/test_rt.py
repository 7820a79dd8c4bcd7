import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eokit.core.errors import InputError
from eokit.lst.planck import get_band
from eokit.lst.profiles import concatenate, standard_atmosphere
from eokit.lst.rt import (
    BandRTModel,
    check_emissivity,
    check_radiance,
    check_water_vapour,
    rte_forward,
    rte_inverse,
)

BAND = get_band("L8_B10")


@settings(max_examples=300, deadline=None)
@given(
    ts=st.floats(230.0, 345.0),
    eps=st.floats(0.85, 1.0),
    tau=st.floats(0.3, 1.0),
    up=st.floats(0.0, 4.0),
    down=st.floats(0.0, 6.0),
)
def test_rte_forward_inverse_identity(ts, eps, tau, up, down):
    radiance = rte_forward(np.float64(ts), eps, tau, up, down, BAND)
    assert rte_inverse(radiance, eps, tau, up, down, BAND) == pytest.approx(ts, abs=1e-6)


def test_rte_inverse_in_torch_is_differentiable():
    ts = torch.tensor([290.0, 310.0], dtype=torch.float64)
    tau = torch.tensor([0.8, 0.6], dtype=torch.float64, requires_grad=True)
    radiance = rte_forward(ts, 0.97, tau, 1.5, 2.5, BAND)
    back = rte_inverse(radiance.detach(), 0.97, tau, 1.5, 2.5, BAND)
    assert torch.allclose(back, ts)
    back.sum().backward()
    assert torch.isfinite(tau.grad).all()


@pytest.fixture(scope="module")
def atmospheres():
    names = ("subarctic_winter", "midlat_winter", "us76", "midlat_summer", "tropical")
    profiles = concatenate([standard_atmosphere(n) for n in names])
    model = BandRTModel()
    with torch.no_grad():
        return profiles, model, model.forward_profiles(profiles)


def test_rt_model_is_physical_and_ordered_by_water(atmospheres):
    profiles, _, atm = atmospheres
    tau, up, down = atm.tau.numpy(), atm.up.numpy(), atm.down.numpy()
    assert np.all((tau > 0) & (tau <= 1)) and np.all(up > 0) and np.all(down > up)
    order = np.argsort(profiles.water_vapour_column())
    assert np.all(np.diff(tau[order]) < 0)  # more water, less transmittance
    assert tau[0] > 0.9 and tau[-1] < 0.75


def test_view_angle_lowers_transmittance(atmospheres):
    profiles, model, atm = atmospheres
    with torch.no_grad():
        slanted = model.forward_profiles(profiles, np.full(len(profiles), 30.0))
    assert torch.all(slanted.tau < atm.tau) and torch.all(slanted.up > atm.up)
    assert torch.allclose(slanted.down, atm.down)  # sky radiance does not depend on view angle


def test_toa_consistent_with_band_rte_and_blackbody_limit(atmospheres):
    profiles, model, atm = atmospheres
    ts = torch.as_tensor(profiles.surface_air_temperature_k + 5.0)
    spectral = model.toa_radiance(atm, ts, 0.97)
    band_effective = rte_forward(ts, 0.97, atm.tau, atm.up, atm.down, BAND)
    bt_gap = BAND.brightness_temperature(spectral) - BAND.brightness_temperature(band_effective)
    assert bt_gap.abs().max() < 0.1
    # an isothermal atmosphere over a blackbody at the same temperature: TOA BT equals it
    iso = profiles.subset(np.array([0]))
    iso.temperature_k = np.full_like(iso.temperature_k, 280.0)
    with torch.no_grad():
        atm_iso = model.forward_profiles(iso)
        bt = model.toa_brightness_temperature(
            atm_iso, torch.tensor([280.0], dtype=torch.float64), 1.0
        )
    assert float(bt[0]) == pytest.approx(280.0, abs=0.02)


def test_rt_gradients_with_respect_to_parameters(atmospheres):
    profiles, _, _ = atmospheres
    model = BandRTModel()
    atm = model.forward_profiles(profiles)
    atm.tau.sum().backward()
    assert torch.isfinite(model.theta.grad).all() and (model.theta.grad != 0).any()


@pytest.mark.parametrize(
    ("check", "value", "name"),
    [
        (check_emissivity, 1.2, "emissivity"),
        (check_emissivity, 0.0, "emissivity"),
        (check_water_vapour, -0.5, "water_vapour"),
        (check_water_vapour, 12.0, "water_vapour"),
        (check_radiance, np.array([5.0, -1.0]), "radiance"),
    ],
)
def test_bad_values_are_one_line_errors(check, value, name):
    with pytest.raises(InputError) as info:
        check(value)
    assert str(info.value).startswith(name) and "\n" not in str(info.value)


def test_toa_radiance_follows_the_atmosphere_device(atmospheres):
    import copy
    import dataclasses

    _, model, atm = atmospheres
    # "meta" stands in for a GPU: a float emissivity must be put beside the atmosphere.
    meta = dataclasses.replace(atm, **{f.name: getattr(atm, f.name).to("meta")
                                       for f in dataclasses.fields(atm)})
    ts = torch.full((atm.tau.shape[0],), 300.0, dtype=atm.tau.dtype, device="meta")
    radiance = copy.deepcopy(model).to("meta").toa_radiance(meta, ts, 0.97)
    assert radiance.device.type == "meta" and radiance.shape == atm.tau.shape
