"""Data model: typed sample dicts and the ``Grid`` that carries georeference beside arrays."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypedDict

from affine import Affine

from eokit.core.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from rasterio.crs import CRS

#: Label value meaning "no label here" in every mask.
IGNORE_INDEX = 255


class ImageSample(TypedDict, total=False):
    """One image chip.

    image: (C, H, W) float32; mask: (H, W) int64 with 255 = ignore; valid: (H, W) bool.
    """

    image: torch.Tensor
    mask: torch.Tensor
    valid: torch.Tensor


class PairSample(TypedDict, total=False):
    """A bitemporal pair: image_a/image_b (C, H, W), mask (H, W) int64, valid (H, W), domain id."""

    image_a: torch.Tensor
    image_b: torch.Tensor
    mask: torch.Tensor
    valid: torch.Tensor
    domain: int


class SeriesSample(TypedDict, total=False):
    """A pixel time series: series (T, C), doy (T,) int, valid (T,) bool, target (any)."""

    series: torch.Tensor
    doy: torch.Tensor
    valid: torch.Tensor
    target: Any


@dataclass(frozen=True)
class Grid:
    """Where an array lies on Earth: CRS, affine transform, shape and nodata value.

    A grid with ``crs=None`` belongs to a plain (PNG/JPEG) image; its pixel size is only known
    when the caller gave one (``pixel_size_known``).
    """

    crs: CRS | None
    transform: Affine
    width: int
    height: int
    nodata: float | None = None
    pixel_size_known: bool = field(default=True)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return (self.height, self.width)

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        return (min(left, right), min(bottom, top), max(left, right), max(bottom, top))

    @property
    def pixel_size_m(self) -> float:
        """Mean pixel size in metres (geographic CRS: at the grid's centre latitude).

        Raises:
            InputError: if the grid has no known pixel size (plain image without one given).
        """
        if not self.pixel_size_known:
            raise InputError(
                "this image has no georeference; give its pixel size in metres",
                parameter="pixel_size_m",
            )
        sx, sy = self.res
        if self.crs is None:
            return (sx + sy) / 2.0
        if self.crs.is_geographic:
            lat = (self.bounds[1] + self.bounds[3]) / 2.0
            metres_per_degree = 111_320.0
            return float((sx * math.cos(math.radians(lat)) + sy) / 2.0 * metres_per_degree)
        factor = float(self.crs.linear_units_factor[1]) if self.crs.linear_units_factor else 1.0
        return (sx + sy) / 2.0 * factor

    def window_grid(self, row_off: int, col_off: int, height: int, width: int) -> Grid:
        """The grid of a sub-window (row/col offsets in pixels)."""
        transform = self.transform @ Affine.translation(col_off, row_off)
        return replace(self, transform=transform, width=width, height=height)

    def same_as(self, other: Grid, *, atol: float = 1e-6) -> bool:
        """True when both grids have the same CRS, shape and (nearly) the same transform."""
        if self.shape != other.shape:
            return False
        if (self.crs is None) != (other.crs is None):
            return False
        if self.crs is not None and other.crs is not None and self.crs != other.crs:
            return False
        return self.transform.almost_equals(other.transform, precision=atol)

    def describe(self) -> str:
        """Short human-readable description for error messages and reports."""
        crs = self.crs.to_string() if self.crs is not None else "no CRS"
        return f"{self.width}x{self.height} px, {crs}, res {self.res[0]:g}x{self.res[1]:g}"

    @classmethod
    def plain(cls, width: int, height: int, pixel_size_m: float | None) -> Grid:
        """Grid for a non-georeferenced image; pixel size optional (then unknown)."""
        size = 1.0 if pixel_size_m is None else float(pixel_size_m)
        if size <= 0 or not math.isfinite(size):
            raise InputError(
                f"must be a positive number, got {pixel_size_m}", parameter="pixel_size_m"
            )
        return cls(
            crs=None,
            transform=Affine(size, 0.0, 0.0, 0.0, -size, 0.0),
            width=width,
            height=height,
            pixel_size_known=pixel_size_m is not None,
        )


def day_of_year(dates: Any, dtype: str = "float32") -> np.ndarray:
    """Day of year (1..366) of datetime64 ``dates`` (any shape), as ``dtype``.

    float32 by default: the form a model takes it in beside the bands.
    """
    import numpy as np

    days = np.asarray(dates).astype("datetime64[D]")
    doy: np.ndarray = ((days - days.astype("datetime64[Y]")).astype(np.int64) + 1).astype(dtype)
    return doy


def as_numpy(array: Any) -> np.ndarray:
    """Return ``array`` as a numpy array (accepts tensors)."""
    import numpy as np

    if hasattr(array, "detach"):
        return np.asarray(array.detach().cpu().numpy())
    return np.asarray(array)
