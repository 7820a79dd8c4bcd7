"""Readers for the urban analysis: optical/SAR image pairs and the city list of a batch."""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eokit.core.errors import InputError
from eokit.core.types import Grid

logger = logging.getLogger(__name__)

#: "paper_em" is the paper pipeline with EM thresholds (a variant used by the benchmark).
MODES = ("paper", "geo", "paper_em")


@dataclass
class ImagePair:
    """An 8-bit optical RGB (3, H, W) and SAR grey (H, W) image pair on one grid."""

    optical: np.ndarray
    sar: np.ndarray
    grid: Grid
    pixel_size_m: float


def _as_uint8(data: np.ndarray, path: Path) -> np.ndarray:
    if data.dtype == np.uint8:
        return data
    if np.issubdtype(data.dtype, np.integer) and data.max() <= 255 and data.min() >= 0:
        return data.astype(np.uint8)
    raise InputError(
        f"paper mode expects 8-bit renderings, got {data.dtype} (use --mode geo for GeoTIFF "
        "reflectance / sigma0)",
        path=path,
    )


def check_pixel_size(pixel_size_m: float | None) -> None:
    """InputError unless ``pixel_size_m`` is None or a positive finite number."""
    if pixel_size_m is not None and not (pixel_size_m > 0 and math.isfinite(pixel_size_m)):
        raise InputError(f"must be a positive number, got {pixel_size_m}", parameter="pixel_size_m")


def read_pair(optical: str | Path, sar: str | Path, *, pixel_size_m: float | None) -> ImagePair:
    """Read a paper-mode pair: 8-bit true-colour optical and 8-bit SAR rendering.

    Raises:
        InputError: missing/corrupt file, single-band optical, different sizes, missing pixel
            size for non-georeferenced images.
    """
    from eokit.core.raster import read_image

    optical, sar = Path(optical), Path(sar)
    check_pixel_size(pixel_size_m)
    opt = read_image(optical, pixel_size_m=pixel_size_m)
    if opt.data.shape[0] < 3:
        raise InputError(
            f"has {opt.data.shape[0]} band(s); the optical input must be an RGB true-colour image",
            path=optical,
        )
    rad = read_image(sar, pixel_size_m=pixel_size_m)
    if opt.data.shape[1:] != rad.data.shape[1:]:
        h1, w1 = opt.data.shape[1:]
        h2, w2 = rad.data.shape[1:]
        raise InputError(
            f"is {w2}x{h2} px but the optical image {optical.name} is {w1}x{h1} px; "
            "give a pair of the same footprint and size",
            path=sar,
        )
    if opt.grid.crs is not None and rad.grid.crs is not None and not opt.grid.same_as(rad.grid):
        raise InputError(f"is not on the grid of {optical.name}; use --mode geo to align", path=sar)
    try:
        size = opt.grid.pixel_size_m
    except InputError:
        raise InputError(
            "is required in paper mode: the images carry no georeference "
            f"({optical.name}); pass --pixel-size-m",
            parameter="pixel_size_m",
        ) from None
    optical_u8 = _as_uint8(opt.data[:3], optical)
    sar_u8 = _as_uint8(rad.data, sar)
    if sar_u8.shape[0] >= 3:
        import cv2

        sar_grey = cv2.cvtColor(
            np.ascontiguousarray(np.moveaxis(sar_u8[:3], 0, -1)), cv2.COLOR_RGB2GRAY
        )
    else:
        sar_grey = sar_u8[0]
    return ImagePair(optical=optical_u8, sar=sar_grey, grid=opt.grid, pixel_size_m=float(size))


@dataclass
class CityRow:
    """One line of a batch CSV."""

    name: str
    optical: Path
    sar: Path
    pixel_size_m: float | None
    mode: str


def read_city_list(
    path: str | Path, *, default_mode: str = "paper", default_pixel_size_m: float | None = None
) -> list[CityRow]:
    """Read ``name,optical,sar[,pixel_size_m][,mode]`` rows; relative paths are relative to the CSV.

    Raises:
        InputError: missing file/columns, empty list, duplicate names, bad numbers or modes.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("city list not found", path=path)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        missing = {"name", "optical", "sar"} - columns
        if missing:
            raise InputError(f"missing column(s) {', '.join(sorted(missing))}", path=path)
        rows: list[CityRow] = []
        for line, raw in enumerate(reader, start=2):
            name = (raw.get("name") or "").strip()
            if not name:
                raise InputError(f"line {line}: empty name", path=path)
            size_text = (raw.get("pixel_size_m") or "").strip()
            try:
                size = float(size_text) if size_text else default_pixel_size_m
            except ValueError:
                raise InputError(
                    f"line {line}: pixel_size_m {size_text!r} is not a number", path=path
                ) from None
            mode = (raw.get("mode") or "").strip() or default_mode
            if mode not in MODES:
                raise InputError(f"line {line}: mode {mode!r} is not one of {MODES}", path=path)

            def resolve(value: str | None) -> Path:
                p = Path((value or "").strip())
                return p if p.is_absolute() else (path.parent / p)

            rows.append(
                CityRow(name, resolve(raw.get("optical")), resolve(raw.get("sar")), size, mode)
            )
    if not rows:
        raise InputError("no cities listed", path=path)
    names = [r.name for r in rows]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"duplicate city names: {', '.join(duplicated)}", path=path)
    return rows
