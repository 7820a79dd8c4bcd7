"""``eokit predict``: run your own TorchScript or ONNX model over GeoTIFFs of any size.

The same streaming tiled inference as every capability's ``predict`` (:mod:`eokit.core.tiling`):
windows read on the fly, blended, written as a Cloud-Optimized GeoTIFF on the input's grid, with
band selection, scaling/normalisation, an output activation or class map, and an HTML report.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from eokit.core.cliopts import out_option
from eokit.core.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["load_user_model", "predict", "run_user_model"]

ACTIVATIONS = ("none", "sigmoid", "softmax")


class _OnnxModel:
    """An onnxruntime session called like a torch module: tensors in, one tensor out."""

    def __init__(self, path: Path) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise InputError("ONNX models need onnxruntime: pip install 'eokit[onnx]'",
                             path=path) from None
        try:
            self.session = onnxruntime.InferenceSession(str(path),
                                                        providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 (onnxruntime raises its own error types)
            first = (str(error).strip().splitlines() or ["unreadable"])[0][:160]
            raise InputError(f"not a loadable ONNX model ({first})", path=path) from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        shape = self.session.get_inputs()[0].shape
        #: Fixed window size the graph was exported with, if any.
        self.fixed_size = tuple(shape[-2:]) if all(isinstance(s, int) for s in shape[-2:]) \
            else None

    def __call__(self, *tensors: Any) -> Any:
        import torch

        if len(tensors) != len(self.inputs):
            raise InputError(f"the ONNX model takes {len(self.inputs)} input(s), got "
                             f"{len(tensors)} --in raster(s)", parameter="in")
        feed = {name: t.detach().cpu().numpy().astype(np.float32)
                for name, t in zip(self.inputs, tensors, strict=True)}
        return torch.from_numpy(self.session.run(None, feed)[0])


def load_user_model(path: str | Path, device: str = "cpu") -> Any:
    """A torch.export archive (``.pt2``), TorchScript (``.pt``/``.ts``) or ONNX (``.onnx``).

    TorchScript archives are read with ``torch.jit.load`` (compiled graphs, no pickled Python
    objects); a plain ``torch.save`` pickle is refused, since loading one runs arbitrary code.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError("model file not found", path=path)
    if path.suffix.lower() == ".onnx":
        return _OnnxModel(path)
    if path.suffix.lower() == ".pt2":  # torch.export archive (graph + weights, no pickle)
        try:
            return torch.export.load(str(path)).module()
        except Exception as error:  # noqa: BLE001 (export raises many error types)
            first = (str(error).strip().splitlines() or ["unreadable"])[0][:120]
            raise InputError(f"not a torch.export archive ({first})", path=path) from None
    try:
        model = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
    except (RuntimeError, ValueError) as error:
        first = (str(error).strip().splitlines() or ["unreadable"])[0][:120]
        raise InputError("not a TorchScript archive (export with torch.jit.script/trace and "
                         f"save, or use ONNX): {first}", path=path) from None
    return model.eval()


def _parse_floats(text: str | None, name: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"give comma-separated numbers, got {text!r}", parameter=name) from None


def run_user_model(
    model_path: str | Path,
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    bands: Sequence[int] | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    activation: str = "none",
    argmax: bool = False,
    classes: Sequence[str] | None = None,
    tile: int = 512,
    overlap: int = 128,
    align: int = 1,
    batch_size: int = 4,
    out_dtype: str = "float32",
    nodata: float | None = None,
    device: str = "cpu",
    report: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Tiled inference of a user model; a COG on the first input's grid and an HTML report.

    Input values become ``(value * scale + offset - mean) / std`` per band before the model;
    ``activation`` is applied to its output, then ``argmax`` (a uint8 class map, with
    ``classes`` as names) if asked. Returns the output paths and a summary.
    """
    import torch

    from eokit.core.raster import raster_info
    from eokit.core.tiling import check_tiling, predict_raster

    if activation not in ACTIVATIONS:
        raise InputError(f"use one of {', '.join(ACTIVATIONS)}", parameter="activation")
    if not inputs:
        raise InputError("give at least one --in raster", parameter="in")
    check_tiling(tile, overlap, batch_size)
    grid, count, _ = raster_info(inputs[0])
    n_bands = len(bands) if bands else count
    for name, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) not in (1, n_bands):
            raise InputError(f"needs 1 or {n_bands} values (one per band), got {len(values)}",
                             parameter=name)
    if std is not None and any(s <= 0 for s in std):
        raise InputError("must be > 0", parameter="std")
    model = load_user_model(model_path, device)
    fixed = getattr(model, "fixed_size", None)
    if fixed is not None and (tile, tile) != tuple(fixed):
        raise InputError(f"the ONNX graph was exported for {fixed[0]}x{fixed[1]} windows: pass "
                         f"--tile {fixed[0]}", parameter="tile")
    m = torch.tensor(mean if mean is not None else [0.0], dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std if std is not None else [1.0], dtype=torch.float32).view(-1, 1, 1)

    def preprocess(arrays: list[np.ndarray]) -> list[torch.Tensor]:
        return [(torch.from_numpy(a.astype(np.float32)) * scale + offset - m) / s
                for a in arrays]

    def forward(*tensors: torch.Tensor) -> torch.Tensor:
        try:
            out = model(*tensors)
        except RuntimeError as error:  # wrong band count, dtype, device... inside the graph
            lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
            raise InputError(f"the model failed on a window of {tuple(tensors[0].shape)} "
                             f"({(lines[-1] if lines else 'error')[:160]}); check --bands, "
                             "--tile and the model's input", path=model_path) from None
        if isinstance(out, dict):
            out = next(iter(out.values()))
        elif isinstance(out, list | tuple):
            out = out[0]
        if out.ndim == 3:  # (B, H, W): one band
            out = out[:, None]
        if out.ndim != 4 or out.shape[-2:] != tensors[0].shape[-2:]:
            raise InputError(f"the model returned {tuple(out.shape)} for a window of "
                             f"{tuple(tensors[0].shape)}; eokit predict needs (B, C, H, W) "
                             "maps at the input's resolution", path=model_path)
        if activation == "sigmoid":
            out = torch.sigmoid(out)
        elif activation == "softmax":
            out = torch.softmax(out, dim=1)
        return torch.as_tensor(out)

    probe_size = tile if fixed is not None else min(tile, grid.height, grid.width)
    probe = [np.zeros((n_bands, probe_size, probe_size), np.float32) for _ in inputs]
    with torch.inference_mode():
        out_channels = int(forward(*[t[None] for t in preprocess(probe)]).shape[1])
    if classes and argmax and len(classes) != out_channels:
        raise InputError(f"names {len(classes)} classes but the model outputs {out_channels}",
                         parameter="classes")
    postprocess = None
    tags: dict[str, str] = {}
    dtype = out_dtype
    band_names = [f"output_{i + 1}" for i in range(out_channels)]
    if argmax:
        def postprocess(block: np.ndarray) -> np.ndarray:
            return np.asarray(np.argmax(block, axis=0), dtype=np.float32)[None]
        dtype, band_names = "uint8", ["class"]
        tags = {f"CLASS_{i}": name for i, name in enumerate(classes or [])}
    out_path = Path(output)
    predict_raster(
        forward, list(inputs), out_path, out_channels=out_channels, tile=tile, overlap=overlap,
        batch_size=batch_size, preprocess=preprocess, out_dtype=dtype, nodata=nodata,
        device=device, band_names=band_names, progress=progress, bands=bands,
        postprocess=postprocess, align=align, tags=tags,
    )
    summary: dict[str, Any] = {
        "output": str(out_path), "model": str(model_path), "inputs": [str(p) for p in inputs],
        "crs": str(grid.crs) if grid.crs else None, "width": grid.width, "height": grid.height,
        "out_channels": out_channels, "argmax": argmax, "activation": activation,
        "tile": tile, "overlap": overlap, "align": align,
    }
    if argmax and classes:
        summary["classes"] = list(classes)
    if report:
        summary["report"] = str(_report(out_path, summary, grid, classes if argmax else None))
    return summary


def _report(path: Path, summary: dict[str, Any], grid: Any, classes: Sequence[str] | None) -> Path:
    from eokit.core.raster import read_raster
    from eokit.core.report import Report

    data = read_raster(path, allow_empty=True).data[0].astype(np.float32)
    report = Report("Model prediction", command=" ".join(["eokit", *sys.argv[1:]]))
    report.section("Output", f"`{path.name}`: {summary['out_channels']} output band(s) of "
                   f"`{Path(summary['model']).name}` over {grid.width} x {grid.height} px "
                   f"(tiles {summary['tile']} px, overlap {summary['overlap']} px).")
    if classes:
        report.image_map(data, title="Class map", pixel_size_m=grid.pixel_size_m,
                         classes=list(classes))
    else:
        report.image_map(data, title="Output band 1", pixel_size_m=grid.pixel_size_m,
                         colorbar_label="model output")
    report.provenance(extra={k: v for k, v in summary.items() if k != "report"})
    return report.write(path.with_suffix(".html"))


@click.command("predict")
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="torch.export archive (.pt2), TorchScript (.pt/.ts) or ONNX (.onnx; needs "
                   "onnxruntime).")
@click.option("--in", "inputs", required=True, multiple=True, type=click.Path(path_type=Path),
              help="Input GeoTIFF; repeat for models with several inputs (e.g. two dates).")
@out_option("output", required=True, type=click.Path(path_type=Path),
              help="Output GeoTIFF (COG on the first input's grid).")
@click.option("--bands", default=None, help="1-based bands to read, e.g. 4,3,2 (default all).")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Multiply input values (e.g. 0.0001 for Sentinel-2 L2A digital numbers).")
@click.option("--offset", type=float, default=0.0, show_default=True, help="Then add this.")
@click.option("--mean", default=None, help="Per-band mean subtracted after scaling (a,b,c).")
@click.option("--std", default=None, help="Per-band standard deviation divided by (a,b,c).")
@click.option("--activation", type=click.Choice(ACTIVATIONS), default="none",
              show_default=True, help="Applied to the model's output.")
@click.option("--argmax", is_flag=True, help="Write the class index (uint8) instead of scores.")
@click.option("--classes", default=None, help="Class names for --argmax (comma-separated).")
@click.option("--tile", type=int, default=512, show_default=True, help="Window size in px.")
@click.option("--overlap", type=int, default=128, show_default=True,
              help="Window overlap in px; blend weights are zero within overlap/4 of inner edges.")
@click.option("--align", type=int, default=1, show_default=True,
              help="The model's stride (e.g. 32 for a U-Net): windows start on its grid.")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Windows per call.")
@click.option("--out-dtype", default="float32", show_default=True, help="Output data type.")
@click.option("--nodata", type=float, default=None, help="Output nodata (default NaN/dtype max).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, auto...")
def predict(model_path: Path, inputs: tuple[Path, ...], output: Path, bands: str | None,
            scale: float, offset: float, mean: str | None, std: str | None, activation: str,
            argmax: bool, classes: str | None, tile: int, overlap: int, align: int,
            batch_size: int, out_dtype: str, nodata: float | None, device: str) -> None:
    """Run your own TorchScript/ONNX model over GeoTIFFs of any size (streamed, tiled)."""
    band_list = None
    if bands:
        try:
            band_list = [int(b) for b in bands.split(",")]
        except ValueError:
            raise InputError(f"give comma-separated band numbers, got {bands!r}",
                             parameter="bands") from None
    summary = run_user_model(
        model_path, inputs, output, bands=band_list, scale=scale, offset=offset,
        mean=_parse_floats(mean, "mean"), std=_parse_floats(std, "std"), activation=activation,
        argmax=argmax, classes=classes.split(",") if classes else None, tile=tile,
        overlap=overlap, align=align, batch_size=batch_size, out_dtype=out_dtype,
        nodata=nodata, device=device,
    )
    click.echo(f"output: {summary['output']}")
    if "report" in summary:
        click.echo(f"report: {summary['report']}")
    logger.debug("summary: %s", json.dumps(summary))
