"""Pixel time-series readers: GeoTIFF stacks with dates, EOPatch folders, Presto npy, simulator.

Every reader returns a :class:`SeriesData`: raw band values ``series`` (N, T, C), a validity mask
(clouds, gaps, nodata), day of year per observation and, for raster layouts, the grid and (H, W)
so that pixel ``n`` is row ``n // W``, column ``n % W``. Band scaling is NOT applied here: the
model carries its own scaling fitted at pretraining time.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from affine import Affine
from torch.utils.data import Dataset

from eokit.core.errors import DataError, InputError
from eokit.core.types import IGNORE_INDEX, Grid, SeriesSample, day_of_year

logger = logging.getLogger(__name__)

_DATE_IN_NAME = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")
_TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass
class SeriesData:
    """A set of pixel time series.

    Attributes:
        series: (N, T, C) float32 raw band values (NaN allowed where invalid).
        valid: (N, T) bool; False under clouds, on gaps and nodata.
        doy: (N, T) float32 day of year (1..366) of every observation.
        band_names: Names of the C bands.
        dates: (T,) datetime64[s] when all pixels share dates (raster layouts), else None.
        grid: Georeference of the (H, W) raster the pixels come from, else None.
        shape: (H, W) of that raster (N == H * W, row-major), else None.
        targets: Optional targets: (N,) class ids / values, or (N, T) per-date class ids.
        source: What was read (for reports and errors).
        extra: Layout-specific arrays (e.g. Presto ``is_test``).
    """

    series: np.ndarray
    valid: np.ndarray
    doy: np.ndarray
    band_names: list[str]
    dates: np.ndarray | None = None
    grid: Grid | None = None
    shape: tuple[int, int] | None = None
    targets: np.ndarray | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.series.ndim != 3:
            raise InputError(f"series must be (N, T, C), got {self.series.shape}",
                             parameter="series")
        if self.valid.shape != self.series.shape[:2]:
            raise InputError(f"valid {self.valid.shape} does not match series "
                             f"{self.series.shape[:2]}", parameter="valid")
        self.valid = self.valid & np.isfinite(self.series).all(axis=-1)
        self.doy = np.broadcast_to(np.asarray(self.doy, dtype=np.float32), self.valid.shape)

    def __len__(self) -> int:
        return int(self.series.shape[0])

    @property
    def n_dates(self) -> int:
        """T."""
        return int(self.series.shape[1])

    @property
    def n_bands(self) -> int:
        """C."""
        return int(self.series.shape[2])

    @property
    def has_observation(self) -> np.ndarray:
        """(N,) True where a pixel has at least one valid date."""
        return np.asarray(self.valid.any(axis=1))

    def subset(self, index: np.ndarray) -> SeriesData:
        """The pixels at ``index`` (int indices or bool mask); drops the raster grid."""
        targets = None if self.targets is None else self.targets[index]
        extra = {k: v[index] for k, v in self.extra.items()
                 if isinstance(v, np.ndarray) and v.shape[:1] == (len(self),)}
        return replace(self, series=self.series[index], valid=self.valid[index],
                       doy=self.doy[index], grid=None, shape=None, targets=targets, extra=extra)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(series, doy, valid) as tensors."""
        return (torch.from_numpy(np.ascontiguousarray(self.series, dtype=np.float32)),
                torch.from_numpy(np.array(self.doy, dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(self.valid)))


class SeriesDataset(Dataset[SeriesSample]):
    """Torch dataset of :class:`SeriesSample` dicts (series, doy, valid[, target])."""

    def __init__(self, data: SeriesData, targets: np.ndarray | None = None) -> None:
        self.series, self.doy, self.valid = data.tensors()
        self.targets = None if targets is None else torch.as_tensor(np.asarray(targets))

    def __len__(self) -> int:
        return int(self.series.shape[0])

    def __getitem__(self, index: int) -> SeriesSample:
        sample: SeriesSample = {"series": self.series[index], "doy": self.doy[index],
                                "valid": self.valid[index]}
        if self.targets is not None:
            sample["target"] = self.targets[index]
        return sample


# -- dates -------------------------------------------------------------------------------------
def check_dates(dates: np.ndarray, *, source: str | Path, parameter: str | None = None
                ) -> np.ndarray:
    """Return ``dates`` as datetime64[s]; InputError if they are not strictly increasing."""
    stamps = np.asarray(dates).astype("datetime64[s]")
    if stamps.size == 0:
        raise InputError("no dates", path=None if parameter else source, parameter=parameter)
    if np.isnat(stamps).any():
        raise InputError("contains an unreadable date", path=None if parameter else source,
                         parameter=parameter)
    bad = np.nonzero(np.diff(stamps).astype(np.int64) <= 0)[0]
    if bad.size:
        i = int(bad[0])
        raise InputError(
            f"dates are not increasing: {stamps[i]} is followed by {stamps[i + 1]} "
            f"(positions {i} and {i + 1})",
            path=None if parameter else source, parameter=parameter,
        )
    return stamps


def parse_dates(values: Sequence[str], *, parameter: str) -> np.ndarray:
    """ISO strings -> datetime64[s]; InputError naming ``parameter`` on a bad value."""
    out = []
    for value in values:
        try:
            out.append(np.datetime64(str(value).strip().replace("Z", ""), "s"))
        except ValueError:
            raise InputError(f"not an ISO date: {value!r}", parameter=parameter) from None
    return np.array(out, dtype="datetime64[s]")


def date_from_name(path: Path) -> np.datetime64:
    """The first YYYY-MM-DD or YYYYMMDD date in a file name."""
    match = _DATE_IN_NAME.search(path.stem)
    if not match:
        raise InputError("no date (YYYY-MM-DD or YYYYMMDD) in the file name", path=path)
    try:
        return np.datetime64("-".join(match.groups()), "s")
    except ValueError:
        raise InputError(f"invalid date {match.group(0)!r} in the file name", path=path) from None


# -- GeoTIFF stack ----------------------------------------------------------------------------
def list_geotiff_stack(source: str | Path | Sequence[str | Path]
                       ) -> tuple[list[Path], np.ndarray]:
    """Files and dates of a GeoTIFF stack.

    ``source`` is a folder of GeoTIFFs with a date in every file name (sorted by date), a CSV
    with columns ``path,date`` (paths relative to the CSV; dates must be increasing), or a list of
    files with dates in their names (must be given in increasing date order).
    """
    if isinstance(source, (str, Path)):
        root = Path(source)
        if root.is_dir():
            files = sorted(p for p in root.iterdir() if p.suffix.lower() in _TIFF_SUFFIXES
                           and not p.name.startswith("."))
            if not files:
                raise InputError("no GeoTIFF (.tif) files in the folder", path=root)
            dates = np.array([date_from_name(p) for p in files], dtype="datetime64[s]")
            order = np.argsort(dates, kind="stable")
            files = [files[i] for i in order]
            dates = check_dates(dates[order], source=root)
            return files, dates
        if root.suffix.lower() == ".csv":
            if not root.is_file():
                raise InputError("file not found", path=root)
            with root.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            if not rows or not {"path", "date"} <= set(rows[0]):
                raise InputError("CSV needs the columns path,date", path=root)
            files = [(root.parent / r["path"]).resolve() for r in rows]
            dates = check_dates(parse_dates([r["date"] for r in rows], parameter=str(root)),
                                source=root)
            return files, dates
        if root.suffix.lower() in _TIFF_SUFFIXES:
            raise InputError("a single GeoTIFF is not a time series; give a folder or CSV",
                             path=root)
        raise InputError("not a folder, CSV or GeoTIFF list", path=root)
    files = [Path(p) for p in source]
    dates = check_dates(np.array([date_from_name(p) for p in files]), source=files[0])
    return files, dates


def read_geotiff_stack(
    source: str | Path | Sequence[str | Path],
    *,
    window: tuple[int, int, int, int] | None = None,
    band_names: Sequence[str] | None = None,
) -> SeriesData:
    """Read a stack of same-grid GeoTIFFs (one per date) as pixel series.

    Args:
        source: Folder, CSV (``path,date``) or list of files (see :func:`list_geotiff_stack`).
        window: (row_off, col_off, height, width) to read only part of the grid.
        band_names: Band names (default: the files' band descriptions or ``b1..bC``).

    Raises:
        InputError: no dates, dates not increasing, mixed grids or band counts (naming both
            files), unreadable files.
    """
    from eokit.core.raster import check_aligned, raster_info, read_raster

    files, dates = list_geotiff_stack(source)
    first_grid, count, _ = raster_info(files[0])
    for path in files[1:]:
        grid, n, _ = raster_info(path)
        check_aligned(**{str(files[0]): first_grid, str(path): grid})
        if n != count:
            raise InputError(f"has {n} bands but {files[0].name} has {count}", path=path)
    cube: np.ndarray | None = None
    valid: np.ndarray | None = None
    grid_out = first_grid
    names = list(band_names) if band_names else None
    for t, path in enumerate(files):
        raster = read_raster(path, window=window, dtype=np.float32, allow_empty=True)
        if cube is None or valid is None:
            h, w = raster.shape
            cube = np.empty((h * w, len(files), count), dtype=np.float32)
            valid = np.empty((h * w, len(files)), dtype=bool)
            grid_out = raster.grid
            if names is None:
                names = raster.band_names or [f"b{i + 1}" for i in range(count)]
        cube[:, t, :] = raster.data.reshape(count, -1).T
        valid[:, t] = raster.valid.reshape(-1)
    assert cube is not None and valid is not None and names is not None
    if len(names) != count:
        raise InputError(f"{len(names)} names for {count} bands", parameter="band_names")
    return SeriesData(
        series=cube, valid=valid, doy=day_of_year(dates)[None], band_names=names, dates=dates,
        grid=grid_out, shape=grid_out.shape, source=str(source),
    )


# -- EOPatch folder ---------------------------------------------------------------------------
def _load_feature(folder: Path, name: str) -> np.ndarray:
    """Load ``<folder>/<name>.npy`` (or ``.npy.gz``), memory-mapped when uncompressed."""
    plain = folder / f"{name}.npy"
    packed = folder / f"{name}.npy.gz"
    if plain.is_file():
        try:
            mapped: np.ndarray = np.load(plain, mmap_mode="r", allow_pickle=False)
            return mapped
        except (ValueError, OSError) as error:
            raise InputError(f"not a readable .npy array ({error})", path=plain) from None
    if packed.is_file():
        try:
            with gzip.open(packed, "rb") as handle:
                unpacked: np.ndarray = np.load(handle, allow_pickle=False)
            return unpacked
        except (ValueError, OSError, EOFError) as error:
            raise InputError(f"not a readable .npy.gz array ({error})", path=packed) from None
    raise InputError(f"EOPatch feature {name!r} not found (.npy or .npy.gz)", path=folder)


def read_eopatch_labels(root: str | Path, name: str, shape: tuple[int, int]) -> np.ndarray:
    """A timeless EOPatch label feature (``mask_timeless/LULC``: (H, W, 1)) as an (H, W) array.

    Raises:
        InputError: the feature is missing, unreadable, or not (H, W, 1) for ``shape`` (H, W).
    """
    root = Path(root)
    label = _load_feature(root, name)
    if label.ndim != 3 or label.shape[:2] != tuple(shape) or label.shape[2] != 1:
        raise InputError(f"shape {label.shape} is not (H, W, 1) = ({shape[0]}, {shape[1]}, 1)",
                         path=root / name)
    return np.asarray(label[:, :, 0])


def _eopatch_grid(folder: Path, height: int, width: int) -> Grid:
    bbox = folder / "bbox.geojson"
    if not bbox.is_file():
        return Grid.plain(width, height, None)
    from rasterio.crs import CRS

    try:
        geo = json.loads(bbox.read_text())
        coords = np.asarray(geo["coordinates"][0], dtype=float)
        crs_name = geo.get("crs", {}).get("properties", {}).get("name", "EPSG:4326")
        code = re.search(r"EPSG:+(\d+)", crs_name)
        crs = CRS.from_epsg(int(code.group(1))) if code else CRS.from_user_input(crs_name)
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise InputError(f"unreadable bbox ({error})", path=bbox) from None
    left, bottom = coords.min(axis=0)
    right, top = coords.max(axis=0)
    transform = Affine((right - left) / width, 0.0, left, 0.0, -(top - bottom) / height, top)
    return Grid(crs=crs, transform=transform, width=width, height=height)


def read_eopatch(
    folder: str | Path,
    *,
    features: Sequence[str] = ("data/NDVI",),
    valid_mask: str | None = "mask/IS_VALID",
    invalid_mask: str | None = None,
    labels: str | None = None,
    window: tuple[int, int, int, int] | None = None,
) -> SeriesData:
    """Read an eo-learn EOPatch folder (``data/*.npy`` (T, H, W, C), ``timestamps.json``).

    Args:
        folder: The EOPatch folder.
        features: Time-series features ``"<type>/<name>"`` concatenated along bands.
        valid_mask: Mask feature (T, H, W, 1) that is True where valid (None: all valid).
        invalid_mask: Mask feature True where INVALID (e.g. ``"mask/CLM"``), combined with it.
        labels: Timeless label feature (H, W, 1), e.g. ``"mask_timeless/LULC"`` -> ``targets``.
        window: (row_off, col_off, height, width).
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError("EOPatch folder not found", path=root)
    stamps_file = root / "timestamps.json"
    if not stamps_file.is_file():
        raise InputError("no timestamps.json (not an EOPatch folder)", path=root)
    try:
        stamps = json.loads(stamps_file.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"invalid JSON ({error.msg})", path=stamps_file) from None
    dates = check_dates(parse_dates(stamps, parameter=str(stamps_file)), source=stamps_file)
    arrays = []
    names: list[str] = []
    for feature in features:
        array = _load_feature(root, feature)
        if array.ndim != 4 or array.shape[0] != len(dates):
            raise InputError(
                f"shape {array.shape} is not (T={len(dates)}, H, W, C)", path=root / feature
            )
        arrays.append(array)
        base = feature.split("/")[-1]
        names += [base] if array.shape[3] == 1 else [f"{base}_{i}" for i in range(array.shape[3])]
    t, height, width = arrays[0].shape[:3]
    for feature, array in zip(features, arrays, strict=True):
        if array.shape[1:3] != (height, width):
            raise InputError(f"spatial shape {array.shape[1:3]} differs from "
                             f"{features[0]} {(height, width)}", path=root / feature)
    r0, c0, h, w = window if window is not None else (0, 0, height, width)
    if r0 < 0 or c0 < 0 or h <= 0 or w <= 0 or r0 + h > height or c0 + w > width:
        raise InputError(f"window {window} outside the {height}x{width} patch", parameter="window")
    rows, cols = slice(r0, r0 + h), slice(c0, c0 + w)
    cube = np.concatenate([np.asarray(a[:, rows, cols, :], dtype=np.float32) for a in arrays], -1)
    valid = np.ones((t, h, w), dtype=bool)
    for mask_name, is_valid in ((valid_mask, True), (invalid_mask, False)):
        if mask_name is None:
            continue
        mask = _load_feature(root, mask_name)
        if mask.shape[:3] != (t, height, width):
            raise InputError(f"shape {mask.shape} does not match the data", path=root / mask_name)
        part = np.asarray(mask[:, rows, cols, 0]).astype(bool)
        valid &= part if is_valid else ~part
    targets = None
    if labels is not None:
        targets = read_eopatch_labels(root, labels, (height, width))[rows, cols].reshape(-1)
    grid = _eopatch_grid(root, height, width).window_grid(r0, c0, h, w)
    return SeriesData(
        series=cube.transpose(1, 2, 0, 3).reshape(h * w, t, -1),
        valid=valid.reshape(t, -1).T,
        doy=day_of_year(dates)[None],
        band_names=names, dates=dates, grid=grid, shape=(h, w), targets=targets,
        source=str(root),
    )


# -- Presto npy ------------------------------------------------------------------------------
#: Channel names of Presto's ``s1_s2_era5_srtm.npy`` exports.
PRESTO_BANDS: tuple[str, ...] = (
    "VV", "VH", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12",
    "temperature_2m", "total_precipitation", "elevation", "slope", "NDVI",
)


def read_presto_npy(folder: str | Path) -> SeriesData:
    """Read a Presto evaluation export (``s1_s2_era5_srtm.npy`` (N, T, 18), ``month.npy`` ...).

    NDVI (channel 17, a placeholder in the raw export) is recomputed from B8 and B4 as Presto does.
    Monthly time steps get the mid-month day of year. ``target.npy`` -> ``targets``;
    ``is_test.npy``, ``latlon.npy``, ``site.npy`` go to ``extra`` when present.
    """
    root = Path(folder)
    if (root / "npy").is_dir():
        root = root / "npy"
    data_file = root / "s1_s2_era5_srtm.npy"
    if not data_file.is_file():
        raise InputError("no s1_s2_era5_srtm.npy (not a Presto npy export)", path=root)

    def load(name: str) -> np.ndarray:
        try:
            array: np.ndarray = np.load(root / name, allow_pickle=False)
            return array
        except (ValueError, OSError) as error:
            raise InputError(f"not a readable .npy array ({error})", path=root / name) from None

    series = load("s1_s2_era5_srtm.npy").astype(np.float32)
    if series.ndim != 3 or series.shape[2] != len(PRESTO_BANDS):
        raise InputError(f"shape {series.shape} is not (N, T, 18)", path=data_file)
    months = load("month.npy")
    if months.shape != series.shape[:2]:
        raise InputError(f"shape {months.shape} does not match {series.shape[:2]}",
                         path=root / "month.npy")
    if months.min() < 0 or months.max() > 11:
        raise InputError("month indices must be 0..11", path=root / "month.npy")
    b8, b4 = series[..., 8], series[..., 4]
    series[..., 17] = (b8 - b4) / np.maximum(b8 + b4, 1e-6)
    doy = (months.astype(np.float32) * 30.44 + 15.0).astype(np.float32)
    extra: dict[str, Any] = {}
    for name in ("is_test", "latlon", "dynamic_world"):
        if (root / f"{name}.npy").is_file():
            extra[name] = load(f"{name}.npy")
    targets = load("target.npy").astype(np.float32) if (root / "target.npy").is_file() else None
    return SeriesData(series=series, valid=np.asarray(np.isfinite(series).all(-1)), doy=doy,
                      band_names=list(PRESTO_BANDS), targets=targets, source=str(root),
                      extra=extra)


# -- simulator -------------------------------------------------------------------------------
def from_scene(scene: Any) -> SeriesData:
    """Pixel series of a simulated :class:`~eokit.core.synth.pixel_series.PixelSeriesScene`.

    ``targets`` are the per-date canopy classes (N, T) (0 none, 1 conifer, 2 broadleaf).
    """
    t, c, h, w = scene.reflectance.shape
    dates = np.asarray(scene.dates).astype("datetime64[s]")
    return SeriesData(
        series=scene.reflectance.reshape(t, c, h * w).transpose(2, 0, 1),
        valid=scene.valid.reshape(t, h * w).T.copy(),
        doy=day_of_year(dates)[None], band_names=list(scene.band_names), dates=dates,
        grid=scene.grid, shape=(h, w), targets=scene.canopy.reshape(t, h * w).T.copy(),
        source="simulator",
    )


# -- dispatch -------------------------------------------------------------------------------
LAYOUTS = ("auto", "geotiff", "eopatch", "presto")


def detect_layout(path: str | Path) -> str:
    """Guess the layout of ``path``: eopatch, presto or geotiff."""
    root = Path(path)
    if not root.exists():
        raise InputError("input not found", path=root)
    if root.is_dir() and (root / "timestamps.json").is_file():
        return "eopatch"
    if root.is_dir() and ((root / "s1_s2_era5_srtm.npy").is_file()
                          or (root / "npy" / "s1_s2_era5_srtm.npy").is_file()):
        return "presto"
    return "geotiff"


def read_series(path: str | Path, *, layout: str = "auto", **options: Any) -> SeriesData:
    """Read any supported layout (see :data:`LAYOUTS`); ``options`` go to the reader."""
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; choose from {LAYOUTS}", parameter="layout")
    kind = detect_layout(path) if layout == "auto" else layout
    if kind == "eopatch":
        data = read_eopatch(path, **options)
    elif kind == "presto":
        data = read_presto_npy(path)
    else:
        data = read_geotiff_stack(path, **options)
    if len(data) == 0 or not data.valid.any():
        # An all-NaN/all-nodata input would otherwise train or predict on nothing with exit 0.
        raise DataError(f"{path}: no valid observation (every value is NaN or nodata)")
    return data


def constant_bands(data: SeriesData) -> list[str]:
    """Names of the bands whose valid observations all hold one value (no information)."""
    low = np.full(data.n_bands, np.inf)
    high = np.full(data.n_bands, -np.inf)
    for start in range(0, len(data), 65_536):  # in chunks: no copy of a large series
        values = data.series[start:start + 65_536][data.valid[start:start + 65_536]]
        if values.shape[0]:
            low = np.minimum(low, values.min(axis=0))
            high = np.maximum(high, values.max(axis=0))
    return [name for name, a, b in zip(data.band_names, low, high, strict=True) if not b > a]


def check_informative(data: SeriesData, *, what: str) -> None:
    """DataError when every band is constant; a warning naming the constant bands otherwise.

    Args:
        data: The series about to be trained on.
        what: What the series are for, for the message (e.g. ``"pretrain on"``).
    """
    constant = constant_bands(data)
    if constant and len(constant) == data.n_bands:
        raise DataError(f"{data.source or 'input'}: every band is constant over all pixels and "
                        f"dates (nothing to {what})")
    if constant:
        logger.warning("%s: bands %s are constant over all pixels and dates and carry no "
                       "information", data.source or "input", constant)


def warn_if_single_date(data: SeriesData) -> None:
    """Loud warning for a one-date series: no temporal information, no change can be dated."""
    if data.n_dates == 1:
        logger.warning("%s: a single date: the model sees one observation per pixel (no "
                       "temporal information) and no change can be dated",
                       data.source or "input")


def check_two_classes(labels: np.ndarray, class_names: Sequence[str], *, source: str | Path,
                      hint: str = "") -> None:
    """InputError naming ``source`` unless the labelled values (not 255) hold two classes.

    A classifier trained on one class learns a constant; its maps would look like results.
    """
    values = np.unique(np.asarray(labels))
    present = values[values != IGNORE_INDEX]
    if present.size >= 2:
        return
    if present.size == 0:
        what = "no labelled pixel (every value is 255)"
    elif 0 <= int(present[0]) < len(class_names):
        what = f"every labelled pixel is {class_names[int(present[0])]!r}"
    else:
        what = f"every labelled pixel is {int(present[0])}"
    raise InputError(f"{what}{f' {hint}' if hint else ''}; classification needs at least two "
                     f"of the classes {list(class_names)}",
                     path=source if isinstance(source, Path) else None,
                     parameter=None if isinstance(source, Path) else str(source))


def iter_row_blocks(height: int, rows_per_block: int) -> Iterator[tuple[int, int]]:
    """(row_off, n_rows) blocks covering ``height`` rows."""
    for start in range(0, height, rows_per_block):
        yield start, min(rows_per_block, height - start)


def read_label_raster(path: str | Path, grid: Grid, class_names: Sequence[str],
                      *, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Read a class-id label raster aligned with ``grid``; (H*W,) int64 with 255 = ignore.

    ``grid`` is the grid of the series (of the window, when ``window`` is given).

    Raises:
        InputError: grid differs from the series, or a value is not a class id (0..K-1) nor 255.
    """
    from eokit.core.raster import check_aligned, read_raster

    raster = read_raster(path, window=window)
    check_aligned(labels=raster, series=grid)
    labels = np.asarray(raster.data[0]).astype(np.int64)
    labels[~raster.valid] = IGNORE_INDEX
    check_labels(labels, class_names, source=path)
    return labels.reshape(-1)


def check_labels(labels: np.ndarray, class_names: Sequence[str], *, source: str | Path) -> None:
    """InputError naming ``source`` when a label is neither a class id nor 255 (ignore)."""
    values = np.unique(np.asarray(labels))
    bad = values[(values != IGNORE_INDEX) & ((values < 0) | (values >= len(class_names)))]
    if bad.size:
        raise InputError(
            f"label values {bad[:5].tolist()} are outside the {len(class_names)} classes "
            f"{list(class_names)} (use 255 for unlabelled)",
            path=source if isinstance(source, Path) else None,
            parameter=None if isinstance(source, Path) else str(source),
        )


class SeriesReader:
    """A raster series on disk, read window by window (GeoTIFF stack or EOPatch folder).

    Args:
        path: Folder/CSV of a GeoTIFF stack, or an EOPatch folder.
        layout: ``auto``, ``geotiff`` or ``eopatch``.
        **options: Passed to the reader (e.g. EOPatch ``features``, ``valid_mask``).

    Attributes:
        grid: Grid of the whole raster.
        dates: (T,) datetime64[s].
        band_names: Band names.
    """

    def __init__(self, path: str | Path, *, layout: str = "auto", **options: Any) -> None:
        self.path = Path(path)
        self.layout = detect_layout(path) if layout == "auto" else layout
        if self.layout not in ("geotiff", "eopatch"):
            raise InputError(f"maps need a GeoTIFF stack or an EOPatch folder, got {self.layout}",
                             path=self.path)
        self.options = options
        probe = self.read((0, 0, 1, 1))
        assert probe.dates is not None
        self.dates = probe.dates
        self.band_names = probe.band_names
        if self.layout == "geotiff":
            from eokit.core.raster import raster_info

            files, _ = list_geotiff_stack(path)
            self.grid = raster_info(files[0])[0]
        else:
            feature = list(options.get("features", ("data/NDVI",)))[0]
            shape = _load_feature(self.path, feature).shape
            self.grid = _eopatch_grid(self.path, shape[1], shape[2])

    def read(self, window: tuple[int, int, int, int] | None = None) -> SeriesData:
        """Series of a window (row_off, col_off, height, width); None reads everything."""
        if self.layout == "geotiff":
            return read_geotiff_stack(self.path, window=window, **self.options)
        return read_eopatch(self.path, window=window, **self.options)


def parse_label_map(text: str | None) -> dict[str, int] | None:
    """``"2:1,0:255,*:0"`` -> {"2": 1, "0": 255, "*": 0} (source value -> class id)."""
    if not text:
        return None
    mapping: dict[str, int] = {}
    for item in text.split(","):
        if ":" not in item:
            raise InputError(f"expected SOURCE:CLASS pairs, got {item!r}", parameter="label_map")
        source, target = item.split(":", 1)
        try:
            mapping[source.strip()] = int(target)
        except ValueError:
            raise InputError(f"class id must be an integer in {item!r}",
                             parameter="label_map") from None
    return mapping


def apply_label_map(values: Any, mapping: dict[str, int] | None) -> Any:
    """Map label values with :func:`parse_label_map`'s dict (``*`` = every other value)."""
    values = np.asarray(values)
    if mapping is None:
        return values.astype(np.int64)
    out = np.full(values.shape, mapping.get("*", 255), dtype=np.int64)
    for source, target in mapping.items():
        if source != "*":
            out[values == int(float(source))] = target
    return out
