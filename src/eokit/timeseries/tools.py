"""Pixel time-series canopy mapping described for the agent server."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

from eokit.core.tools import (
    InputPath,
    OutputPath,
    Range,
    ToolSpec,
    Unit,
    raster_summary,
    row_areas_m2,
)

logger = logging.getLogger(__name__)


def _probability_areas(path: Path, first_band: int, classes: list[str], forest: list[int],
                       rows: int) -> dict[str, Any]:
    """Class areas (most probable class) and canopy area (forest probability > 0.5) in m^2."""
    import rasterio
    from rasterio.windows import Window

    from eokit.timeseries.predict import PROBABILITY_NODATA

    bands = [first_band + k for k in range(len(classes))]
    class_pixels = np.zeros(len(classes), np.int64)
    class_area = np.zeros(len(classes))
    canopy_pixels, canopy_area, nodata = 0, 0.0, 0
    with rasterio.open(path) as src:
        areas = row_areas_m2(src)
        for row in range(0, src.height, rows):
            height = min(rows, src.height - row)
            probs = src.read(bands, window=Window(0, row, src.width, height))
            valid = probs[0] != PROBABILITY_NODATA
            nodata += int((~valid).sum())
            cell = np.ones((height, src.width)) if areas is None else \
                np.broadcast_to(areas[row:row + height, None], (height, src.width))
            winner = probs.argmax(axis=0)[valid]
            class_pixels += np.bincount(winner, minlength=len(classes))
            class_area += np.bincount(winner, weights=cell[valid], minlength=len(classes))
            if forest:
                canopy = valid & (probs[forest].sum(axis=0) > 0.5)
                canopy_pixels += int(canopy.sum())
                canopy_area += float(cell[canopy].sum())
    out: dict[str, Any] = {
        "class_pixels": dict(zip(classes, class_pixels.tolist(), strict=True)),
        "nodata_pixels": nodata,
    }
    if areas is not None:
        out["class_area_m2"] = {c: round(float(a), 1) for c, a in zip(classes, class_area,
                                                                        strict=True)}
    if forest:
        out["canopy_pixels"] = canopy_pixels
        out["canopy_area_m2"] = round(canopy_area, 1) if areas is not None else None
    return out


def _event_area(path: Path, rows: int = 512) -> dict[str, Any]:
    """Pixels (and m^2) with a dated forest change in a YYYYMMDD change map."""
    import rasterio
    from rasterio.windows import Window

    from eokit.timeseries.predict import DATE_NODATA

    pixels, area = 0, 0.0
    with rasterio.open(path) as src:
        areas = row_areas_m2(src)
        for row in range(0, src.height, rows):
            height = min(rows, src.height - row)
            event = src.read(1, window=Window(0, row, src.width, height)) != DATE_NODATA
            pixels += int(event.sum())
            if areas is not None:
                area += float((event * areas[row:row + height, None]).sum())
    out: dict[str, Any] = {"pixels": pixels}
    if areas is not None:
        out["area_m2"] = round(area, 1)
    return out


def timeseries_predict(
    input_path: Annotated[str, InputPath("dir")],
    model: Annotated[str, InputPath("file")],
    out_dir: Annotated[str, OutputPath("dir")],
    dates: str | None = None,
    date_tolerance_days: Annotated[float, Range(0, 366), Unit("days")] = 16.0,
    multiband: bool = False,
    labels: Annotated[str, InputPath("file")] | None = None,
    label_map: str | None = None,
    forest_classes: list[str] | None = None,
    rows_per_block: Annotated[int, Range(1, 100000)] = 64,
    refine_dates: bool = True,
    spatial_window: Annotated[int, Range(1, 101)] = 1,
    layout: Literal["auto", "geotiff", "eopatch"] = "auto",
    dtype: Literal["float32", "bfloat16"] = "float32",
    device: str = "cpu",
) -> dict[str, Any]:
    """Map canopy (class probabilities) at chosen dates and date forest gains and losses.

    Runs a fine-tuned pixel time-series model over every pixel of a GeoTIFF stack or EOPatch.
    Writes probability_<date>.tif (float32 COG, one band per class, -1 nodata) or one
    multi-band probabilities.tif, becomes_forest.tif / stops_forest.tif (int32 YYYYMMDD, 0 =
    none) and stops_forest_refined.tif, and report.html.

    Args:
        input_path: Series folder: GeoTIFFs named by date (img_YYYY-MM-DD.tif) or an EOPatch.
        model: Fine-tuned model file (model.safetensors from timeseries finetune).
        out_dir: Output folder.
        dates: Dates to map: comma-separated ISO dates (each mapped at the nearest
            acquisition, which names the output file), 'all' or 'last'; default: 4 dates
            spread over the series.
        date_tolerance_days: A requested date with no acquisition within this many days is
            refused.
        multiband: Write one COG with dates x classes bands instead of one COG per date.
        labels: Reference label GeoTIFF on the series' grid (adds ROC/PR curves to the report).
        label_map: Remap label values first, e.g. '2:1,*:0'.
        forest_classes: Class names counted as canopy (default: forest-like class names).
        rows_per_block: Image rows predicted at a time (memory bound).
        refine_dates: Also date each forest loss by the backbone's forecast residual.
        spatial_window: Average the probability maps over N x N pixels (odd N; 1 = per pixel).
        layout: Input layout; auto detects it.
        dtype: Backbone compute dtype.
        device: Torch device (cpu, cuda, cuda:N, mps, auto).

    Returns:
        Output paths, the grid, and per mapped date the area of each most-probable class and
        the canopy area (summed forest-class probability above 0.5) in m^2; forest gain and
        loss areas; pixels never observed; warnings.
    """
    from eokit.core.errors import InputError
    from eokit.core.tiling import resolve_device
    from eokit.timeseries.cli import refinement_caveat
    from eokit.timeseries.data import SeriesReader, parse_label_map
    from eokit.timeseries.model import FineTunedSeriesModel, load_model
    from eokit.timeseries.predict import (
        forest_class_indices,
        predict_report,
        read_map_labels,
        write_maps,
    )

    network, meta = load_model(model)
    if not isinstance(network, FineTunedSeriesModel):
        raise InputError("is a backbone; predict needs a fine-tuned model", path=model)
    network.backbone.set_compute_dtype(dtype)
    network.to(resolve_device(device))
    reader = SeriesReader(input_path, layout=layout)
    truth = None if labels is None else read_map_labels(
        labels, reader, network.class_names, label_map=parse_label_map(label_map))
    classes = list(network.class_names)
    forest = forest_class_indices(classes, forest_classes)
    warnings = []
    caveat = refinement_caveat(meta) if refine_dates else None
    if caveat:
        warnings.append(caveat)
    logger.info("mapping %d x %d px of %s", reader.grid.width, reader.grid.height, input_path)
    result = write_maps(network, reader, out_dir, dates=dates, multiband=multiband,
                        forest_classes=forest_classes, rows_per_block=rows_per_block,
                        refine_dates=refine_dates, spatial_window=spatial_window,
                        keep_preview=reader.grid.width * reader.grid.height <= 4_000_000,
                        progress=False, date_tolerance_days=date_tolerance_days)
    report = predict_report(network, meta, reader, result, truth=truth,
                            labels_name=Path(labels).name if labels else "labels",
                            command="eokit timeseries predict")
    html = report.write(Path(out_dir) / "report.html")
    logger.info("maps and report written; measuring class and canopy areas")
    assert reader.dates is not None
    mapped = []
    for j, index in enumerate(result.date_indices):
        date = str(reader.dates[index].astype("datetime64[D]"))
        path = result.files["probabilities"] if multiband else result.files[f"probability_{date}"]
        first = 1 + j * len(classes) if multiband else 1
        mapped.append({"date": date, "file": str(path),
                       **_probability_areas(path, first, classes, forest, max(rows_per_block,
                                                                              256))})
    summary: dict[str, Any] = {
        "files": {**{k: str(v) for k, v in result.files.items()}, "report": str(html)},
        "classes": classes,
        "forest_classes": [classes[i] for i in forest],
        "maps": mapped,
        "requested_dates": [{"requested": m.requested, "acquisition": m.acquisition,
                             "offset_days": m.offset_days} for m in result.date_matches],
        "unobserved_pixels": result.unobserved_pixels,
        "pixels": result.pixels,
        "grid": raster_summary(mapped[0]["file"]),
    }
    for name in ("becomes_forest", "stops_forest", "stops_forest_refined"):
        if name in result.files:
            summary[f"{name}_changes"] = _event_area(result.files[name])
    if result.unobserved_pixels:
        warnings.append(f"{result.unobserved_pixels} pixels have no valid observation (nodata)")
    if not forest:
        warnings.append(f"no class of {classes} counts as forest: no canopy area or change maps "
                        "(name them with forest_classes)")
    summary["warnings"] = warnings
    return summary


TOOLS: list[ToolSpec] = [
    ToolSpec("timeseries_predict", timeseries_predict, effect="long"),
]
