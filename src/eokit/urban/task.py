"""Run the urban analysis on files and write its outputs: JSON, CSV, GeoTIFF, GeoJSON, HTML."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from eokit.core.errors import EokitError, InputError
from eokit.core.metrics import jsonable
from eokit.core.types import Grid
from eokit.urban.data import MODES, check_pixel_size, read_city_list, read_pair
from eokit.urban.model import UrbanResult, analyze_paper
from eokit.urban.segment import CLASS_NAMES

logger = logging.getLogger(__name__)

CLASS_COLOURS = ["#000000", "#2166ac", "#a6d96a", "#d73027", "#ffd700"]
OUTPUT_FILES = (
    "metrics.json",
    "profile.csv",
    "classes.tif",
    "centres.geojson",
    "report.html",
    "profile.png",
)


def analyze(
    optical: str | Path,
    sar: str | Path,
    *,
    mode: str = "paper",
    pixel_size_m: float | None = None,
    geo_config: Any = None,
) -> tuple[UrbanResult, Grid, dict[str, Any]]:
    """Analyse one optical/SAR pair in memory (nothing written).

    Returns:
        (result, grid, arrays for the report: "optical" (3, H, W) 0..1 and "sar" (H, W)).
    """
    if mode not in MODES:
        raise InputError(f"must be one of {MODES}, got {mode!r}", parameter="mode")
    check_pixel_size(pixel_size_m)
    if mode in ("paper", "paper_em"):
        pair = read_pair(optical, sar, pixel_size_m=pixel_size_m)
        result = analyze_paper(
            pair.optical,
            pair.sar,
            pixel_size_m=pair.pixel_size_m,
            thresholds="published" if mode == "paper" else "em",
        )
        views = {"optical": pair.optical.astype(np.float32) / 255.0, "sar": pair.sar}
        return result, pair.grid, views
    from eokit.urban.geo import GeoConfig, analyze_geo

    if pixel_size_m is not None:
        logger.warning("pixel_size_m is ignored in geo mode: the pixel size comes from the CRS")
    result, grid = analyze_geo(optical, sar, config=geo_config or GeoConfig())
    return result, grid, {}


#: What paper-mode centre coordinates are (the renderings carry no georeference).
LOCAL_FRAME = (
    "local image frame, no CRS: x = metres east of the image's top-left corner, y = metres north "
    "of it (negative downwards), from the given pixel size; not WGS84 lon/lat"
)


def centre_features(result: UrbanResult, grid: Grid) -> list[dict[str, Any]]:
    """GeoJSON point features of the centre clusters (centroids) in the grid's CRS."""
    features = []
    for rank, cluster in enumerate(result.clusters, start=1):
        x, y = grid.transform @ (cluster.col + 0.5, cluster.row + 0.5)
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [float(x), float(y)]},
                "properties": {
                    "rank": rank,
                    "area_px": cluster.area_px,
                    "area_km2": round(cluster.area_px * result.pixel_size_m**2 / 1e6, 4),
                    "row": round(cluster.row, 1),
                    "col": round(cluster.col, 1),
                    "structure": result.structure["call"],
                },
            }
        )
    return features


def build_report(
    result: UrbanResult,
    grid: Grid,
    views: dict[str, Any],
    *,
    title: str,
    command: str | None = None,
    inputs: dict[str, Any] | None = None,
) -> Any:
    """The HTML report of one city (maps, profile, regions, metrics, provenance)."""
    from eokit.core.report import Report

    report = Report(title, command=command)
    add_city_section(report, result, views, title=title)
    metrics = result.metrics()
    metrics.pop("clark_profile", None)
    report.provenance(
        config={
            "mode": result.mode,
            "pixel_size_m": result.pixel_size_m,
            **({"geo": metrics.get("geo", {}).get("config")} if result.mode == "geo" else {}),
        },
        inputs=inputs,
    )
    return report


def add_city_section(
    report: Any, result: UrbanResult, views: dict[str, Any], *, title: str
) -> None:
    """Add one city's maps, profile figure, regions and metrics to a report."""
    from eokit.urban.plots import clark_figure, profile_caption, profile_figure

    m = result.metrics()
    s = result.structure
    summary = (
        f"**Profile alpha** {_fmt(m['alpha_per_km'])} C per km (the published alpha: slope of "
        "the mean fused value C through the profile minima; negative = density falls outwards), "
        f"**LD** {_fmt(m['ld_km'])} km, **{len(result.regions)} region(s)** "
        f"({', '.join(r.kind for r in result.regions)}); "
        f"**{s['call']}**{s['explanation'].removeprefix(s['call'])}."
    )
    if result.clark is not None:
        c = result.clark
        summary += (
            f" **Clark alpha** {_fmt(c.alpha_per_km)} per km "
            f"(95 % CI {_fmt(c.ci_low)}-{_fmt(c.ci_high)}): the decay rate of an exponential "
            "D0 exp(-alpha r) fitted to C above the rural baseline (positive = density falls "
            "outwards). The two alphas measure different things and differ in sign and size."
        )
    if result.mode != "geo":
        summary += (
            " The inputs carry no georeference: `centres.geojson` holds local metres from the "
            "image's top-left corner (no CRS), and `classes.tif` has no CRS."
        )
    report.section(title, summary)
    if result.warnings:
        report.text(
            "**Warning: the method's assumptions fail here**; the numbers are the procedure's "
            "but do not mean what it says they mean:\n\n"
            + "\n".join(f"- {w}" for w in result.warnings)
        )
    other = [n for n in result.notes if not n.startswith("assumption failed:")]
    if other:
        report.text("Notes: " + "; ".join(other) + ".")
    px = result.pixel_size_m
    if "optical" in views:
        report.image_map(views["optical"], title="Optical (true colour)", pixel_size_m=px)
    if "sar" in views:
        report.image_map(
            views["sar"], title="SAR VV (rendering)", pixel_size_m=px, cmap="gray", vmin=0, vmax=255
        )
    if result.edge is not None:
        report.image_map(
            result.edge, title="Edge density E", pixel_size_m=px, cmap="gray", vmin=0, vmax=1
        )
    report.image_map(
        result.fused,
        title="Fused C = E + S (denoised)",
        pixel_size_m=px,
        vmin=0,
        vmax=2,
        colorbar_label="C",
    )
    report.image_map(
        result.classes,
        title="Classes",
        pixel_size_m=px,
        classes=list(CLASS_NAMES),
        class_colors=CLASS_COLOURS,
        caption="water / terrain / urban / centre (all centre pixels)",
    )
    report.figure(profile_figure(result, title=title), caption=profile_caption(result))
    fig = clark_figure(result)
    if fig is not None:
        report.figure(fig, caption="Clark exponential fit (geo mode)")
    report.table(
        m["regions"],
        caption="K-means regions of the residual profile (gradient: the region's own slope of "
        "the mean, C per km; steep: steeper than the city's average)",
    )
    flat = {k: v for k, v in m.items() if not isinstance(v, dict | list)}
    report.metrics(flat, caption="Metrics")


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.3g}"


def write_outputs(
    result: UrbanResult,
    grid: Grid,
    views: dict[str, Any],
    out_dir: str | Path,
    *,
    title: str,
    command: str | None = None,
    inputs: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    html: bool = True,
) -> dict[str, Path]:
    """Write metrics.json, profile.csv, classes.tif, centres.geojson, profile.png, report.html.

    Everything is first written into a temporary folder beside ``out_dir`` and then moved in, so
    a failure leaves no half-written set. ``html=False`` skips the per-city report.
    """
    from eokit.core.raster import atomic_write, write_csv, write_geojson, write_raster
    from eokit.urban.plots import profile_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = jsonable({**result.metrics(), **(extra or {})})
    metrics.pop("clark_profile", None)
    stage = Path(tempfile.mkdtemp(prefix=".urban-", dir=out))
    try:
        with atomic_write(stage / "metrics.json") as tmp:
            tmp.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
        write_csv(stage / "profile.csv", result.profile.rows(result.pixel_size_m))
        write_raster(
            stage / "classes.tif",
            result.classes.astype(np.uint8),
            grid,
            nodata=0,
            cog=True,
            band_names=["class"],
            class_names=list(CLASS_NAMES),
            class_colors=CLASS_COLOURS,
            tags={"classes": ",".join(f"{i}={n}" for i, n in enumerate(CLASS_NAMES))},
        )
        write_geojson(
            stage / "centres.geojson",
            centre_features(result, grid),
            grid.crs,
            frame=LOCAL_FRAME if grid.crs is None else None,
        )
        fig = profile_figure(result, title=title)
        fig.savefig(stage / "profile.png", dpi=110, bbox_inches="tight")
        if html:
            report = build_report(result, grid, views, title=title, command=command, inputs=inputs)
            # written here and announced once moved: the staging folder's name means nothing
            with atomic_write(stage / "report.html") as tmp:
                tmp.write_text(report.to_html(), encoding="utf-8")
        paths = {}
        for name in OUTPUT_FILES:
            if name == "report.html" and not html:
                continue
            os.replace(stage / name, out / name)
            paths[name] = out / name
        sidecar = stage / "classes.tif.aux.xml"
        if sidecar.exists():
            os.replace(sidecar, out / sidecar.name)
            paths[sidecar.name] = out / sidecar.name
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    logger.info("outputs written to %s (%s)", out, ", ".join(sorted(paths)))
    return paths


def analyze_to(
    optical: str | Path,
    sar: str | Path,
    out_dir: str | Path,
    *,
    mode: str = "paper",
    pixel_size_m: float | None = None,
    name: str | None = None,
    geo_config: Any = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Analyse one pair and write all outputs; returns the metrics (with wall time)."""
    start = time.perf_counter()
    result, grid, views = analyze(
        optical, sar, mode=mode, pixel_size_m=pixel_size_m, geo_config=geo_config
    )
    seconds = time.perf_counter() - start
    title = name or Path(optical).stem
    extra = {
        "name": title,
        "optical": str(optical),
        "sar": str(sar),
        "analysis_seconds": round(seconds, 3),
    }
    write_outputs(
        result,
        grid,
        views,
        out_dir,
        title=title,
        command=command,
        inputs={"optical": optical, "sar": sar},
        extra=extra,
    )
    metrics: dict[str, Any] = jsonable({**result.metrics(), **extra})
    metrics.pop("clark_profile", None)
    return metrics


def _batch_one(row: Any, out_dir: str, geo_config: Any) -> dict[str, Any]:
    """Worker: one city of a batch (errors come back as a row, not an exception)."""
    try:
        return analyze_to(
            row.optical,
            row.sar,
            Path(out_dir) / row.name,
            mode=row.mode,
            pixel_size_m=row.pixel_size_m,
            name=row.name,
            geo_config=geo_config,
        )
    except EokitError as error:
        return {"name": row.name, "error": str(error)}


def comparison_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per city for the comparison table and CSV."""
    rows = []
    for m in results:
        if "error" in m:
            rows.append({"city": m["name"], "error": m["error"]})
            continue
        rows.append(
            {
                "city": m["name"],
                "mode": m["mode"],
                "pixel_size_m": m["pixel_size_m"],
                "alpha_per_km": m["alpha_per_km"],
                "ld_km": m["ld_km"],
                "regions": " ".join(
                    f"{r['kind'][0].upper()}({r['start_km']:.2f}-{r['end_km']:.2f})"
                    for r in m["regions"]
                ),
                "structure": m["structure"]["call"],
                "n_centres": m["structure"]["n_centres"],
                "urban_km2": round(m["urban_area_km2"], 2),
                "threshold_method": m["thresholds"]["class_fit"]["method"],
                "warnings": len(m.get("warnings", [])),
                "seconds": m["analysis_seconds"],
            }
        )
    return rows


def batch(
    cities_csv: str | Path,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    mode: str = "paper",
    pixel_size_m: float | None = None,
    geo_config: Any = None,
    command: str | None = None,
) -> list[dict[str, Any]]:
    """Analyse every city of a CSV in parallel processes; write per-city folders and a summary.

    Writes ``<out>/<city>/...`` for each city, ``<out>/comparison.csv``, ``<out>/batch.json`` and
    ``<out>/report.html`` (comparison table and one profile figure per city).
    """
    from tqdm import tqdm

    rows = read_city_list(cities_csv, default_mode=mode, default_pixel_size_m=pixel_size_m)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or min(len(rows), os.cpu_count() or 1)
    start = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    if workers <= 1:
        for row in tqdm(rows, desc="cities", unit="city"):
            results[row.name] = _batch_one(row, str(out), geo_config)
    else:
        # "spawn": forking a process that already runs OpenCV/Dask thread pools can deadlock
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(_batch_one, row, str(out), geo_config): row.name for row in rows}
            for future in tqdm(
                as_completed(futures), total=len(futures), desc="cities", unit="city"
            ):
                results[futures[future]] = future.result()
    ordered = [results[r.name] for r in rows]
    wall = time.perf_counter() - start
    table = comparison_rows(ordered)
    from eokit.core.raster import atomic_write, write_csv

    write_csv(out / "comparison.csv", table)
    with atomic_write(out / "batch.json") as tmp:
        tmp.write_text(
            json.dumps(
                jsonable({"wall_seconds": wall, "workers": workers, "cities": ordered}), indent=2
            )
            + "\n"
        )
    _batch_report(ordered, table, out, command=command, wall=wall, workers=workers)
    return ordered


def _batch_report(
    results: list[dict[str, Any]],
    table: list[dict[str, Any]],
    out: Path,
    *,
    command: str | None,
    wall: float,
    workers: int,
) -> None:
    import matplotlib.image as mpimg
    from matplotlib.figure import Figure

    from eokit.core.report import Report

    report = Report("Urban density gradients: city comparison", command=command)
    report.section(
        "Comparison",
        f"{len(results)} cities, {workers} worker process(es), "
        f"{wall:.1f} s wall time. Each city has its own report in its folder.",
    )
    report.table(table, caption="alpha (per km), LD (km), regions (U uniform / V variation, km)")
    ok = [m for m in results if "error" not in m]
    if ok:
        cols = min(3, len(ok))
        nrows = math.ceil(len(ok) / cols)
        fig = Figure(figsize=(5 * cols, 4 * nrows))
        for i, m in enumerate(ok):
            ax = fig.add_subplot(nrows, cols, i + 1)
            ax.imshow(mpimg.imread(out / m["name"] / "profile.png"))
            ax.set_axis_off()
            ax.set_title(m["name"], fontsize=9)
        report.figure(fig, caption="Profile figure of each city")
    report.provenance(extra={"workers": workers})
    report.write(out / "report.html")
