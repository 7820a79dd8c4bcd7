"""Urban density-gradient analysis described for the agent server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from eokit.core.tools import (
    InputPath,
    OutputPath,
    Range,
    ToolSpec,
    Unit,
    class_areas_m2,
    raster_summary,
)

#: Metrics passed to the agent as they are (the rest stays in metrics.json).
_KEPT = ("name", "mode", "pixel_size_m", "alpha_per_km", "alpha_std_err_per_km",
         "alpha_sign_convention", "ld_km", "urban_area_km2", "centre_area_km2", "fractions",
         "assumptions_hold", "warnings", "notes", "analysis_seconds")


def urban_analyze(
    optical: Annotated[str, InputPath("file")],
    sar: Annotated[str, InputPath("file")],
    out_dir: Annotated[str, OutputPath("dir")],
    mode: Literal["paper", "geo"] = "paper",
    pixel_size_m: Annotated[float, Range(0, 10000, exclusive_minimum=True), Unit("m")]
    | None = None,
    name: str | None = None,
    rgb_bands: tuple[Annotated[int, Range(1)], Annotated[int, Range(1)],
                     Annotated[int, Range(1)]] = (1, 2, 3),
    sar_units: Literal["auto", "db", "linear"] = "auto",
    chunk: Annotated[int, Range(64, 16384)] = 1024,
    seed: int = 0,
) -> dict[str, Any]:
    """Density gradient of one city from an optical and a SAR VV image (mono- or polycentric).

    Fuses the two images into a density proxy, classifies water/terrain/urban/centre, finds
    the centres and fits the density profile outward from the main centre. Writes
    metrics.json, profile.csv, classes.tif (class COG), centres.geojson, profile.png and
    report.html.

    Args:
        optical: Optical image: an 8-bit RGB rendering (paper mode) or a GeoTIFF (geo mode).
        sar: SAR VV image of the same area (same size in paper mode; geo mode reprojects it).
        out_dir: Output folder.
        mode: paper: the published procedure on 8-bit renderings; geo: GeoTIFFs with their
            CRS, Clark exponent with a bootstrap interval.
        pixel_size_m: Ground pixel size in metres; required for images without georeference.
        name: City name for the report.
        rgb_bands: 1-based red, green and blue bands of the optical GeoTIFF (geo mode).
        sar_units: SAR GeoTIFF values: decibels, linear power, or detected (geo mode).
        chunk: Dask chunk side in pixels (geo mode).
        seed: Bootstrap seed (geo mode).

    Returns:
        Profile alpha (C per km) and its standard error, Clark alpha with its 95 % interval
        (geo mode), the mono/polycentric verdict with centre count and locations, profile
        regions, urban and centre area, class areas in m^2, warnings when an assumption of the
        method fails, and the output files.
    """
    from eokit.urban.geo import GeoConfig
    from eokit.urban.segment import CLASS_NAMES
    from eokit.urban.task import OUTPUT_FILES, analyze_to

    config = None
    if mode == "geo":
        bands = tuple(int(b) for b in rgb_bands)
        config = GeoConfig(chunk=chunk, rgb_bands=(bands[0], bands[1], bands[2]),
                           sar_units=sar_units, seed=seed)
    metrics = analyze_to(optical, sar, out_dir, mode=mode, pixel_size_m=pixel_size_m, name=name,
                         geo_config=config, command="eokit urban analyze")
    out = Path(out_dir)
    files = {f: str(out / f) for f in OUTPUT_FILES if (out / f).is_file()}
    summary: dict[str, Any] = {k: metrics[k] for k in _KEPT if k in metrics}
    structure = metrics["structure"]
    summary["structure"] = {k: structure[k] for k in ("call", "n_centres", "explanation")
                            if k in structure}
    summary["regions"] = [{k: r[k] for k in ("kind", "start_km", "end_km", "gradient_per_km")}
                          for r in metrics["regions"]]
    if "clark" in metrics:
        summary["clark"] = {k: metrics["clark"][k] for k in ("alpha_per_km", "ci95", "r2")
                            if k in metrics["clark"]}
    centres = json.loads((out / "centres.geojson").read_text())
    summary["centres"] = [{"coordinates": f["geometry"]["coordinates"],
                           **{k: f["properties"][k] for k in ("rank", "area_km2")
                              if k in f["properties"]}}
                          for f in centres["features"]]
    areas = class_areas_m2(out / "classes.tif", names=dict(enumerate(CLASS_NAMES)),
                           pixel_size_m=metrics.get("pixel_size_m"))
    summary["class_area_m2"] = areas["area_m2"]
    summary["grid"] = raster_summary(out / "classes.tif")
    summary["files"] = files
    return summary


TOOLS: list[ToolSpec] = [
    ToolSpec("urban_analyze", urban_analyze, effect="write"),
]
