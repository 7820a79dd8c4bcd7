"""K-means regions of the residual profile: uniform vs high-variation stretches (step 9)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans

logger = logging.getLogger(__name__)

KMEANS_RANDOM_STATE = 42
KMEANS_N_INIT = 10
UNIFORM_STD_RATIO = 0.7
MIN_REGION_FRACTION = 0.05


@dataclass(frozen=True)
class Region:
    """A run of profile bins [start, end] (inclusive indices) and its kind."""

    start: int
    end: int
    kind: str  # "uniform" | "variation" | "unknown"

    def as_dict(
        self, distance_km: np.ndarray, residuals: np.ndarray, mean: np.ndarray | None = None
    ) -> dict[str, object]:
        """JSON-friendly description with distances in km.

        With the mean profile ``mean``, the region's own gradient (OLS slope of the mean, C per
        km) and whether it is steep (see :func:`steep_regions`) are added.
        """
        part = residuals[self.start : self.end + 1]
        out: dict[str, object] = {
            "start_bin": self.start,
            "end_bin": self.end,
            "start_km": float(distance_km[self.start]),
            "end_km": float(distance_km[self.end]),
            "kind": self.kind,
            "residual_std": float(np.std(part)),
            "residual_mean": float(np.mean(part)),
        }
        if mean is not None:
            gradient = region_gradient(distance_km, mean, self)
            out["gradient_per_km"] = gradient
            out["steep"] = bool(abs(gradient) > mean_gradient(distance_km, mean))
        return out


def region_gradient(distance_km: np.ndarray, mean: np.ndarray, region: Region) -> float:
    """OLS slope (C per km) of the mean profile inside ``region`` (0 for a one-bin region)."""
    x = np.asarray(distance_km[region.start : region.end + 1], np.float64)
    y = np.asarray(mean[region.start : region.end + 1], np.float64)
    if x.size < 2 or np.ptp(x) <= 0:
        return 0.0
    return float(np.polyfit(x, y, 1)[0])


def mean_gradient(distance_km: np.ndarray, mean: np.ndarray) -> float:
    """The city's average fall of the mean profile per km: |mean[0] - mean[-1]| / span."""
    span = float(distance_km[-1] - distance_km[0])
    return abs(float(mean[0] - mean[-1])) / span if span > 0 else math.inf


def steep_uniform_notes(
    regions: list[Region], distance_km: np.ndarray, mean: np.ndarray, residuals: np.ndarray
) -> list[str]:
    """Warnings for regions the published rule calls uniform although the density falls steeply.

    The published rule compares the scatter of the residuals inside a region with the scatter of
    all residuals; a stretch where the mean falls fast but smoothly has little scatter and is
    called uniform. A region is steep when its own gradient exceeds the city's average one.
    """
    overall = float(np.std(residuals))
    average = mean_gradient(distance_km, mean)
    notes = []
    for index, region in enumerate(regions, start=1):
        if region.kind != "uniform":
            continue
        gradient = region_gradient(distance_km, mean, region)
        if abs(gradient) > average:
            part = residuals[region.start : region.end + 1]
            notes.append(
                f"region R{index} ({distance_km[region.start]:.2f}-{distance_km[region.end]:.2f}"
                f" km) is 'uniform' by the published rule (residual std {np.std(part):.3g} < "
                f"{UNIFORM_STD_RATIO} x {overall:.3g}) although the density changes steeply there "
                f"({gradient:+.3g} C per km, the city's average is {average:.3g}): 'uniform' "
                "means little scatter, not flat density"
            )
    return notes


def residual_features(residuals: np.ndarray) -> np.ndarray:
    """Per-bin features [residual, gradient, gradient shifted by one, residual shifted by one]."""
    residuals = np.asarray(residuals, np.float64)
    gradient = np.gradient(residuals) if residuals.size > 1 else np.zeros_like(residuals)
    features = np.column_stack((residuals, gradient, np.roll(gradient, 1), np.roll(residuals, 1)))
    if residuals.size > 1:
        features[0, 2:] = features[1, 2:]
    return features


def label_runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of equal labels as (start, end, label), inclusive."""
    runs: list[tuple[int, int, int]] = []
    start = 0
    for i in range(1, len(labels)):
        if labels[i] != labels[i - 1]:
            runs.append((start, i - 1, int(labels[i - 1])))
            start = i
    runs.append((start, len(labels) - 1, int(labels[-1])))
    return runs


def merge_short_runs(runs: list[tuple[int, int, int]], min_size: int) -> list[tuple[int, int, int]]:
    """Runs shorter than ``min_size`` merge into the previous run (the first into the next)."""
    runs = list(runs)
    i = 0
    while i < len(runs):
        start, end, label = runs[i]
        if end - start + 1 < min_size:
            if i > 0:
                prev_start, _, prev_label = runs[i - 1]
                runs[i - 1] = (prev_start, end, prev_label)
                runs.pop(i)
            elif i < len(runs) - 1:
                _, next_end, next_label = runs[i + 1]
                runs[i] = (start, next_end, next_label)
                runs.pop(i + 1)
            else:
                i += 1
        else:
            i += 1
    return runs


def min_region_size(n_bins: int) -> int:
    """max(3, int(5 % of bins))."""
    return max(3, int(MIN_REGION_FRACTION * n_bins))


def segmentation_score(
    runs: list[tuple[int, int, int]], residuals: np.ndarray, *, min_regions: int, max_regions: int
) -> float:
    """-|regions - requested| - length-weighted within-region variance (-inf below min_regions)."""
    within = sum(np.var(residuals[s : e + 1]) * (e - s + 1) for s, e, _ in runs) / len(residuals)
    if len(runs) < min_regions:
        return -np.inf
    return -abs(len(runs) - max_regions) - float(within)


def classify_regions(runs: list[tuple[int, int, int]], residuals: np.ndarray) -> list[Region]:
    """Uniform if std of its residuals < 0.7 x std of all residuals, else variation."""
    overall = float(np.std(residuals))
    return [
        Region(
            s,
            e,
            "uniform"
            if np.std(residuals[s : e + 1]) < UNIFORM_STD_RATIO * overall
            else "variation",
        )
        for s, e, _ in runs
    ]


def kmeans_regions(
    residuals: np.ndarray, *, min_regions: int = 1, max_regions: int = 3
) -> tuple[list[Region], int]:
    """Segment the residual profile with K-means for k in min..max and pick the best-scoring k.

    Returns:
        (regions sorted by start, chosen k; 0 when too few bins for clustering).
    """
    residuals = np.asarray(residuals, np.float64)
    if residuals.size < max(min_regions, 1) or residuals.size < 2:
        return [Region(0, max(residuals.size - 1, 0), "unknown")], 0
    features = residual_features(residuals)
    best_runs: list[tuple[int, int, int]] = []
    best_score, best_k = -np.inf, 0
    for k in range(min_regions, max_regions + 1):
        if k > residuals.size:
            break
        labels = KMeans(
            n_clusters=k, random_state=KMEANS_RANDOM_STATE, n_init=KMEANS_N_INIT
        ).fit_predict(features)
        runs = merge_short_runs(label_runs(labels), min_region_size(residuals.size))
        score = segmentation_score(
            runs, residuals, min_regions=min_regions, max_regions=max_regions
        )
        if score > best_score:
            best_score, best_runs, best_k = score, runs, k
    best_runs.sort(key=lambda r: r[0])
    return classify_regions(best_runs, residuals), best_k
