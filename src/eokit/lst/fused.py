"""Fused single-channel (SC) retrieval kernel: DN → radiance → NDVI emissivity → Ts per chunk.

The SC formula is a dozen elementwise operations, so whole-array numpy spends its time moving
temporaries through memory. Here each chunk is small enough for its few float32 buffers to stay
in L2, every operation works in place on them (no float64 promotion, no ``np.where`` copies),
and chunks run on a thread pool (numpy releases the GIL), so the scene is read and written once.
numexpr (float64 for Python-float constants, no VML in the wheel) was measured 3-8x slower than
this on the benchmark machine, so it is not used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from eokit.lst.baselines import SingleChannel

logger = logging.getLogger(__name__)

#: NDVI-THM constants (Sobrino et al. 2008), equal to those of eokit.lst.scene.
NDVI_SOIL, NDVI_VEG = 0.2, 0.5
EPS_SOIL, EPS_VEG, EPS_WATER, CAVITY = 0.971, 0.987, 0.991, 0.005

#: Pixels per chunk (256 KiB per float32 buffer): large enough to amortise the per-call cost of
#: the ~35 numpy operations, small enough for the working buffers to stay near L2 (measured).
CHUNK_PIXELS = 65536

_NAN = np.float32(np.nan)


def radiance_chunk(thermal: np.ndarray, mult: float | None, add: float | None) -> np.ndarray:
    """TOA radiance (float32, NaN = nodata) of a chunk: DN with ``mult``/``add`` (0 = fill)."""
    data = thermal.astype(np.float32)
    if mult is None or add is None:
        return data
    fill = data <= 0
    data *= np.float32(mult)
    data += np.float32(add)
    if fill.any():
        data[fill] = _NAN
    return data


def ndvi_emissivity_chunk(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """NDVI-THM emissivity (float32) of a chunk, same values as ``scene.ndvi_emissivity``."""
    red = np.asarray(red, dtype=np.float32)
    nir = np.asarray(nir, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = nir - red
        total = nir + red
        ndvi /= total
    # ε = ε_s + Pv·(ε_v − ε_s + 4c(1 − Pv)), Pv = clip((NDVI − 0.2)/0.3, 0, 1)²
    pv = ndvi - np.float32(NDVI_SOIL)
    pv *= np.float32(1.0 / (NDVI_VEG - NDVI_SOIL))
    np.clip(pv, 0.0, 1.0, out=pv)
    pv *= pv
    eps: np.ndarray = pv * np.float32(-4 * CAVITY)
    eps += np.float32(EPS_VEG - EPS_SOIL + 4 * CAVITY)
    eps *= pv
    eps += np.float32(EPS_SOIL)
    # the clipped formula gives ε_s below 0.2 and ε_v above 0.5; the other branches are added as
    # mask × step, which is several times faster than np.where on mixed scenes (no branches)
    eps += np.multiply(ndvi > np.float32(NDVI_VEG), np.float32(CAVITY), dtype=np.float32)
    eps += np.multiply(ndvi < 0, np.float32(EPS_WATER - EPS_SOIL), dtype=np.float32)
    with np.errstate(invalid="ignore"):
        ndvi *= 0  # 0, or NaN where NDVI is NaN or ±inf (red + nir = 0)
    eps += ndvi
    return eps


def sc_chunk(
    radiance: np.ndarray,
    water_vapour: np.ndarray | float,
    sc: SingleChannel,
    emissivity: np.ndarray | float,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """SC Ts (K, float32) of one chunk; radiance <= 0 or NaN gives NaN. No validation here.

    ``out`` (float32, the radiance shape) receives the result when given.
    """
    rad = np.asarray(radiance, dtype=np.float32)
    w = np.asarray(water_vapour, dtype=np.float32)
    coefficients = np.asarray(sc.coefficients, dtype=np.float64)
    psi: list[float | np.ndarray] = []
    for i in range(3):
        c2, c1, c0 = (float(v) for v in coefficients[i])
        # a scalar w keeps ψ a Python float, so numpy does not promote the chunk to float64
        if w.ndim == 0:
            psi.append(c2 * float(w) ** 2 + c1 * float(w) + c0)
        else:
            psi.append((c2 * w + c1) * w + c0)
    k1, k2, a, b = (float(v) for v in sc.band.planck_fit)
    with np.errstate(divide="ignore", invalid="ignore"):
        if not np.fmin.reduce(rad, axis=None) > 0:  # zero radiance is nodata, as in retrieve_block
            rad = rad.copy()
            np.copyto(rad, _NAN, where=rad <= 0)
        tb = np.divide(k1, rad, dtype=np.float32)
        np.log1p(tb, out=tb)
        np.divide(k2, tb, out=tb)
        tb -= b
        tb *= 1.0 / a
        # Ts = γ[(ψ1·L + ψ2)/ε + ψ3] + δ = Tb²/bγ·(A/L − 1) + Tb,  A = (ψ1·L + ψ2)/ε + ψ3
        if out is None or rad.shape != out.shape:
            ts = np.multiply(rad, psi[0], dtype=np.float32)
        else:
            ts = np.multiply(rad, psi[0], out=out, dtype=np.float32)
        ts += psi[1]
        ts /= emissivity
        ts += psi[2]
        ts /= rad
        ts -= 1.0
        ts *= tb
        ts *= tb
        ts *= 1.0 / sc.b_gamma
        ts += tb
    if out is not None and ts is not out:
        out[...] = ts
        return out
    return np.asarray(np.broadcast_to(ts, radiance.shape), dtype=np.float32)


def default_threads() -> int:
    """Worker threads for chunked kernels: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def run_chunks(starts: range, work: Callable[[int], None], threads: int | None = None) -> None:
    """Run ``work(start)`` for every chunk start, every n-th chunk per thread with several CPUs.

    One task per thread: per-chunk tasks cost more in thread hand-offs than they save.
    """
    threads = min(default_threads() if threads is None else threads, len(starts))
    if threads <= 1:
        for start in starts:
            work(start)
        return

    def band(index: int) -> None:
        for start in starts[index::threads]:
            work(start)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(band, index) for index in range(threads)]:
            future.result()  # re-raise the first error (an InputError of a bad chunk)
