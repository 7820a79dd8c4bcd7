"""Spatial reasoning tools against answers computed independently (pyproj, hand counts)."""

import json

import anyio
import jsonschema
import numpy as np
import pytest
import rasterio
from mcp.shared.memory import create_connected_server_and_client_session
from pyproj import Geod, Transformer
from rasterio.transform import Affine, from_origin

from eokit.agent import spatial
from eokit.agent import tools as agent_tools
from eokit.agent.sandbox import Sandbox
from eokit.agent.schema import tool_schema
from eokit.agent.server import EokitServer, all_tools
from eokit.core.errors import InputError

GEOD = Geod(ellps="WGS84")
UTM33 = "EPSG:32633"
X0, Y0 = 500_000.0, 5_000_000.0  # on zone 33's central meridian: scale factor 0.9996


def geojson(path, geometries, crs=None, frame=None, properties=None):
    features = [{"type": "Feature", "geometry": g, "properties": (properties or [{}] * 99)[i]}
                for i, g in enumerate(geometries)]
    doc = {"type": "FeatureCollection", "features": features}
    if crs:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    if frame:
        doc["coordinate_frame"] = frame
    path.write_text(json.dumps(doc))
    return str(path)


def square(x0, y0, side):
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x0 + side, y0], [x0 + side, y0 + side],
                                                [x0, y0 + side], [x0, y0]]]}


def raster(path, data, transform, crs=UTM33, nodata=None, tags=None):
    data = np.asarray(data)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0],
                       count=1, dtype=data.dtype, crs=crs, transform=transform,
                       nodata=nodata) as dst:
        dst.write(data, 1)
        if tags:
            dst.update_tags(**tags)
    return str(path)


def geodesic_ring_area(ring):
    lons, lats = zip(*ring, strict=True)
    return abs(GEOD.polygon_area_perimeter(lons, lats)[0])


def densified_ring(left, bottom, right, top, n=2000):
    """A lon/lat box whose edges follow the meridians and parallels (n points per edge)."""
    xs, ys = np.linspace(left, right, n), np.linspace(bottom, top, n)
    return ([(x, bottom) for x in xs] + [(right, y) for y in ys]
            + [(x, top) for x in xs[::-1]] + [(left, y) for y in ys[::-1]])


#: The 1 deg x 1 deg cell north-east of (0, 0), bounded by meridians and parallels: ~1.2308e10
CELL_AREA = geodesic_ring_area(densified_ring(0, 0, 1, 1))


# ----------------------------------------------------------------------------- describe
def test_describe_geojson_default_crs_and_properties(tmp_path):
    path = geojson(tmp_path / "a.geojson", [square(10, 45, 1), {"type": "Point",
                                                                "coordinates": [12, 44]}],
                   properties=[{"name": "x", "h": 1}, {"kind": "p"}])
    out = spatial.geo_describe(path)
    assert out["crs"] == "EPSG:4326" and "RFC 7946" in out["crs_source"]
    assert out["features"] == 2 and out["geometry_types"] == {"Polygon": 1, "Point": 1}
    assert out["bounds"] == [10, 44, 12, 46] and out["bounds_lonlat"] == [10, 44, 12, 46]
    assert out["property_names"] == ["name", "h", "kind"]


def test_describe_projected_geojson_gives_lonlat_bounds(tmp_path):
    path = geojson(tmp_path / "u.geojson", [square(X0, Y0, 1000)], crs=UTM33)
    out = spatial.geo_describe(path)
    lon, lat = Transformer.from_crs(UTM33, "EPSG:4326", always_xy=True).transform(X0, Y0)
    assert out["crs"] == UTM33 and out["crs_units"] == "metre"
    assert out["bounds_lonlat"][0] == pytest.approx(lon, abs=1e-6)
    assert out["bounds_lonlat"][1] == pytest.approx(lat, abs=1e-6)


def test_describe_raster(tmp_path):
    path = raster(tmp_path / "r.tif", np.zeros((4, 5), np.uint8), from_origin(X0, Y0, 10, 10),
                  tags={"CLASS_0": "bg"})
    out = spatial.geo_describe(path)
    assert out["kind"] == "raster" and out["crs"] == UTM33
    assert (out["width"], out["height"]) == (5, 4) and out["class_names"] == {0: "bg"}


def test_bad_geojson_inputs(tmp_path):
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="path: .*not a GeoJSON"):
        spatial.geo_describe(str(bad))
    other = tmp_path / "other.json"
    other.write_text('{"type": "Topology"}')
    with pytest.raises(InputError, match="not a GeoJSON"):
        spatial.geo_measure(str(other))
    # projected coordinates without a crs member cannot be lon/lat
    nocrs = geojson(tmp_path / "n.geojson", [square(X0, Y0, 10)])
    with pytest.raises(InputError, match="not lon/lat.*'crs' member"):
        spatial.geo_measure(nocrs)
    one = geojson(tmp_path / "one.geojson", [square(0, 0, 1)])
    with pytest.raises(InputError, match=r"feature_index: feature 3 does not exist .*0\.\.0"):
        spatial.geo_measure(one, 3)


# ----------------------------------------------------------------------------- measure
def test_measure_utm_square_planar_and_geodesic_check(tmp_path):
    path = geojson(tmp_path / "u.geojson", [square(X0, Y0, 1000)], crs=UTM33)
    out = spatial.geo_measure(path)
    item = out["features"][0]
    assert item["area_m2"] == pytest.approx(1e6) and item["perimeter_m"] == pytest.approx(4000)
    assert out["method"].startswith("planar")
    # on the central meridian map lengths are 0.9996 of ground lengths
    assert out["geodesic_total_area_m2"] == pytest.approx(1e6 / 0.9996**2, rel=2e-5)
    assert "warning" not in out


def test_measure_feet_crs_converts_to_metres(tmp_path):
    # NAD83 / New York Long Island (ftUS)
    path = geojson(tmp_path / "ft.geojson", [square(1_000_000, 200_000, 1000)],
                   crs="EPSG:2263")
    item = spatial.geo_measure(path)["features"][0]
    foot = 1200 / 3937
    assert item["area_m2"] == pytest.approx((1000 * foot) ** 2, abs=0.01)
    assert item["perimeter_m"] == pytest.approx(4000 * foot, abs=0.01)


def test_measure_web_mercator_is_flagged(tmp_path):
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(10, 60)
    path = geojson(tmp_path / "m.geojson", [square(x, y, 1000)], crs="EPSG:3857")
    out = spatial.geo_measure(path)
    # Mercator scale at 60 deg is 1/cos(60) = 2: planar area is about 4x the ground area
    assert out["planar_vs_geodesic_pct"] == pytest.approx(300, abs=3)
    assert "not equal-area" in out["warning"]


def test_measure_geodesic_cell_hole_and_line(tmp_path):
    outer = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]
    hole = [[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75], [0.25, 0.25]]  # also CCW
    path = geojson(tmp_path / "g.geojson", [
        {"type": "Polygon", "coordinates": [outer]},
        {"type": "Polygon", "coordinates": [outer, hole]},
        {"type": "LineString", "coordinates": [[0, 0], [0, 1]]},
    ])
    out = spatial.geo_measure(path)
    cell, holed, line = out["features"]
    assert out["method"].startswith("geodesic")
    assert cell["area_m2"] == pytest.approx(CELL_AREA, rel=1e-7)
    # GeoJSON edges are straight in lon/lat: the cell is bounded by parallels, smaller than
    # the polygon of geodesic edges through the same corners
    assert cell["area_m2"] < geodesic_ring_area(outer) - 1e5
    assert holed["area_m2"] == pytest.approx(
        CELL_AREA - geodesic_ring_area(densified_ring(0.25, 0.25, 0.75, 0.75)), rel=1e-7)
    assert line["length_m"] == pytest.approx(110_574.4, abs=0.5)  # equator to 1 deg N
    wrapped = geojson(tmp_path / "w.geojson", [{"type": "LineString",
                                                "coordinates": [[179.5, 0], [-179.5, 0]]}])
    with pytest.raises(InputError, match="antimeridian"):
        spatial.geo_measure(wrapped)
    only = spatial.geo_measure(path, 2)
    assert only["features_measured"] == 1 and only["total_area_m2"] == 0


# ----------------------------------------------------------------------------- relate
def test_relate_points_one_degree_of_latitude(tmp_path):
    path = geojson(tmp_path / "p.geojson", [{"type": "Point", "coordinates": [0, 1]},
                                            {"type": "Point", "coordinates": [0, 0]}])
    out = spatial.geo_relate(path, 0, path, 1)
    assert out["distance_m"] == pytest.approx(GEOD.inv(0, 0, 0, 1)[2], abs=0.01)
    assert out["distance_m"] == pytest.approx(110_574, abs=5)
    assert out["a_is"] == "north_of" and out["bearing_deg"] == pytest.approx(0, abs=1e-6)
    assert out["disjoint"] and not out["intersects"]
    back = spatial.geo_relate(path, 1, point_lonlat=(1, 1))
    assert back["a_is"] == "southwest_of"
    assert back["distance_m"] == pytest.approx(GEOD.inv(1, 1, 0, 0)[2], abs=0.01)


def test_relate_polygons_in_utm(tmp_path):
    path = geojson(tmp_path / "u.geojson", [
        square(X0, Y0, 1000),               # 0
        square(X0 + 250, Y0 + 250, 500),    # 1 inside 0
        square(X0 + 500, Y0, 1000),         # 2 overlaps half of 0
        square(X0 + 3000, Y0, 1000),        # 3 2 km east of 0
        square(X0 + 1000, Y0, 1000),        # 4 shares 0's east edge
        square(X0 + 1000, Y0 + 200, 500),   # 5 shares part of it, at another vertex spacing
    ], crs=UTM33)
    inside = spatial.geo_relate(path, 1, path, 0)
    assert inside["a_within_b"] and not inside["a_contains_b"] and inside["intersects"]
    assert inside["fraction_of_a_in_b"] == pytest.approx(1.0, abs=1e-6)
    assert inside["a_is"] == "same_centroid"
    half = spatial.geo_relate(path, 2, path, 0)
    # a shared projected CRS: planar areas there, as geo_measure reports them (not the ground
    # area, which is map area / 0.9996^2 on the central meridian)
    assert half["intersection_area_m2"] == pytest.approx(5e5, rel=1e-9)
    assert half["a_area_m2"] == pytest.approx(1e6, rel=1e-9)
    assert half["a_is"] == "east_of" and not half["a_within_b"]
    far = spatial.geo_relate(path, 3, path, 0)
    assert far["disjoint"] and far["intersection_area_m2"] == 0
    assert far["distance_m"] == pytest.approx(2000 / 0.9996, rel=1e-3)
    assert far["a_is"] == "east_of" and far["bearing_deg"] == pytest.approx(90, abs=1)
    for index in (4, 5):
        touching = spatial.geo_relate(path, index, path, 0)
        assert touching["touches"] and touching["intersects"] and not touching["a_within_b"]
        assert touching["distance_m"] == 0 and touching["intersection_area_m2"] == 0


def test_relate_bad_arguments(tmp_path):
    path = geojson(tmp_path / "p.geojson", [{"type": "Point", "coordinates": [0, 0]}])
    with pytest.raises(InputError, match="path_b: give exactly one"):
        spatial.geo_relate(path, 0)
    with pytest.raises(InputError, match="index_b: feature 5"):
        spatial.geo_relate(path, 0, path, 5)
    with pytest.raises(InputError, match="point_lonlat"):
        spatial.geo_relate(path, 0, point_lonlat=(500000, 10))
    pixels = geojson(tmp_path / "px.geojson", [square(0, 0, 5)], frame="pixels")
    with pytest.raises(InputError, match="path_a: .*no CRS"):
        spatial.geo_relate(pixels, 0, point_lonlat=(0, 0))


# ----------------------------------------------------------------------------- image space
def test_image_relation_pixel_boxes(tmp_path):
    path = geojson(tmp_path / "boxes.geojson", [square(0, 0, 10), square(20, 30, 10)],
                   frame="pixel columns x, rows y downward")
    out = spatial.geo_image_relation(path, 0, 1)
    assert out["a_is"] == ["left_of", "above"] and out["dominant"] == "above"
    assert out["centroid_offset_px"] == {"columns": -20, "rows": -30}
    assert out["entirely"] == ["left_of", "above"] and out["north_up"] is None
    flipped = spatial.geo_image_relation(path, 1, 0)
    assert flipped["a_is"] == ["right_of", "below"]
    # boxes written without a frame would read as lon/lat: coordinates="pixel" says otherwise
    bare = geojson(tmp_path / "bare.geojson", [square(40, 5, 10), square(5, 60, 10)])
    with pytest.raises(InputError, match="raster: .*map coordinates"):
        spatial.geo_image_relation(bare, 0, 1)
    out = spatial.geo_image_relation(bare, 0, 1, coordinates="pixel")
    assert out["a_is"] == ["right_of", "above"] and out["dominant"] == "above"


def test_image_relation_map_features_on_north_up_and_rotated_grids(tmp_path):
    # A is 200 m north and 50 m west of B: on a north-up grid, above and left
    path = geojson(tmp_path / "m.geojson", [square(X0 + 50, Y0 - 100, 20),
                                            square(X0 + 100, Y0 - 300, 20)], crs=UTM33)
    north_up = raster(tmp_path / "n.tif", np.zeros((50, 50), np.uint8),
                      from_origin(X0, Y0, 10, 10))
    out = spatial.geo_image_relation(path, 0, 1, raster=north_up)
    assert out["a_is"] == ["left_of", "above"] and out["north_up"] is True
    assert out["centroid_offset_px"] == {"columns": -5, "rows": -20}
    # a grid rotated by 180 degrees: image-up is south
    rotated = raster(tmp_path / "r.tif", np.zeros((50, 50), np.uint8),
                     Affine(-10, 0, X0 + 500, 0, 10, Y0 - 500))
    out = spatial.geo_image_relation(path, 0, 1, raster=rotated)
    assert out["a_is"] == ["right_of", "below"] and out["north_up"] is False
    assert "not north" in out["note"] and "180.0 deg" in out["note"]
    with pytest.raises(InputError, match="raster: .*map coordinates"):
        spatial.geo_image_relation(path, 0, 1)


# ----------------------------------------------------------------------------- class objects
@pytest.fixture
def classes(tmp_path):
    grid = np.full((20, 20), 2, np.uint8)    # water
    grid[1:4, 1:4] = 1                       # 9-pixel building
    grid[10:12, 10:12] = 1                   # 4-pixel building
    grid[15, 15] = grid[16, 16] = 1          # diagonal pair: one object under 8-connectivity
    grid[0, 19] = grid[1, 19] = 255          # nodata
    grid[5, 18] = 1
    grid[5, 19] = 255                        # nodata beside a 1-pixel building
    tags = {"class_names": json.dumps(["background", "building", "water"])}
    path = raster(tmp_path / "c.tif", grid, from_origin(X0, Y0, 10, 10), nodata=255, tags=tags)
    return path, grid


def test_class_objects_count_and_largest(classes):
    path, _ = classes
    out = spatial.geo_class_objects(path, "Building", "count")
    assert out["objects"] == 4 and out["class_id"] == 1
    assert out["class_area_m2"] == pytest.approx((9 + 4 + 2 + 1) * 100)
    largest = spatial.geo_class_objects(path, 1, "largest", top_k=2)
    first, second = largest["listed"]
    assert (first["pixels"], second["pixels"]) == (9, 4)
    assert first["area_m2"] == 900 and first["bbox_px"] == [1, 1, 4, 4]
    lon, lat = Transformer.from_crs(UTM33, "EPSG:4326", always_xy=True).transform(
        X0 + 25, Y0 - 25)  # centre of pixels 1..3
    assert first["centroid_lonlat"] == pytest.approx([lon, lat], abs=1e-7)


def test_class_objects_nearest(classes):
    path, _ = classes
    to_lonlat = Transformer.from_crs(UTM33, "EPSG:4326", always_xy=True)
    # on the 4-pixel object (pixel row 10, col 10)
    on = to_lonlat.transform(X0 + 105, Y0 - 105)
    out = spatial.geo_class_objects(path, "building", "nearest", point_lonlat=on, top_k=4)
    assert out["nearest_distance_m"] == 0 and out["listed"][0]["pixels"] == 4
    # 30 m (map) west of the centre of pixel (row 10, col 10); every other object is >= 80 m off
    west = to_lonlat.transform(X0 + 105 - 30, Y0 - 105)
    out = spatial.geo_class_objects(path, "building", "nearest", point_lonlat=west)
    assert out["listed"][0]["pixels"] == 4
    assert out["nearest_distance_m"] == pytest.approx(30 / 0.9996, rel=1e-4)
    distances = [item["distance_m"] for item in out["listed"]]
    assert distances == sorted(distances) and len(distances) == 4


def test_class_objects_bad_inputs(classes, tmp_path):
    path, _ = classes
    with pytest.raises(InputError, match="class_name: unknown class 'road'.*building \\(1\\)"):
        spatial.geo_class_objects(path, "road")
    with pytest.raises(InputError, match="point_lonlat"):
        spatial.geo_class_objects(path, "building", "nearest")
    with pytest.raises(InputError, match="band: band 2 does not exist"):
        spatial.geo_class_objects(path, "building", band=2)
    floats = raster(tmp_path / "f.tif", np.zeros((3, 3), np.float32), from_origin(X0, Y0, 1, 1))
    with pytest.raises(InputError, match="not a class raster"):
        spatial.geo_class_objects(floats, 0)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_class_areas_projected_and_geographic(classes, tmp_path):
    path, grid = classes
    out = spatial.geo_class_areas(path)
    valid = int((grid != 255).sum())
    assert out["pixels"]["building"] == 16 and out["area_m2"]["building"] == 1600
    assert out["area_m2"]["water"] == (valid - 16) * 100
    assert out["fraction"]["building"] == pytest.approx(16 / valid, abs=1e-6)
    assert "background" not in out["area_m2"]
    cell = raster(tmp_path / "g.tif", np.array([[3, 4]], np.uint8), from_origin(0, 1, 1, 1),
                  crs="EPSG:4326")
    geo = spatial.geo_class_areas(cell)
    assert geo["area_m2"]["3"] == pytest.approx(CELL_AREA, rel=1e-7)
    assert geo["fraction"] == {"3": 0.5, "4": 0.5}
    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=2, height=2, count=1,
                       dtype="uint8") as dst:
        dst.write(np.zeros((2, 2), np.uint8), 1)
    with pytest.raises(InputError, match="path: .*no CRS"):
        spatial.geo_class_areas(str(plain))


# ----------------------------------------------------------------------------- zonal
def test_zonal_stats_over_a_lonlat_polygon(tmp_path):
    values = np.tile(np.arange(10, dtype=np.float32), (10, 1))  # value = column
    values[4, 3] = -9999                                        # nodata inside the zone
    path = raster(tmp_path / "v.tif", values, from_origin(X0, Y0, 10, 10), nodata=-9999)
    # pixel columns 2..5, rows 3..6, with a 1 m margin inside the pixel edges, in lon/lat
    to_lonlat = Transformer.from_crs(UTM33, "EPSG:4326", always_xy=True)
    left, right, top, bottom = X0 + 21, X0 + 59, Y0 - 31, Y0 - 69
    ring = [list(to_lonlat.transform(x, y)) for x, y in
            [(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)]]
    outside = square(30, 10, 0.01)
    zones = geojson(tmp_path / "z.geojson", [{"type": "Polygon", "coordinates": [ring]}, outside],
                    properties=[{"name": "field"}, {}])
    out = spatial.geo_zonal_stats(path, zones, stats=["count", "mean", "min", "max", "sum"],
                                  percentiles=[90])
    zone, far = out["zones_stats"]
    expected = values[3:7, 2:6][values[3:7, 2:6] != -9999].astype(np.float64)
    assert zone["name"] == "field" and zone["count"] == 15 == expected.size
    assert zone["mean"] == pytest.approx(expected.mean(), abs=1e-6)
    assert (zone["min"], zone["max"], zone["sum"]) == (2, 5, expected.sum())
    assert zone["p90"] == pytest.approx(np.percentile(expected, 90))
    assert zone["area_m2"] == 1500
    assert far["count"] == 0 and far["note"] == "outside the raster"


def test_zonal_categorical_class_areas(classes, tmp_path):
    path, _ = classes
    zones = geojson(tmp_path / "z.geojson", [square(X0, Y0 - 50, 50)], crs=UTM33)  # rows/cols 0..4
    zone = spatial.geo_zonal_stats(path, zones, stats=["count"], categorical=True)["zones_stats"][0]
    assert zone["class_area_m2"] == {"background": 0.0, "building": 900, "water": 1600}
    with pytest.raises(InputError, match="band: band 3"):
        spatial.geo_zonal_stats(path, zones, band=3)
    lines = geojson(tmp_path / "l.geojson", [{"type": "LineString",
                                              "coordinates": [[X0, Y0], [X0 + 5, Y0]]}], crs=UTM33)
    with pytest.raises(InputError, match="zones: feature 0 is a LineString"):
        spatial.geo_zonal_stats(path, lines)


def test_zonal_small_polygon_pixel_rule_and_crs_mismatch(tmp_path):
    values = np.arange(16, dtype=np.float32).reshape(4, 4)
    path = raster(tmp_path / "v.tif", values, from_origin(X0, Y0, 10, 10))
    # a 2 m square in pixel (row 1, col 2), away from its centre
    zones = geojson(tmp_path / "z.geojson", [square(X0 + 21, Y0 - 19, 2)], crs=UTM33)
    centre = spatial.geo_zonal_stats(path, zones)["zones_stats"][0]
    assert centre["count"] == 0 and "all_touched" in centre["note"]
    touched = spatial.geo_zonal_stats(path, zones, all_touched=True)["zones_stats"][0]
    assert touched["count"] == 1 and touched["mean"] == values[1, 2]
    local = geojson(tmp_path / "px.geojson", [square(0, 0, 2)], frame="pixels")
    with pytest.raises(InputError, match="zones: .*no CRS"):
        spatial.geo_zonal_stats(path, local)


# ----------------------------------------------------------------------------- reprojection
def test_reproject_point_and_box():
    # 15 E is zone 33's central meridian: easting 500000 on the equator, northing 0
    out = spatial.geo_reproject(15, 0, "EPSG:4326", UTM33)
    assert out["x"] == pytest.approx(500_000, abs=1e-3) and out["y"] == pytest.approx(0, abs=1e-3)
    back = spatial.geo_reproject(500_000, 5_000_000, UTM33, "EPSG:4326")
    assert back["x"] == pytest.approx(15, abs=1e-9)
    assert back["y"] == pytest.approx(
        Transformer.from_crs(UTM33, "EPSG:4326", always_xy=True).transform(X0, Y0)[1], abs=1e-9)
    box = spatial.geo_reproject_box(X0 - 50_000, Y0, X0 + 50_000, Y0 + 100_000, UTM33,
                                    "EPSG:4326")["bounds"]
    to_lonlat = Transformer.from_crs(UTM33, "EPSG:4326", always_xy=True)
    for x, y in [(X0 - 50_000, Y0), (X0 + 50_000, Y0 + 100_000), (X0, Y0)]:
        lon, lat = to_lonlat.transform(x, y)
        assert box[0] <= lon <= box[2] and box[1] <= lat <= box[3]
    # the top edge bulges north between its corners: densified bounds reach above them
    middle_top = to_lonlat.transform(X0, Y0 + 100_000)[1]
    assert middle_top > to_lonlat.transform(X0 + 50_000, Y0 + 100_000)[1] + 1e-3
    assert box[3] >= middle_top - 1e-9
    with pytest.raises(InputError, match="src_crs: unknown CRS"):
        spatial.geo_reproject(0, 0, "EPSG:999999", UTM33)
    with pytest.raises(InputError, match="left: .*no box"):
        spatial.geo_reproject_box(1, 0, 0, 1)


# ----------------------------------------------------------------------------- threshold
def test_threshold_area_value_and_percentile(tmp_path):
    values = np.arange(1, 101, dtype=np.float32).reshape(10, 10)
    values[0, 0] = np.nan
    path = raster(tmp_path / "t.tif", values, from_origin(X0, Y0, 30, 30), nodata=np.nan)
    valid = values[np.isfinite(values)].astype(np.float64)
    top = spatial.geo_threshold_area(path, ">=", percentile=90)
    threshold = np.percentile(valid, 90)
    chosen = valid[valid >= threshold]
    assert top["threshold"] == pytest.approx(threshold, abs=1e-5)
    assert top["pixels"] == chosen.size and top["area_m2"] == chosen.size * 900
    assert top["mean"] == pytest.approx(chosen.mean(), abs=1e-5)
    low = spatial.geo_threshold_area(path, "<", value=50)
    assert low["pixels"] == 48 and low["fraction_of_valid_area"] == pytest.approx(48 / 99, 1e-5)
    with pytest.raises(InputError, match="value: give exactly one"):
        spatial.geo_threshold_area(path, ">", value=1, percentile=5)
    with pytest.raises(InputError, match="band: band 2"):
        spatial.geo_threshold_area(path, ">", value=1, band=2)


# ----------------------------------------------------------------------------- server
def test_server_lists_every_spatial_tool_and_calls_one(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    raster(root / "r.tif", np.ones((3, 4), np.uint8), from_origin(X0, Y0, 10, 10))
    names = {s.name for s in agent_tools.TOOLS}
    specs = [s for s in all_tools() if s.name.startswith("geo_")]
    assert {s.name for s in specs} == names and len(names) == 10
    for spec in specs:
        jsonschema.Draft202012Validator.check_schema(tool_schema(spec))
    server = EokitServer(Sandbox.create([root], tmp_path / "out"), specs)

    async def body():
        async with create_connected_server_and_client_session(server.server) as session:
            listed = (await session.list_tools()).tools
            good = await session.call_tool("geo_describe", {"path": "r.tif"})
            bad = await session.call_tool("geo_class_objects",
                                          {"path": "r.tif", "class_name": 1, "op": "biggest"})
            near = await session.call_tool("geo_class_objects", {
                "path": "r.tif", "class_name": "1", "op": "nearest", "point_lonlat": inside})
            return listed, good, bad, near

    inside = list(Transformer.from_crs(UTM33, "EPSG:4326", always_xy=True).transform(
        X0 + 15, Y0 - 15))
    listed, good, bad, near = anyio.run(body)
    assert not near.isError, near.content[0].text
    assert near.structuredContent["objects"] == 1
    assert near.structuredContent["nearest_distance_m"] == 0
    tools = {t.name: t for t in listed}
    assert names <= set(tools) and all(tools[n].annotations.readOnlyHint for n in names)
    for name in names:
        jsonschema.Draft202012Validator.check_schema(tools[name].inputSchema)
    assert not good.isError, good.content[0].text
    assert good.structuredContent["crs"] == UTM33 and good.structuredContent["width"] == 4
    assert bad.isError and "op" in bad.content[0].text
