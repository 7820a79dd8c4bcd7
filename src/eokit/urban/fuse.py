"""Optical edge density, SAR scaling and their fused, denoised urban signal (paper steps 1-2)."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from eokit.core.errors import InputError

logger = logging.getLogger(__name__)

#: Gaussian blur window of the edge-density map (pixels); sigma follows from it (OpenCV rule).
BLUR_KERNEL = 15
#: Non-local-means parameters of the published procedure: filter strength, template, search window.
NLM_H = 10
NLM_TEMPLATE = 7
NLM_SEARCH = 21
#: Fused value C lies in [0, 2]; this factor maps it to 8 bit and back.
FUSED_SCALE = 127.5


def to_grey(rgb: np.ndarray, *, name: str = "optical") -> np.ndarray:
    """Luma of an RGB image with OpenCV's weights (0.299 R + 0.587 G + 0.114 B).

    Args:
        rgb: (3, H, W) or (H, W, 3) uint8 true-colour image, RGB order.
        name: Parameter name used in error messages.

    Returns:
        (H, W) uint8 grey image.

    Raises:
        InputError: if the image is not a 3-band image.
    """
    array = np.asarray(rgb)
    if array.ndim == 3 and array.shape[0] <= 4 < array.shape[-1]:
        array = np.moveaxis(array, 0, -1)
    if array.ndim != 3 or array.shape[-1] < 3:
        raise InputError(
            f"expected a 3-band (RGB) image, got shape {tuple(np.shape(rgb))}", parameter=name
        )
    array = np.ascontiguousarray(array[..., :3])
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return cv2.cvtColor(array, cv2.COLOR_RGB2GRAY)


def sobel_magnitude(grey: np.ndarray) -> np.ndarray:
    """3x3 Sobel gradient magnitude (float64) of a grey image."""
    gx = cv2.Sobel(grey, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_64F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy)


def scale_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Min-max scale to 0..255 and round like ``cv2.normalize(..., NORM_MINMAX, CV_8U)``."""
    span = high - low
    if span <= 0:
        return np.zeros(values.shape, np.uint8)
    scaled = (values - low) * (255.0 / span)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def blur_edges(edges_u8: np.ndarray) -> np.ndarray:
    """15x15 Gaussian blur of the 8-bit edge map (sigma derived from the kernel size)."""
    return cv2.GaussianBlur(edges_u8, (BLUR_KERNEL, BLUR_KERNEL), 0)


def edge_density(rgb: np.ndarray) -> np.ndarray:
    """Step 1: optical edge density E in [0, 1].

    Grey -> 3x3 Sobel x/y -> magnitude -> min-max to 8 bit -> 15x15 Gaussian blur -> / max.

    Args:
        rgb: (3, H, W) or (H, W, 3) uint8 true-colour image.

    Returns:
        (H, W) float64 edge density in [0, 1].

    Raises:
        InputError: if the image is single-band or has no edges at all (constant image).
    """
    grey = to_grey(rgb)
    magnitude = sobel_magnitude(grey)
    edges = cv2.normalize(magnitude, None, 0, 255, cv2.NORM_MINMAX, cv2.CV_8U)  # type: ignore[call-overload]
    blurred = blur_edges(edges)
    peak = float(blurred.max())
    if peak <= 0:
        raise InputError("the optical image is constant (no edges)", parameter="optical")
    return blurred.astype(np.float64) / peak


def sar_unit(sar: np.ndarray) -> np.ndarray:
    """Step 2a: SAR rendering (8-bit grey, or RGB rendered grey) scaled to S in [0, 1].

    Args:
        sar: (H, W) uint8 or (3, H, W)/(H, W, 3) uint8 greyscale rendering of VV gamma0 in dB.

    Returns:
        (H, W) float64 in [0, 1].
    """
    array = np.asarray(sar)
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:2])
    if array.ndim == 3:
        array = to_grey(array, name="sar")
    if array.ndim != 2:
        raise InputError(f"expected a 2-D SAR image, got shape {array.shape}", parameter="sar")
    return np.asarray(np.clip(array, 0, 255), dtype=np.float64) / 255.0


def quantise_fused(fused: np.ndarray) -> np.ndarray:
    """C in [0, 2] -> 8 bit (C * 127.5, clipped, truncated like the published ``astype``)."""
    return np.clip(fused * FUSED_SCALE, 0, 255).astype(np.uint8)


def denoise_fused_u8(fused_u8: np.ndarray) -> np.ndarray:
    """Non-local-means denoising (h=10, template 7, search 21) of the 8-bit fused image."""
    return cv2.fastNlMeansDenoising(fused_u8, None, NLM_H, NLM_TEMPLATE, NLM_SEARCH)


def fuse(edge: np.ndarray, sar01: np.ndarray) -> np.ndarray:
    """Step 2b: C = E + S, quantised, NLM-denoised and returned in [0, 2] (float64).

    Args:
        edge: (H, W) edge density in [0, 1].
        sar01: (H, W) SAR in [0, 1], same shape.

    Raises:
        InputError: if the shapes differ.
    """
    if edge.shape != sar01.shape:
        raise InputError(
            f"optical {edge.shape[::-1]} and SAR {sar01.shape[::-1]} (width, height) differ",
            parameter="sar",
        )
    smoothed = denoise_fused_u8(quantise_fused(edge + sar01))
    return smoothed.astype(np.float64) / FUSED_SCALE
