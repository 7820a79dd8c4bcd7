"""Density profile against distance to the nearest centre, trend through minima, LD (steps 6-8)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from scipy.ndimage import distance_transform_edt
from scipy.signal import find_peaks

from eokit.core.errors import DataError, InputError

logger = logging.getLogger(__name__)

PROMINENCE_FRACTION = 0.02
MIN_BINS_FOR_EXTREMA = 5


@dataclass
class Profile:
    """Per-bin statistics of the fused value C against distance (1-pixel bins, non-empty only).

    Attributes:
        distance_px: Bin start d (pixels); a pixel at distance x belongs to bin floor(x).
        count, mean, median, minimum, q1, q3, maximum: Statistics of C per bin.
    """

    distance_px: np.ndarray
    count: np.ndarray
    mean: np.ndarray
    median: np.ndarray
    minimum: np.ndarray
    q1: np.ndarray
    q3: np.ndarray
    maximum: np.ndarray

    def __len__(self) -> int:
        return int(self.distance_px.size)

    def rows(self, pixel_size_m: float) -> list[dict[str, float]]:
        """CSV rows (distance in px and km)."""
        out = []
        for i in range(len(self)):
            out.append(
                {
                    "distance_px": int(self.distance_px[i]),
                    "distance_km": float(self.distance_px[i]) * pixel_size_m / 1000.0,
                    "count": int(self.count[i]),
                    "mean": float(self.mean[i]),
                    "median": float(self.median[i]),
                    "min": float(self.minimum[i]),
                    "q1": float(self.q1[i]),
                    "q3": float(self.q3[i]),
                    "max": float(self.maximum[i]),
                }
            )
        return out


def distance_to_centres(centres: np.ndarray) -> np.ndarray:
    """Euclidean distance (pixels) of every pixel to the nearest centre pixel."""
    if not centres.any():
        raise DataError("no urban-centre pixels: distances cannot be measured")
    return np.asarray(distance_transform_edt(~centres), dtype=np.float64)


def _percentile_sorted(values: np.ndarray, q: float) -> float:
    """Numpy's default ('linear') percentile of an already sorted 1-D array."""
    pos = (values.size - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, values.size - 1)
    return float(values[lo] + (values[hi] - values[lo]) * (pos - lo))


def profile_from_samples(distances: np.ndarray, values: np.ndarray) -> Profile:
    """Bin samples by floor(distance) and compute mean/median/min/Q1/Q3/max per non-empty bin."""
    distances = np.asarray(distances, np.float64).ravel()
    values = np.asarray(values, np.float64).ravel()
    if distances.size == 0:
        raise DataError("no urban pixels to build a density profile from")
    bins = np.floor(distances).astype(np.int64)
    order = np.lexsort((values, bins))
    bins, values = bins[order], values[order]
    starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    ends = np.r_[starts[1:], bins.size]
    n = starts.size
    out = {k: np.empty(n) for k in ("mean", "median", "minimum", "q1", "q3", "maximum")}
    for j, (s, e) in enumerate(zip(starts, ends, strict=True)):
        chunk = values[s:e]
        out["mean"][j] = chunk.mean()
        out["median"][j] = _percentile_sorted(chunk, 50)
        out["minimum"][j] = chunk[0]
        out["q1"][j] = _percentile_sorted(chunk, 25)
        out["q3"][j] = _percentile_sorted(chunk, 75)
        out["maximum"][j] = chunk[-1]
    return Profile(bins[starts].astype(np.float64), (ends - starts).astype(np.int64), **out)


def density_profile(fused: np.ndarray, urban_mask: np.ndarray, centres: np.ndarray) -> Profile:
    """Step 6: profile of C over urban pixels against distance to the nearest centre pixel."""
    if not urban_mask.any():
        raise DataError("no urban pixels found; no density profile")
    distance = distance_to_centres(centres)
    return profile_from_samples(distance[urban_mask], fused[urban_mask])


@dataclass
class Trend:
    """Linear trend beta + alpha * d through the profile minima, and LD.

    Attributes:
        slope_px: Slope per pixel of distance. alpha_per_km: slope_px * 1000 / pixel_size_m.
        intercept: beta. minima: Bin indices used. peaks: Bin indices of profile peaks.
        target: rho_target (min over bins of Q1). ld_km: (target - beta) / alpha in km.
        method: "minima" (published) or "all_bins_fallback" (fewer than 2 minima).
        r_value, std_err: From the regression.
    """

    slope_px: float
    alpha_per_km: float
    intercept: float
    minima: np.ndarray
    peaks: np.ndarray
    target: float
    ld_km: float
    method: str = "minima"
    r_value: float = float("nan")
    std_err_per_km: float = float("nan")
    note: str = ""
    residuals: np.ndarray = field(default_factory=lambda: np.empty(0))

    def trend(self, distance_px: np.ndarray) -> np.ndarray:
        """Beta + slope_px * d."""
        return self.intercept + self.slope_px * np.asarray(distance_px, np.float64)


def profile_extrema(mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Peaks and minima of the mean profile (prominence 0.02 (max - min)).

    The last bin is added to the minima when it is neither (published rule). Fewer than 6 bins: no
    extrema, only the last bin.
    """
    mean = np.asarray(mean, np.float64)
    if mean.size > MIN_BINS_FOR_EXTREMA:
        prominence = PROMINENCE_FRACTION * (mean.max() - mean.min())
        peaks, _ = find_peaks(mean, prominence=prominence)
        minima, _ = find_peaks(-mean, prominence=prominence)
    else:
        peaks = np.empty(0, np.int64)
        minima = np.empty(0, np.int64)
    last = mean.size - 1
    if last not in peaks and last not in minima:
        minima = np.append(minima, last)
    return np.sort(peaks).astype(np.int64), np.sort(minima).astype(np.int64)


def ld_km(target: float, intercept: float, slope_px: float, pixel_size_m: float) -> float:
    """Step 8: LD = (rho_target - beta) / alpha, from pixels to km (inf for a flat trend)."""
    if abs(slope_px) <= 1e-10:
        return math.inf
    return (target - intercept) / slope_px * pixel_size_m / 1000.0


def fit_trend(profile: Profile, pixel_size_m: float) -> Trend:
    """Step 7-8: OLS through the local minima of the mean profile; alpha per km; LD.

    When fewer than two minima exist the published notebook reports no slope; here the OLS over all
    bins is used instead and ``method`` / ``note`` say so.

    Raises:
        InputError: if the pixel size is missing or not positive.
    """
    if pixel_size_m is None or not (pixel_size_m > 0 and math.isfinite(pixel_size_m)):
        raise InputError(
            f"must be a positive number of metres, got {pixel_size_m}", parameter="pixel_size_m"
        )
    if len(profile) < 2:
        raise DataError(
            "the density profile has fewer than 2 distance bins; no gradient can be fitted"
        )
    peaks, minima = profile_extrema(profile.mean)
    method, note = "minima", ""
    points = minima
    if minima.size < 2:
        points = np.arange(len(profile))
        method = "all_bins_fallback"
        note = "fewer than 2 profile minima: trend fitted through all bins"
        logger.warning(note)
    reg = stats.linregress(profile.distance_px[points], profile.mean[points])
    slope, intercept = float(reg.slope), float(reg.intercept)
    target = float(profile.q1.min())
    trend = Trend(
        slope_px=slope,
        alpha_per_km=slope * 1000.0 / pixel_size_m,
        intercept=intercept,
        minima=minima,
        peaks=peaks,
        target=target,
        ld_km=ld_km(target, intercept, slope, pixel_size_m),
        method=method,
        r_value=float(reg.rvalue),
        std_err_per_km=float(reg.stderr) * 1000.0 / pixel_size_m,
        note=note,
    )
    trend.residuals = profile.mean - trend.trend(profile.distance_px)
    return trend
