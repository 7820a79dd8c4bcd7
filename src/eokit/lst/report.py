"""LST report sections: map with colour bar, histogram and summary statistics from an LST raster."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from eokit.core.report import Report

logger = logging.getLogger(__name__)


def read_preview(path: str | Path, max_side: int = 1024) -> tuple[np.ndarray, float]:
    """Decimated (H', W') float32 view of a one-band raster (NaN = nodata) and its pixel size (m).

    Reads through GDAL overviews, so a scene larger than memory is previewed cheaply.
    """
    import rasterio

    from eokit.core.raster import raster_info

    grid, _, _ = raster_info(path)
    step = max(1, int(np.ceil(max(grid.height, grid.width) / max_side)))
    shape = (max(1, grid.height // step), max(1, grid.width // step))
    with rasterio.open(path) as src:
        data = src.read(1, out_shape=shape, masked=True).astype(np.float32)
    array = np.ma.filled(data, np.nan)
    try:
        pixel = grid.pixel_size_m * grid.width / shape[1]
    except Exception:  # no georeference: no scale bar
        pixel = float("nan")
    return array, pixel


def lst_statistics(array: np.ndarray) -> dict[str, Any]:
    """Summary statistics of valid LST values (K)."""
    valid = array[np.isfinite(array)]
    if valid.size == 0:
        return {"valid_pixels": 0}
    p2, p50, p98 = np.percentile(valid, [2, 50, 98])
    return {
        "valid_pixels": int(valid.size),
        "mean_k": float(valid.mean()),
        "std_k": float(valid.std()),
        "p2_k": float(p2),
        "median_k": float(p50),
        "p98_k": float(p98),
        "min_k": float(valid.min()),
        "max_k": float(valid.max()),
    }


def add_lst_section(
    report: Report,
    lst_path: str | Path,
    *,
    title: str,
    method: str,
    text: str | None = None,
    truth: np.ndarray | None = None,
    plausibility: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Add a section with the LST map (colour bar in K), its histogram and statistics.

    Args:
        report: The report.
        lst_path: LST GeoTIFF.
        title: Section title.
        method: Retrieval method name (shown).
        text: Optional markdown paragraph.
        truth: Optional true LST on the same preview grid: adds error statistics and a histogram.
        plausibility: Counts of the retrieval's plausibility mask
            (:meth:`eokit.lst.scene.RetrievalResult.as_dict`): stated in the text and metrics.

    Returns:
        The statistics shown.
    """
    import matplotlib.pyplot as plt

    preview, pixel = read_preview(lst_path)
    stats = lst_statistics(preview)
    if plausibility is not None:
        masked = int(plausibility.get("implausible_masked", 0))
        total = int(plausibility.get("retrievable_pixels", 0))
        note = (
            f"**{masked} of {total} retrievable pixels ({100 * masked / max(total, 1):.2f} %) gave "
            f"an LST outside the plausible 180–380 K** "
            f"({plausibility.get('implausible_below_180k', 0)} below, "
            f"{plausibility.get('implausible_above_380k', 0)} above, "
            f"{plausibility.get('not_invertible', 0)} not invertible); they are nodata in the map."
            if masked
            else "Every retrievable pixel gave an LST within the plausible 180–380 K."
        )
        text = f"{text}\n\n{note}" if text else note
    report.section(title, text)
    vmin, vmax = (stats.get("p2_k"), stats.get("p98_k")) if stats["valid_pixels"] else (None, None)
    report.image_map(
        preview,
        title=f"LST ({method})",
        pixel_size_m=pixel if np.isfinite(pixel) else None,
        cmap="inferno",
        vmin=vmin,
        vmax=vmax,
        colorbar_label="LST [K]",
        caption=f"Land-surface temperature from {Path(lst_path).name}",
    )
    fig, axes = plt.subplots(
        1, 2 if truth is not None else 1, figsize=(9 if truth is not None else 5, 3.2)
    )
    axes = np.atleast_1d(axes)
    valid = preview[np.isfinite(preview)]
    axes[0].hist(valid, bins=60, color="#c0504d")
    axes[0].set_xlabel("LST [K]")
    axes[0].set_ylabel("pixels")
    axes[0].set_title("LST histogram")
    if truth is not None:
        error = (preview - truth)[np.isfinite(preview) & np.isfinite(truth)]
        axes[1].hist(error, bins=60, color="#4f81bd")
        axes[1].set_xlabel("retrieved − true LST [K]")
        axes[1].set_title("error histogram")
        stats.update({"rmse_k": float(np.sqrt(np.mean(error**2))), "bias_k": float(error.mean())})
    fig.tight_layout()
    report.figure(
        fig,
        caption="Distribution of retrieved LST"
        + (" and of its error against the simulated truth" if truth is not None else ""),
    )
    shown: dict[str, Any] = {"method": method, **stats}
    if plausibility is not None:
        shown["implausible_masked"] = int(plausibility.get("implausible_masked", 0))
    report.metrics(
        shown,
        caption="LST statistics (preview resolution)",
    )
    return stats
