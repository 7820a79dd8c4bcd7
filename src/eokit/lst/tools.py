"""Land-surface temperature retrieval described for the agent server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

from eokit.core.tools import InputPath, OutputPath, Range, ToolSpec, Unit, raster_summary


class _Statistics:
    """Running count, sum, sum of squares, min and max over the finite pixels of blocks."""

    def __init__(self) -> None:
        self.count = 0
        self.nodata = 0
        self.total = 0.0
        self.squares = 0.0
        self.low = np.inf
        self.high = -np.inf

    def __call__(self, block: np.ndarray) -> None:
        finite = block[np.isfinite(block)].astype(np.float64)
        self.nodata += int(block.size - finite.size)
        if finite.size:
            self.count += int(finite.size)
            self.total += float(finite.sum())
            self.squares += float((finite * finite).sum())
            self.low = min(self.low, float(finite.min()))
            self.high = max(self.high, float(finite.max()))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"valid_pixels": self.count, "nodata_pixels": self.nodata}
        if self.count:
            mean = self.total / self.count
            out.update({
                "min_k": round(self.low, 3),
                "mean_k": round(mean, 3),
                "max_k": round(self.high, 3),
                "std_k": round(max(0.0, self.squares / self.count - mean * mean) ** 0.5, 3),
            })
        return out


def _statistics(path: Path, rows: int) -> _Statistics:
    """Statistics of the written LST raster, read in row blocks.

    The retrieval's own blocks overlap at the raster's edges: they would count pixels twice.
    """
    import rasterio
    from rasterio.windows import Window

    statistics = _Statistics()
    with rasterio.open(path) as src:
        for row in range(0, src.height, rows):
            window = Window(0, row, src.width, min(rows, src.height - row))
            statistics(src.read(1, window=window))
    return statistics


def lst_retrieve(
    thermal: Annotated[str, InputPath("file")],
    output: Annotated[str, OutputPath("file")],
    mtl: Annotated[str, InputPath("file")] | None = None,
    emissivity: Annotated[float, Range(0, 1, exclusive_minimum=True)] | None = None,
    emissivity_raster: Annotated[str, InputPath("file")] | None = None,
    red: Annotated[str, InputPath("file")] | None = None,
    nir: Annotated[str, InputPath("file")] | None = None,
    water_vapour: Annotated[float, Range(0, 10), Unit("g cm-2")] = 2.0,
    water_vapour_raster: Annotated[str, InputPath("file")] | None = None,
    method: Literal["piml", "sc", "rte", "mono"] = "piml",
    model: Annotated[str, InputPath("file")] | None = None,
    tau: Annotated[float, Range(0, 1, exclusive_minimum=True)] | None = None,
    up: Annotated[float, Range(0)] | None = None,
    down: Annotated[float, Range(0)] | None = None,
    air_temperature: Annotated[float, Range(150, 350), Unit("K")] | None = None,
    band: Literal["L8_B10", "L8_B11", "L9_B10", "L9_B11"] = "L8_B10",
    block: Annotated[int, Range(16, 16384)] = 1024,
) -> dict[str, Any]:
    """Retrieve land-surface temperature (K) from a Landsat thermal band into a COG.

    Emissivity comes from one value, an emissivity raster, or red + NIR reflectance (NDVI
    thresholds). Water vapour is one value or a raster. Writes the LST COG (float32, K, NaN
    nodata) and an HTML report beside it.

    Args:
        thermal: Band-10/11 raster: Level-1 DN (give mtl) or TOA radiance in W m-2 sr-1 um-1.
        output: LST GeoTIFF to write (COG, kelvin).
        mtl: Landsat MTL file, for rescaling DN to radiance.
        emissivity: Surface emissivity as one value in (0, 1].
        emissivity_raster: Emissivity raster on the thermal grid (instead of a value).
        red: Red reflectance raster on the thermal grid (NDVI emissivity, with nir).
        nir: NIR reflectance raster on the thermal grid (NDVI emissivity, with red).
        water_vapour: Column water vapour, one value for the scene.
        water_vapour_raster: Column water vapour raster (g cm-2) on the thermal grid.
        method: piml (physics-informed network), sc (single channel, Jimenez-Munoz 2014),
            rte (radiative transfer inversion with tau/up/down) or mono (mono-window, needs
            the air temperature).
        model: Trained network for piml (default: the bundled Landsat-8 B10 model).
        tau: Atmospheric transmittance in (0, 1] (method rte).
        up: Upwelling path radiance, W m-2 sr-1 um-1 (method rte).
        down: Downwelling sky radiance, W m-2 sr-1 um-1 (method rte).
        air_temperature: Near-surface air temperature in kelvin (method mono).
        band: Thermal band of the input.
        block: Block side in pixels (memory bound).

    Returns:
        Output paths, the grid (CRS, extent, pixel size), min/mean/max/std LST in K over
        every valid pixel with valid and nodata pixel counts, and ``implausible_masked``: the
        pixels whose LST fell outside 180-380 K and were masked as nodata (by cause under
        ``plausibility``).
    """
    from eokit.core.errors import InputError
    from eokit.core.report import Report
    from eokit.lst.planck import get_band
    from eokit.lst.report import add_lst_section
    from eokit.lst.scene import RetrievalConfig, retrieve_scene

    if emissivity is not None and emissivity_raster is not None:
        raise InputError("give emissivity or emissivity_raster, not both",
                         parameter="emissivity")
    band_obj = get_band(band)
    atmosphere = None
    if method == "rte":
        if tau is None or up is None or down is None:
            raise InputError("method rte needs tau, up and down", parameter="method")
        atmosphere = (float(tau), float(up), float(down))
    network = None
    if method == "piml":
        from eokit.lst.model import default_model_path, load_network

        network = load_network(model if model is not None else default_model_path())
    config = RetrievalConfig(method=method, band=band_obj, atmosphere=atmosphere,
                             air_temperature_k=air_temperature, network=network)
    eps: str | float | None = emissivity_raster if emissivity_raster is not None else emissivity
    water: str | float = water_vapour_raster if water_vapour_raster is not None else water_vapour
    result = retrieve_scene(thermal, output, config=config, mtl=mtl, emissivity=eps, red=red,
                            nir=nir, water_vapour=water, block=block, progress=False)
    out = result.path
    statistics = _statistics(out, block)
    report = Report("Land-surface temperature", command="eokit lst retrieve")
    add_lst_section(report, out, title="LST map", method=method,
                    text=f"Method **{method}**, band {band_obj.name}, water vapour {water} g cm⁻².",
                    plausibility=result.as_dict())
    inputs = {"thermal": thermal, "mtl": mtl, "red": red, "nir": nir,
              "emissivity": emissivity_raster, "water_vapour": water_vapour_raster}
    report.provenance(inputs={k: v for k, v in inputs.items() if v is not None},
                      config={"method": method, "band": band, "block": block,
                              "emissivity": emissivity, "water_vapour": water_vapour,
                              "model": model})
    html = report.write(Path(output).with_suffix(".html"))
    return {
        "files": {"lst": str(out), "report": str(html)},
        "method": method,
        "band": band_obj.name,
        "lst": statistics.as_dict(),
        "implausible_masked": result.implausible_masked,
        "plausibility": result.as_dict(),
        "grid": raster_summary(out),
    }


TOOLS: list[ToolSpec] = [
    ToolSpec("lst_retrieve", lst_retrieve, effect="write"),
]
