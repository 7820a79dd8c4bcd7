"""Map writing for fine-tuned series models: per-date probability COGs, change maps and a report.

Rasters are processed in blocks of rows (the reader reads only those rows of every date), so a
scene larger than memory streams through; outputs are written window by window and finalised
atomically as Cloud-Optimized GeoTIFFs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eokit.core.errors import DataError, InputError
from eokit.timeseries.data import SeriesReader, iter_row_blocks
from eokit.timeseries.model import FineTunedSeriesModel
from eokit.timeseries.task import (
    forecast_residual_series,
    forest_change_dates,
    predict_series,
    refine_change_dates,
)

logger = logging.getLogger(__name__)

#: Class names treated as forest for the change map when none are given.
FOREST_NAMES = ("forest", "conifer", "broadleaf", "trees", "tree")
#: Nodata of probability rasters (pixels never observed) and of date rasters.
PROBABILITY_NODATA = -1.0
DATE_NODATA = 0


#: Default largest gap, in days, between a requested map date and the acquisition it is mapped
#: at (Landsat's 16-day revisit; Sentinel-2 revisits every 5 days).
DATE_TOLERANCE_DAYS = 16.0


@dataclass(frozen=True)
class DateMatch:
    """A requested map date and the acquisition it is mapped at."""

    requested: str
    index: int
    acquisition: str
    offset_days: int  # acquisition - requested (negative: the acquisition is earlier)

    def describe(self) -> str:
        """``"2020-06-01 -> 2020-05-20 (12 days earlier)"``."""
        if self.offset_days == 0:
            return f"{self.requested} -> {self.acquisition} (same day)"
        side = "later" if self.offset_days > 0 else "earlier"
        days = abs(self.offset_days)
        return (f"{self.requested} -> {self.acquisition} "
                f"({days} day{'s' if days != 1 else ''} {side})")


def match_dates(available: np.ndarray, requested: Sequence[str] | str, *,
                tolerance_days: float = DATE_TOLERANCE_DAYS) -> list[DateMatch]:
    """Map each requested ISO date to the nearest acquisition (ties: the earlier one).

    Args:
        available: (T,) increasing acquisition dates.
        requested: ISO dates, comma separated or as a sequence.
        tolerance_days: Largest allowed distance to the nearest acquisition.

    Raises:
        InputError (naming ``dates``): a value is not an ISO date, or no acquisition lies within
            ``tolerance_days`` of it (e.g. before the series starts, after it ends, or in a gap).
    """
    from eokit.timeseries.data import parse_dates

    if not tolerance_days >= 0:
        raise InputError(f"must be >= 0, got {tolerance_days}", parameter="date_tolerance_days")
    if isinstance(requested, str):
        requested = [d for d in requested.split(",") if d.strip()]
    if not requested:
        raise InputError("no date given", parameter="dates")
    wanted = parse_dates(requested, parameter="dates").astype("datetime64[D]")
    days = np.asarray(available).astype("datetime64[D]")
    first, last = days[0], days[-1]
    out = []
    for value in wanted:
        gaps = (days - value).astype(np.int64)
        index = int(np.argmin(np.abs(gaps)))  # argmin keeps the first (earlier) of a tie
        offset = int(gaps[index])
        if abs(offset) > tolerance_days:
            where = ("before the first acquisition" if value < first else
                     "after the last acquisition" if value > last else
                     "in a gap of the series")
            raise InputError(
                f"{value} is {where}: the nearest acquisition, {days[index]}, is {abs(offset)} "
                f"days away (more than --date-tolerance-days {tolerance_days:g}; the series "
                f"covers {first} to {last})", parameter="dates")
        out.append(DateMatch(str(value), index, str(days[index]), offset))
    return out


def select_dates(available: np.ndarray, requested: Sequence[str] | str | None, *,
                 tolerance_days: float = DATE_TOLERANCE_DAYS) -> list[int]:
    """Indices of the dates to map.

    ``"all"``, ``"last"``, None (4 dates spread over the series) or ISO dates (each mapped to the
    nearest acquisition within ``tolerance_days``, see :func:`match_dates`).
    """
    n = len(available)
    if requested is None:
        return sorted({int(round(i)) for i in np.linspace(n // 4, n - 1, 4)})
    if isinstance(requested, str) and requested in ("all", "last"):
        return list(range(n)) if requested == "all" else [n - 1]
    matches = match_dates(available, requested, tolerance_days=tolerance_days)
    return sorted({m.index for m in matches})


def forest_class_indices(class_names: Sequence[str], forest: Sequence[str] | None) -> list[int]:
    """Indices of the forest classes (given names, or the usual forest names)."""
    names = [n.lower() for n in class_names]
    if forest:
        missing = [f for f in forest if f.lower() not in names]
        if missing:
            raise InputError(f"{missing} not among the model's classes {list(class_names)}",
                             parameter="forest_classes")
        return [names.index(f.lower()) for f in forest]
    return [i for i, n in enumerate(names) if n in FOREST_NAMES]


def date_code(dates: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Date indices -> int32 YYYYMMDD (0 where index < 0)."""
    days = dates.astype("datetime64[D]")
    text = np.array([str(d).replace("-", "") for d in days])
    codes = text.astype(np.int64).astype(np.int32)
    return np.where(index >= 0, codes[np.clip(index, 0, None)], DATE_NODATA).astype(np.int32)


@dataclass
class MapResult:
    """What :func:`write_maps` produced, plus small in-memory previews for the report."""

    files: dict[str, Path] = field(default_factory=dict)
    date_indices: list[int] = field(default_factory=list)
    dates: np.ndarray | None = None
    probability_preview: dict[int, np.ndarray] = field(default_factory=dict)  # (K, H, W)
    becomes_forest: np.ndarray | None = None
    stops_forest: np.ndarray | None = None
    stops_forest_refined: np.ndarray | None = None
    unobserved_pixels: int = 0
    pixels: int = 0
    spatial_window: int = 1
    date_matches: list[DateMatch] = field(default_factory=list)  # requested ISO dates only


def write_maps(
    model: FineTunedSeriesModel,
    reader: SeriesReader,
    out_dir: str | Path,
    *,
    dates: Sequence[str] | str | None = None,
    multiband: bool = False,
    forest_classes: Sequence[str] | None = None,
    rows_per_block: int = 64,
    persistence: int = 2,
    smooth: int = 5,
    hysteresis: float = 0.1,
    refine_dates: bool = True,
    spatial_window: int = 1,
    keep_preview: bool = True,
    progress: bool = True,
    date_tolerance_days: float = DATE_TOLERANCE_DAYS,
) -> MapResult:
    """Predict every pixel of a raster series and write probability and change COGs.

    Args:
        model: Fine-tuned classification model.
        reader: The raster series (read block by block).
        out_dir: Output folder.
        dates: Which dates to map (see :func:`select_dates`). Requested ISO dates are mapped
            at the nearest acquisition (logged, listed in the report and in each probability
            COG's ``requested_dates`` tag; the file is named after the acquisition).
        multiband: One COG with ``dates x classes`` bands instead of one COG per date.
        forest_classes: Class names counted as forest for the change maps.
        rows_per_block: Rows read and predicted at a time (memory bound).
        persistence: Consecutive valid dates confirming a forest change.
        smooth: Centred running median (valid dates) of the forest probability before dating.
        hysteresis: Half-width of the band around 0.5 in which the forest state is kept.
        refine_dates: Also write ``stops_forest_refined.tif``: each detected loss of forest moved
            to the date, within the year up to its detection, that departs most from the
            backbone's one-step forecast (:func:`~eokit.timeseries.task.refine_change_dates`;
            meaningful for a backbone kept frozen in fine-tuning, the default).
        spatial_window: Odd side of the square neighbourhood over which the probability maps
            are averaged (:func:`spatial_mean`; 1 = per pixel). Blocks are read with the
            neighbourhood's halo, so the result does not depend on ``rows_per_block``. The
            change maps stay per pixel.
        keep_preview: Keep the maps in memory for the report (small scenes).
        progress: Progress bar over row blocks.
        date_tolerance_days: Requested dates farther than this from every acquisition are
            refused (InputError naming ``dates``) before anything is written.

    Returns:
        Files written and previews.
    """
    from tqdm.auto import tqdm

    from eokit.core.raster import open_writer

    if model.task != "classification":
        raise InputError("predict maps need a classification model", parameter="model")
    full_grid = reader.grid
    height, width = full_grid.height, full_grid.width
    chosen = select_dates(reader.dates, dates, tolerance_days=date_tolerance_days)
    matches: list[DateMatch] = []
    if dates is not None and not (isinstance(dates, str) and dates in ("all", "last")):
        matches = match_dates(reader.dates, dates, tolerance_days=date_tolerance_days)
        for match in matches:
            logger.info("dates: %s", match.describe())
    date_text = [str(reader.dates[i].astype("datetime64[D]")) for i in chosen]
    requested_at = {d: ",".join(m.requested for m in matches if m.acquisition == d)
                    for d in date_text}
    classes = model.class_names
    forest = forest_class_indices(classes, forest_classes)
    check_window(spatial_window)
    halo = spatial_window // 2
    out = Path(out_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    result = MapResult(date_indices=chosen, dates=reader.dates, pixels=height * width,
                       spatial_window=spatial_window, date_matches=matches)
    if len(reader.dates) == 1:
        logger.warning("%s: a single date: the maps come from one observation per pixel and "
                       "the change maps cannot hold any change", reader.path)
    writers: dict[str, Any] = {}
    try:
        if multiband:
            path = out / "probabilities.tif"
            names = [f"{d}_{c}" for d in date_text for c in classes]
            tags = {"acquisition_dates": ",".join(date_text)}
            if matches:
                tags["requested_dates"] = ",".join(f"{m.requested}->{m.acquisition}"
                                                   for m in matches)
            writers["probabilities"] = open_writer(path, full_grid, len(names), "float32",
                                                   nodata=PROBABILITY_NODATA, cog=True,
                                                   band_names=names, tags=tags)
        else:
            for d in date_text:
                tags = {"acquisition_date": d}
                if requested_at[d]:
                    tags["requested_dates"] = requested_at[d]
                writers[f"probability_{d}"] = open_writer(
                    out / f"probability_{d}.tif", full_grid, len(classes), "float32",
                    nodata=PROBABILITY_NODATA, cog=True, band_names=list(classes), tags=tags)
        if forest:
            for name in ("becomes_forest", "stops_forest",
                         *(["stops_forest_refined"] if refine_dates else [])):
                writers[name] = open_writer(out / f"{name}.tif", full_grid, 1, "int32",
                                            nodata=DATE_NODATA, cog=True,
                                            band_names=[f"{name}_yyyymmdd"])
        for w in writers.values():
            w.__enter__()
        previews = {i: np.full((len(classes), height, width), np.nan, np.float32) for i in chosen}
        becomes_all = np.full((height, width), -1, np.int64)
        stops_all = np.full((height, width), -1, np.int64)
        refined_all = np.full((height, width), -1, np.int64)
        blocks = list(iter_row_blocks(height, rows_per_block))
        for row, rows in tqdm(blocks, desc="maps", disable=not progress or len(blocks) < 2,
                              leave=False):
            top, bottom = max(0, row - halo), min(height, row + rows + halo)
            wide = reader.read((top, 0, bottom - top, width))
            wide_probs = predict_series(model, wide)  # (N, T, K), NaN for never-observed pixels
            core = np.arange((row - top) * width, (row - top + rows) * width)
            block = wide if halo == 0 else wide.subset(core)
            probs = wide_probs[core]
            result.unobserved_pixels += int((~block.has_observation).sum())
            chosen_probs = spatial_mean(
                wide_probs[:, chosen, :].reshape(bottom - top, width, len(chosen), len(classes)),
                spatial_window)[row - top:row - top + rows]
            filled = np.where(np.isnan(chosen_probs), PROBABILITY_NODATA, chosen_probs)
            if multiband:
                cube = filled.reshape(rows, width, -1).transpose(2, 0, 1)
                writers["probabilities"].write_window(cube.astype(np.float32), row, 0)
            else:
                for j, d in enumerate(date_text):
                    writers[f"probability_{d}"].write_window(
                        filled[:, :, j, :].transpose(2, 0, 1).astype(np.float32), row, 0)
            if keep_preview:
                for j, i in enumerate(chosen):
                    previews[i][:, row:row + rows] = chosen_probs[:, :, j, :].transpose(2, 0, 1)
            if forest:
                forest_prob = probs[:, :, forest].sum(-1)
                becomes, stops = forest_change_dates(forest_prob, block.valid,
                                                     persistence=persistence,
                                                     warmup=_warmup_index(block.dates),
                                                     smooth=smooth, hysteresis=hysteresis)
                block_dates = reader.dates
                becomes_all[row:row + rows] = becomes.reshape(rows, width)
                stops_all[row:row + rows] = stops.reshape(rows, width)
                writers["becomes_forest"].write_window(
                    date_code(block_dates, becomes).reshape(1, rows, width), row, 0)
                writers["stops_forest"].write_window(
                    date_code(block_dates, stops).reshape(1, rows, width), row, 0)
                if refine_dates:
                    refined = refine_change_dates(
                        stops, forecast_residual_series(model.backbone, block), block_dates)
                    refined_all[row:row + rows] = refined.reshape(rows, width)
                    writers["stops_forest_refined"].write_window(
                        date_code(block_dates, refined).reshape(1, rows, width), row, 0)
        if result.unobserved_pixels == result.pixels:
            # Raised before the writers finalise: no all-nodata map is left behind.
            raise DataError(f"{reader.path}: no valid observation (every value is NaN or "
                            "nodata)")
    except BaseException as error:
        for w in writers.values():
            w.__exit__(type(error), error, None)
        if created and not any(out.iterdir()):
            out.rmdir()  # a failed run leaves no empty output folder either
        raise
    for w in writers.values():
        w.__exit__(None, None, None)
    result.files = {name: out / f"{name}.tif" for name in writers}
    if keep_preview:
        result.probability_preview = previews
        if forest:
            result.becomes_forest, result.stops_forest = becomes_all, stops_all
            if refine_dates:
                result.stops_forest_refined = refined_all
    return result


def check_window(window: int) -> None:
    """Raise unless ``window`` is a positive odd integer (the side of a centred neighbourhood)."""
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1 \
            or window % 2 == 0:
        raise InputError(f"must be an odd integer >= 1, got {window!r}",
                         parameter="spatial_window")


def spatial_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Average ``values`` (H, W, ...) over the centred ``window`` x ``window`` neighbourhood.

    Only finite values enter a mean (never-observed pixels, NaN, neither count nor dilute their
    neighbours; the neighbourhood is clipped at the raster's edge), and a pixel that is NaN stays
    NaN. Applied to class probabilities the result still sums to one over the classes. This is
    the usual spatial post-processing of per-pixel classifiers: land cover is spatially
    coherent, isolated single-pixel decisions are mostly noise.

    Args:
        values: (H, W, ...) array; trailing axes are averaged independently.
        window: Odd neighbourhood side in pixels; 1 returns ``values`` unchanged.
    """
    check_window(window)
    if window == 1:
        return values
    from scipy.ndimage import uniform_filter

    finite = np.isfinite(values)
    size = (window, window) + (1,) * (values.ndim - 2)
    total = uniform_filter(np.where(finite, values, 0.0).astype(np.float64), size=size,
                           mode="constant")
    count = uniform_filter(finite.astype(np.float64), size=size, mode="constant")
    out = total / np.maximum(count, 1e-12)
    return np.where(finite, out, np.nan).astype(values.dtype)


def _warmup_index(dates: np.ndarray | None, days: int = 180) -> int:
    """Index of the first date at least ``days`` after the start (short prefixes before it)."""
    if dates is None:
        return 0
    start = dates[0].astype("datetime64[D]")
    return int(np.searchsorted(dates.astype("datetime64[D]"), start + np.timedelta64(days, "D")))


# -- report ---------------------------------------------------------------------------------------
def _class_map(probabilities: np.ndarray) -> np.ndarray:
    """(K, H, W) probabilities -> (H, W) float class ids, NaN where no data."""
    missing = np.isnan(probabilities).any(axis=0)
    ids = np.nanargmax(np.where(np.isnan(probabilities), -1.0, probabilities), axis=0)
    return np.where(missing, np.nan, ids.astype(np.float32))


def _days_since(index: np.ndarray, dates: np.ndarray) -> np.ndarray:
    days = (dates.astype("datetime64[D]") - dates[0].astype("datetime64[D]")).astype(np.float32)
    return np.where(index >= 0, days[np.clip(index, 0, None)], np.nan)


def ndvi_or_first_band(series: np.ndarray, band_names: Sequence[str]) -> tuple[np.ndarray, str]:
    """(…, C) -> (…) NDVI when red and nir bands are named, else the first band."""
    names = [b.lower() for b in band_names]
    red = next((names.index(n) for n in ("red", "b4", "b04") if n in names), None)
    nir = next((names.index(n) for n in ("nir", "b8", "b08") if n in names), None)
    if red is not None and nir is not None:
        r, n = series[..., red], series[..., nir]
        return (n - r) / np.maximum(n + r, 1e-6), "NDVI"
    return series[..., 0], band_names[0]


def forecast_figure(dates: np.ndarray, series: np.ndarray, valid: np.ndarray,
                    future: np.ndarray, predicted: np.ndarray, band_names: Sequence[str],
                    labels: Sequence[str]) -> Any:
    """Observed (valid) values and forecasts for a few pixels, one panel each."""
    from matplotlib.figure import Figure

    n = series.shape[0]
    fig = Figure(figsize=(4.0 * min(n, 4), 3.0))
    observed, name = ndvi_or_first_band(series, band_names)
    forecast_values, _ = ndvi_or_first_band(predicted, band_names)
    for k in range(n):
        ax = fig.add_subplot(1, n, k + 1)
        ok = valid[k]
        ax.plot(dates[ok].astype("datetime64[D]"), observed[k][ok], ".", color="#2a7", ms=4,
                label="observed")
        ax.plot(future.astype("datetime64[D]"), forecast_values[k], "o-", color="#d40", ms=3,
                label="forecast")
        ax.set_title(labels[k], fontsize=9)
        ax.set_ylabel(name)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        if k == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def roc_pr_figure(curves: dict[str, dict[str, np.ndarray]], scores: dict[str, dict[str, float]]
                  ) -> Any:
    """ROC and PR curves, one line per class."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.8))
    roc, pr = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, curve in curves.items():
        roc.plot(curve["fpr"], curve["tpr"], label=f"{name} (AUC {scores[name]['roc_auc']:.3f})")
        pr.plot(curve["recall"], curve["precision"],
                label=f"{name} (AP {scores[name]['pr_auc']:.3f})")
    roc.plot([0, 1], [0, 1], ":", color="grey")
    roc.set_xlabel("false positive rate")
    roc.set_ylabel("true positive rate")
    pr.set_xlabel("recall")
    pr.set_ylabel("precision")
    for ax in (roc, pr):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def read_map_labels(labels: str | Path, reader: SeriesReader, class_names: Sequence[str], *,
                    label_map: dict[str, int] | None = None) -> np.ndarray:
    """Reference labels for a mapped scene: (H, W) class ids of ``class_names``, 255 = ignore.

    ``labels`` is a label GeoTIFF on the series' grid or, for an EOPatch input, a timeless
    feature inside the patch (``mask_timeless/LULC``); ``label_map`` remaps raw values first.
    Read before any map is written, so a bad label input fails fast.

    Raises:
        InputError: missing or unreadable labels, another grid, or values outside the classes.
    """
    from eokit.timeseries.data import (
        apply_label_map,
        check_labels,
        read_eopatch_labels,
        read_label_raster,
    )

    grid = reader.grid
    name = str(labels)
    if reader.layout == "eopatch" and not Path(name).suffix:
        raw = read_eopatch_labels(reader.path, name, (grid.height, grid.width)).reshape(-1)
        raw = raw.astype(np.int64)
    else:
        raw = read_label_raster(labels, grid, [str(i) for i in range(256)])
    truth = np.asarray(apply_label_map(raw, label_map), dtype=np.int64)
    check_labels(truth, class_names, source=Path(labels))
    present = np.unique(truth[truth != 255])
    if present.size == 0:
        raise InputError("no labelled pixel (every value is 255 or nodata"
                         + (" after --label-map)" if label_map else ")"), path=Path(labels))
    if present.size == 1:
        logger.warning("%s: every labelled pixel is %r: ROC and PR curves are undefined and "
                       "not drawn", labels, class_names[int(present[0])])
    return truth.reshape(grid.height, grid.width)


def predict_report(model: FineTunedSeriesModel, meta: dict[str, Any], reader: SeriesReader,
                   result: MapResult, *, truth: np.ndarray | None = None,
                   labels_name: str = "labels", command: str | None = None,
                   n_forecast_pixels: int = 4, seed: int = 0) -> Any:
    """HTML report: maps at the mapped dates, change maps, ROC/PR (labels given), forecasts.

    ``truth`` is the (H, W) reference of :func:`read_map_labels` (named ``labels_name``).
    """
    from eokit.core.metrics import binary_ranking_metrics, roc_pr_curves
    from eokit.core.report import Report

    report = Report("Pixel time-series canopy maps", command=command)
    grid = reader.grid
    try:
        pixel_size = grid.pixel_size_m
    except InputError:
        pixel_size = None
    dates = reader.dates
    report.section("Model", "Frozen EarthPT-style backbone with a small MLP head; every date is "
                   "classified from the causal prefix of observations up to that date.")
    compute = meta.get("compute") or {}
    facts: dict[str, Any] = {"classes": ", ".join(model.class_names),
                             "bands": ", ".join(model.backbone.config.band_names or []),
                             "dates in input": len(dates),
                             "pixels without any valid observation": result.unobserved_pixels}
    if "flops_ratio" in compute:
        facts["fine-tuning / pretraining FLOPs"] = f"{100 * compute['flops_ratio']:.2f} %"
        facts["fine-tuning pixels / pretraining pixels"] = f"{100 * compute['pixel_ratio']:.2f} %"
    report.metrics(facts, caption="Model and compute")
    context = "" if result.spatial_window == 1 else (
        f" Probabilities averaged over {result.spatial_window} x {result.spatial_window} pixel "
        "neighbourhoods (observed pixels only); the change maps are per pixel.")
    report.section("Maps", "Most likely class at each mapped date (grey: never observed)."
                   + context)
    if result.date_matches:
        report.table([{"requested date": m.requested, "mapped at acquisition": m.acquisition,
                       "offset (days)": m.offset_days} for m in result.date_matches])
    for index, probs in result.probability_preview.items():
        report.image_map(_class_map(probs), title=f"class on {str(dates[index])[:10]}",
                         pixel_size_m=pixel_size, classes=model.class_names)
    if result.becomes_forest is not None and result.stops_forest is not None:
        report.section("Change", f"Days after {str(dates[0])[:10]} when a pixel becomes forest or "
                       "stops being forest (confirmed by 2 consecutive valid dates; grey: no "
                       "change). GeoTIFFs store YYYYMMDD.")
        changes = [("becomes forest", result.becomes_forest),
                   ("stops being forest", result.stops_forest)]
        if result.stops_forest_refined is not None:
            changes.append(("stops being forest, dated by the backbone's forecast (largest "
                            "departure in the year up to the detection)",
                            result.stops_forest_refined))
        span = float((dates[-1].astype("datetime64[D]") - dates[0].astype("datetime64[D]"))
                     .astype(np.int64))  # one colour scale for every change map
        for name, change in changes:
            report.image_map(_days_since(change, dates), title=name, pixel_size_m=pixel_size,
                             cmap="plasma", colorbar_label="days since first date", vmin=0.0,
                             vmax=span)
    if truth is not None and result.probability_preview:
        latest = max(result.probability_preview)
        probs = result.probability_preview[latest]
        known = (truth != 255) & ~np.isnan(probs).any(axis=0)
        scores: dict[str, dict[str, float]] = {}
        curves: dict[str, dict[str, np.ndarray]] = {}
        for k, name in enumerate(model.class_names):
            positive = truth[known] == k
            if 0 < positive.sum() < positive.size:
                scores[name] = binary_ranking_metrics(probs[k][known], positive)
                curves[name] = roc_pr_curves(probs[k][known], positive)
        report.section("Accuracy", f"One-vs-rest ROC and PR curves against {labels_name} "
                       f"on {str(dates[latest])[:10]} ({int(known.sum())} labelled pixels).")
        if curves:
            report.table([{"class": n, **s} for n, s in scores.items()])
            report.figure(roc_pr_figure(curves, scores))
    # Forecast for a few observed pixels.
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, grid.height, size=n_forecast_pixels * 3)
    cols = rng.integers(0, grid.width, size=n_forecast_pixels * 3)
    picked = []
    for r, c in zip(rows, cols, strict=True):
        pixel = reader.read((int(r), int(c), 1, 1))
        if pixel.valid.sum() >= 3:
            picked.append((int(r), int(c), pixel))
        if len(picked) == n_forecast_pixels:
            break
    if picked:
        from eokit.timeseries.task import forecast_series

        series = np.concatenate([p.series for *_, p in picked])
        valid = np.concatenate([p.valid for *_, p in picked])
        data = picked[0][2]
        data = type(data)(series=series, valid=valid, doy=data.doy[:1], band_names=data.band_names,
                          dates=data.dates)
        predicted, future = forecast_series(model.backbone, data, 6)
        if future is not None:
            report.section("Forecast", "Observed values and a 6-date forecast (predictions fed "
                           "back into the model) for sample pixels.")
            report.figure(forecast_figure(dates, series, valid, future, predicted,
                                          data.band_names, [f"row {r}, col {c}"
                                                            for r, c, _ in picked]))
    report.provenance(inputs={"input": reader.path},
                      extra={"files": {k: str(v) for k, v in result.files.items()}})
    return report


def write_forecast(backbone: Any, data: Any, out_dir: str | Path, steps: int, *,
                   step_days: float | None = None, n_plot: int = 4, seed: int = 0
                   ) -> dict[str, Path]:
    """Forecast every pixel; COG per future date (raster inputs), CSV of sample pixels, plot.

    Raster inputs also get an abrupt-change map from the backbone alone (no labels):
    ``departure_peak.tif``, each pixel's largest one-step forecast residual after the first 180
    days, and ``departure_date.tif``, its date (YYYYMMDD); see :func:`peak_departure`.
    """
    from eokit.core.raster import atomic_write, write_csv, write_raster
    from eokit.timeseries.data import warn_if_single_date
    from eokit.timeseries.task import forecast_series, peak_departure

    values, future = forecast_series(backbone, data, steps, step_days=step_days, progress=True)
    warn_if_single_date(data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    labels_future = ([str(d) for d in future] if future is not None
                     else [f"step_{k + 1}" for k in range(steps)])
    if data.grid is not None and data.shape is not None:
        h, w = data.shape
        for k, name in enumerate(labels_future):
            cube = values[:, k, :].T.reshape(-1, h, w)
            files[f"forecast_{name}"] = write_raster(
                out / f"forecast_{name}.tif", np.nan_to_num(cube, nan=-9999.0), data.grid,
                nodata=-9999.0, dtype="float32", cog=True, band_names=data.band_names)
        if data.dates is not None:
            peak, index = peak_departure(forecast_residual_series(backbone, data, progress=True),
                                         data.dates)
            files["departure_peak"] = write_raster(
                out / "departure_peak.tif", np.nan_to_num(peak, nan=-9999.0).reshape(1, h, w),
                data.grid, nodata=-9999.0, dtype="float32", cog=True,
                band_names=["peak_forecast_residual"])
            files["departure_date"] = write_raster(
                out / "departure_date.tif", date_code(data.dates, index).reshape(1, h, w),
                data.grid, nodata=DATE_NODATA, dtype="int32", cog=True,
                band_names=["departure_yyyymmdd"])
    observed = np.nonzero(data.has_observation)[0]
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(observed, min(n_plot, observed.size), replace=False))
    rows = []
    for n in sample:
        for k, name in enumerate(labels_future):
            rows.append({"pixel": int(n), "date": name,
                         **{b: float(values[n, k, j]) for j, b in enumerate(data.band_names)}})
    files["csv"] = write_csv(out / "forecast_pixels.csv", rows)
    if future is not None and data.dates is not None and sample.size:
        fig = forecast_figure(data.dates, data.series[sample], data.valid[sample], future,
                              values[sample], data.band_names, [f"pixel {n}" for n in sample])
        with atomic_write(out / "forecast.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        files["plot"] = out / "forecast.png"
    return files
