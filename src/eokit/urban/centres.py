"""Urban centres: threshold between two Gaussians of urban values, centre clusters (step 5)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from eokit.core.errors import DataError
from eokit.urban.segment import MixtureFit, decompose_histogram

logger = logging.getLogger(__name__)


def centre_threshold(
    fused: np.ndarray, urban_mask: np.ndarray, *, closed_form: bool = False
) -> MixtureFit:
    """Fit 2 Gaussians to the non-zero C values inside the urban mask; their intersection.

    Raises:
        DataError: if the urban mask is empty.
    """
    if not urban_mask.any():
        raise DataError(
            "no urban pixels found: the fused optical+SAR signal has no urban mode "
            "(check that the scene contains a city and the inputs are the right pair)"
        )
    return decompose_histogram(
        fused * urban_mask, 2, exclude_zeros=True, closed_form=closed_form, em=closed_form
    )


def centre_mask(fused: np.ndarray, urban_mask: np.ndarray, threshold: float) -> np.ndarray:
    """All urban pixels with C > tau_center (not one point per centre)."""
    return np.asarray((fused > threshold) & urban_mask, dtype=bool)


@dataclass
class CentreCluster:
    """One connected group of centre pixels."""

    label: int
    area_px: int
    row: float
    col: float


def centre_clusters(
    centres: np.ndarray, *, min_area_px: int = 1, merge_distance_px: int = 0
) -> tuple[np.ndarray, list[CentreCluster]]:
    """8-connected clusters of centre pixels, optionally merging clusters closer than a distance.

    Args:
        centres: (H, W) bool centre mask.
        min_area_px: Drop clusters smaller than this (after merging).
        merge_distance_px: Clusters whose pixels come closer than this are one centre (the mask is
            dilated by a disc of this radius to find groups; areas are counted on the mask itself).

    Returns:
        (labels (H, W) int32 with 0 = none, clusters sorted by area, largest first).
    """
    mask = centres.astype(np.uint8)
    if merge_distance_px > 0:
        size = 2 * merge_distance_px + 1
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        grouped = cv2.dilate(mask, disc) > 0
        groups, _ = ndimage.label(grouped, structure=np.ones((3, 3)))
        labels = np.where(centres, groups, 0).astype(np.int32)
    else:
        labels, _ = ndimage.label(centres, structure=np.ones((3, 3)))
        labels = labels.astype(np.int32)
    ids = np.unique(labels[labels > 0])
    if ids.size == 0:
        return labels, []
    areas = ndimage.sum_labels(np.ones_like(labels), labels, ids)
    coms = ndimage.center_of_mass(np.ones_like(labels), labels, ids)
    clusters = [
        CentreCluster(int(i), int(a), float(c[0]), float(c[1]))
        for i, a, c in zip(ids, areas, coms, strict=True)
        if a >= min_area_px
    ]
    kept = {c.label for c in clusters}
    labels = np.where(np.isin(labels, list(kept)), labels, 0).astype(np.int32)
    clusters.sort(key=lambda c: -c.area_px)
    return labels, clusters


def require_centres(centres: np.ndarray) -> None:
    """Raise a clear error when no centre pixel exists (the distance transform needs one)."""
    if not centres.any():
        raise DataError("no urban-centre pixels found above the centre threshold")
