"""Simulated Landsat-like thermal scene: band-10 DN/radiance, red/NIR reflectance and an MTL file.

The land cover and red/NIR reflectance come from :mod:`eokit.core.synth.scene`. Each class gets a
surface temperature offset from the near-surface air temperature (water cool, vegetation near air
temperature, bare soil and built-up surfaces hot) plus smooth spatial noise, and a band emissivity
(water 0.991 … buildings 0.955) plus small noise. TOA radiance follows the band-effective RTE

    L = τ·[ε·B(Ts) + (1 − ε)·L↓] + L↑

with one horizontally uniform atmosphere (τ, L↑, L↓ given by the caller, e.g. from an RT model),
and is quantised to Level-1 DN with the MTL rescaling (L = ML·DN + AL; DN 0 = nodata).

What is realistic: radiometric scale, DN quantisation, MTL keys, per-class temperature and
emissivity contrasts, georeference. What is not: the atmosphere is uniform, there are no clouds
or shadows, no sensor PSF (TIRS is 100 m resampled to 30 m), and the temperature pattern follows
land cover rather than an energy balance.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eokit.core.errors import InputError
from eokit.core.types import Grid

logger = logging.getLogger(__name__)

#: Surface-temperature offset from the air temperature per land-cover class, K.
CLASS_TS_OFFSET_K = {
    "water": -3.0,
    "conifer": 0.5,
    "broadleaf": 1.0,
    "grass": 4.0,
    "crop": 3.0,
    "bare": 12.0,
    "building": 10.0,
    "road": 14.0,
}
#: Band-10 emissivity per land-cover class.
CLASS_EMISSIVITY = {
    "water": 0.991,
    "conifer": 0.986,
    "broadleaf": 0.984,
    "grass": 0.982,
    "crop": 0.980,
    "bare": 0.965,
    "building": 0.955,
    "road": 0.960,
}

_SENSORS = {  # spacecraft -> (ML, AL, K1, K2) of band 10
    "LANDSAT_8": (3.3420e-4, 0.1, 774.8853, 1321.0789),
    "LANDSAT_9": (3.8000e-4, 0.1, 799.0284, 1329.2405),
}


@dataclass
class ThermalScene:
    """A simulated thermal scene (arrays (H, W)) and its metadata.

    Attributes:
        dn: Band-10 Level-1 DN, uint16 (0 = nodata).
        radiance: TOA band radiance, W m⁻² sr⁻¹ µm⁻¹ (from the DN, as a user would compute it).
        red, nir: Surface reflectance 0..1.
        lst: True surface temperature, K. emissivity: True band emissivity.
        landcover: Class ids (eokit.core.synth.scene.LANDCOVER_CLASSES).
        grid: Georeference.
        atmosphere: τ, L↑, L↓, water vapour (g cm⁻²), air temperature (K).
        spacecraft: ``"LANDSAT_8"`` or ``"LANDSAT_9"``.
        seed: Generation seed.
    """

    dn: np.ndarray
    radiance: np.ndarray
    red: np.ndarray
    nir: np.ndarray
    lst: np.ndarray
    emissivity: np.ndarray
    landcover: np.ndarray
    grid: Grid
    atmosphere: dict[str, float]
    spacecraft: str = "LANDSAT_8"
    seed: int = 0
    rescaling: tuple[float, float, float, float] = field(
        default=(3.342e-4, 0.1, 774.8853, 1321.0789)
    )


def _k1k2_radiance(k1: float, k2: float) -> Callable[[np.ndarray], np.ndarray]:
    def radiance(temperature: np.ndarray) -> np.ndarray:
        return np.asarray(k1 / np.expm1(k2 / temperature))

    return radiance


def generate_thermal_scene(
    size: int | tuple[int, int] = 256,
    *,
    seed: int = 0,
    gsd_m: float = 30.0,
    tau: float = 0.80,
    up: float = 1.55,
    down: float = 2.65,
    water_vapour: float = 2.0,
    air_temperature_k: float = 295.0,
    spacecraft: str = "LANDSAT_8",
    radiance_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    season_doy: float = 200,
    crs: Any = "EPSG:32633",
    origin: tuple[float, float] = (500000.0, 5000000.0),
) -> ThermalScene:
    """Generate a georeferenced Landsat-like thermal scene.

    Args:
        size: Side length (or (height, width)) in pixels.
        seed: Random seed.
        gsd_m: Pixel size, m.
        tau: Band-effective transmittance (default: a mid-latitude-summer-like atmosphere).
        up: Upwelling path radiance, W m⁻² sr⁻¹ µm⁻¹.
        down: Downwelling sky radiance, W m⁻² sr⁻¹ µm⁻¹.
        water_vapour: Column water vapour recorded with the scene, g cm⁻² (used by retrievals).
        air_temperature_k: Near-surface air temperature, K.
        spacecraft: ``"LANDSAT_8"`` or ``"LANDSAT_9"`` (rescaling and K1/K2).
        radiance_fn: Blackbody band radiance B(T) (default: the MTL K1/K2 closed form).
        season_doy: Day of year for the reflectance phenology.
        crs: Projected CRS.
        origin: Upper-left corner (x, y) in CRS units.

    Raises:
        InputError: unknown spacecraft or a non-physical atmosphere.
    """
    from eokit.core.synth.scene import (
        LANDCOVER_CLASSES,
        _projected_grid,
        _smooth_noise,
        generate_landcover,
        render_reflectance,
    )

    if spacecraft not in _SENSORS:
        raise InputError(
            f"unknown spacecraft {spacecraft!r}; choose {sorted(_SENSORS)}", parameter="spacecraft"
        )
    if not 0.0 < tau <= 1.0 or up < 0 or down < 0:
        raise InputError(
            "need 0 < tau <= 1 and non-negative path radiances", parameter="atmosphere"
        )
    ml, al, k1, k2 = _SENSORS[spacecraft]
    landcover = generate_landcover(size, seed=seed, gsd_m=gsd_m)
    height, width = landcover.shape
    reflectance = render_reflectance(landcover, seed=seed, season_doy=season_doy, gsd_m=gsd_m)
    red, nir = reflectance[2], reflectance[3]
    offsets = np.array([CLASS_TS_OFFSET_K[name] for name in LANDCOVER_CLASSES], dtype=np.float32)
    emissivities = np.array([CLASS_EMISSIVITY[name] for name in LANDCOVER_CLASSES], np.float32)
    rng = np.random.default_rng(seed + 7001)
    noise = _smooth_noise(rng, (height, width), max(4.0, 600.0 / gsd_m), octaves=2)
    lst = (air_temperature_k + offsets[landcover] + 1.5 * noise).astype(np.float32)
    emissivity = np.clip(
        emissivities[landcover] + rng.normal(0, 0.002, landcover.shape), 0.90, 0.999
    ).astype(np.float32)
    planck = radiance_fn if radiance_fn is not None else _k1k2_radiance(k1, k2)
    radiance_true = (
        tau * (emissivity * planck(lst.astype(np.float64)) + (1 - emissivity) * down) + up
    )
    dn = np.clip(np.round((radiance_true - al) / ml), 1, 65535).astype(np.uint16)
    radiance = (dn.astype(np.float32) * np.float32(ml) + np.float32(al)).astype(np.float32)
    grid = _projected_grid(crs, origin, gsd_m, height, width)
    atmosphere = {
        "tau": float(tau),
        "up": float(up),
        "down": float(down),
        "water_vapour": float(water_vapour),
        "air_temperature_k": float(air_temperature_k),
    }
    return ThermalScene(
        dn,
        radiance,
        red.astype(np.float32),
        nir.astype(np.float32),
        lst,
        emissivity,
        landcover,
        grid,
        atmosphere,
        spacecraft,
        seed,
        (ml, al, k1, k2),
    )


def mtl_text(scene: ThermalScene, product_id: str = "LC08_SIMULATED") -> str:
    """Collection-2 style MTL text with the band-10 rescaling and thermal constants."""
    ml, al, k1, k2 = scene.rescaling
    sensor = "OLI_TIRS" if scene.spacecraft == "LANDSAT_8" else "OLI2_TIRS2"
    return "\n".join(
        [
            "GROUP = LANDSAT_METADATA_FILE",
            "  GROUP = PRODUCT_CONTENTS",
            f'    LANDSAT_PRODUCT_ID = "{product_id}"',
            '    FILE_NAME_BAND_10 = "B10.tif"',
            "  END_GROUP = PRODUCT_CONTENTS",
            "  GROUP = IMAGE_ATTRIBUTES",
            f'    SPACECRAFT_ID = "{scene.spacecraft}"',
            f'    SENSOR_ID = "{sensor}"',
            "  END_GROUP = IMAGE_ATTRIBUTES",
            "  GROUP = LEVEL1_RADIOMETRIC_RESCALING",
            f"    RADIANCE_MULT_BAND_10 = {ml:.4E}",
            f"    RADIANCE_ADD_BAND_10 = {al:.5f}",
            "  END_GROUP = LEVEL1_RADIOMETRIC_RESCALING",
            "  GROUP = LEVEL1_THERMAL_CONSTANTS",
            f"    K1_CONSTANT_BAND_10 = {k1:.4f}",
            f"    K2_CONSTANT_BAND_10 = {k2:.4f}",
            "  END_GROUP = LEVEL1_THERMAL_CONSTANTS",
            "END_GROUP = LANDSAT_METADATA_FILE",
            "END",
            "",
        ]
    )


def write_thermal_scene(scene: ThermalScene, out_dir: str | Path) -> dict[str, Path]:
    """Write the scene as GeoTIFFs, an MTL file and a JSON description.

     Files: ``B10.tif`` (uint16 DN COG, nodata 0), ``red.tif``, ``nir.tif``, ``lst_truth.tif``,
    , ``emissivity_truth.tif`` (float32 COGs), ``MTL.txt`` and ``scene.json``.

    Returns:
         name -> path.
    """
    from eokit.core.raster import atomic_write, write_raster

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", path=out)
    out.mkdir(parents=True, exist_ok=True)
    tags = {"generator": "eokit.core.synth.thermal", "seed": scene.seed}
    paths = {
        name: out / f"{name}.tif" for name in ("B10", "red", "nir", "lst_truth", "emissivity_truth")
    }
    write_raster(
        paths["B10"],
        scene.dn,
        scene.grid,
        nodata=0,
        dtype="uint16",
        cog=True,
        band_names=["B10_DN"],
        tags=tags,
    )
    for name, array in (
        ("red", scene.red),
        ("nir", scene.nir),
        ("lst_truth", scene.lst),
        ("emissivity_truth", scene.emissivity),
    ):
        write_raster(
            paths[name], array, scene.grid, dtype="float32", cog=True, band_names=[name], tags=tags
        )
    paths["MTL"] = out / "MTL.txt"
    with atomic_write(paths["MTL"]) as tmp:
        Path(tmp).write_text(mtl_text(scene))
    paths["scene"] = out / "scene.json"
    with atomic_write(paths["scene"]) as tmp:
        Path(tmp).write_text(
            json.dumps(
                {
                    "spacecraft": scene.spacecraft,
                    "seed": scene.seed,
                    "atmosphere": scene.atmosphere,
                },
                indent=2,
            )
            + "\n"
        )
    return paths
