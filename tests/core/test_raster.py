from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from eokit.core.errors import InputError
from eokit.core.raster import (
    Raster,
    align_to,
    atomic_write,
    check_aligned,
    check_band_count,
    open_writer,
    raster_info,
    read_image,
    read_raster,
    write_csv,
    write_geojson,
    write_raster,
)
from eokit.core.types import Grid

UTM_CRS = "EPSG:32633"


def utm_grid(width: int, height: int, pixel: float = 10.0, x0: float = 500000.0) -> Grid:
    from rasterio.crs import CRS

    return Grid(
        crs=CRS.from_string(UTM_CRS),
        transform=Affine(pixel, 0, x0, 0, -pixel, 5000000.0),
        width=width,
        height=height,
    )


def only_visible_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------ read


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "int32", "float32", "float64"])
def test_roundtrip_dtypes_multiband(tmp_path, rng, dtype):
    data = (rng.random((3, 40, 50)) * 100).astype(dtype)
    grid = utm_grid(50, 40)
    out = write_raster(tmp_path / "x.tif", data, grid, band_names=["a", "b", "c"])
    raster = read_raster(out)
    assert raster.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(raster.data, data)
    assert raster.valid.all()
    assert raster.grid.same_as(grid)
    assert raster.band_names == ["a", "b", "c"]
    assert raster.grid.pixel_size_m == pytest.approx(10.0)


def test_window_and_band_selection(make_geotiff, rng):
    data = rng.integers(0, 200, (4, 30, 40), dtype=np.uint8)
    path = make_geotiff(data)
    raster = read_raster(path, window=(5, 7, 10, 12), bands=[2, 4])
    np.testing.assert_array_equal(raster.data, data[[1, 3], 5:15, 7:19])
    assert raster.grid.shape == (10, 12)
    assert raster.grid.transform.c == pytest.approx(500000.0 + 7 * 10.0)
    assert raster.grid.transform.f == pytest.approx(5000000.0 - 5 * 10.0)
    with pytest.raises(InputError, match="bands"):
        read_raster(path, bands=[0])
    with pytest.raises(InputError, match="window"):
        read_raster(path, window=(25, 0, 10, 10))


def test_dtype_cast(make_geotiff):
    path = make_geotiff(np.full((1, 8, 8), 7, np.uint8))
    assert read_raster(path, dtype="float32").data.dtype == np.float32


def test_nodata_becomes_invalid_in_any_band(make_geotiff):
    data = np.ones((2, 6, 6), np.int16)
    data[0, 1, 1] = -9999
    data[1, 2, 3] = -9999
    raster = read_raster(make_geotiff(data, nodata=-9999))
    assert not raster.valid[1, 1] and not raster.valid[2, 3]
    assert raster.valid.sum() == 34
    assert raster.grid.nodata == -9999


def test_nan_and_inf_are_invalid(make_geotiff):
    data = np.ones((1, 5, 5), np.float32)
    data[0, 0, 0] = np.nan
    data[0, 4, 4] = np.inf
    data[0, 2, 2] = -np.inf
    raster = read_raster(make_geotiff(data))
    assert raster.valid.sum() == 22
    assert read_raster(make_geotiff(data, name="b.tif"), check_finite=False).valid.all()


def test_nan_nodata(make_geotiff):
    data = np.ones((1, 4, 4), np.float32)
    data[0, :2] = np.nan
    raster = read_raster(make_geotiff(data, nodata=float("nan")))
    assert raster.valid.sum() == 8


def test_internal_mask_band(tmp_path):
    path = tmp_path / "masked.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=8,
            height=8,
            count=1,
            dtype="uint8",
            crs=UTM_CRS,
            transform=Affine(10, 0, 0, 0, -10, 0),
        ) as dst:
            dst.write(np.full((1, 8, 8), 5, np.uint8))
            mask = np.full((8, 8), 255, np.uint8)
            mask[:, :3] = 0
            dst.write_mask(mask)
    raster = read_raster(path)
    assert raster.valid[:, 3:].all() and not raster.valid[:, :3].any()


def test_all_nodata_raises_naming_file(make_geotiff):
    path = make_geotiff(np.zeros((2, 6, 6), np.uint8), nodata=0)
    with pytest.raises(InputError, match="no valid pixel") as info:
        read_raster(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    # a window full of nodata is normal at scene edges
    assert not read_raster(path, window=(0, 0, 3, 3)).valid.any()


def test_all_nan_raises(make_geotiff):
    with pytest.raises(InputError, match="no valid pixel"):
        read_raster(make_geotiff(np.full((1, 4, 4), np.nan, np.float32)))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found") as info:
        read_raster(tmp_path / "nope.tif")
    assert "nope.tif" in str(info.value)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(InputError, match="directory"):
        read_raster(tmp_path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "garbage.tif"
    path.write_bytes(b"II*\x00" + os.urandom(200))
    with pytest.raises(InputError) as info:
        read_raster(path)
    assert "garbage.tif" in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_geotiff(make_geotiff, rng):
    data = rng.integers(0, 255, (3, 256, 256), dtype=np.uint8)
    path = make_geotiff(data, tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputError, match="truncated|corrupt") as info:
        read_raster(path)
    assert str(path) in str(info.value)


def test_raster_info_reads_no_pixels(make_geotiff):
    path = make_geotiff(np.zeros((5, 12, 9), np.uint16))
    grid, count, dtype = raster_info(path)
    assert (grid.height, grid.width, count, dtype) == (12, 9, 5, "uint16")


# ----------------------------------------------------------------------------------- plain images


def _write_plain(path: Path, data: np.ndarray, driver: str) -> Path:
    with rasterio.open(
        path,
        "w",
        driver=driver,
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype="uint8",
    ) as dst:
        dst.write(data)
    return path


def test_jpeg_needs_pixel_size_for_metric_work(tmp_path, rng):
    import warnings

    data = rng.integers(0, 255, (3, 16, 24), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = _write_plain(tmp_path / "photo.jpg", data, "JPEG")
    image = read_image(path)
    assert image.data.shape == (3, 16, 24)
    assert image.grid.crs is None
    with pytest.raises(InputError, match="pixel_size_m"):
        _ = image.grid.pixel_size_m
    sized = read_image(path, pixel_size_m=0.5)
    assert sized.grid.pixel_size_m == pytest.approx(0.5)
    with pytest.raises(InputError, match="pixel_size_m"):
        read_image(path, pixel_size_m=-1)


def test_png_alpha_becomes_valid_mask(tmp_path):
    import warnings

    data = np.full((4, 8, 8), 100, np.uint8)
    data[3, :, :4] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(
            tmp_path / "a.png",
            "w",
            driver="PNG",
            width=8,
            height=8,
            count=4,
            dtype="uint8",
            photometric="RGB",
            alpha="YES",
        ) as dst:
            dst.write(data)
    image = read_image(tmp_path / "a.png", pixel_size_m=2.0)
    assert image.data.shape[0] == 3
    assert image.valid[:, 4:].all() and not image.valid[:, :4].any()


def test_read_image_keeps_georeference(make_geotiff):
    image = read_image(make_geotiff(np.ones((1, 4, 4), np.uint8)), pixel_size_m=3.0)
    assert image.grid.crs is not None
    assert image.grid.pixel_size_m == pytest.approx(10.0)


def test_plain_grid_roundtrip_keeps_unknown_pixel_size(tmp_path):
    data = np.ones((1, 5, 6), np.uint8)
    unknown = write_raster(tmp_path / "u.tif", data, Grid.plain(6, 5, None))
    with pytest.raises(InputError, match="pixel_size_m"):
        _ = read_raster(unknown).grid.pixel_size_m
    known = write_raster(tmp_path / "k.tif", data, Grid.plain(6, 5, 0.3))
    assert read_raster(known).grid.pixel_size_m == pytest.approx(0.3)


def test_check_band_count(make_geotiff):
    path = make_geotiff(np.ones((4, 3, 3), np.uint8))
    raster = read_raster(path)
    check_band_count(raster, 4)
    with pytest.raises(InputError, match="4 bands but the model expects 3") as info:
        check_band_count(raster, 3)
    assert str(path) in str(info.value)
    with pytest.raises(InputError, match="bands"):
        check_band_count(6, 3)


# -------------------------------------------------------------------------------------- write


def test_cog_is_tiled_compressed_with_overviews(tmp_path, rng):
    data = rng.integers(0, 8, (1, 1024, 1024), dtype=np.uint8)
    out = write_raster(
        tmp_path / "map.tif", data, utm_grid(1024, 1024), nodata=255, cog=True, compress="zstd"
    )
    with rasterio.open(out) as src:
        assert src.profile["tiled"]
        assert src.block_shapes[0] == (512, 512)
        assert src.compression.name.lower() == "zstd"
        assert src.overviews(1), "COG must carry overviews"
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.nodata == 255
        np.testing.assert_array_equal(src.read(1), data[0])
    assert only_visible_files(tmp_path) == ["map.tif"]


def test_plain_geotiff_deflate_overviews(tmp_path, rng):
    data = rng.random((2, 600, 600)).astype(np.float32)
    out = write_raster(tmp_path / "f.tif", data, utm_grid(600, 600), overviews=True)
    with rasterio.open(out) as src:
        assert src.compression.name.lower() == "deflate"
        assert src.overviews(1) == [2]


def test_write_with_valid_mask(tmp_path):
    data = np.ones((1, 4, 4), np.float32)
    valid = np.ones((4, 4), bool)
    valid[0] = False
    out = write_raster(tmp_path / "m.tif", data, utm_grid(4, 4), nodata=-1.0, valid=valid)
    back = read_raster(out)
    assert not back.valid[0].any() and back.valid[1:].all()


def test_write_rejects_bad_input(tmp_path):
    grid = utm_grid(4, 4)
    with pytest.raises(InputError, match="data"):
        write_raster(tmp_path / "a.tif", np.zeros((1, 3, 4)), grid)
    with pytest.raises(InputError, match="nodata"):
        write_raster(tmp_path / "a.tif", np.zeros((1, 4, 4), np.uint8), grid, nodata=-1)
    with pytest.raises(InputError, match="compress"):
        write_raster(tmp_path / "a.tif", np.zeros((1, 4, 4), np.uint8), grid, compress="jpeg2k")
    assert only_visible_files(tmp_path) == []


def test_output_not_writable_fails_before_work(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(InputError, match="file.txt"):
        write_raster(blocker / "out.tif", np.zeros((1, 4, 4), np.uint8), utm_grid(4, 4))
    with pytest.raises(InputError, match="directory"):
        open_writer(tmp_path, utm_grid(4, 4), 1, "uint8")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(InputError, match="not writable"):
            write_csv(folder / "x.csv", [{"a": 1}])
    finally:
        folder.chmod(0o700)


def test_interrupted_streaming_write_keeps_previous_output(tmp_path):
    grid = utm_grid(64, 64)
    out = write_raster(tmp_path / "keep.tif", np.full((1, 64, 64), 3, np.uint8), grid, cog=True)
    before = out.read_bytes()
    for cog in (False, True):
        with pytest.raises(RuntimeError, match="boom"):
            with open_writer(out, grid, 1, "uint8", cog=cog) as sink:
                sink.write_window(np.zeros((1, 32, 64), np.uint8), 0, 0)
                raise RuntimeError("boom")
        assert out.read_bytes() == before
        assert only_visible_files(tmp_path) == ["keep.tif"]


def test_streaming_writer_matches_whole_write(tmp_path, rng):
    data = rng.random((2, 70, 90)).astype(np.float32)
    grid = utm_grid(90, 70)
    with open_writer(
        tmp_path / "s.tif", grid, 2, "float32", cog=True, band_names=["p", "q"]
    ) as sink:
        for row in range(0, 70, 25):
            sink.write_window(data[:, row : row + 25], row, 0)
        with pytest.raises(InputError, match="exceeds"):
            sink.write_window(data[:, :10, :10], 65, 0)
    back = read_raster(tmp_path / "s.tif")
    np.testing.assert_array_equal(back.data, data)
    assert back.band_names == ["p", "q"]


def test_atomic_write_removes_temp_on_error(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(ValueError):
        with atomic_write(target) as tmp:
            tmp.write_text("new, half")
            raise ValueError
    assert target.read_text() == "old"
    assert only_visible_files(tmp_path) == ["r.json"]
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".")
        tmp.write_text("new")
    assert target.read_text() == "new"


# ------------------------------------------------------------------------------------ alignment


def test_check_aligned_names_both_inputs():
    from rasterio.crs import CRS

    a = utm_grid(10, 10)
    check_aligned(before=a, after=utm_grid(10, 10))
    with pytest.raises(InputError, match="before.*after.*CRS"):
        check_aligned(before=a, after=Grid(CRS.from_epsg(32632), a.transform, 10, 10))
    with pytest.raises(InputError, match="before.*after.*shape"):
        check_aligned(before=a, after=utm_grid(10, 11))
    with pytest.raises(InputError, match="transform"):
        check_aligned(before=a, after=utm_grid(10, 10, x0=500005.0))


def test_check_aligned_with_rasters_names_files(make_geotiff):
    a = read_raster(make_geotiff(np.ones((1, 8, 8), np.uint8), name="t1.tif"))
    b = read_raster(make_geotiff(np.ones((1, 8, 8), np.uint8), name="t2.tif", crs="EPSG:32632"))
    with pytest.raises(InputError, match=r"t1\.tif.*t2\.tif"):
        check_aligned(before=a, after=b)


def test_align_to_shifted_grid_and_other_crs(make_geotiff, rng):
    data = rng.integers(1, 200, (1, 20, 20), dtype=np.uint8)
    path = make_geotiff(data)
    target = utm_grid(20, 20, x0=500000.0 + 2 * 10.0)  # shifted two pixels east
    aligned = align_to(path, target, resampling="nearest")
    assert aligned.grid.same_as(target)
    np.testing.assert_array_equal(aligned.data[0, :, :18], data[0, :, 2:])
    assert aligned.valid[:, :18].all() and not aligned.valid[:, 18:].any()
    with pytest.raises(InputError, match="resampling"):
        align_to(path, target, resampling="magic")

    from rasterio.crs import CRS
    from rasterio.warp import calculate_default_transform

    transform, width, height = calculate_default_transform(
        UTM_CRS, "EPSG:4326", 20, 20, 500000.0, 4999800.0, 500200.0, 5000000.0
    )
    geo = Grid(CRS.from_epsg(4326), transform, width, height)
    reprojected = align_to(path, geo)
    assert reprojected.grid.crs.to_epsg() == 4326
    assert reprojected.valid.mean() > 0.5


# ----------------------------------------------------------------------------- vector and table


def test_write_geojson_is_wgs84(tmp_path):
    square = {
        "type": "Polygon",
        "coordinates": [
            [
                (500000, 5000000),
                (500100, 5000000),
                (500100, 4999900),
                (500000, 4999900),
                (500000, 5000000),
            ]
        ],
    }
    out = write_geojson(
        tmp_path / "f.geojson",
        [{"geometry": square, "properties": {"area_m2": np.float32(1e4), "cls": np.int64(3)}}],
        UTM_CRS,
    )
    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    lon, lat = doc["features"][0]["geometry"]["coordinates"][0][0]
    assert lon == pytest.approx(15.0, abs=1e-6)  # central meridian of UTM zone 33
    assert 45.0 < lat < 45.2
    assert doc["features"][0]["properties"] == {"area_m2": 10000.0, "cls": 3}


def test_write_csv(tmp_path):
    out = write_csv(tmp_path / "t.csv", [{"a": np.int64(1), "b": 2.5}, {"a": 2, "c": "x"}])
    rows = list(csv.DictReader(out.open()))
    assert rows == [{"a": "1", "b": "2.5", "c": ""}, {"a": "2", "b": "", "c": "x"}]


def test_raster_dataclass_properties():
    raster = Raster(np.zeros((2, 3, 4)), np.ones((3, 4), bool), utm_grid(4, 3))
    assert raster.count == 2 and raster.shape == (3, 4) and raster.name == "<array>"


def test_atomic_write_output_follows_umask_not_private_temp_mode(tmp_path):
    import os
    import tempfile

    from eokit.core.raster import atomic_write

    target = tmp_path / "out.bin"
    with atomic_write(target) as tmp:
        fd, name = tempfile.mkstemp(dir=tmp.parent)  # mkstemp makes 0600 files
        os.write(fd, b"x")
        os.close(fd)
        os.replace(name, tmp)
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


# ------------------------------------------------------------------------- categories and units


def _gdal_category_names(path: Path) -> list[str] | None:
    """Category names as GDAL itself reads them (rasterio has no API for them)."""
    import ctypes
    import glob

    libs = glob.glob(os.path.join(os.path.dirname(os.path.dirname(rasterio.__file__)),
                                  "rasterio.libs", "libgdal*"))
    if not libs:
        return None
    lib = ctypes.CDLL(libs[0])
    lib.GDALAllRegister()
    lib.GDALOpen.restype = ctypes.c_void_p
    lib.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.GDALGetRasterBand.restype = ctypes.c_void_p
    lib.GDALGetRasterBand.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.GDALGetMetadata.restype = ctypes.c_void_p
    lib.GDALGetMetadata.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    lib.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    lib.GDALClose.argtypes = [ctypes.c_void_p]
    dataset = lib.GDALOpen(str(path).encode(), 0)
    band = lib.GDALGetRasterBand(dataset, 1)
    lib.GDALGetMetadata(band, None)  # GTiff loads the PAM sidecar lazily
    names = lib.GDALGetRasterCategoryNames(band)
    out = []
    while names and names[len(out)]:
        out.append(names[len(out)].decode())
    lib.GDALClose(dataset)
    return out


@pytest.mark.parametrize("cog", [True, False])
def test_class_map_has_colour_table_category_names_and_description(tmp_path, cog):
    names = ["nodata", "water", "urban & roads"]
    data = np.array([[0, 1], [2, 1]], np.uint8).repeat(64, 0).repeat(64, 1)
    path = write_raster(tmp_path / "classes.tif", data, utm_grid(128, 128), nodata=0, cog=cog,
                        band_names=["class"], class_names=names,
                        class_colors=["#000000", "#2166ac", (1.0, 0.0, 0.0)])
    with rasterio.open(path) as src:
        assert src.descriptions == ("class",)
        table = src.colormap(1)
        assert table[1] == (33, 102, 172, 255) and table[2] == (255, 0, 0, 255)
        assert table[0][3] == 0  # nodata entry transparent
    gdal_names = _gdal_category_names(path)
    if gdal_names is not None:
        assert gdal_names == names
    assert "urban &amp; roads" in (tmp_path / "classes.tif.aux.xml").read_text()
    # rewriting without classes removes the sidecar that described the old file
    write_raster(path, data.astype(np.float32), utm_grid(128, 128), cog=cog)
    assert not (tmp_path / "classes.tif.aux.xml").exists()


def test_band_units_survive_the_cog_copy(tmp_path):
    data = np.ones((2, 32, 32), np.float32)
    path = write_raster(tmp_path / "d.tif", data, utm_grid(32, 32), cog=True,
                        band_names=["first_date", "last_date"], units="days since 2020-01-01")
    with rasterio.open(path) as src:
        assert src.units == ("days since 2020-01-01",) * 2
    with pytest.raises(InputError, match="units"):
        write_raster(tmp_path / "e.tif", data, utm_grid(32, 32), units=["K"])


def test_class_names_are_refused_for_a_float_or_multiband_map(tmp_path):
    with pytest.raises(InputError, match="class_names"):
        write_raster(tmp_path / "f.tif", np.zeros((32, 32), np.float32), utm_grid(32, 32),
                     class_names=["a"])
    with pytest.raises(InputError, match="class_colors"):
        write_raster(tmp_path / "g.tif", np.zeros((32, 32), np.uint8), utm_grid(32, 32),
                     class_names=["a", "b"], class_colors=["red"])


def test_geojson_without_crs_names_its_frame(tmp_path):
    feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [100.0, -50.0]},
               "properties": {}}
    path = write_geojson(tmp_path / "c.geojson", [feature], None, frame="local metres")
    collection = json.loads(path.read_text())
    assert collection["coordinate_frame"] == "local metres"
    assert collection["features"][0]["geometry"]["coordinates"] == [100.0, -50.0]
    unnamed = json.loads(write_geojson(tmp_path / "d.geojson", [feature], None).read_text())
    assert "not WGS84" in unnamed["coordinate_frame"]


def test_grid_mismatch_points_to_a_tool_that_exists():
    from affine import Affine
    from rasterio.crs import CRS

    from eokit.core.errors import InputError
    from eokit.core.raster import check_aligned
    from eokit.core.types import Grid

    crs = CRS.from_epsg(32633)
    a = Grid(crs=crs, transform=Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0),
             width=8, height=8)
    b = Grid(crs=crs, transform=Affine(10.0, 0.0, 500100.0, 0.0, -10.0, 5000000.0),
             width=8, height=8)
    with pytest.raises(InputError, match="rio warp") as info:
        check_aligned(a=a, b=b)
    assert "--align" not in str(info.value)


def test_simulator_writes_cogs_with_class_names(tmp_path):
    from eokit.core.synth.change import write_change_dataset
    from eokit.core.synth.city import generate_city, write_city
    from eokit.core.synth.scene import generate_scene, write_scene

    scene = generate_scene(size=64, seed=0)
    files = write_scene(scene, tmp_path / "scene")
    city = generate_city(64, kind="mono", alpha_per_km=1.0, seed=0)
    city_files = write_city(city, tmp_path / "city", stem="c")
    change = write_change_dataset(tmp_path / "change", count=3, size=32)
    tifs = [files["landcover"], city_files["optical_tif"], city_files["sar_tif"],
            *(change["root"] / sub / "pair_0000.tif" for sub in ("A", "B", "label"))]
    for path in tifs:
        with rasterio.open(path) as src:
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", path
    with rasterio.open(files["landcover"]) as src:
        assert src.colormap(1) and src.descriptions == ("landcover",)
    gdal_names = _gdal_category_names(files["landcover"])
    if gdal_names is not None:
        assert gdal_names == list(scene.class_names)
    with rasterio.open(city_files["sar_tif"]) as src:
        assert src.units == ("dB",)


def test_date_bands_get_a_unit(tmp_path):
    from eokit.core.raster import DATE_CODE_UNIT

    codes = np.full((1, 32, 32), 20210301, np.int32)
    path = write_raster(tmp_path / "d.tif", codes, utm_grid(32, 32), nodata=0, cog=True,
                        band_names=["stops_forest_yyyymmdd"])
    with rasterio.open(path) as src:
        assert src.descriptions == ("stops_forest_yyyymmdd",)
        assert src.units == (DATE_CODE_UNIT,)
