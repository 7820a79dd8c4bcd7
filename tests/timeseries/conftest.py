"""Fixtures for the time-series tests: a GeoTIFF writer that uses rasterio directly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@pytest.fixture
def write_test_geotiff() -> Callable[..., Path]:
    """``write(path, data (C,H,W)|(H,W), *, origin=(x, y), nodata=None, pixel_size=10.0)``."""

    def write(path: Path, data: np.ndarray, *, origin: tuple[float, float] = (500000.0, 5000000.0),
              nodata: float | None = None, pixel_size: float = 10.0, **_: Any) -> Path:
        import rasterio
        from rasterio.transform import from_origin

        array = data[None] if data.ndim == 2 else data
        with rasterio.open(
            path, "w", driver="GTiff", width=array.shape[2], height=array.shape[1],
            count=array.shape[0], dtype=array.dtype.name, crs="EPSG:32633",
            transform=from_origin(origin[0], origin[1], pixel_size, pixel_size), nodata=nodata,
        ) as dst:
            dst.write(array)
        return path

    return write


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One torch thread: on a busy 2-core machine a second thread mostly waits."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
