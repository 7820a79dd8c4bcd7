import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eokit.lst.baselines import MonoWindow, SingleChannel, rte_inversion
from eokit.lst.planck import get_band
from eokit.lst.rt import rte_forward

BAND = get_band("L8_B10")


def consistent_inputs(sc, w, eps, ts):
    """TOA radiance from the RTE with the atmosphere the SC algorithm itself assumes."""
    psi1, psi2, psi3 = sc.psi(np.asarray(w, dtype=np.float64))
    tau, down = 1.0 / psi1, psi3
    up = -tau * (psi2 + psi3)
    return rte_forward(np.asarray(ts, dtype=np.float64), eps, tau, up, down, BAND)


@settings(max_examples=300, deadline=None)
@given(
    w=st.floats(0.0, 2.0),
    eps=st.floats(0.95, 1.0),
    dt=st.floats(-5.0, 12.0),
    air=st.floats(265.0, 305.0),
)
def test_jm_sc_published_reproduces_ts_with_consistent_inputs(w, eps, dt, air):
    # "consistent": the TOA radiance comes from the band RTE with tau, L_up, L_down equal to the
    # published psi(w) curves, so the only error left is the SC Planck linearisation
    sc = SingleChannel()
    ts = air + dt
    radiance = consistent_inputs(sc, w, eps, ts)
    assert float(sc(radiance, eps, w)) == pytest.approx(ts, abs=0.3)


def test_sc_refit_recovers_known_psi_coefficients():
    rng = np.random.default_rng(0)
    w = rng.uniform(0, 5, 500)
    truth = SingleChannel()
    psi1, psi2, psi3 = truth.psi(w)
    tau, down = 1 / psi1, psi3
    up = -tau * (psi2 + psi3)
    fitted = SingleChannel.fit(w, tau, up, down)
    assert np.allclose(fitted.coefficients, truth.coefficients, atol=1e-6)


def test_rte_inversion_and_mono_window_on_exact_inputs():
    rng = np.random.default_rng(1)
    n = 200
    ts, eps = rng.uniform(280, 320, n), rng.uniform(0.93, 1.0, n)
    tau, up, down = rng.uniform(0.6, 0.95, n), rng.uniform(0.3, 2.5, n), rng.uniform(0.5, 4, n)
    radiance = rte_forward(ts, eps, tau, up, down, BAND)
    assert np.allclose(rte_inversion(radiance, eps, tau, up, down), ts, atol=1e-6)
    # mono-window: Qin's atmosphere (L_up = L_down = (1 - tau) B(Ta)) with the true tau and Ta
    ta = ts - rng.uniform(-3, 12, n)  # air a little cooler than the surface, as by day
    path = (1 - 0.8) * BAND.radiance(ta)
    radiance = rte_forward(ts, eps, 0.8, path, path, BAND)
    mono = MonoWindow(tau_coefficients=(0.8, 0.0), ta_coefficients=(0.0, 1.0))
    error = mono(radiance, eps, np.ones(n), ta) - ts
    assert np.abs(error).max() < 1.0  # linearised Planck
    assert np.abs(error).mean() < 0.4
