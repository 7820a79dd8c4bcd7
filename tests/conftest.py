"""Shared test fixtures: tiny GeoTIFFs written with rasterio directly (independent of eokit I/O)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

UTM_CRS = "EPSG:32633"
ORIGIN = (500000.0, 5000000.0)


def write_test_geotiff(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = UTM_CRS,
    pixel_size: float = 10.0,
    origin: tuple[float, float] = ORIGIN,
    nodata: float | None = None,
    **profile: Any,
) -> Path:
    """Write (C, H, W) or (H, W) ``data`` as a GeoTIFF with rasterio (no eokit code involved)."""
    import rasterio
    from rasterio.transform import from_origin

    array = data[None] if data.ndim == 2 else data
    options: dict[str, Any] = {
        "driver": "GTiff",
        "width": array.shape[2],
        "height": array.shape[1],
        "count": array.shape[0],
        "dtype": array.dtype.name,
        "crs": crs,
        "transform": from_origin(origin[0], origin[1], pixel_size, pixel_size),
        "nodata": nodata,
    }
    options.update(profile)
    with rasterio.open(path, "w", **options) as dst:
        dst.write(array)
    return path


@pytest.fixture(name="write_test_geotiff")
def _write_test_geotiff_fixture() -> Callable[..., Path]:
    """:func:`write_test_geotiff` as a fixture, for tests that choose their own paths."""
    return write_test_geotiff


@pytest.fixture
def make_geotiff(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_geotiff(data, name="x.tif", **kwargs)`` writes a GeoTIFF under tmp_path."""

    def factory(data: np.ndarray, name: str = "image.tif", **kwargs: Any) -> Path:
        return write_test_geotiff(tmp_path / name, data, **kwargs)

    return factory


@pytest.fixture
def rng() -> np.random.Generator:
    """Seeded random generator."""
    return np.random.default_rng(0)
