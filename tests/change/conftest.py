import numpy as np
import pytest
import torch
from affine import Affine
from rasterio.crs import CRS

from eokit.core.types import Grid


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(1)


@pytest.fixture
def grid_factory():
    def make(width=40, height=32, crs="EPSG:32633", x0=500000.0, y0=5000000.0, res=10.0):
        return Grid(
            crs=CRS.from_user_input(crs),
            transform=Affine(res, 0, x0, 0, -res, y0),
            width=width,
            height=height,
        )

    return make
