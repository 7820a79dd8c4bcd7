"""Deterministic spatial reasoning tools over GeoTIFF/COG rasters and GeoJSON files."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from eokit.core.errors import InputError
from eokit.core.tools import (
    InputPath,
    Range,
    class_areas_m2,
    raster_class_names,
    raster_summary,
    row_areas_m2,
)

if TYPE_CHECKING:
    from pyproj import CRS

#: Largest band (pixels) a tool reads into memory at once.
MAX_PIXELS = 64_000_000
#: Largest GeoJSON file read.
MAX_GEOJSON_BYTES = 200 * 1024**2
#: Most per-feature entries listed in a result (totals always cover every feature).
MAX_LISTED = 100

_DIRECTIONS = ("north_of", "northeast_of", "east_of", "southeast_of", "south_of",
               "southwest_of", "west_of", "northwest_of")
_RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img", ".jp2", ".nc"}


# --------------------------------------------------------------------------- reading
class _Vector:
    """Features of one GeoJSON file and the CRS of their coordinates (None: local frame)."""

    def __init__(self, path: str, features: list[dict[str, Any]], crs: CRS | None,
                 crs_source: str) -> None:
        self.path = path
        self.features = features
        self.crs = crs
        self.crs_source = crs_source

    def geometry(self, index: int, parameter: str) -> Any:
        """The shapely geometry of feature ``index``."""
        import shapely.geometry

        n = len(self.features)
        if not 0 <= index < n:
            raise InputError(f"feature {index} does not exist in {Path(self.path).name} "
                             f"({n} features, indices 0..{n - 1})", parameter=parameter)
        geometry = self.features[index].get("geometry")
        if not geometry:
            raise InputError(f"feature {index} of {Path(self.path).name} has no geometry",
                             parameter=parameter)
        try:
            shape = shapely.geometry.shape(geometry)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise InputError(f"feature {index} has an invalid geometry ({error})",
                             parameter=parameter) from None
        if shape.is_empty:
            raise InputError(f"feature {index} of {Path(self.path).name} has an empty geometry",
                             parameter=parameter)
        return shape

    def need_crs(self, parameter: str) -> CRS:
        """The CRS, or an error saying the coordinates are a local frame."""
        if self.crs is None:
            raise InputError(f"{Path(self.path).name} has no CRS (its coordinates are a local "
                             "frame, e.g. pixels); this needs georeferenced coordinates",
                             parameter=parameter)
        return self.crs


def _crs(value: Any, parameter: str) -> CRS:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        return CRS.from_user_input(value)
    except CRSError as error:
        raise InputError(f"unknown CRS {value!r} ({str(error).splitlines()[0]})",
                         parameter=parameter) from None


def _crs_name(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()


def _looks_like_json(path: str) -> bool:
    if Path(path).suffix.lower() in (".geojson", ".json"):
        return True
    if Path(path).suffix.lower() in _RASTER_SUFFIXES:
        return False
    with open(path, "rb") as handle:
        return handle.read(256).lstrip()[:1] == b"{"


def _read_vector(path: str, parameter: str, *, pixels: bool = False) -> _Vector:
    """Read a GeoJSON FeatureCollection, Feature or bare geometry.

    Args:
        path: GeoJSON file.
        parameter: The tool parameter that named it (for error messages).
        pixels: Take the coordinates as pixel (column, row) whatever the file declares.
    """
    size = Path(path).stat().st_size
    if size > MAX_GEOJSON_BYTES:
        raise InputError(f"{Path(path).name} has {size / 1e6:.0f} MB, over the "
                         f"{MAX_GEOJSON_BYTES / 1e6:.0f} MB GeoJSON limit", parameter=parameter)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"{Path(path).name} is not a GeoJSON file (no valid JSON: "
                         f"{str(error).splitlines()[0]})", parameter=parameter) from None
    kind = doc.get("type") if isinstance(doc, dict) else None
    if kind == "FeatureCollection" and isinstance(doc.get("features"), list):
        features = [f for f in doc["features"] if isinstance(f, dict)]
    elif kind == "Feature":
        features = [doc]
    elif kind in ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon",
                  "MultiPolygon", "GeometryCollection"):
        features = [{"type": "Feature", "geometry": doc, "properties": {}}]
    else:
        raise InputError(f"{Path(path).name} is not a GeoJSON file (its 'type' is {kind!r}, "
                         "not FeatureCollection, Feature or a geometry)", parameter=parameter)
    crs: CRS | None
    if pixels:
        crs, source = None, "pixel coordinates (as asked)"
    elif "coordinate_frame" in doc and "crs" not in doc:
        crs, source = None, f"none: {doc['coordinate_frame']}"
    elif isinstance(doc.get("crs"), dict):
        name = (doc["crs"].get("properties") or {}).get("name")
        if not name:
            raise InputError(f"{Path(path).name}: its 'crs' member names no CRS",
                             parameter=parameter)
        crs, source = _crs(name, parameter), "crs member"
    else:
        crs, source = _crs("EPSG:4326", parameter), "RFC 7946 default (WGS 84 lon/lat)"
    vector = _Vector(path, features, crs, source)
    if crs is not None and crs.is_geographic:
        bounds = _total_bounds(vector)
        if bounds is not None and (bounds[0] < -360 or bounds[2] > 360 or bounds[1] < -90.0001
                                   or bounds[3] > 90.0001):
            raise InputError(f"{Path(path).name}: coordinates {[round(b, 1) for b in bounds]} "
                             "are not lon/lat; a GeoJSON in another CRS needs a 'crs' member",
                             parameter=parameter)
    return vector


def _total_bounds(vector: _Vector) -> list[float] | None:
    import numpy as np
    import shapely.geometry

    boxes = []
    for feature in vector.features:
        geometry = feature.get("geometry")
        if geometry:
            try:
                shape = shapely.geometry.shape(geometry)
            except (ValueError, TypeError, KeyError, AttributeError):
                continue
            if not shape.is_empty:
                boxes.append(shape.bounds)
    if not boxes:
        return None
    arr = np.asarray(boxes, dtype=np.float64)
    return [float(arr[:, 0].min()), float(arr[:, 1].min()), float(arr[:, 2].max()),
            float(arr[:, 3].max())]


def _open_raster(path: str, parameter: str) -> Any:
    import rasterio

    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as error:
        raise InputError(f"{Path(path).name} is not a readable raster "
                         f"({str(error).splitlines()[0]})", parameter=parameter) from None


def _check_band(src: Any, band: int) -> None:
    if not 1 <= band <= src.count:
        raise InputError(f"band {band} does not exist ({Path(src.name).name} has "
                         f"{src.count} band{'s' if src.count != 1 else ''}, 1..{src.count})",
                         parameter="band")


def _check_size(src: Any, parameter: str) -> None:
    if src.width * src.height > MAX_PIXELS:
        raise InputError(f"{Path(src.name).name} has {src.width * src.height} pixels, over the "
                         f"{MAX_PIXELS} this tool reads at once; use geo_zonal_stats over a "
                         "polygon or a cropped raster", parameter=parameter)


def _read_valid(src: Any, band: int, window: Any = None) -> tuple[Any, Any]:
    """Band values and their validity (nodata, mask and NaN excluded)."""
    import numpy as np

    data = src.read(band, window=window)
    valid = src.read_masks(band, window=window) > 0
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data)
    return data, valid


def _areas_or_fail(src: Any, parameter: str) -> Any:
    areas = row_areas_m2(src)
    if areas is None:
        why = "no CRS" if src.crs is None else "a rotated geographic grid"
        raise InputError(f"{Path(src.name).name} has {why}: ground areas in m^2 are unknown",
                         parameter=parameter)
    return areas


# --------------------------------------------------------------------------- geometry helpers
def _transform_shape(shape: Any, src: CRS, dst: CRS) -> Any:
    import numpy as np
    import shapely
    from pyproj import Transformer

    transformer = Transformer.from_crs(src, dst, always_xy=True)

    def apply(coords: Any) -> Any:
        x, y = transformer.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    out = shapely.transform(shape, apply)
    if not np.all(np.isfinite(shapely.get_coordinates(out))):
        raise InputError(f"a geometry cannot be expressed in {_crs_name(dst)} (outside its "
                         "area of use)", parameter="crs")
    return out


def _densified(shape: Any) -> Any:
    """The shape with extra vertices, so that reprojected edges keep their course."""
    import shapely

    left, bottom, right, top = shape.bounds
    span = max(right - left, top - bottom)
    if span <= 0 or shape.geom_type in ("Point", "MultiPoint"):
        return shape
    return shapely.segmentize(shape, span / 64)


def _to_lonlat(shape: Any, crs: CRS, parameter: str = "path") -> Any:
    """The shape in WGS 84 lon/lat, densified so that its edges keep their course there."""
    from pyproj import CRS

    wgs84 = CRS.from_epsg(4326)
    if crs.is_geographic and crs.equals(wgs84, ignore_axis_order=True):
        out = _densified(shape)
    else:
        out = _transform_shape(_densified(shape), crs, wgs84)
    _refuse_antimeridian(out, parameter)
    return out


def _refuse_antimeridian(lonlat_shape: Any, parameter: str = "path") -> None:
    if lonlat_shape.bounds[2] - lonlat_shape.bounds[0] > 180:
        raise InputError("a geometry spans more than 180 deg of longitude: it crosses the "
                         "antimeridian; split it there (RFC 7946, 3.1.9)", parameter=parameter)


def _local_equal_area(lonlat_shapes: Sequence[Any]) -> CRS:
    """A Lambert azimuthal equal-area CRS centred on the shapes (metres, exact areas)."""
    from pyproj import CRS

    lon = (min(s.bounds[0] for s in lonlat_shapes) + max(s.bounds[2] for s in lonlat_shapes)) / 2
    lat = (min(s.bounds[1] for s in lonlat_shapes) + max(s.bounds[3] for s in lonlat_shapes)) / 2
    return CRS.from_proj4(f"+proj=laea +lat_0={lat:.8f} +lon_0={lon:.8f} "
                          "+datum=WGS84 +units=m +no_defs")


def _geodesic_measure(shape: Any, geod: Any) -> tuple[float, float]:
    """Geodesic (area m^2, perimeter or length m) of a lon/lat shape."""
    from shapely.geometry import MultiPolygon, Polygon
    from shapely.geometry.polygon import orient

    if isinstance(shape, Polygon):
        shape = orient(shape, sign=1.0)
    elif isinstance(shape, MultiPolygon):
        shape = MultiPolygon([orient(p, sign=1.0) for p in shape.geoms])
    if shape.geom_type in ("LineString", "MultiLineString", "LinearRing"):
        return 0.0, float(geod.geometry_length(shape))
    if shape.geom_type in ("Point", "MultiPoint"):
        return 0.0, 0.0
    if shape.geom_type == "GeometryCollection":
        parts = [_geodesic_measure(g, geod) for g in shape.geoms]
        return sum(p[0] for p in parts), sum(p[1] for p in parts)
    area, perimeter = geod.geometry_area_perimeter(shape)
    return abs(float(area)), float(perimeter)


def _geod(crs: CRS) -> Any:
    from pyproj import Geod

    return crs.get_geod() or Geod(ellps="WGS84")


def _unit_factor(crs: CRS) -> float:
    axis = crs.axis_info[0] if crs.axis_info else None
    return float(axis.unit_conversion_factor) if axis is not None else 1.0


def _point(value: Sequence[float], parameter: str) -> tuple[float, float]:
    if len(value) != 2:
        raise InputError("give [longitude, latitude]", parameter=parameter)
    lon, lat = float(value[0]), float(value[1])
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise InputError(f"[{lon}, {lat}] is not [longitude, latitude] in degrees",
                         parameter=parameter)
    return lon, lat


def _direction(bearing: float) -> str:
    return _DIRECTIONS[int(((bearing % 360) + 22.5) // 45) % 8]


def _r(value: float, digits: int = 2) -> float:
    return round(float(value), digits)


# --------------------------------------------------------------------------- tools
def geo_describe(path: Annotated[str, InputPath("file")]) -> dict[str, Any]:
    """Describe a raster (CRS, bounds, resolution, time, classes) or a GeoJSON file.

    For a GeoJSON: its CRS (EPSG:4326 lon/lat when it has no ``crs`` member, as RFC 7946
    says), feature count, geometry types, bounds in its CRS and in lon/lat, property names.

    Args:
        path: GeoTIFF/COG or GeoJSON file.

    Returns:
        A compact description; ``kind`` is ``raster`` or ``vector``.
    """
    if not _looks_like_json(path):
        return {"kind": "raster", **raster_summary(path)}
    vector = _read_vector(path, "path")
    types: dict[str, int] = {}
    names: list[str] = []
    for feature in vector.features:
        kind = (feature.get("geometry") or {}).get("type", "null")
        types[kind] = types.get(kind, 0) + 1
        for key in feature.get("properties") or {}:
            if key not in names:
                names.append(key)
    bounds = _total_bounds(vector)
    out: dict[str, Any] = {
        "kind": "vector", "path": path,
        "crs": _crs_name(vector.crs) if vector.crs is not None else None,
        "crs_source": vector.crs_source,
        "features": len(vector.features), "geometry_types": types,
        "bounds": [_r(b, 7) for b in bounds] if bounds else None,
        "property_names": names[:MAX_LISTED],
    }
    if vector.crs is not None:
        out["crs_units"] = "degree" if vector.crs.is_geographic else (
            vector.crs.axis_info[0].unit_name if vector.crs.axis_info else "unknown")
        if bounds is not None:
            from pyproj import Transformer

            transformer = Transformer.from_crs(vector.crs, "EPSG:4326", always_xy=True)
            lonlat = transformer.transform_bounds(bounds[0], bounds[1], bounds[2], bounds[3],
                                                  densify_pts=21)
            out["bounds_lonlat"] = [_r(b, 7) for b in lonlat]
    return out


def geo_measure(
    path: Annotated[str, InputPath("file")],
    feature_index: Annotated[int, Range(0)] | None = None,
) -> dict[str, Any]:
    """Area (m^2) and perimeter or length (m) of GeoJSON features, on the ellipsoid if geographic.

    A geographic CRS is measured geodesically (pyproj.Geod on the CRS's ellipsoid); a projected
    one planarly in its own units converted to metres, and checked against the geodesic value
    (a warning when the projection distorts areas by more than 1 %).

    Args:
        path: GeoJSON file.
        feature_index: One feature (0-based); default: every feature.

    Returns:
        Per-feature ``area_m2`` and ``perimeter_m`` (polygons) or ``length_m`` (lines), totals
        and the ``method`` used.
    """
    vector = _read_vector(path, "path")
    crs = vector.need_crs("path")
    indices = [feature_index] if feature_index is not None else range(len(vector.features))
    geod = _geod(crs)
    factor = 1.0 if crs.is_geographic else _unit_factor(crs)
    items: list[dict[str, Any]] = []
    total_area = total_length = geodesic_total = 0.0
    for index in indices:
        shape = vector.geometry(index, "feature_index")
        if crs.is_geographic:
            # GeoJSON edges are straight in lon/lat (RFC 7946), not geodesics: densify first.
            _refuse_antimeridian(shape)
            area, length = _geodesic_measure(_densified(shape), geod)
        else:
            area = float(shape.area) * factor * factor
            length = float(shape.length) * factor
            geodesic_total += _geodesic_measure(
                _transform_shape(_densified(shape), crs, crs.geodetic_crs or crs), geod)[0]
        item: dict[str, Any] = {"index": index, "geometry_type": shape.geom_type}
        if shape.geom_type in ("LineString", "MultiLineString", "LinearRing"):
            item["length_m"] = _r(length)
        elif "Polygon" in shape.geom_type or shape.geom_type == "GeometryCollection":
            item["area_m2"], item["perimeter_m"] = _r(area), _r(length)
        total_area += area
        total_length += length
        if len(items) < MAX_LISTED:
            items.append(item)
    out: dict[str, Any] = {
        "path": path, "crs": _crs_name(crs), "crs_source": vector.crs_source,
        "method": "geodesic on the ellipsoid (pyproj.Geod; edges straight in lon/lat as in "
                  "RFC 7946)" if crs.is_geographic
        else f"planar in {_crs_name(crs)} (unit factor {factor:g} m)",
        "features": items, "features_measured": len(indices),
        "total_area_m2": _r(total_area), "total_length_or_perimeter_m": _r(total_length),
    }
    if len(indices) > len(items):
        out["note"] = f"first {len(items)} features listed; totals cover all {len(indices)}"
    if not crs.is_geographic and geodesic_total > 0:
        differ = 100 * (total_area - geodesic_total) / geodesic_total
        out["geodesic_total_area_m2"] = _r(geodesic_total)
        out["planar_vs_geodesic_pct"] = _r(differ, 3)
        if abs(differ) > 1:
            out["warning"] = (f"planar areas in {_crs_name(crs)} differ from the ground "
                              f"(geodesic) areas by {differ:+.1f} %: this projection is not "
                              "equal-area here; use geodesic_total_area_m2")
    return out


def geo_relate(
    path_a: Annotated[str, InputPath("file")],
    index_a: Annotated[int, Range(0)] = 0,
    path_b: Annotated[str, InputPath("file")] | None = None,
    index_b: Annotated[int, Range(0)] = 0,
    point_lonlat: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Topological, metric and directional relation of feature A to feature B (or a point).

    Features sharing a projected CRS are related and measured there (planar areas, as
    geo_measure); otherwise both are reprojected to a Lambert azimuthal equal-area CRS centred on
    the pair (metres, exact areas). The distance is the geodesic distance between the nearest
    points; the bearing is the geodesic azimuth from B's centroid to A's, so ``a_is`` reads
    "A is <word> B".

    Args:
        path_a: GeoJSON file of feature A.
        index_a: Index of feature A in path_a.
        path_b: GeoJSON file of feature B (give this or point_lonlat).
        index_b: Index of feature B in path_b.
        point_lonlat: B as a point [longitude, latitude] in degrees (WGS 84).

    Returns:
        Predicates (a_within_b, a_contains_b, intersects, touches, disjoint), intersection
        area, distance, bearing and direction.
    """
    from pyproj import CRS
    from shapely.geometry import Point
    from shapely.ops import nearest_points

    if (path_b is None) == (point_lonlat is None):
        raise InputError("give exactly one of path_b and point_lonlat", parameter="path_b")
    wgs84 = CRS.from_epsg(4326)
    vector_a = _read_vector(path_a, "path_a")
    crs_a = vector_a.need_crs("path_a")
    native_a = vector_a.geometry(index_a, "index_a")
    if path_b is not None:
        vector_b = _read_vector(path_b, "path_b")
        crs_b = vector_b.need_crs("path_b")
        native_b = vector_b.geometry(index_b, "index_b")
    else:
        crs_b, native_b = wgs84, Point(*_point(point_lonlat or (), "point_lonlat"))
    a, b = _to_lonlat(native_a, crs_a, "path_a"), _to_lonlat(native_b, crs_b, "path_b")
    local = _local_equal_area([a, b])
    la, lb = _transform_shape(a, wgs84, local), _transform_shape(b, wgs84, local)
    # Topology is exact in the CRS the edges are drawn in: there when both share it (a shared
    # edge stays shared), else in the local CRS.
    same = crs_a.equals(crs_b, ignore_axis_order=True)
    ta, tb = (native_a, native_b) if same else (la, lb)
    intersects, touches = bool(ta.intersects(tb)), bool(ta.touches(tb))
    geod = _geod(wgs84)
    ca, cb = (_transform_shape(s.centroid, local, wgs84) for s in (la, lb))
    azimuth, _, centre_distance = geod.inv(cb.x, cb.y, ca.x, ca.y)
    if intersects:
        distance = 0.0
    else:
        pa, pb = (_transform_shape(p, local, wgs84) for p in nearest_points(la, lb))
        distance = float(geod.inv(pa.x, pa.y, pb.x, pb.y)[2])
    # Areas follow geo_measure: planar in a shared projected CRS (what a GIS reports there),
    # else in the local equal-area CRS.
    planar = same and not crs_a.is_geographic
    aa, ab = (native_a, native_b) if planar else (la, lb)
    scale = _unit_factor(crs_a) ** 2 if planar else 1.0
    inter = float(aa.intersection(ab).area) * scale if intersects and not touches else 0.0
    out: dict[str, Any] = {
        "a_within_b": bool(ta.within(tb)), "a_contains_b": bool(ta.contains(tb)),
        "intersects": intersects, "touches": touches, "disjoint": not intersects,
        "intersection_area_m2": _r(inter),
        "a_area_m2": _r(aa.area * scale), "b_area_m2": _r(ab.area * scale),
        "distance_m": _r(distance), "centroid_distance_m": _r(centre_distance),
        "a_centroid_lonlat": [_r(ca.x, 7), _r(ca.y, 7)],
        "b_centroid_lonlat": [_r(cb.x, 7), _r(cb.y, 7)],
        "method": (f"predicates in {_crs_name(crs_a) if same else 'a local equal-area CRS'}, "
                   f"areas {'planar in that CRS' if planar else 'in a local equal-area CRS'}, "
                   "geodesic distance and bearing"),
    }
    if aa.area > 0:
        out["fraction_of_a_in_b"] = _r(inter / (aa.area * scale), 6)
    # Below a centimetre the azimuth is rounding noise of the two centroids.
    if centre_distance >= 0.01:
        out["bearing_deg"] = _r(azimuth % 360, 3)
        out["a_is"] = _direction(azimuth)
    else:
        out["a_is"] = "same_centroid"
    return out


def geo_image_relation(
    path: Annotated[str, InputPath("file")],
    index_a: Annotated[int, Range(0)],
    index_b: Annotated[int, Range(0)],
    raster: Annotated[str, InputPath("file")] | None = None,
    coordinates: Literal["auto", "pixel"] = "auto",
) -> dict[str, Any]:
    """Where feature A lies relative to feature B in image space (left_of, right_of, above, below).

    Image space has columns increasing to the right and rows increasing downward. Features in
    pixel coordinates (a GeoJSON with a local ``coordinate_frame``, e.g. detector boxes) are used
    as they are; georeferenced features need ``raster``, whose grid maps them to pixels. "above"
    means north only on a north-up raster: the result says whether the grid is.

    Args:
        path: GeoJSON file with both features.
        index_a: Index of feature A.
        index_b: Index of feature B.
        raster: The image whose pixel grid defines image space (needed for georeferenced
            features; also tells whether up is north).
        coordinates: auto: pixels when the file has a local coordinate_frame, else map
            coordinates of its CRS; pixel: the coordinates are (column, row) whatever the file
            says (a detector's boxes written without a frame).

    Returns:
        ``a_is`` (e.g. ["left_of", "above"]), the dominant one, centroid offsets in pixels,
        whether the shapes overlap and whether the grid is north-up.
    """
    import shapely.affinity

    vector = _read_vector(path, "path", pixels=coordinates == "pixel")
    a, b = vector.geometry(index_a, "index_a"), vector.geometry(index_b, "index_b")
    north_up: bool | None = None
    note = ("no raster given: 'above' is only image-up; whether it is north is unknown")
    if raster is not None:
        with _open_raster(raster, "raster") as src:
            t = src.transform
            rotation = math.degrees(math.atan2(t.d, t.a))
            mirrored = t.a * t.e - t.b * t.d > 0
            north_up = t.b == 0 and t.d == 0 and t.a > 0 and t.e < 0
            note = ("north-up grid: 'above' is (grid) north" if north_up else
                    f"the grid is {'mirrored' if mirrored else 'rotated'} (columns point "
                    f"{rotation:.1f} deg from east): 'above' is not north")
            if vector.crs is not None:
                if src.crs is None:
                    raise InputError("the raster has no CRS, the features are georeferenced",
                                     parameter="raster")
                from pyproj import CRS

                dst = CRS.from_wkt(src.crs.to_wkt())
                a, b = (_transform_shape(_densified(s), vector.crs, dst) for s in (a, b))
                inv = ~t
                matrix = [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f]
                a, b = (shapely.affinity.affine_transform(s, matrix) for s in (a, b))
    elif vector.crs is not None:
        raise InputError(f"the features are in map coordinates ({_crs_name(vector.crs)}); give "
                         "the raster whose grid defines image space", parameter="raster")
    dx = float(a.centroid.x - b.centroid.x)
    dy = float(a.centroid.y - b.centroid.y)
    words = []
    tolerance = 0.5
    if abs(dx) > tolerance:
        words.append("right_of" if dx > 0 else "left_of")
    if abs(dy) > tolerance:
        words.append("below" if dy > 0 else "above")
    dominant = None
    if words:
        dominant = (("right_of" if dx > 0 else "left_of") if abs(dx) >= abs(dy)
                    else ("below" if dy > 0 else "above"))
    ax0, ay0, ax1, ay1 = a.bounds
    bx0, by0, bx1, by1 = b.bounds
    return {
        "a_is": words or ["same_position"], "dominant": dominant,
        "centroid_offset_px": {"columns": _r(dx, 2), "rows": _r(dy, 2)},
        "a_centroid_px": [_r(a.centroid.x, 2), _r(a.centroid.y, 2)],
        "b_centroid_px": [_r(b.centroid.x, 2), _r(b.centroid.y, 2)],
        "overlap": bool(a.intersects(b)),
        "entirely": [w for w, yes in (("left_of", ax1 <= bx0), ("right_of", ax0 >= bx1),
                                      ("above", ay1 <= by0), ("below", ay0 >= by1)) if yes],
        "north_up": north_up, "note": note,
    }


def _class_id(src: Any, value: str | int) -> tuple[int, str]:
    import numpy as np

    if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
        raise InputError(f"{Path(src.name).name} is not a class raster (its values are "
                         f"{src.dtypes[0]})", parameter="path")
    names = raster_class_names(src)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        ident = int(text)
        return ident, names.get(ident, str(ident))
    for ident, name in names.items():
        if name.lower() == text.lower():
            return ident, name
    listed = ", ".join(f"{n} ({i})" for i, n in names.items()) or "none (give a class id)"
    raise InputError(f"unknown class {text!r}; the classes are: {listed}",
                     parameter="class_name")


def _pixel_xy(src: Any, rows: Any, cols: Any) -> tuple[Any, Any]:
    """Map coordinates of (fractional) pixel indices' centres."""
    import numpy as np
    from rasterio.transform import xy

    xs, ys = xy(src.transform, np.asarray(rows) + 0.5, np.asarray(cols) + 0.5, offset="ul")
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def _pixel_lonlat(src: Any, rows: Any, cols: Any) -> list[list[float]]:
    from pyproj import Transformer

    xs, ys = _pixel_xy(src, rows, cols)
    transformer = Transformer.from_crs(src.crs.to_wkt(), "EPSG:4326", always_xy=True)
    lon, lat = transformer.transform(xs, ys)
    return [[_r(x, 7), _r(y, 7)] for x, y in zip(list(lon), list(lat), strict=True)]


def geo_class_objects(
    path: Annotated[str, InputPath("file")],
    class_name: str | int,
    op: Literal["count", "largest", "nearest"] = "count",
    point_lonlat: tuple[float, float] | None = None,
    top_k: Annotated[int, Range(1, 100)] = 5,
    band: Annotated[int, Range(1)] = 1,
) -> dict[str, Any]:
    """Count, rank by area or find the nearest connected objects of one class in a class raster.

    Objects are 8-connected components of the class's pixels. Areas come from the grid (exact
    ellipsoidal cell areas on a geographic grid); the nearest object's distance is the geodesic
    distance from the point to its nearest pixel centre (0 when the point lies on the object).

    Args:
        path: Class raster (integer GeoTIFF/COG, class names in its tags).
        class_name: Class name (as tagged) or class id.
        op: count: number of objects and their areas; largest: the top_k largest; nearest: the
            top_k nearest to point_lonlat.
        point_lonlat: [longitude, latitude] in degrees for op=nearest.
        top_k: Objects listed.
        band: 1-based band index.

    Returns:
        Object count, total area, and for the listed objects their area, pixel count, centroid
        in lon/lat and pixel bounding box.
    """
    import numpy as np
    from scipy import ndimage

    if op == "nearest" and point_lonlat is None:
        raise InputError("op=nearest needs a [longitude, latitude] point", parameter="point_lonlat")
    with _open_raster(path, "path") as src:
        _check_band(src, band)
        _check_size(src, "path")
        ident, name = _class_id(src, class_name)
        areas = _areas_or_fail(src, "path")
        data, valid = _read_valid(src, band)
        mask = (data == ident) & valid
        labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        rows_of = np.nonzero(mask)[0]
        pixel_count = np.bincount(labels[mask], minlength=count + 1)
        area = np.bincount(labels[mask], weights=areas[rows_of], minlength=count + 1)
        out: dict[str, Any] = {
            "path": path, "class": name, "class_id": ident, "op": op, "objects": int(count),
            "class_area_m2": _r(area[1:].sum()), "connectivity": 8,
        }
        if count:
            out["object_area_m2"] = {"min": _r(area[1:].min()),
                                     "median": _r(float(np.median(area[1:]))),
                                     "max": _r(area[1:].max())}
        if op == "count" or count == 0:
            return out
        distance = None
        if op == "largest":
            order = np.argsort(-area[1:], kind="stable")[:top_k] + 1
        else:
            from pyproj import CRS, Transformer
            from rasterio.transform import rowcol

            lon, lat = _point(point_lonlat or (), "point_lonlat")
            local = CRS.from_proj4(f"+proj=aeqd +lat_0={lat} +lon_0={lon} +datum=WGS84 "
                                   "+units=m +no_defs")
            rows, cols = np.nonzero(mask)
            xs, ys = _pixel_xy(src, rows, cols)
            transformer = Transformer.from_crs(src.crs.to_wkt(), local, always_xy=True)
            ex, ny = transformer.transform(xs, ys)
            # Distances from the centre of an azimuthal equidistant CRS are geodesic distances.
            d = np.hypot(ex, ny)
            distance = np.asarray(ndimage.minimum(d, labels[rows, cols],
                                                  np.arange(count + 1)), dtype=np.float64)
            distance[0] = np.inf
            to_raster = Transformer.from_crs("EPSG:4326", src.crs.to_wkt(), always_xy=True)
            px, py = to_raster.transform(lon, lat)
            row, col = (int(v) for v in rowcol(src.transform, px, py))
            if 0 <= row < src.height and 0 <= col < src.width and labels[row, col]:
                distance[labels[row, col]] = 0.0
            order = np.argsort(distance[1:], kind="stable")[:top_k] + 1
        slices = ndimage.find_objects(labels)
        centres = ndimage.center_of_mass(mask, labels, order)
        lonlat = _pixel_lonlat(src, np.array([c[0] for c in centres]),
                               np.array([c[1] for c in centres]))
        listed = []
        for rank, label in enumerate(order.tolist()):
            box = slices[label - 1]
            item: dict[str, Any] = {
                "rank": rank + 1, "area_m2": _r(area[label]), "pixels": int(pixel_count[label]),
                "centroid_lonlat": lonlat[rank],
                "bbox_px": [box[1].start, box[0].start, box[1].stop, box[0].stop],
            }
            if distance is not None:
                item["distance_m"] = _r(distance[label])
            listed.append(item)
        out["listed"] = listed
        if distance is not None:
            out["nearest_distance_m"] = listed[0]["distance_m"]
            out["distance_to"] = "nearest pixel centre of each object (0 when on the object)"
        out["note"] = "bbox_px is [col_min, row_min, col_max, row_max), rows counted downward"
        return out


def geo_class_areas(
    path: Annotated[str, InputPath("file")],
    band: Annotated[int, Range(1)] = 1,
) -> dict[str, Any]:
    """Ground area (m^2) and area fraction of every class of a class raster, nodata excluded.

    Args:
        path: Class raster (integer GeoTIFF/COG).
        band: 1-based band index.

    Returns:
        ``area_m2``, ``fraction`` and ``pixels`` per class name, and the total valid area.
    """
    with _open_raster(path, "path") as src:
        _check_band(src, band)
        _class_id(src, 0)
        _areas_or_fail(src, "path")
    result = class_areas_m2(path, band=band)
    areas: dict[str, float] = result["area_m2"]
    total = sum(areas.values())
    return {
        "path": path, "area_m2": areas, "pixels": result["pixels"],
        "fraction": {k: _r(v / total, 6) if total else 0.0 for k, v in areas.items()},
        "total_valid_area_m2": _r(total), "pixel_area_m2": result["pixel_area_m2"],
    }


ZonalStat = Literal["count", "mean", "min", "max", "std", "sum", "median"]


def geo_zonal_stats(
    raster: Annotated[str, InputPath("file")],
    zones: Annotated[str, InputPath("file")],
    band: Annotated[int, Range(1)] = 1,
    stats: list[ZonalStat] | None = None,
    percentiles: list[Annotated[float, Range(0, 100)]] | None = None,
    categorical: bool = False,
    all_touched: bool = False,
) -> dict[str, Any]:
    """Statistics of a raster band inside each polygon of a GeoJSON (nodata excluded).

    Polygons are reprojected to the raster's CRS; a pixel belongs to a polygon when its centre
    lies inside (or, with all_touched, when the polygon touches it).

    Args:
        raster: GeoTIFF/COG.
        zones: GeoJSON with polygons.
        band: 1-based band index.
        stats: Statistics to report (default count, mean, min, max).
        percentiles: Percentiles to report, e.g. [10, 90].
        categorical: Also report the area in m^2 of each class value inside each polygon.
        all_touched: Count every pixel the polygon touches.

    Returns:
        Per polygon: the statistics, the valid area in m^2 and (categorical) class areas.
    """
    import numpy as np
    from rasterio.errors import WindowError
    from rasterio.features import geometry_mask, geometry_window
    from rasterio.warp import transform_geom
    from rasterio.windows import Window

    chosen = list(dict.fromkeys(stats or ["count", "mean", "min", "max"]))
    vector = _read_vector(zones, "zones")
    if len(vector.features) > 1000:
        raise InputError(f"{len(vector.features)} polygons, over the 1000 of one call; split "
                         "the file", parameter="zones")
    with _open_raster(raster, "raster") as src:
        _check_band(src, band)
        if (vector.crs is None) != (src.crs is None):
            which = "the raster" if src.crs is None else Path(zones).name
            raise InputError(f"{which} has no CRS, the other has: they cannot be overlaid",
                             parameter="zones" if vector.crs is None else "raster")
        areas = row_areas_m2(src)
        names = raster_class_names(src, band) if categorical else {}
        if categorical:
            _class_id(src, 0)
        results = []
        for index in range(len(vector.features)):
            shape = vector.geometry(index, "zones")
            if "Polygon" not in shape.geom_type:
                raise InputError(f"feature {index} is a {shape.geom_type}, not a polygon",
                                 parameter="zones")
            geometry: Any = shape.__geo_interface__
            if vector.crs is not None:
                geometry = transform_geom(vector.crs.to_wkt(), src.crs,
                                          _densified(shape).__geo_interface__)
            properties = vector.features[index].get("properties") or {}
            item: dict[str, Any] = {"index": index}
            for key in ("id", "name"):
                if key in properties:
                    item[key] = properties[key]
            try:
                window = geometry_window(src, [geometry])
                window = window.intersection(Window(0, 0, src.width, src.height))
            except WindowError:
                window = None
            if window is None or window.width < 1 or window.height < 1:
                item.update(count=0, note="outside the raster")
                results.append(item)
                continue
            # Outward to whole pixels, so no partly covered edge row or column is dropped.
            col0, row0 = math.floor(window.col_off), math.floor(window.row_off)
            window = Window(col0, row0, math.ceil(window.col_off + window.width) - col0,
                            math.ceil(window.row_off + window.height) - row0)
            if window.width * window.height > MAX_PIXELS:
                raise InputError(f"feature {index} covers over {MAX_PIXELS} pixels",
                                 parameter="zones")
            data, valid = _read_valid(src, band, window)
            inside = geometry_mask([geometry], out_shape=data.shape, invert=True,
                                   transform=src.window_transform(window),
                                   all_touched=all_touched)
            keep = inside & valid
            values = data[keep].astype(np.float64)
            item["count"] = int(values.size)
            row_area = None
            if areas is not None:
                start = int(window.row_off)
                row_area = np.broadcast_to(areas[start:start + data.shape[0], None],
                                           data.shape)[keep]
                item["area_m2"] = _r(row_area.sum())
            if values.size:
                functions: dict[str, Any] = {"mean": np.mean, "min": np.min, "max": np.max,
                                             "std": np.std, "sum": np.sum, "median": np.median}
                for stat in chosen:
                    if stat != "count":
                        item[stat] = _r(functions[stat](values), 6)
                for p in percentiles or []:
                    item[f"p{p:g}"] = _r(np.percentile(values, p), 6)
                if categorical:
                    classes, inverse = np.unique(values.astype(np.int64), return_inverse=True)
                    weights = row_area if row_area is not None else np.ones(values.size)
                    per = np.bincount(inverse, weights=weights)
                    # Every named class is listed, absent ones with 0: no key an agent must guess.
                    table = {name: 0.0 for _, name in sorted(names.items())}
                    table.update({names.get(int(c), str(int(c))): _r(a) for c, a in zip(
                        classes.tolist(), per.tolist(), strict=True)})
                    item["class_area_m2" if row_area is not None else "class_pixels"] = table
            else:
                item["note"] = ("no valid pixel inside" if all_touched else
                                "no valid pixel centre inside (all_touched counts every pixel "
                                "the polygon touches)")
            results.append(item)
    return {"raster": raster, "zones": zones, "band": band, "zone_count": len(results),
            "zones_stats": results,
            "pixel_rule": "touched" if all_touched else "centre inside"}


def geo_reproject(
    x: float,
    y: float,
    src_crs: str = "EPSG:4326",
    dst_crs: str = "EPSG:4326",
) -> dict[str, Any]:
    """Reproject one point between CRSs (x = easting or longitude, y = northing or latitude).

    Args:
        x: Easting, or longitude in degrees.
        y: Northing, or latitude in degrees.
        src_crs: CRS of the point (EPSG code, WKT or PROJ string).
        dst_crs: Target CRS.

    Returns:
        The point in dst_crs and in lon/lat.
    """
    from pyproj import Transformer

    src, dst = _crs(src_crs, "src_crs"), _crs(dst_crs, "dst_crs")
    if src.is_geographic and not (-180 <= x <= 360 and -90 <= y <= 90):
        raise InputError(f"({x}, {y}) is not (longitude, latitude) in degrees", parameter="x")
    out_x, out_y = Transformer.from_crs(src, dst, always_xy=True).transform(x, y)
    lon, lat = Transformer.from_crs(src, "EPSG:4326", always_xy=True).transform(x, y)
    if not all(math.isfinite(v) for v in (out_x, out_y, lon, lat)):
        raise InputError(f"({x}, {y}) cannot be expressed in {_crs_name(dst)} (outside its "
                         "area of use)", parameter="dst_crs")
    return {"x": _r(out_x, 9 if dst.is_geographic else 4),
            "y": _r(out_y, 9 if dst.is_geographic else 4), "crs": _crs_name(dst),
            "lonlat": [_r(lon, 9), _r(lat, 9)], "axis_order": "x, y (easting/longitude first)"}


def geo_reproject_box(
    left: float,
    bottom: float,
    right: float,
    top: float,
    src_crs: str = "EPSG:4326",
    dst_crs: str = "EPSG:4326",
) -> dict[str, Any]:
    """Reproject a bounding box, densifying its edges so the result encloses the curved box.

    Args:
        left: Smallest x (easting or longitude).
        bottom: Smallest y.
        right: Largest x.
        top: Largest y.
        src_crs: CRS of the box.
        dst_crs: Target CRS.

    Returns:
        The enclosing box in dst_crs (left, bottom, right, top).
    """
    from rasterio.crs import CRS as RioCRS
    from rasterio.errors import CRSError
    from rasterio.warp import transform_bounds

    if not (left < right and bottom < top):
        raise InputError(f"({left}, {bottom}, {right}, {top}) is no box: need left < right and "
                         "bottom < top", parameter="left")
    src, dst = _crs(src_crs, "src_crs"), _crs(dst_crs, "dst_crs")
    try:
        box = transform_bounds(RioCRS.from_wkt(src.to_wkt()), RioCRS.from_wkt(dst.to_wkt()),
                               left, bottom, right, top, densify_pts=21)
    except CRSError as error:
        raise InputError(f"the box cannot be reprojected ({error})", parameter="dst_crs") from None
    if not all(math.isfinite(v) for v in box):
        raise InputError("the box cannot be expressed in the target CRS (outside its area of "
                         "use)", parameter="dst_crs")
    digits = 9 if dst.is_geographic else 4
    return {"bounds": [_r(v, digits) for v in box], "crs": _crs_name(dst),
            "densify_points_per_edge": 21}


def geo_threshold_area(
    raster: Annotated[str, InputPath("file")],
    op: Literal[">", ">=", "<", "<="] = ">=",
    value: float | None = None,
    percentile: Annotated[float, Range(0, 100)] | None = None,
    band: Annotated[int, Range(1)] = 1,
) -> dict[str, Any]:
    """Ground area and mean value of the pixels satisfying ``band <op> threshold``.

    The threshold is ``value``, or the given percentile of the valid pixels (percentile=90 with
    op ">=" selects the highest 10 %, e.g. the warmest tenth of a land surface temperature map).

    Args:
        raster: GeoTIFF/COG.
        op: Comparison.
        value: Threshold in the band's units (give this or percentile).
        percentile: Threshold as a percentile of the valid pixel values.
        band: 1-based band index.

    Returns:
        Threshold used, pixel count, area in m^2, fraction of the valid area and the mean, min and
        max of the selected pixels.
    """
    import operator

    import numpy as np

    if (value is None) == (percentile is None):
        raise InputError("give exactly one of value and percentile", parameter="value")
    with _open_raster(raster, "raster") as src:
        _check_band(src, band)
        _check_size(src, "raster")
        areas = _areas_or_fail(src, "raster")
        data, valid = _read_valid(src, band)
    values = data[valid].astype(np.float64)
    if values.size == 0:
        raise InputError("no valid pixel in the band (all nodata)", parameter="raster")
    threshold = float(np.percentile(values, percentile)) if percentile is not None \
        else float(value or 0.0)
    compare: Any = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}[op]
    selected = compare(data.astype(np.float64), threshold) & valid
    pixel_area = np.broadcast_to(areas[:, None], data.shape)
    area = float(pixel_area[selected].sum())
    chosen = data[selected].astype(np.float64)
    out: dict[str, Any] = {
        "raster": raster, "band": band, "condition": f"value {op} {threshold:.6g}",
        "threshold": _r(threshold, 6), "pixels": int(selected.sum()), "area_m2": _r(area),
        "fraction_of_valid_area": _r(area / float(pixel_area[valid].sum()), 6),
        "valid_pixels": int(values.size),
    }
    if percentile is not None:
        out["percentile"] = percentile
    if chosen.size:
        out.update(mean=_r(chosen.mean(), 6), min=_r(chosen.min(), 6), max=_r(chosen.max(), 6))
    return out


__all__ = [
    "MAX_PIXELS",
    "geo_class_areas",
    "geo_class_objects",
    "geo_describe",
    "geo_image_relation",
    "geo_measure",
    "geo_relate",
    "geo_reproject",
    "geo_reproject_box",
    "geo_threshold_area",
    "geo_zonal_stats",
]
