"""Shared fixtures: simulated cities written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from eokit.core.synth.city import generate_city, write_city


@pytest.fixture(scope="session")
def mono_city(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, dict[str, Path]]:
    city = generate_city(384, kind="mono", alpha_per_km=1.0, seed=0)
    return city, write_city(city, tmp_path_factory.mktemp("mono"), stem="mono")


@pytest.fixture(scope="session")
def poly_city(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, dict[str, Path]]:
    city = generate_city(384, kind="poly", alpha_per_km=1.5, seed=0)
    return city, write_city(city, tmp_path_factory.mktemp("poly"), stem="poly")
