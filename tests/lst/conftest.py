"""Shared fixtures: small TIGR-format profile files written in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eokit.lst.profiles import TIGR_PRESSURE_HPA, standard_atmosphere


def format_tigr(profiles: list[tuple[np.ndarray, np.ndarray, np.ndarray]], levels: int = 43) -> str:
    """TIGR text for (T, H2O, O3) level arrays (top to bottom)."""
    lines: list[str] = []

    def block(values: np.ndarray) -> None:
        for start in range(0, len(values), 6):
            lines.append(" ".join(f"{v:.5E}" for v in values[start : start + 6]))

    for number, (t, q, o3) in enumerate(profiles, start=1):
        lines.append(f"{number:12d} {-1000 * number:11d} {500 * number:11d}      790400")
        block(t[:levels])
        lines.append(f"{t[-1]:.5E} {1013.0:.5E}")
        block(q[:levels])
        block(o3[:levels])
    return "\n".join(lines) + "\n"


@pytest.fixture
def tigr_file(tmp_path: Path) -> Path:
    """Three TIGR-format profiles built from standard atmospheres."""
    profiles = []
    for name in ("tropical", "midlat_winter", "subarctic_summer"):
        atm = standard_atmosphere(name)
        assert atm.levels == 43
        profiles.append((atm.temperature_k[0], atm.h2o[0], atm.o3[0]))
    path = tmp_path / "three.dsf"
    path.write_text(format_tigr(profiles))
    return path


@pytest.fixture
def tigr_pressure() -> np.ndarray:
    return TIGR_PRESSURE_HPA.copy()


@pytest.fixture
def tigr_text():
    """The TIGR text formatter."""
    return format_tigr
