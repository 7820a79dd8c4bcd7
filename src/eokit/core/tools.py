"""Describe a capability's operations as typed tools, so that an agent server can expose them.

A capability lists its operations in ``eokit.<capability>.tools.TOOLS`` as :class:`ToolSpec`
entries. Each wraps a plain Python function whose signature carries everything a JSON schema
needs: the type of every parameter, ``typing.Literal`` for enumerations, and the markers below in
``typing.Annotated`` for paths (which the server confines to its allowed folders), numeric ranges
and units. The function's Google-style docstring gives the tool and parameter descriptions. A tool
returns a JSON-able dict: output file paths and a compact summary (CRS, extent, metrics, class
areas), never arrays.

Core knows no capability: the agent finds the ``tools`` modules by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "InputPath", "OutputPath", "Range", "ToolSpec", "Unit", "class_areas_m2", "class_names_of",
    "raster_class_names",
    "raster_summary", "row_areas_m2",
]


@dataclass(frozen=True)
class InputPath:
    """Marks a ``str`` parameter as a file or folder the tool reads.

    Attributes:
        kind: ``"file"``, ``"dir"`` or ``"any"``: what must exist at the path.
    """

    kind: Literal["file", "dir", "any"] = "file"


@dataclass(frozen=True)
class OutputPath:
    """Marks a ``str`` parameter as a file or folder the tool writes (confined to the output root).

    Attributes:
        kind: ``"file"`` or ``"dir"``.
    """

    kind: Literal["file", "dir"] = "file"


@dataclass(frozen=True)
class Range:
    """Inclusive numeric bounds of a parameter (``None``: unbounded on that side).

    Attributes:
        minimum: Smallest allowed value.
        maximum: Largest allowed value.
        exclusive_minimum: Whether ``minimum`` itself is excluded.
        exclusive_maximum: Whether ``maximum`` itself is excluded.
    """

    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False


@dataclass(frozen=True)
class Unit:
    """The physical unit of a numeric parameter (``"m"``, ``"K"``, ``"km"``, ``"days"`` ...)."""

    symbol: str


@dataclass(frozen=True)
class ToolSpec:
    """One operation offered to an agent.

    Attributes:
        name: Tool name, ``<capability>_<operation>`` (``change_predict``), unique over eokit.
        function: The typed Python function that does the work and returns a JSON-able dict.
        effect: ``"read"`` (reads only), ``"write"`` (writes files under the output root) or
            ``"long"`` (writes, and may take minutes: run as a cancellable job with progress).
        summary: One line for tool listings; default: the first line of the function's docstring.
    """

    name: str
    function: Callable[..., dict[str, Any]]
    effect: Literal["read", "write", "long"] = "read"
    summary: str = ""

    @property
    def description(self) -> str:
        """The tool's one-line description."""
        if self.summary:
            return self.summary
        doc = (self.function.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else self.name


def raster_summary(path: str | Path) -> dict[str, Any]:
    """A compact, JSON-able description of a GeoTIFF for a tool result.

    Args:
        path: Raster file.

    Returns:
        ``path``, ``crs``, ``crs_units``, ``width``, ``height``, ``bands``, ``dtype``,
        ``pixel_size`` (x, y in CRS units), ``bounds`` (left, bottom, right, top in CRS units),
        ``bounds_lonlat`` (WGS 84), ``nodata``, ``band_names``, ``class_names`` (when tagged) and
        ``time`` (the TIFF date tag, when present).
    """
    import rasterio
    from rasterio.warp import transform_bounds

    from eokit.core.errors import InputError

    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as error:
        raise InputError(f"not a readable raster ({str(error).splitlines()[0]})",
                         path=path) from None
    with src:
        out: dict[str, Any] = {
            "path": str(path),
            "width": src.width,
            "height": src.height,
            "bands": src.count,
            "dtype": src.dtypes[0],
            "pixel_size": [abs(src.transform.a), abs(src.transform.e)],
            "bounds": [round(v, 6) for v in src.bounds],
            # NaN is no JSON number: say "nan" rather than null (which would mean no nodata)
            "nodata": "nan" if src.nodata is not None and src.nodata != src.nodata
            else src.nodata,
        }
        if src.crs is not None:
            epsg = src.crs.to_epsg()
            out["crs"] = f"EPSG:{epsg}" if epsg else src.crs.to_string()
            out["crs_units"] = "degree" if src.crs.is_geographic else (
                src.crs.linear_units or "unknown")
            lonlat = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
            out["bounds_lonlat"] = [round(v, 7) for v in lonlat]
        else:
            out["crs"] = None
            out["note"] = "not georeferenced: pixel coordinates only"
        names = [d for d in src.descriptions if d]
        if names:
            out["band_names"] = names
        tags = src.tags()
        classes = raster_class_names(src)
        if classes:
            out["class_names"] = classes
        if "TIFFTAG_DATETIME" in tags:
            out["time"] = tags["TIFFTAG_DATETIME"]
        for key in ("date", "acquisition_date", "DATE_ACQUIRED"):
            if key in tags:
                out["time"] = tags[key]
    return out


def class_names_of(tags: dict[str, str]) -> dict[int, str]:
    """Class id -> name from a raster's tags (``class_names`` JSON list or ``CLASS_<id>``)."""
    import json

    names: dict[int, str] = {}
    if "class_names" in tags:
        try:
            listed = json.loads(tags["class_names"])
            if isinstance(listed, list):
                names = {i: str(n) for i, n in enumerate(listed)}
            elif isinstance(listed, dict):
                names = {int(k): str(v) for k, v in listed.items()}
        except (ValueError, TypeError):
            names = {}
    for key, value in tags.items():
        if key.startswith("CLASS_") and key[6:].isdigit():
            names[int(key[6:])] = value
    return dict(sorted(names.items()))


def raster_class_names(src: Any, band: int = 1) -> dict[int, str]:
    """Class id -> name of an open rasterio dataset.

    GDAL category names (the PAM sidecar QGIS reads) first, then the ``class_names`` /
    ``CLASS_<id>`` tags.
    """
    from eokit.core.raster import read_category_names

    names = read_category_names(src.name, band) if isinstance(src.name, str) else {}
    names.update(class_names_of(src.tags()))
    return dict(sorted(names.items()))


def row_areas_m2(src: Any) -> Any:
    """Ground area of one pixel in each row of an open rasterio dataset, in m^2.

    Projected grids: the transform's cell area in metres (the same for every row). Geographic
    north-up grids: the exact area of a pixel of each row on the WGS 84 ellipsoid (a cell
    bounded by two meridians and two parallels), which shrinks towards the poles.

    Args:
        src: An open ``rasterio`` dataset.

    Returns:
        A float64 array of ``src.height`` areas, or None when the grid has no CRS (or a rotated
        geographic one) and areas are unknown.
    """
    import numpy as np

    if src.crs is None:
        return None
    t = src.transform
    if not src.crs.is_geographic:
        factor = float(src.crs.linear_units_factor[1]) if src.crs.linear_units_factor else 1.0
        area = abs(t.a * t.e - t.b * t.d) * factor * factor
        return np.full(src.height, area, dtype=np.float64)
    if t.b != 0 or t.d != 0:
        return None
    # Exact area of a band between two parallels on the WGS 84 ellipsoid (authalic q function):
    # A = b^2 / 2 * dlon * (q(lat2) - q(lat1)).
    a, f = 6378137.0, 1 / 298.257223563
    b = a * (1 - f)
    e = np.sqrt(f * (2 - f))
    edges = np.radians(np.clip(t.f + np.arange(src.height + 1) * t.e, -90.0, 90.0))
    sin = np.sin(edges)
    q = sin / (1 - (e * sin) ** 2) + np.log((1 + e * sin) / (1 - e * sin)) / (2 * e)
    return np.abs(np.diff(q)) * b * b / 2 * abs(np.radians(t.a))


def class_areas_m2(
    path: str | Path,
    *,
    band: int = 1,
    names: dict[int, str] | None = None,
    pixel_size_m: float | None = None,
    block_rows: int = 512,
) -> dict[str, Any]:
    """Ground area and pixel count of every value of an integer band (nodata excluded).

    Reads the band in row blocks, so a raster larger than memory is fine.

    Args:
        path: Raster file.
        band: 1-based band index.
        names: Value -> class name; default: the raster's class-name tags (else the value).
        pixel_size_m: Ground pixel size of a raster without CRS (a plain image); ignored when
            the raster is georeferenced.
        block_rows: Rows read at a time.

    Returns:
        ``pixels`` and ``area_m2`` keyed by class name (``area_m2`` is None without a CRS) and
        ``pixel_area_m2`` (None when it varies with latitude or is unknown).
    """
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        names = names if names is not None else raster_class_names(src)
        areas = row_areas_m2(src)
        if areas is None and src.crs is None and pixel_size_m is not None:
            areas = np.full(src.height, float(pixel_size_m) ** 2)
        pixels: dict[int, int] = {}
        area: dict[int, float] = {}
        for row in range(0, src.height, block_rows):
            rows = min(block_rows, src.height - row)
            window = Window(0, row, src.width, rows)
            data = src.read(band, window=window)
            valid = src.read_masks(band, window=window) > 0
            values, inverse = np.unique(data[valid], return_inverse=True)
            counts = np.bincount(inverse, minlength=len(values))
            weights = None
            if areas is not None:
                per_pixel = np.broadcast_to(areas[row:row + rows, None], data.shape)[valid]
                weights = np.bincount(inverse, weights=per_pixel, minlength=len(values))
            for i, value in enumerate(values.tolist()):
                pixels[value] = pixels.get(value, 0) + int(counts[i])
                if weights is not None:
                    area[value] = area.get(value, 0.0) + float(weights[i])
        uniform = areas is not None and bool(np.all(areas == areas[0]))

    def label(value: Any) -> str:
        return str(names.get(int(value), value)) if names else str(value)

    ordered = sorted(pixels)
    return {
        "pixels": {label(v): pixels[v] for v in ordered},
        "area_m2": {label(v): round(area[v], 1) for v in ordered} if areas is not None else None,
        "pixel_area_m2": float(areas[0]) if areas is not None and uniform else None,
    }
