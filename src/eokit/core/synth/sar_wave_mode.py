"""Sentinel-1 Wave-Mode-like imagettes of the ten TenGeoP phenomena, redundant and heavy-tailed.

Each imagette is a single-channel VV sigma0 field in dB: a mean set by the wind speed (a rough
fit of the CMOD trend at ~23 deg incidence: -17 dB at 3 m/s, -11.5 dB at 7 m/s, -6.5 dB at
15 m/s), a swell modulation whose contrast grows with the significant wave height and whose
wavelength grows with the wave period, the phenomenon's own texture, and multiplicative gamma
speckle (4 looks). Class frequencies follow a Zipf law (pure ocean waves dominate, icebergs are
rarest) and a fraction of the imagettes are near-duplicates of an earlier one (same scene, new
speckle, a few pixels of shift), like consecutive Wave Mode imagettes over the same ocean.

What is realistic: single channel, dB range, speckle statistics, the ordering of mean
backscatter with wind speed, redundancy and the long tail. What is not: the textures are
procedural caricatures (no radar imaging of waves: no velocity bunching, no azimuth cut-off),
the pixel size is nominal (the whole 20 km imagette is squeezed into a few dozen pixels), and the
wind/wave targets are tied to the texture by construction, so they are easier to regress than
buoy or model collocations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SAR_PHENOMENA", "SarImagettes", "sar_wave_mode", "write_imagette_folder"]

#: The ten TenGeoP-SARwv classes, most frequent first (Zipf ranks).
SAR_PHENOMENA: tuple[str, ...] = (
    "pure_ocean_waves",
    "wind_streaks",
    "micro_convective_cells",
    "low_wind_area",
    "rain_cells",
    "atmospheric_front",
    "oceanic_front",
    "biological_slicks",
    "sea_ice",
    "icebergs",
)


@dataclass
class SarImagettes:
    """A simulated imagette set.

    Attributes:
        images: ``(N, 1, S, S)`` float32 VV sigma0 in dB.
        label: ``(N,)`` int64 index into :data:`SAR_PHENOMENA`.
        wind_speed: ``(N,)`` float32 wind speed at 10 m, m/s.
        wave_height: ``(N,)`` float32 significant wave height, m.
        duplicate_of: ``(N,)`` int64 index of the imagette this one nearly duplicates, or -1.
        class_names: The class names.
    """

    images: np.ndarray
    label: np.ndarray
    wind_speed: np.ndarray
    wave_height: np.ndarray
    duplicate_of: np.ndarray
    class_names: tuple[str, ...] = SAR_PHENOMENA


def _noise(rng: np.random.Generator, size: int, scale: float,
           anisotropy: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """Unit-variance Gaussian-filtered noise with correlation length ``scale`` pixels."""
    white = rng.standard_normal((size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    c, s = math.cos(angle), math.sin(angle)
    along = fx * c + fy * s
    across = -fx * s + fy * c
    envelope = np.exp(-2 * (math.pi * scale) ** 2 * (along ** 2 * anisotropy ** 2 + across ** 2))
    field: np.ndarray = np.real(np.fft.ifft2(np.fft.fft2(white) * envelope))
    result: np.ndarray = field / max(float(field.std()), 1e-9)
    return result


def _mean_db(wind_speed: float) -> float:
    return -17.0 + 15.0 * math.log10(max(wind_speed, 0.3) / 3.0)


def _scene(rng: np.random.Generator, label: int, size: int, wind: float,
           hs: float) -> np.ndarray:
    """Speckle-free sigma0 field in dB for one phenomenon."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    base = np.full((size, size), _mean_db(wind))
    # Swell: wavelength (in image fractions) grows with the period, contrast with Hs.
    period = 6.0 + 1.6 * hs
    wavelength = 0.04 + 0.004 * period
    direction = rng.uniform(0, math.pi)
    phase = (xx * math.cos(direction) + yy * math.sin(direction)) / wavelength
    swell = np.sin(2 * math.pi * phase + 0.6 * _noise(rng, size, size / 10))
    contrast = 0.35 * hs
    name = SAR_PHENOMENA[label]
    if name == "pure_ocean_waves":
        texture = contrast * swell
    elif name == "wind_streaks":
        wind_dir = rng.uniform(0, math.pi)
        texture = 1.6 * _noise(rng, size, size / 40, anisotropy=6.0, angle=wind_dir) \
            + 0.4 * contrast * swell
    elif name == "micro_convective_cells":
        cells = _noise(rng, size, size / 12)
        texture = 2.2 * np.tanh(1.5 * cells) + 0.3 * contrast * swell
    elif name == "low_wind_area":
        texture = 0.8 * _noise(rng, size, size / 6)
    elif name == "rain_cells":
        texture = 0.2 * contrast * swell
        for _ in range(int(rng.integers(1, 4))):
            cy, cx, r = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), rng.uniform(0.06, 0.2)
            d = np.hypot(yy - cy, xx - cx) / r
            texture += 5.0 * np.exp(-((d - 1.0) / 0.25) ** 2) - 4.0 * np.exp(-(d / 0.7) ** 2)
    elif name == "atmospheric_front":
        angle = rng.uniform(0, math.pi)
        signed = (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle) \
            + 0.05 * _noise(rng, size, size / 8)
        texture = 4.0 * np.tanh(signed / 0.02) + 0.5 * contrast * swell
    elif name == "oceanic_front":
        angle = rng.uniform(0, math.pi)
        signed = (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle) \
            + 0.12 * np.sin(2 * math.pi * 2 * (xx * math.sin(angle) - yy * math.cos(angle)))
        texture = contrast * swell * (signed > 0) + 0.3 * contrast * swell * (signed <= 0) \
            + 3.0 * np.exp(-(signed / 0.015) ** 2)
    elif name == "biological_slicks":
        filaments = np.abs(_noise(rng, size, size / 16))
        texture = -6.0 * np.exp(-(filaments / 0.25) ** 2) + 0.6 * contrast * swell
    elif name == "sea_ice":
        floes = _noise(rng, size, size / 10)
        texture = 7.0 * (floes > 0.2) - 2.0 + 2.0 * _noise(rng, size, size / 60)
    else:  # icebergs
        texture = 0.6 * contrast * swell
        for _ in range(int(rng.integers(1, 5))):
            cy, cx = rng.uniform(0.05, 0.95, size=2)
            texture += 14.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.012 ** 2))
    result: np.ndarray = base + texture
    return result


def _targets(rng: np.random.Generator, label: int) -> tuple[float, float]:
    name = SAR_PHENOMENA[label]
    low, high = {"low_wind_area": (0.5, 2.5), "wind_streaks": (7.0, 16.0),
                 "micro_convective_cells": (4.0, 10.0), "sea_ice": (2.0, 10.0),
                 "biological_slicks": (1.5, 5.0)}.get(name, (3.0, 13.0))
    wind = float(rng.uniform(low, high))
    # Wind sea grows with the wind (fully developed ~0.022 u^2) plus a swell part.
    hs = float(0.022 * wind ** 2 + rng.gamma(2.0, 0.6))
    if name == "sea_ice":
        hs *= 0.3  # ice damps the waves
    return wind, min(hs, 12.0)


def sar_wave_mode(count: int, *, size: int = 48, seed: int = 0, zipf_exponent: float = 1.3,
                  duplicate_fraction: float = 0.3, looks: int = 4,
                  class_probabilities: np.ndarray | None = None) -> SarImagettes:
    """Simulate ``count`` imagettes with Zipf class frequencies and near-duplicates.

    Args:
        count: Number of imagettes.
        size: Side in pixels.
        seed: Seed (the set is deterministic for a seed).
        zipf_exponent: Class ``r`` (0-based frequency rank) has weight ``1 / (r + 1) ** s``.
        duplicate_fraction: Probability that an imagette repeats an earlier one of its class.
        looks: Speckle looks (gamma shape).
        class_probabilities: Explicit class frequencies instead of the Zipf law (e.g. uniform
            for a balanced test set).

    Returns:
        The imagettes and their labels and targets.
    """
    if count < 1 or size < 8:
        raise ValueError("count >= 1 and size >= 8 required")
    if not 0 <= duplicate_fraction < 1:
        raise ValueError("duplicate_fraction must lie in [0, 1)")
    rng = np.random.default_rng(seed)
    k = len(SAR_PHENOMENA)
    if class_probabilities is None:
        weights = 1.0 / np.arange(1, k + 1) ** zipf_exponent
    else:
        weights = np.asarray(class_probabilities, dtype=np.float64)
    probabilities = weights / weights.sum()
    labels = rng.choice(k, size=count, p=probabilities)
    images = np.empty((count, 1, size, size), dtype=np.float32)
    wind = np.empty(count, dtype=np.float32)
    hs = np.empty(count, dtype=np.float32)
    duplicate_of = np.full(count, -1, dtype=np.int64)
    clean: dict[int, np.ndarray] = {}
    last_of_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        label = int(label)
        earlier = last_of_class.get(label, [])
        if earlier and rng.random() < duplicate_fraction:
            source = earlier[int(rng.integers(len(earlier)))]
            shift = rng.integers(-2, 3, size=2)
            field = np.roll(clean[source], tuple(int(v) for v in shift), axis=(0, 1))
            wind[i], hs[i] = wind[source], hs[source]
            duplicate_of[i] = source
        else:
            wind[i], hs[i] = _targets(rng, label)
            field = _scene(rng, label, size, float(wind[i]), float(hs[i]))
            clean[i] = field
            earlier.append(i)
            if len(earlier) > 32:
                clean.pop(earlier.pop(0), None)
            last_of_class[label] = earlier
        linear = 10.0 ** (field / 10.0) * rng.gamma(looks, 1.0 / looks, size=field.shape)
        images[i, 0] = 10.0 * np.log10(np.maximum(linear, 1e-6))
    return SarImagettes(images=images, label=labels.astype(np.int64), wind_speed=wind,
                        wave_height=hs, duplicate_of=duplicate_of)


def write_imagette_folder(data: SarImagettes, folder: str | Path, *, low_db: float = -30.0,
                          high_db: float = 0.0) -> Path:
    """Write 8-bit PNG quick-looks (dB mapped linearly from [low, high] to 0-255) + labels.csv.

    Returns:
        The folder. ``labels.csv`` has ``filename,label,class,wind_speed_m_s,wave_height_m``.
    """
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["filename,label,class,wind_speed_m_s,wave_height_m,duplicate_of"]
    width = len(str(len(data.images)))
    for i, image in enumerate(data.images):
        name = f"sim-wv-{i:0{width}d}.png"
        scaled = np.clip((image[0] - low_db) / (high_db - low_db), 0, 1) * 255
        if not cv2.imwrite(str(folder / name), np.rint(scaled).astype(np.uint8)):
            raise OSError(f"could not write {folder / name}")
        lines.append(f"{name},{int(data.label[i])},{data.class_names[int(data.label[i])]},"
                     f"{float(data.wind_speed[i]):.3f},{float(data.wave_height[i]):.3f},"
                     f"{int(data.duplicate_of[i])}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
