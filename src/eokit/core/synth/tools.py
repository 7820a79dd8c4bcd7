"""The simulator's operations described for the agent server (scenes, change pairs, cities)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from eokit.core.tools import OutputPath, Range, ToolSpec, Unit, raster_summary


def _areas(counts: Any, names: list[str] | tuple[str, ...], pixel_area_m2: float,
           ) -> dict[str, float]:
    return {str(n): round(float(c) * pixel_area_m2, 1) for n, c in zip(names, counts, strict=True)}


def scene(
    out_dir: Annotated[str, OutputPath("dir")],
    size: Annotated[int, Range(32, 2048)] = 256,
    gsd_m: Annotated[float, Range(0.1, 1000), Unit("m")] = 10.0,
    seed: int = 0,
    season_doy: Annotated[int, Range(1, 366)] = 180,
    crs: str = "EPSG:32633",
) -> dict[str, Any]:
    """Simulate a land-cover scene: 6-band reflectance, land cover and SAR VV GeoTIFFs.

    Args:
        out_dir: Output folder.
        size: Side length in pixels.
        gsd_m: Pixel size.
        seed: Random seed (same seed, same scene).
        season_doy: Day of year of the optical image.
        crs: Projected CRS of the grid (metres).
    """
    import numpy as np

    from eokit.core.synth.scene import generate_scene, write_scene

    simulated = generate_scene(size, seed=seed, gsd_m=gsd_m, season_doy=season_doy, crs=crs)
    paths = write_scene(simulated, out_dir)
    counts = np.bincount(simulated.landcover.ravel(), minlength=len(simulated.class_names))
    return {
        "files": {k: str(v) for k, v in paths.items()},
        "grid": raster_summary(paths["landcover"]),
        "class_area_m2": _areas(counts, simulated.class_names, gsd_m * gsd_m),
    }


def change_pair(
    out_dir: Annotated[str, OutputPath("dir")],
    size: Annotated[int, Range(16, 2048)] = 128,
    seed: int = 0,
    domain: Literal["sim_buildings", "sim_landcover", "sim_sensor", "sim_new"] = "sim_buildings",
    gsd_m: Annotated[float, Range(0.1, 1000), Unit("m")] = 10.0,
) -> dict[str, Any]:
    """Simulate two dates of one scene with typed changes (new buildings, vegetation loss ...).

    Writes ``A.tif`` and ``B.tif`` (6-band reflectance), ``label.tif`` (0/255, the dataset's
    change label) and ``change_type.tif`` (0 = none, then one id per change type, class names
    tagged).

    Args:
        out_dir: Output folder.
        size: Side length in pixels.
        seed: Random seed.
        domain: Simulated dataset (its label policy: which change types count).
        gsd_m: Pixel size.
    """
    import numpy as np

    from eokit.core.raster import write_raster
    from eokit.core.synth.change import CHANGE_TYPES
    from eokit.core.synth.change import change_pair as simulate_pair

    pair = simulate_pair(size, seed=seed, domain=domain, gsd_m=gsd_m)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = ["none", *CHANGE_TYPES]
    files = {
        "image_a": write_raster(out / "A.tif", pair.image_a, pair.grid, cog=True),
        "image_b": write_raster(out / "B.tif", pair.image_b, pair.grid, cog=True),
        "label": write_raster(out / "label.tif", (pair.label * 255).astype(np.uint8), pair.grid,
                              band_names=["change"], tags={"CLASS_0": "no_change",
                                                           "CLASS_255": "change"}),
        "change_type": write_raster(
            out / "change_type.tif", pair.change_type, pair.grid, band_names=["change_type"],
            tags={f"CLASS_{i}": n for i, n in enumerate(names)}),
    }
    counts = np.bincount(pair.change_type.ravel(), minlength=len(names))
    return {
        "files": {k: str(v) for k, v in files.items()},
        "grid": raster_summary(files["label"]),
        "change_type_area_m2": _areas(counts, names, gsd_m * gsd_m),
        "labelled_change_area_m2": round(float(pair.label.sum()) * gsd_m * gsd_m, 1),
    }


def city(
    out_dir: Annotated[str, OutputPath("dir")],
    kind: Literal["mono", "poly"] = "mono",
    size: Annotated[int, Range(64, 2048)] = 256,
    alpha_per_km: Annotated[float, Range(0.05, 20, exclusive_minimum=True), Unit("1/km")] = 1.0,
    pixel_size_m: Annotated[float, Range(1, 1000), Unit("m")] = 15.0,
    seed: int = 0,
    stem: str = "city",
) -> dict[str, Any]:
    """Simulate a mono- or polycentric city following Clark's density law (optical + SAR).

    Writes ``<stem>_optical.tif`` / ``<stem>_sar_db.tif`` (GeoTIFFs for the geo mode), a JPEG pair
    (the published procedure's inputs) and ``<stem>_density.tif`` (true density).

    Args:
        out_dir: Output folder.
        kind: One centre (mono) or several on a ring (poly).
        size: Side length in pixels.
        alpha_per_km: Clark exponent of the density law.
        pixel_size_m: Ground pixel size.
        seed: Random seed.
        stem: File name prefix.
    """
    from eokit.core.synth.city import generate_city, write_city

    simulated = generate_city(size, kind=kind, alpha_per_km=alpha_per_km,
                              pixel_size_m=pixel_size_m, seed=seed)
    paths = write_city(simulated, out_dir, stem=stem)
    return {
        "files": {k: str(v) for k, v in paths.items()},
        "grid": raster_summary(paths["optical_tif"]),
        "pixel_size_m": pixel_size_m,
    }


def pixel_series(
    out_dir: Annotated[str, OutputPath("dir")],
    size: Annotated[int, Range(8, 512)] = 32,
    years: Annotated[int, Range(1, 10)] = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Simulate a multi-date GeoTIFF stack of forest, crops and clearings with canopy truth.

    Args:
        out_dir: Output folder.
        size: Side length in pixels.
        years: Years of observations.
        seed: Random seed.
    """
    from eokit.core.synth.pixel_series import generate_pixel_series, write_pixel_series

    simulated = generate_pixel_series(size, seed=seed, years=years)
    paths = write_pixel_series(simulated, out_dir)
    return {
        "files": {k: str(v) for k, v in paths.items()},
        "dates": len(simulated.dates),
        "first_date": str(simulated.dates[0]),
        "last_date": str(simulated.dates[-1]),
        "events": len(simulated.events),
    }


TOOLS: list[ToolSpec] = [
    ToolSpec("synth_scene", scene, effect="write"),
    ToolSpec("synth_change_pair", change_pair, effect="write"),
    ToolSpec("synth_city", city, effect="write"),
    ToolSpec("synth_pixel_series", pixel_series, effect="write"),
]
