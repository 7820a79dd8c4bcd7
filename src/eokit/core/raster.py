"""Raster I/O: GeoTIFF/COG read/write (rasterio), windows, valid masks, plain images, atomic writes.

Everything that touches a file on disk goes through here so that every input error is one
:class:`~eokit.core.errors.InputError` naming the file, and every output is written atomically
(temporary file in the same folder, then :func:`os.replace`): an interrupted run never leaves a
file that looks complete and never destroys a previous output.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import secrets
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from eokit.core.errors import InputError
from eokit.core.types import Grid

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
WindowTuple = tuple[int, int, int, int]

#: Compression codecs accepted by :func:`write_raster` / :func:`open_writer`.
COMPRESSIONS = ("deflate", "zstd", "lzw", "none")
#: Tile (block) size of written GeoTIFFs and COGs, in pixels.
BLOCK_SIZE = 512


@dataclass
class Raster:
    """Pixels plus where they lie.

    Attributes:
        data: (C, H, W) array in the file's dtype (or the requested one).
        valid: (H, W) bool, False where any band is nodata, masked, NaN or infinite.
        grid: CRS, transform, shape and nodata of ``data``.
        path: File the pixels came from (None for in-memory rasters).
        band_names: Band descriptions from the file, when every band has one.
    """

    data: np.ndarray
    valid: np.ndarray
    grid: Grid
    path: Path | None = None
    band_names: list[str] | None = None

    @property
    def count(self) -> int:
        """Number of bands."""
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return (int(self.data.shape[1]), int(self.data.shape[2]))

    @property
    def name(self) -> str:
        """File name for messages ("<array>" when in memory)."""
        return str(self.path) if self.path is not None else "<array>"


# --------------------------------------------------------------------------------------------
# Paths and atomic writes
# --------------------------------------------------------------------------------------------


def _is_remote(path: PathLike) -> bool:
    text = os.fspath(path)
    return text.startswith("/vsi") or "://" in text


def _check_input_file(path: PathLike) -> None:
    """InputError if ``path`` is missing or a directory (remote paths are left to GDAL)."""
    if _is_remote(path):
        return
    p = Path(path)
    if not p.exists():
        raise InputError("file not found; check the path", path=p)
    if p.is_dir():
        raise InputError("is a directory; expected a raster file", path=p)
    if not os.access(p, os.R_OK):
        raise InputError("file is not readable; check its permissions", path=p)


def check_output_path(path: PathLike) -> Path:
    """Fail early (before any work) if ``path`` cannot be written; create missing parent folders.

    The check really creates and removes a probe file in the target folder, so it also catches
    read-only file systems and is meaningful when running as root.

    Args:
        path: Output file path.

    Returns:
        The path as :class:`Path`.

    Raises:
        InputError: if the path is a directory, its parent is not a directory, or not writable.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError("output path is a directory; give a file name", path=p)
    parent = p.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(
            "cannot create the output folder because a file is in the way", path=p
        ) from None
    except OSError as exc:
        raise InputError(f"cannot create the output folder ({exc.strerror})", path=p) from None
    probe = parent / f".{p.name}.probe-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise InputError(
            f"output folder is not writable ({exc.strerror}); choose another output path", path=p
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        probe.unlink()
    return p


def _file_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def _temp_sibling(path: Path, tag: str = "partial") -> Path:
    """Hidden temporary name in the same folder, keeping the suffix (some writers need it)."""
    return path.with_name(f".{path.stem}.{tag}-{secrets.token_hex(4)}{path.suffix}")


@contextlib.contextmanager
def atomic_write(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it to ``path`` only on success.

    On an exception the temporary file is removed and any existing ``path`` is left intact.
    The temporary file is hidden (leading dot) and carries ``.partial-`` in its name, so an
    interrupted run (even SIGKILL) never leaves a file that looks like a finished output.

    Example:
        >>> with atomic_write("out/metrics.json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")

    Args:
        path: Final output path (parent folders are created).

    Yields:
        The temporary path to write to.

    Raises:
        InputError: if the output location is not writable (checked before yielding).
    """
    final = check_output_path(path)
    tmp = _temp_sibling(final)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to the temporary file for {final}")
        if tmp.is_file():
            # Some writers (mkstemp, safetensors) create 0600 files; outputs follow the umask.
            os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            with contextlib.suppress(OSError):
                tmp.unlink()


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _open(path: PathLike) -> rasterio.io.DatasetReader:
    _check_input_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as exc:
        raise InputError(
            f"cannot be read as a raster (corrupt, truncated or unsupported format: "
            f"{_first_line(exc)})",
            path=os.fspath(path),
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _is_georeferenced(src: rasterio.io.DatasetReader) -> bool:
    return src.crs is not None or not src.transform.is_identity


def _grid_of(src: rasterio.io.DatasetReader, window: Window | None = None) -> Grid:
    transform = src.window_transform(window) if window is not None else src.transform
    height = int(window.height) if window is not None else src.height
    width = int(window.width) if window is not None else src.width
    nodata = None if src.nodata is None else float(src.nodata)
    return Grid(
        crs=src.crs,
        transform=transform,
        width=width,
        height=height,
        nodata=nodata,
        pixel_size_known=_is_georeferenced(src),
    )


def _window(window: WindowTuple | None, height: int, width: int, path: PathLike) -> Window | None:
    if window is None:
        return None
    try:
        row_off, col_off, win_h, win_w = (int(v) for v in window)
    except (TypeError, ValueError):
        raise InputError(
            f"must be (row_off, col_off, height, width), got {window!r}", parameter="window"
        ) from None
    if (
        row_off < 0
        or col_off < 0
        or win_h <= 0
        or win_w <= 0
        or row_off + win_h > height
        or col_off + win_w > width
    ):
        raise InputError(
            f"window {window} lies outside {path} ({width}x{height} px)", parameter="window"
        )
    return Window(col_off, row_off, win_w, win_h)


def _band_indexes(bands: Sequence[int] | None, count: int, path: PathLike) -> list[int]:
    if bands is None:
        return list(range(1, count + 1))
    indexes = [int(b) for b in bands]
    bad = [b for b in indexes if b < 1 or b > count]
    if bad or not indexes:
        raise InputError(
            f"band indexes {bad or indexes} out of range 1..{count} for {path} "
            "(bands are 1-based, as in GDAL)",
            parameter="bands",
        )
    return indexes


def nodata_mask(data: np.ndarray, nodata: float | None, *, check_finite: bool = True) -> np.ndarray:
    """Valid mask (H, W) of a (C, H, W) array: False where any band equals nodata or is NaN/inf.

    Args:
        data: (C, H, W) or (H, W) array.
        nodata: Nodata value (NaN allowed) or None.
        check_finite: Also mark NaN/inf (float data) invalid.

    Returns:
        (H, W) bool array.
    """
    if data.ndim == 2:
        data = data[None]
    valid = np.ones(data.shape[1:], dtype=bool)
    is_float = np.issubdtype(data.dtype, np.floating) or np.issubdtype(
        data.dtype, np.complexfloating
    )
    if nodata is not None:
        if isinstance(nodata, float) and math.isnan(nodata):
            if is_float:
                valid &= ~np.isnan(data).any(axis=0)
        else:
            valid &= ~(data == np.asarray(nodata).astype(data.dtype, copy=False)).any(axis=0)
    if check_finite and is_float:
        valid &= np.isfinite(data).all(axis=0)
    return valid


def _read_masks(
    src: rasterio.io.DatasetReader, indexes: list[int], window: Window | None
) -> np.ndarray | None:
    """Internal mask / alpha band validity (None when the file only uses nodata or nothing)."""
    use_mask = False
    for flags in src.mask_flag_enums:
        if MaskFlags.per_dataset in flags or MaskFlags.alpha in flags:
            use_mask = True
    if not use_mask:
        return None
    masks = src.read_masks(indexes, window=window)
    return np.asarray((masks != 0).all(axis=0))


def read_raster(
    path: PathLike,
    *,
    window: WindowTuple | None = None,
    bands: Sequence[int] | None = None,
    dtype: Any = None,
    check_finite: bool = True,
    allow_empty: bool | None = None,
) -> Raster:
    """Read a GeoTIFF (or any GDAL raster) whole or by window.

    Pixels that equal the nodata value in any band, that an internal mask/alpha band marks as
    empty, or (``check_finite``) that are NaN/inf are ``valid=False``. The data keep their values;
    use ``valid`` rather than comparing with nodata.

    Args:
        path: Raster file.
        window: (row_off, col_off, height, width) in pixels; None reads everything.
        bands: 1-based band indexes (as in GDAL); None reads all.
        dtype: Cast the data to this dtype (default: the file's dtype).
        check_finite: Mark NaN/inf pixels invalid.
        allow_empty: Accept a result with no valid pixel. Default: False for whole-raster reads
            (an all-nodata file is an error), True for window reads (edges of a scene may be empty).

    Returns:
        A :class:`Raster` whose grid is the window's grid.

    Raises:
        InputError: missing file, directory, corrupt/truncated file, bad window or bands, or a
            raster without a single valid pixel.
    """
    src = _open(path)
    with src:
        win = _window(window, src.height, src.width, path)
        indexes = _band_indexes(bands, src.count, path)
        try:
            data = src.read(indexes, window=win)
            mask = _read_masks(src, indexes, win)
        except RasterioError as exc:
            raise InputError(
                f"pixel data cannot be read (truncated or corrupt file: {_first_line(exc)})",
                path=os.fspath(path),
            ) from None
        grid = _grid_of(src, win)
        descriptions = [src.descriptions[i - 1] for i in indexes]
    valid = nodata_mask(data, grid.nodata, check_finite=check_finite)
    if mask is not None:
        valid &= mask
    if allow_empty is None:
        allow_empty = window is not None
    if not allow_empty and not valid.any():
        raise InputError(
            "raster has no valid pixel (every pixel is nodata, masked, NaN or inf)",
            path=os.fspath(path),
        )
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    names = [str(d) for d in descriptions] if all(descriptions) else None
    return Raster(data=data, valid=valid, grid=grid, path=Path(path), band_names=names)


def read_image(path: PathLike, *, pixel_size_m: float | None = None) -> Raster:
    """Read a plain image (PNG/JPEG/...) or a GeoTIFF as a (C, H, W) raster.

    A georeferenced file keeps its grid (``pixel_size_m`` is then ignored with a log message).
    A plain image gets :meth:`Grid.plain`; without ``pixel_size_m`` its ``grid.pixel_size_m``
    raises :class:`InputError` where metric distances are needed. An alpha band becomes the valid
    mask and is dropped from ``data``.

    Args:
        path: Image file.
        pixel_size_m: Ground size of one pixel in metres, for non-georeferenced images.

    Returns:
        A :class:`Raster`.
    """
    src = _open(path)
    with src:
        georef = _is_georeferenced(src)
        colorinterp = list(src.colorinterp)
    if georef:
        if pixel_size_m is not None:
            logger.info("%s is georeferenced; ignoring pixel_size_m=%s", path, pixel_size_m)
        return read_raster(path)
    grid = Grid.plain(1, 1, pixel_size_m)  # validates pixel_size_m before reading pixels
    raster = read_raster(path, check_finite=True)
    alpha = [i for i, ci in enumerate(colorinterp) if ci == ColorInterp.alpha]
    data, valid = raster.data, raster.valid
    if alpha and len(alpha) < data.shape[0]:
        valid = valid & (data[alpha[0]] != 0)
        data = np.delete(data, alpha, axis=0)
        if not valid.any():
            raise InputError(
                "image is fully transparent (alpha = 0 everywhere)", path=os.fspath(path)
            )
    grid = Grid.plain(data.shape[2], data.shape[1], pixel_size_m)
    return Raster(data=data, valid=valid, grid=grid, path=Path(path), band_names=None)


def to_unit(data: np.ndarray, path: PathLike) -> np.ndarray:
    """Image values to 0-1: uint8 / 255, uint16 / 10000 (reflectance), floats kept (<= 10)."""
    if data.dtype == np.uint8:
        return data.astype(np.float32) / 255.0
    if data.dtype == np.uint16:
        return data.astype(np.float32) / 10000.0
    out = data.astype(np.float32)
    if np.nanmax(out) > 10:
        raise InputError("float image above 10: expected reflectance or 0-1 values",
                         path=os.fspath(path))
    return out


def raster_info(path: PathLike) -> tuple[Grid, int, str]:
    """(grid, band count, dtype name) of a raster without reading pixels."""
    src = _open(path)
    with src:
        return _grid_of(src), int(src.count), str(src.dtypes[0])


def check_band_count(
    raster_or_count: Raster | int, expected: int, path: PathLike | None = None
) -> None:
    """InputError when a raster's band count is not what a model expects.

    Args:
        raster_or_count: A :class:`Raster` or a band count.
        expected: Bands the model needs.
        path: File to name in the message (default: the raster's path).

    Raises:
        InputError: if the counts differ.
    """
    if isinstance(raster_or_count, Raster):
        count = raster_or_count.count
        path = path if path is not None else raster_or_count.path
    else:
        count = int(raster_or_count)
    if count != expected:
        message = (
            f"has {count} band{'s' if count != 1 else ''} but the model expects {expected}; "
            "select bands (e.g. --bands) or use weights made for this sensor"
        )
        if path is not None:
            raise InputError(message, path=os.fspath(path))
        raise InputError(message, parameter="bands")


# --------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------


def _grid_difference(a: Grid, b: Grid) -> str:
    if (a.crs is None) != (b.crs is None) or (
        a.crs is not None and b.crs is not None and a.crs != b.crs
    ):
        ca = a.crs.to_string() if a.crs is not None else "no CRS"
        cb = b.crs.to_string() if b.crs is not None else "no CRS"
        return f"CRS {ca} vs {cb}"
    if a.shape != b.shape:
        return f"shape {a.width}x{a.height} vs {b.width}x{b.height} px"
    return f"transform {tuple(round(v, 6) for v in a.transform[:6])} vs " + str(
        tuple(round(v, 6) for v in b.transform[:6])
    )


def check_aligned(**named: Grid | Raster) -> None:
    """Raise InputError unless every grid has the same CRS, transform and shape.

    Args:
        **named: Grids (or Rasters, named by their file) keyed by the parameter name used in the
            message, e.g. ``check_aligned(before=grid_a, after=grid_b)``.

    Raises:
        InputError: naming both inputs and what differs.
    """
    items: list[tuple[str, Grid]] = []
    for key, value in named.items():
        if isinstance(value, Raster):
            label = f"{key} ({value.path})" if value.path is not None else key
            items.append((label, value.grid))
        else:
            items.append((key, value))
    if len(items) < 2:
        return
    first_name, first = items[0]
    for other_name, other in items[1:]:
        if not first.same_as(other):
            raise InputError(
                f"{first_name} and {other_name} are not on the same grid "
                f"({_grid_difference(first, other)}); resample one onto the other, e.g. "
                "'rio warp OTHER.tif OUT.tif --like FIRST.tif' or eokit.core.raster.align_to",
                parameter=f"{first_name.split(' ')[0]}/{other_name.split(' ')[0]}",
            )


def _resampling(name: str | Resampling) -> Resampling:
    if isinstance(name, Resampling):
        return name
    try:
        return Resampling[str(name).lower()]
    except KeyError:
        choices = ", ".join(r.name for r in Resampling)
        raise InputError(
            f"unknown resampling {name!r}; use one of {choices}", parameter="resampling"
        ) from None


def align_to(
    path: PathLike,
    grid: Grid,
    *,
    resampling: str | Resampling = "bilinear",
    bands: Sequence[int] | None = None,
    check_finite: bool = True,
) -> Raster:
    """Read ``path`` resampled onto ``grid`` (reprojection through a GDAL WarpedVRT).

    Pixels of ``grid`` that the source does not cover, or that come from nodata, are invalid.

    Args:
        path: Source raster.
        grid: Target grid (CRS, transform, shape).
        resampling: Rasterio resampling name ("nearest" for class maps, "bilinear", "cubic"...).
        bands: 1-based band indexes (default all).
        check_finite: Mark NaN/inf invalid.

    Returns:
        A :class:`Raster` on ``grid``.

    Raises:
        InputError: unreadable source, source without a CRS, or no overlap with ``grid``.
    """
    from rasterio.vrt import WarpedVRT

    if grid.crs is None:
        raise InputError("target grid has no CRS; cannot reproject onto it", parameter="grid")
    method = _resampling(resampling)
    src = _open(path)
    with src:
        if src.crs is None:
            raise InputError("has no CRS; cannot reproject it", path=os.fspath(path))
        indexes = _band_indexes(bands, src.count, path)
        options: dict[str, Any] = {
            "crs": grid.crs,
            "transform": grid.transform,
            "width": grid.width,
            "height": grid.height,
            "resampling": method,
        }
        if src.nodata is None:
            options["add_alpha"] = True
        try:
            with WarpedVRT(src, **options) as vrt:
                data = vrt.read(indexes)
                mask = vrt.dataset_mask() != 0
                descriptions = [src.descriptions[i - 1] for i in indexes]
        except RasterioError as exc:
            raise InputError(
                f"cannot be reprojected: {_first_line(exc)}", path=os.fspath(path)
            ) from None
    valid = mask & nodata_mask(data, src.nodata, check_finite=check_finite)
    if not valid.any():
        raise InputError(
            "does not overlap the target grid (no valid pixel after reprojection)",
            path=os.fspath(path),
        )
    aligned = Grid(
        crs=grid.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        nodata=None if src.nodata is None else float(src.nodata),
    )
    names = [str(d) for d in descriptions] if all(descriptions) else None
    return Raster(data=data, valid=valid, grid=aligned, path=Path(path), band_names=names)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _gdal_dtype(dtype: Any) -> np.dtype:
    dt: np.dtype = np.dtype(dtype)
    if dt == np.bool_:
        return np.dtype(np.uint8)
    if dt == np.float16:
        return np.dtype(np.float32)
    return dt


def _check_nodata(nodata: float | None, dtype: np.dtype) -> None:
    if nodata is None:
        return
    if isinstance(nodata, float) and math.isnan(nodata):
        if not np.issubdtype(dtype, np.floating):
            raise InputError(f"NaN cannot be stored in {dtype}", parameter="nodata")
        return
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if float(nodata) != int(nodata) or not info.min <= nodata <= info.max:
            raise InputError(f"{nodata} does not fit in {dtype}", parameter="nodata")


def _creation_options(dtype: np.dtype, compress: str, *, fast: bool = False) -> dict[str, Any]:
    compress = compress.lower()
    if compress not in COMPRESSIONS:
        raise InputError(
            f"unknown compression {compress!r}; use one of {COMPRESSIONS}", parameter="compress"
        )
    options: dict[str, Any] = {
        "tiled": True,
        "blockxsize": BLOCK_SIZE,
        "blockysize": BLOCK_SIZE,
        "bigtiff": "IF_SAFER",
    }
    if compress != "none":
        options["compress"] = compress
        if compress in ("deflate", "lzw", "zstd"):
            options["predictor"] = 3 if np.issubdtype(dtype, np.floating) else 2
        if fast and compress == "deflate":
            options["zlevel"] = 1
        if fast and compress == "zstd":
            options["zstd_level"] = 1
    return options


def _default_overview_resampling(dtype: np.dtype) -> str:
    return "nearest" if np.issubdtype(dtype, np.integer) else "average"


#: Unit written for date bands stored as integers (band names ending in ``_yyyymmdd``).
DATE_CODE_UNIT = "date as YYYYMMDD integer"


def pam_sidecar(path: PathLike) -> Path:
    """The GDAL PAM sidecar of ``path`` (``<name>.aux.xml``), where category names live."""
    target = Path(path)
    return target.with_name(target.name + ".aux.xml")


def _category_xml(names: Sequence[str]) -> str:
    """GDAL PAM XML with the category names of band 1 (GDALSetRasterCategoryNames' format).

    GeoTIFF has no tag for category names; GDAL keeps them in this sidecar and QGIS shows them as
    the labels of the paletted colour table.
    """
    from xml.sax.saxutils import escape

    categories = "".join(f"<Category>{escape(str(name))}</Category>" for name in names)
    return (
        '<PAMDataset>\n  <PAMRasterBand band="1">\n'
        f"    <CategoryNames>{categories}</CategoryNames>\n"
        "  </PAMRasterBand>\n</PAMDataset>\n"
    )


def read_category_names(path: PathLike, band: int = 1) -> dict[int, str]:
    """Category names of a band from its GDAL PAM sidecar (value -> name); empty if none.

    Names written as empty strings (unused values) are left out.
    """
    import xml.etree.ElementTree as ElementTree

    sidecar = pam_sidecar(path)
    if not sidecar.is_file():
        return {}
    try:
        root = ElementTree.parse(sidecar).getroot()
    except ElementTree.ParseError:
        logger.warning("%s: unreadable PAM sidecar, category names ignored", sidecar)
        return {}
    for element in root.iter("PAMRasterBand"):
        if element.get("band", "1") == str(band):
            names = [c.text or "" for c in element.iter("Category")]
            return {i: n for i, n in enumerate(names) if n}
    return {}


def _colour_table(
    colors: Sequence[Any], nodata: float | None
) -> dict[int, tuple[int, int, int, int]]:
    """Colour table {value: RGBA 0-255} from matplotlib colours; the nodata entry transparent."""
    from matplotlib.colors import to_rgba

    table = {}
    for value, color in enumerate(colors):
        try:
            rgba = to_rgba(color)
        except ValueError:
            raise InputError(f"not a colour: {color!r}", parameter="class_colors") from None
        entry = tuple(int(round(255 * c)) for c in rgba)
        table[value] = (entry[0], entry[1], entry[2], 0 if value == nodata else entry[3])
    return table


class RasterWriter:
    """Window-by-window GeoTIFF writer returned by :func:`open_writer` (a context manager)."""

    def __init__(
        self,
        path: Path,
        grid: Grid,
        count: int,
        dtype: np.dtype,
        *,
        nodata: float | None,
        cog: bool,
        band_names: Sequence[str] | None,
        compress: str,
        overviews: bool,
        overview_resampling: str | None,
        tags: Mapping[str, Any] | None,
        class_names: Sequence[str] | None = None,
        class_colors: Sequence[Any] | None = None,
        units: Sequence[str] | None = None,
    ) -> None:
        self.path = path
        self.grid = grid
        self.count = count
        self.dtype = dtype
        self.nodata = nodata
        self.cog = cog
        self.compress = compress.lower()
        self.overviews = overviews
        self.overview_resampling = overview_resampling or _default_overview_resampling(dtype)
        self.band_names = list(band_names) if band_names is not None else None
        self.tags = dict(tags or {})
        self.class_names = list(class_names) if class_names is not None else None
        self.class_colors = list(class_colors) if class_colors is not None else None
        self.units = list(units) if units is not None else None
        self._tmp = _temp_sibling(path)
        self._dataset: Any = None
        self.pixels_written = 0

    def _open(self) -> None:
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": self.grid.width,
            "height": self.grid.height,
            "count": self.count,
            "dtype": self.dtype.name,
            "crs": self.grid.crs,
            "transform": self.grid.transform,
            "nodata": self.nodata,
            **_creation_options(self.dtype, self.compress, fast=self.cog),
        }
        if self.grid.crs is None:
            profile.pop("crs")
            if self.grid.transform.is_identity or not self.grid.pixel_size_known:
                profile.pop("transform")  # plain image: do not invent a pixel size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._dataset = rasterio.open(self._tmp, "w", **profile)
        if self.band_names is not None:
            for index, name in enumerate(self.band_names, start=1):
                self._dataset.set_band_description(index, str(name))
        if self.tags:
            self._dataset.update_tags(**{k: str(v) for k, v in self.tags.items()})
        if self.units is not None:
            for index, unit in enumerate(self.units, start=1):
                self._dataset.set_band_unit(index, str(unit))
        if self.class_colors is not None:
            self._dataset.write_colormap(1, _colour_table(self.class_colors, self.nodata))

    def write_window(self, data: np.ndarray, row_off: int, col_off: int) -> None:
        """Write a (C, h, w) or (h, w) block at the given pixel offsets."""
        array = np.asarray(data)
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3 or array.shape[0] != self.count:
            raise InputError(
                f"expected ({self.count}, h, w) data, got shape {array.shape}", parameter="data"
            )
        h, w = array.shape[1:]
        if (
            row_off < 0
            or col_off < 0
            or row_off + h > self.grid.height
            or col_off + w > self.grid.width
        ):
            raise InputError(
                f"block at ({row_off}, {col_off}) of size {w}x{h} exceeds the output grid "
                f"{self.grid.width}x{self.grid.height}",
                parameter="window",
            )
        if array.dtype != self.dtype:
            array = array.astype(self.dtype)
        self._dataset.write(array, window=Window(col_off, row_off, w, h))
        self.pixels_written += h * w

    def _finalise(self) -> None:
        self._dataset.close()
        self._dataset = None
        if self.cog:
            self._copy_to_cog()
        else:
            if self.overviews:
                self._build_overviews(self._tmp)
            os.replace(self._tmp, self.path)
        sidecar = pam_sidecar(self.path)
        if self.class_names is not None:
            with atomic_write(sidecar) as tmp:
                tmp.write_text(_category_xml(self.class_names), encoding="utf-8")
        elif sidecar.exists():
            # it described the file just replaced
            with contextlib.suppress(OSError):
                sidecar.unlink()

    def _overview_factors(self) -> list[int]:
        factors = []
        factor = 2
        while max(self.grid.width, self.grid.height) / factor >= BLOCK_SIZE // 2:
            factors.append(factor)
            factor *= 2
        return factors

    def _build_overviews(self, path: Path) -> None:
        factors = self._overview_factors()
        if not factors:
            return
        with rasterio.open(path, "r+") as dataset:
            dataset.build_overviews(factors, _resampling(self.overview_resampling))
            dataset.update_tags(ns="rio_overview", resampling=self.overview_resampling)

    def _copy_to_cog(self) -> None:
        from rasterio.shutil import copy as gdal_copy

        cog_tmp = _temp_sibling(self.path, "partial-cog")
        options: dict[str, Any] = {
            "driver": "COG",
            "blocksize": BLOCK_SIZE,
            "bigtiff": "IF_SAFER",
            "overviews": "AUTO" if self.overviews else "NONE",
            "overview_resampling": self.overview_resampling.upper(),
            "num_threads": "ALL_CPUS",
        }
        if self.compress != "none":
            options["compress"] = self.compress.upper()
            options["predictor"] = "YES"
        else:
            options["compress"] = "NONE"
        try:
            gdal_copy(str(self._tmp), str(cog_tmp), **options)
            os.replace(cog_tmp, self.path)
        finally:
            for leftover in (cog_tmp, self._tmp):
                if leftover.exists():
                    with contextlib.suppress(OSError):
                        leftover.unlink()

    def _abort(self) -> None:
        if self._dataset is not None:
            with contextlib.suppress(Exception):
                self._dataset.close()
            self._dataset = None
        if self._tmp.exists():
            with contextlib.suppress(OSError):
                self._tmp.unlink()

    def __enter__(self) -> RasterWriter:
        self._open()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:
            self._finalise()
        except BaseException:
            self._abort()
            raise
        logger.debug("wrote %s (%s)", self.path, "COG" if self.cog else "GeoTIFF")


def open_writer(
    path: PathLike,
    grid: Grid,
    count: int,
    dtype: Any,
    *,
    nodata: float | None = None,
    cog: bool = False,
    band_names: Sequence[str] | None = None,
    compress: str = "deflate",
    overviews: bool | None = None,
    overview_resampling: str | None = None,
    tags: Mapping[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    class_colors: Sequence[Any] | None = None,
    units: str | Sequence[str] | None = None,
) -> RasterWriter:
    """Open a tiled GeoTIFF (or COG) for writing window by window; finalised atomically on exit.

    The output location is checked before anything is computed. Pixels go to a hidden temporary
    GeoTIFF in the same folder; on success it is renamed (GeoTIFF) or copied through GDAL's COG
    driver (COG) onto ``path``; on an exception it is removed and an existing ``path`` is kept.

    Example:
        >>> with open_writer("out.tif", grid, 1, "uint8", nodata=255) as sink:  # doctest: +SKIP
        ...     sink.write_window(block, row_off=0, col_off=0)

    Args:
        path: Output file.
        grid: Output grid (CRS, transform, shape).
        count: Number of bands.
        dtype: Output dtype (bool -> uint8, float16 -> float32).
        nodata: Nodata value written into the file metadata.
        cog: Write a Cloud-Optimized GeoTIFF.
        band_names: Band descriptions.
        compress: One of :data:`COMPRESSIONS`.
        overviews: Build overviews (default: True for COG, False for plain GeoTIFF, which are
            usually intermediate products).
        overview_resampling: Overview resampling (default nearest for integers, average for floats).
        tags: Extra metadata tags (e.g. provenance).
        class_names: Category names of a one-band class map, value 0 first; written where GDAL
            and QGIS read them (the PAM sidecar ``<file>.aux.xml``, see :func:`pam_sidecar`).
        class_colors: One matplotlib colour per class value (0, 1, ...): the file's GDAL colour
            table (uint8/uint16, one band), the nodata entry transparent.
        units: Unit of every band, or one per band (GDAL band unit, e.g. "K", "days"). Without
            it, a band named ``*_yyyymmdd`` (a date stored as an integer) gets the unit
            :data:`DATE_CODE_UNIT`.

    Returns:
        A :class:`RasterWriter`; use ``with open_writer(...) as sink``.
    """
    final = check_output_path(path)
    dt = _gdal_dtype(dtype)
    if count < 1:
        raise InputError(f"must be >= 1, got {count}", parameter="count")
    if grid.width < 1 or grid.height < 1:
        raise InputError(f"empty output grid {grid.width}x{grid.height}", parameter="grid")
    _check_nodata(nodata, dt)
    if band_names is not None and len(band_names) != count:
        raise InputError(f"{len(band_names)} names for {count} bands", parameter="band_names")
    _creation_options(dt, compress)  # validates compress early
    if class_names is not None or class_colors is not None:
        if count != 1 or dt.name not in ("uint8", "uint16"):
            raise InputError(
                f"class names and colours need a one-band uint8/uint16 class map, got {count} "
                f"band(s) of {dt.name}",
                parameter="class_names",
            )
        if class_names is not None and class_colors is not None:
            if len(class_names) != len(class_colors):
                raise InputError(
                    f"{len(class_colors)} colours for {len(class_names)} classes",
                    parameter="class_colors",
                )
    unit_list = None
    if units is not None:
        unit_list = [units] * count if isinstance(units, str) else list(units)
        if len(unit_list) != count:
            raise InputError(f"{len(unit_list)} units for {count} bands", parameter="units")
    elif band_names is not None and any(
        str(n).lower().endswith("_yyyymmdd") for n in band_names
    ):
        unit_list = [
            DATE_CODE_UNIT if str(n).lower().endswith("_yyyymmdd") else "" for n in band_names
        ]
    return RasterWriter(
        final,
        grid,
        count,
        dt,
        nodata=nodata,
        cog=cog,
        band_names=band_names,
        compress=compress,
        overviews=cog if overviews is None else overviews,
        overview_resampling=overview_resampling,
        tags=tags,
        class_names=class_names,
        class_colors=class_colors,
        units=unit_list,
    )


def write_raster(
    path: PathLike,
    data: np.ndarray,
    grid: Grid,
    *,
    nodata: float | None = None,
    dtype: Any = None,
    cog: bool = False,
    band_names: Sequence[str] | None = None,
    compress: str = "deflate",
    overviews: bool = True,
    valid: np.ndarray | None = None,
    overview_resampling: str | None = None,
    tags: Mapping[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    class_colors: Sequence[Any] | None = None,
    units: str | Sequence[str] | None = None,
) -> Path:
    """Write an array as a tiled, compressed GeoTIFF or COG, atomically.

    ``grid.nodata`` is not used (the output dtype often differs from the input's): pass ``nodata``
    explicitly. With ``valid``, invalid pixels are set to ``nodata`` first.

    Args:
        path: Output file.
        data: (C, H, W) or (H, W) array matching ``grid``'s shape.
        grid: Where the pixels lie.
        nodata: Nodata value.
        dtype: Output dtype (default the array's; bool -> uint8).
        cog: Cloud-Optimized GeoTIFF (GDAL COG driver).
        band_names: Band descriptions.
        compress: "deflate", "zstd", "lzw" or "none".
        overviews: Build internal overviews.
        valid: Optional (H, W) bool mask; False pixels are written as ``nodata``.
        overview_resampling: Overview resampling (default nearest for integers, average for floats).
        tags: Extra metadata tags.
        class_names: Category names of a class map (value 0 first), see :func:`open_writer`.
        class_colors: Colour table of a class map, one colour per value.
        units: Band unit(s).

    Returns:
        The output path.

    Raises:
        InputError: bad shape, nodata not representable, or output not writable.
    """
    array = np.asarray(data)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise InputError(f"expected (C, H, W) or (H, W), got shape {array.shape}", parameter="data")
    if array.shape[1:] != grid.shape:
        raise InputError(
            f"array shape {array.shape[1:]} differs from the grid {grid.shape}", parameter="data"
        )
    dt = _gdal_dtype(dtype if dtype is not None else array.dtype)
    if valid is not None:
        if nodata is None:
            raise InputError("a valid mask needs a nodata value to write", parameter="nodata")
        _check_nodata(nodata, dt)
        array = array.astype(dt, copy=True)
        array[:, ~np.asarray(valid, dtype=bool)] = nodata
    with open_writer(
        path,
        grid,
        array.shape[0],
        dt,
        nodata=nodata,
        cog=cog,
        band_names=band_names,
        compress=compress,
        overviews=overviews,
        overview_resampling=overview_resampling,
        tags=tags,
        class_names=class_names,
        class_colors=class_colors,
        units=units,
    ) as sink:
        sink.write_window(array, 0, 0)
    return Path(path)


# --------------------------------------------------------------------------------------------
# Vector and table outputs
# --------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Make numpy scalars/arrays and paths JSON/CSV friendly."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def _round_coords(coords: Any, ndigits: int) -> Any:
    if isinstance(coords, list | tuple):
        if coords and isinstance(coords[0], int | float | np.floating | np.integer):
            return [round(float(c), ndigits) for c in coords]
        return [_round_coords(c, ndigits) for c in coords]
    return coords


def write_geojson(
    path: PathLike,
    features: Sequence[Mapping[str, Any]],
    crs: Any,
    *,
    precision: int = 7,
    frame: str | None = None,
) -> Path:
    """Write features as an RFC 7946 GeoJSON FeatureCollection (coordinates in WGS84 lon/lat).

    Geometries given in ``crs`` are reprojected to EPSG:4326. With ``crs=None`` (a plain image)
    coordinates are written unchanged (pixel or local units): ``frame`` then says what they are
    and is written into the file as the collection's ``coordinate_frame`` member (a GIS would
    otherwise read them as lon/lat); without a frame a warning is logged.

    Args:
        path: Output .geojson file.
        features: GeoJSON Feature dicts, or dicts with "geometry" and "properties".
        crs: CRS of the geometries (anything rasterio's CRS accepts), or None.
        precision: Decimal places kept (7 ~ 1 cm).
        frame: With ``crs=None``: description of the local coordinate frame (origin, axes, unit).

    Returns:
        The output path.
    """
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom

    source_crs = None
    if crs is not None:
        try:
            source_crs = CRS.from_user_input(crs)
        except RasterioError as exc:
            raise InputError(f"unknown CRS {crs!r} ({_first_line(exc)})", parameter="crs") from None
    elif frame is None:
        logger.warning("writing %s without a CRS: coordinates are not WGS84 lon/lat", path)
    wgs84 = CRS.from_epsg(4326)
    out_features = []
    for index, feature in enumerate(features):
        geometry = feature.get("geometry")
        if geometry is not None and source_crs is not None and source_crs != wgs84:
            try:
                geometry = transform_geom(source_crs, wgs84, geometry)
            except RasterioError as exc:
                raise InputError(
                    f"feature {index} cannot be reprojected: {_first_line(exc)}",
                    parameter="features",
                ) from None
        if geometry is not None:
            geometry = dict(geometry)
            geometry["coordinates"] = _round_coords(geometry.get("coordinates"), precision)
        properties = {k: _plain(v) for k, v in dict(feature.get("properties") or {}).items()}
        item: dict[str, Any] = {"type": "Feature", "geometry": geometry, "properties": properties}
        if "id" in feature:
            item["id"] = _plain(feature["id"])
        out_features.append(item)
    collection: dict[str, Any] = {"type": "FeatureCollection"}
    if source_crs is None:
        collection["coordinate_frame"] = frame or (
            "unknown: no CRS; coordinates are in the input's own units, not WGS84 lon/lat"
        )
    collection["features"] = out_features
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(collection, default=_plain, allow_nan=False))
    return Path(path)


def write_csv(path: PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write dict rows as CSV (columns: union of keys in first-seen order), atomically."""
    columns: list[str] = []
    seen: set[str] = set()
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                columns.append(key)
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _plain(v) for k, v in row.items()})
    return Path(path)
