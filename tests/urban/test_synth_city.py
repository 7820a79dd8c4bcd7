"""synth.city: deterministic simulated cities with a known density law."""

from __future__ import annotations

import numpy as np
import pytest

from eokit.core.errors import InputError
from eokit.core.synth.city import generate_city


def test_city_is_deterministic_and_follows_the_law() -> None:
    a = generate_city(128, kind="mono", alpha_per_km=2.0, pixel_size_m=10.0, seed=3)
    b = generate_city(128, kind="mono", alpha_per_km=2.0, pixel_size_m=10.0, seed=3)
    assert np.array_equal(a.optical, b.optical) and np.array_equal(a.sar, b.sar)
    assert a.optical.shape == (3, 128, 128) and a.optical.dtype == np.uint8
    assert a.sar.shape == (128, 128) and a.sar.dtype == np.uint8
    r0, c0 = (int(round(v)) for v in a.centres_px[0])
    assert a.density[r0, c0] == pytest.approx(1.0, abs=0.01)
    # 40 px = 0.4 km away: exp(-2 * 0.4) = 0.449 -> below the urban edge (0.3 +- ragged) or law
    along = a.density[r0, c0 + 20]
    assert along == pytest.approx(np.exp(-2.0 * 0.2), abs=0.02)
    assert a.grid.pixel_size_m == pytest.approx(10.0)
    assert (a.density[a.water] == 0).all()


def test_poly_city_has_the_requested_centres() -> None:
    city = generate_city(160, kind="poly", n_centres=4, river=False, seed=1)
    assert len(city.centres_px) == 4
    for r, c in city.centres_px:
        assert city.density[int(round(r)), int(round(c))] > 0.95


def test_bad_parameters_are_input_errors() -> None:
    with pytest.raises(InputError, match="kind"):
        generate_city(64, kind="ring")
    with pytest.raises(InputError, match="alpha_per_km"):
        generate_city(64, alpha_per_km=0)
