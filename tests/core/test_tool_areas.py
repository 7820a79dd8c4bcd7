"""Class areas of a raster for tool summaries: projected, geographic and plain grids."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Geod
from tests.conftest import write_test_geotiff

from eokit.core.tools import class_areas_m2


def _classes() -> np.ndarray:
    data = np.zeros((30, 20), np.uint8)
    data[:10] = 1
    data[10:12, :5] = 2
    data[-1, -1] = 255
    return data


def test_projected_areas_are_pixel_counts_times_cell_area(tmp_path):
    path = write_test_geotiff(tmp_path / "c.tif", _classes(), pixel_size=10.0, nodata=255,
                              tiled=True, blockxsize=16, blockysize=16)
    areas = class_areas_m2(path, names={0: "none", 1: "built", 2: "water"}, block_rows=7)
    assert areas["pixels"] == {"none": 30 * 20 - 200 - 10 - 1, "built": 200, "water": 10}
    assert areas["area_m2"] == {"none": 389 * 100.0, "built": 20000.0, "water": 1000.0}
    assert areas["pixel_area_m2"] == 100.0


def test_geographic_areas_are_ellipsoidal_and_shrink_poleward(tmp_path):
    world = write_test_geotiff(tmp_path / "w.tif", np.ones((180, 360), np.uint8),
                               crs="EPSG:4326", pixel_size=1.0, origin=(-180.0, 90.0))
    areas = class_areas_m2(world, block_rows=50)
    assert areas["area_m2"]["1"] == pytest.approx(510_065_621.7e6, rel=1e-8)  # WGS 84 surface
    assert areas["pixel_area_m2"] is None  # varies with latitude
    high = write_test_geotiff(tmp_path / "h.tif", np.ones((1, 1), np.uint8), crs="EPSG:4326",
                              pixel_size=0.001, origin=(10.0, 70.0))
    low = write_test_geotiff(tmp_path / "l.tif", np.ones((1, 1), np.uint8), crs="EPSG:4326",
                             pixel_size=0.001, origin=(10.0, 0.0005))
    # a small cell is nearly planar: close to its geodesic quadrilateral
    geod = Geod(ellps="WGS84")
    expected, _ = geod.polygon_area_perimeter([10, 10.001, 10.001, 10], [70, 70, 69.999, 69.999])
    assert class_areas_m2(high)["area_m2"]["1"] == pytest.approx(abs(expected), rel=1e-4)
    assert class_areas_m2(high)["area_m2"]["1"] < 0.35 * class_areas_m2(low)["area_m2"]["1"]


def test_plain_image_needs_a_pixel_size(tmp_path):
    path = write_test_geotiff(tmp_path / "p.tif", _classes(), crs=None, nodata=255)
    assert class_areas_m2(path)["area_m2"] is None
    assert class_areas_m2(path, pixel_size_m=2.0)["area_m2"]["1"] == 200 * 4.0


def test_class_names_come_from_the_gdal_category_sidecar(tmp_path):
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS

    from eokit.core.raster import write_raster
    from eokit.core.tools import class_areas_m2, raster_class_names
    from eokit.core.types import Grid

    grid = Grid(crs=CRS.from_epsg(32633), transform=Affine(2.0, 0, 500000, 0, -2.0, 5000000),
                width=4, height=2)
    data = np.array([[[0, 1, 1, 2], [2, 2, 2, 0]]], dtype=np.uint8)
    path = write_raster(tmp_path / "c.tif", data, grid, class_names=["bare", "water", "road"])
    with rasterio.open(path) as src:
        assert not any(k.startswith("CLASS_") for k in src.tags())  # only the sidecar has them
        assert raster_class_names(src) == {0: "bare", 1: "water", 2: "road"}
    areas = class_areas_m2(path)
    assert areas["area_m2"] == {"bare": 8.0, "water": 8.0, "road": 16.0}
