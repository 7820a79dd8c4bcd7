"""Thresholds by Gaussian-mixture intersections and the water/terrain/urban map (steps 3-4)."""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from itertools import combinations

import cv2
import numpy as np
from scipy.optimize import curve_fit, fsolve
from scipy.signal import find_peaks

from eokit.core.errors import DataError

logger = logging.getLogger(__name__)

#: Class codes of the class map (0 = outside / nodata).
NODATA, WATER, TERRAIN, URBAN, CENTRE = 0, 1, 2, 3, 4
CLASS_NAMES = ("nodata", "water", "terrain", "urban", "centre")

HIST_BINS = 50
VALUE_RANGE = (0.0, 2.0)
PEAK_FRACTION = 0.2
MORPH_KERNEL = 5
MIN_URBAN_AREA_PX = 100


@dataclass
class MixtureFit:
    """Result of a Gaussian decomposition of a histogram.

    Attributes:
        thresholds: Intersections of adjacent components (ascending means), or fallback thresholds.
        means, sigmas, amplitudes: Components sorted by mean (empty when the fit failed).
        method: "gaussian_intersection", "gaussian_intersection_lm" (unbounded refit),
            "partial_otsu_fallback" (some adjacent components do not cross) or
            "otsu_fallback" (no fit converged).
        note: Why a fallback was used (empty otherwise).
        bin_centers, hist: The histogram that was fitted.
    """

    thresholds: list[float]
    means: list[float] = field(default_factory=list)
    sigmas: list[float] = field(default_factory=list)
    amplitudes: list[float] = field(default_factory=list)
    method: str = "gaussian_intersection"
    note: str = ""
    bin_centers: np.ndarray | None = None
    hist: np.ndarray | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly summary."""
        return {
            "thresholds": [float(t) for t in self.thresholds],
            "means": [float(m) for m in self.means],
            "sigmas": [float(s) for s in self.sigmas],
            "amplitudes": [float(a) for a in self.amplitudes],
            "method": self.method,
            "note": self.note,
        }


def gaussian(x: np.ndarray | float, a: float, mu: float, sigma: float) -> np.ndarray | float:
    """A * exp(-(x - mu)^2 / (2 sigma^2))."""
    return a * np.exp(-((np.asarray(x) - mu) ** 2) / (2 * sigma**2))


def gaussian_sum(x: np.ndarray, *params: float) -> np.ndarray:
    """Sum of Gaussians, params = [a1, mu1, s1, a2, mu2, s2, ...]."""
    y = np.zeros_like(x, dtype=np.float64)
    for i in range(0, len(params), 3):
        y = y + gaussian(x, params[i], params[i + 1], params[i + 2])
    return y


def initial_guess(
    hist: np.ndarray, centers: np.ndarray, n: int, value_range: tuple[float, float]
) -> tuple[list[float], list[float], list[float]]:
    """Published start values and bounds: histogram peaks >= 0.2 max by height, else even means."""
    low, high = value_range
    width = high - low
    peaks, _ = find_peaks(hist, height=hist.max() * PEAK_FRACTION)
    guess: list[float] = []
    lower: list[float] = []
    upper: list[float] = []
    use_peaks = 0 < len(peaks) <= n
    order = np.argsort(hist[peaks])[::-1] if use_peaks else np.array([], int)
    for i in range(n):
        if use_peaks and i < len(order):
            amplitude, mean = float(hist[peaks][order[i]]), float(centers[peaks][order[i]])
        elif use_peaks:
            amplitude, mean = hist.max() / (n * 2), low + width * (i + 0.5) / n
        else:
            amplitude, mean = hist.max() / n, low + width * (i + 0.5) / n
        guess += [float(amplitude), float(mean), width / (4 * n)]
        lower += [0.0, low, width / (50 * n)]
        upper += [math.inf, high, width]
    return guess, lower, upper


def intersection_fsolve(
    p1: tuple[float, float, float], p2: tuple[float, float, float], value_range: tuple[float, float]
) -> float | None:
    """Published root search: fsolve from the midpoint of the means; None if invalid."""
    guess = (p1[1] + p2[1]) / 2

    def diff(x: np.ndarray) -> np.ndarray:
        return np.asarray(gaussian(x, *p1) - gaussian(x, *p2))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            root = float(fsolve(diff, guess)[0])
    except (ValueError, FloatingPointError):  # pragma: no cover - fsolve rarely raises
        return None
    if not value_range[0] <= root <= value_range[1]:
        return None
    y1, y2 = float(gaussian(root, *p1)), float(gaussian(root, *p2))
    if np.isclose(y1, y2, rtol=1e-3) and y1 > 0:
        return root
    return None


def intersection_between(
    p1: tuple[float, float, float], p2: tuple[float, float, float]
) -> float | None:
    """Closed-form intersection of two Gaussians that lies between their means (geo mode).

    Solves log(a1) - (x-m1)^2/2s1^2 = log(a2) - (x-m2)^2/2s2^2; returns the root in [m1, m2].
    """
    (a1, m1, s1), (a2, m2, s2) = p1, p2
    if a1 <= 0 or a2 <= 0:
        return None
    qa = 1 / (2 * s2**2) - 1 / (2 * s1**2)
    qb = m1 / s1**2 - m2 / s2**2
    qc = m2**2 / (2 * s2**2) - m1**2 / (2 * s1**2) + math.log(a1 / a2)
    roots: list[float]
    if abs(qa) < 1e-12:
        roots = [] if abs(qb) < 1e-12 else [-qc / qb]
    else:
        disc = qb * qb - 4 * qa * qc
        if disc < 0:
            return None
        sq = math.sqrt(disc)
        roots = [(-qb + sq) / (2 * qa), (-qb - sq) / (2 * qa)]
    lo, hi = min(m1, m2), max(m1, m2)
    inside = [r for r in roots if lo <= r <= hi]
    return float(inside[0]) if inside else None


def otsu_thresholds(hist: np.ndarray, centers: np.ndarray, n_classes: int) -> list[float]:
    """Multi-level Otsu on a histogram (exhaustive over bin edges; 50 bins make this cheap)."""
    total = hist.sum()
    if total <= 0:
        return []
    p = hist / total
    best, best_cut = -1.0, None
    edges = (centers[:-1] + centers[1:]) / 2
    for cut in combinations(range(1, len(hist)), n_classes - 1):
        bounds = (0, *cut, len(hist))
        between = 0.0
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            w = p[lo:hi].sum()
            if w > 0:
                mu = (p[lo:hi] * centers[lo:hi]).sum() / w
                between += w * mu * mu
        if between > best:
            best, best_cut = between, cut
    return [float(edges[c - 1]) for c in best_cut] if best_cut else []


def decompose_histogram(
    values: np.ndarray,
    n_components: int,
    *,
    exclude_zeros: bool = False,
    value_range: tuple[float, float] = VALUE_RANGE,
    bins: int = HIST_BINS,
    closed_form: bool = False,
    em: bool = False,
    seed: int = 0,
) -> MixtureFit:
    """Fit a sum of Gaussians to the histogram and return the intersections of adjacent components.

    Published procedure: 50-bin histogram on [0, 2], start values from peaks >= 0.2 max, bounded
    trust-region least squares (``curve_fit(method="trf")``), on failure unbounded
    Levenberg-Marquardt; components sorted by mean; intersections of adjacent components.
    Fallbacks (not in the paper, whose notebook stops with an error in these cases), reported in
    ``method`` and ``note``: when fsolve finds no valid root, the closed-form intersection between
    the means; when two adjacent components do not cross between their means (the lower one is a
    shoulder of the upper, or both are one broad mode), that threshold comes from multi-level Otsu
    on the same histogram; when neither fit converges, all thresholds come from Otsu.

    Args:
        values: Array of values (any shape); NaN ignored.
        n_components: Number of Gaussian components.
        exclude_zeros: Drop exact zeros first (used for the centre threshold).
        value_range: Histogram range.
        bins: Histogram bins.
        closed_form: Use the closed-form intersection between the means (geo mode) instead of
            the published fsolve from the midpoint.
        em: Fit the mixture to the pixel values by expectation-maximisation
            (scikit-learn ``GaussianMixture``, geo mode) instead of least squares on the histogram.
        seed: Seed of the EM subsample and initialisation.

    Raises:
        DataError: if no values are left.
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    flat = flat[np.isfinite(flat)]
    if exclude_zeros:
        flat = flat[flat != 0]
    if flat.size == 0:
        raise DataError("no values to build a histogram from (empty selection)")
    hist, edges = np.histogram(flat, bins=bins, range=value_range)
    hist = hist.astype(np.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    if em:
        params = em_mixture(flat, n_components, bin_width=float(edges[1] - edges[0]), seed=seed)
        method = "em_intersection"
    else:
        params, method = lsq_mixture(hist, centers, n_components, value_range)
    if params is None:
        note = "Gaussian fit did not converge (trf and lm); thresholds from multi-level Otsu"
        logger.warning(note)
        return MixtureFit(
            otsu_thresholds(hist, centers, n_components),
            method="otsu_fallback",
            note=note,
            bin_centers=centers,
            hist=hist,
        )
    return mixture_thresholds(
        params, method, hist, centers, value_range, closed_form=closed_form or em
    )


def em_mixture(
    values: np.ndarray, n: int, *, bin_width: float, seed: int = 0, max_samples: int = 50_000
) -> np.ndarray | None:
    """Gaussian mixture by EM on (a subsample of) the values, as [a, mu, sigma] * n in counts."""
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(seed)
    sample = (
        values if values.size <= max_samples else rng.choice(values, max_samples, replace=False)
    )
    if np.unique(sample[: min(sample.size, 10_000)]).size < n:
        return None
    gmm = GaussianMixture(n, random_state=seed, n_init=1, reg_covar=1e-4).fit(sample[:, None])
    out = []
    for w, mu, var in zip(
        gmm.weights_, gmm.means_[:, 0], gmm.covariances_.reshape(-1), strict=True
    ):
        sigma = math.sqrt(var)
        # amplitude in histogram counts: N * w * bin / (sigma sqrt(2 pi))
        out += [values.size * w * bin_width / (sigma * math.sqrt(2 * math.pi)), mu, sigma]
    return np.array(out)


def lsq_mixture(
    hist: np.ndarray, centers: np.ndarray, n_components: int, value_range: tuple[float, float]
) -> tuple[np.ndarray | None, str]:
    """Published least-squares fit (trf with bounds, then unbounded lm)."""
    guess, lower, upper = initial_guess(hist, centers, n_components, value_range)
    method = "gaussian_intersection"
    params = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            params, _ = curve_fit(
                gaussian_sum,
                centers,
                hist,
                p0=guess,
                bounds=(lower, upper),
                maxfev=10000,
                method="trf",
                ftol=1e-6,
                xtol=1e-6,
            )
        except (RuntimeError, ValueError):
            try:
                params, _ = curve_fit(
                    gaussian_sum, centers, hist, p0=guess, maxfev=20000, method="lm"
                )
                method = "gaussian_intersection_lm"
            except (RuntimeError, ValueError):
                params = None
    return params, method


def mixture_thresholds(
    params: np.ndarray,
    method: str,
    hist: np.ndarray,
    centers: np.ndarray,
    value_range: tuple[float, float],
    *,
    closed_form: bool,
) -> MixtureFit:
    """Sort components by mean and intersect adjacent ones (with the documented fallbacks)."""
    comps: list[tuple[float, float, float]] = sorted(
        (
            (float(params[i]), float(params[i + 1]), abs(float(params[i + 2])))
            for i in range(0, len(params), 3)
        ),
        key=lambda c: c[1],
    )
    thresholds: list[float] = []
    missing: list[int] = []
    otsu: list[float] | None = None
    for i, (c1, c2) in enumerate(zip(comps[:-1], comps[1:], strict=True)):
        root = (
            intersection_between(c1, c2)
            if closed_form
            else intersection_fsolve(c1, c2, value_range)
        )
        if root is None and not closed_form:
            root = intersection_between(c1, c2)
            if root is not None:
                missing.append(-1 - i)
        if root is None:
            # the lower component lies under the upper one everywhere between the means (a
            # shoulder or a degenerate pair, not two modes): multi-level Otsu on the histogram
            if otsu is None:
                otsu = otsu_thresholds(hist, centers, len(comps))
            root = otsu[i] if i < len(otsu) else (c1[1] + c2[1]) / 2
            missing.append(i)
        thresholds.append(float(root))
    fit = MixtureFit(
        thresholds,
        means=[c[1] for c in comps],
        sigmas=[c[2] for c in comps],
        amplitudes=[c[0] for c in comps],
        method=method,
        bin_centers=centers,
        hist=hist,
    )
    shoulders = [i for i in missing if i >= 0]
    if len(shoulders) < len(missing):
        fit.note = "fsolve found no root from the midpoint; closed-form intersection used. "
    if shoulders:
        fit.note += (
            f"components {', '.join(f'{i + 1}/{i + 2}' for i in shoulders)} do not intersect "
            "between their means; threshold from multi-level Otsu on the same histogram"
        )
        fit.method = "partial_otsu_fallback"
    fit.note = fit.note.strip()
    if fit.note:
        logger.warning(fit.note)
    return fit


def classify(fused: np.ndarray, water_threshold: float, urban_threshold: float) -> np.ndarray:
    """Initial segmentation: water C < tau_water, urban C >= tau_urban, terrain in between."""
    classes = np.full(fused.shape, TERRAIN, np.uint8)
    classes[fused < water_threshold] = WATER
    classes[fused >= urban_threshold] = URBAN
    return classes


def clean_urban_mask(raw_urban: np.ndarray, *, min_area: int = MIN_URBAN_AREA_PX) -> np.ndarray:
    """Step 4: 5x5 dilation, 5x5 closing, drop 8-connected components under ``min_area`` px."""
    kernel = np.ones((MORPH_KERNEL, MORPH_KERNEL), np.uint8)
    mask = raw_urban.astype(np.uint8) * 255
    closed = cv2.morphologyEx(cv2.dilate(mask, kernel, iterations=1), cv2.MORPH_CLOSE, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    keep = np.zeros(count, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return np.asarray(keep[labels], dtype=bool)


def final_classes(classes: np.ndarray, urban_mask: np.ndarray) -> np.ndarray:
    """Urban pixels not in the cleaned mask become terrain; cleaned mask pixels become urban."""
    out = classes.copy()
    out[out == URBAN] = TERRAIN
    out[urban_mask] = URBAN
    return out
