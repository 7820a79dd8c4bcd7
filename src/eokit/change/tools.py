"""Change detection operations (predict, evaluate) described for the agent server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from eokit.core.tools import (
    InputPath,
    OutputPath,
    Range,
    ToolSpec,
    class_areas_m2,
    raster_summary,
)

_METRICS = ("precision", "recall", "f1", "iou", "oa", "kappa", "change_pixels", "pixels")


def _load(checkpoint: str, adapter: str | None, domain: str) -> Any:
    """Shared model plus an optional adapter; an unknown dataset fails before any work."""
    from eokit.change.task import load_domain_adapter, load_model

    model = load_model(checkpoint)
    if adapter is not None:
        load_domain_adapter(model, Path(adapter))
    model.domain_index(domain)
    return model


def change_predict(
    checkpoint: Annotated[str, InputPath("file")],
    image_a: Annotated[str, InputPath("file")],
    image_b: Annotated[str, InputPath("file")],
    out_dir: Annotated[str, OutputPath("dir")],
    domain: str,
    adapter: Annotated[str, InputPath("file")] | None = None,
    label: Annotated[str, InputPath("file")] | None = None,
    label_mode: Literal["auto", "0-255", "0-1", "0-1-ignore255"] = "auto",
    threshold: Annotated[float, Range(0, 1, exclusive_minimum=True, exclusive_maximum=True)]
    | None = None,
    tile: Annotated[int, Range(32, 8192)] = 768,
    overlap: Annotated[int, Range(0, 4096)] = 320,
    device: str = "cpu",
) -> dict[str, Any]:
    """Detect change between two co-registered dates with a trained CANet model.

    Writes change_probability.tif (float32 COG) and change_binary.tif (uint8 COG: 1 change,
    0 no change, 255 nodata), both on the grid of image A, report.html, and metrics.json when
    a reference label is given.

    Args:
        checkpoint: Shared model file (model.safetensors from change fit).
        image_a: Date-A raster (GeoTIFF) with the bands the model was trained on.
        image_b: Date-B raster on the same grid as image A.
        out_dir: Output folder.
        domain: Dataset whose batch norm, adapters and head are used (one of the model's
            datasets, or the one the adapter adds).
        adapter: Adapter file from change adapt that adds a dataset to the shared model.
        label: Reference change label on the same grid (adds precision/recall/F1/IoU).
        label_mode: How the label's values are read (auto, 0/255, 0/1, 0/1 with 255 ignored).
        threshold: Change probability threshold; default: the dataset's, chosen on its
            training labels, else 0.5.
        tile: Inference window in pixels (multiple of 32).
        overlap: Window overlap in pixels (multiple of 32).
        device: Torch device (cpu, cuda, cuda:N, mps, auto).

    Returns:
        Output paths, the binary map's grid (CRS, extent, pixel size), changed and unchanged
        area in m^2 with pixel counts, the threshold used, and metrics when a label was given.
    """
    from eokit.change.predict import predict_pair
    from eokit.core.metrics import jsonable

    model = _load(checkpoint, adapter, domain)
    threshold = model.threshold_of(domain) if threshold is None else threshold
    result = predict_pair(model, image_a, image_b, out_dir, domain=domain, label=label,
                          label_mode=label_mode, threshold=threshold, tile=tile, overlap=overlap,
                          device=device, progress=False, command="eokit change predict")
    areas = class_areas_m2(result["binary"], names={0: "no_change", 1: "change"})
    area_m2 = areas["area_m2"]
    summary: dict[str, Any] = {
        "files": {k: str(result[k]) for k in ("probability", "binary", "report")
                  if result.get(k) is not None},
        "domain": domain,
        "threshold": float(threshold),
        "changed_area_m2": None if area_m2 is None else area_m2.get("change", 0.0),
        "class_area_m2": area_m2,
        "class_pixels": areas["pixels"],
        "grid": raster_summary(result["binary"]),
    }
    if result["metrics"] is not None:
        summary["metrics"] = jsonable({k: result["metrics"][k] for k in _METRICS})
        summary["files"]["metrics"] = str(Path(out_dir) / "metrics.json")
    return summary


def change_evaluate(
    checkpoint: Annotated[str, InputPath("file")],
    dataset: Annotated[str, InputPath("dir")],
    domain: str,
    adapter: Annotated[str, InputPath("file")] | None = None,
    split: str = "test",
    layout: Literal["auto", "levir", "split", "whu"] = "auto",
    label_mode: Literal["auto", "0-255", "0-1", "0-1-ignore255"] = "auto",
    threshold: Annotated[float, Range(0, 1, exclusive_minimum=True, exclusive_maximum=True)]
    | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Change-class precision, recall, F1 and IoU of a model on a labelled dataset folder.

    One confusion matrix over every labelled pixel of the split (no per-image averaging).

    Args:
        checkpoint: Shared model file (model.safetensors from change fit).
        dataset: Dataset folder: LEVIR-CD/BIT layout (A/, B/, label/, list/), split folders
            (train/A ...), or WHU (two dates and a change label).
        domain: Dataset whose batch norm, adapters and head are used.
        adapter: Adapter file from change adapt that adds a dataset to the shared model.
        split: Split name (LEVIR list/<split>.txt or <split>/ folder); ignored for WHU.
        layout: Folder layout; auto detects it.
        label_mode: How the labels' values are read.
        threshold: Change probability threshold; default: the dataset's stored one, else 0.5.
        device: Torch device (cpu, cuda, cuda:N, mps, auto).

    Returns:
        Pair count, threshold and the metrics (precision, recall, F1, IoU, OA, kappa, change
        and total pixels).
    """
    from eokit.change.data import ChangeDataset, find_pairs
    from eokit.change.task import evaluate
    from eokit.core.metrics import jsonable
    from eokit.core.tiling import resolve_device

    model = _load(checkpoint, adapter, domain)
    model.to(resolve_device(device))
    threshold = model.threshold_of(domain) if threshold is None else threshold
    pairs = find_pairs(dataset, split if layout != "whu" else None, layout)
    data = ChangeDataset(pairs, label_mode=label_mode, bands=model.in_channels)
    data.check_labels()
    metrics = evaluate(model, data, domain=domain, batch_size=1, threshold=threshold)
    return {"dataset": dataset, "split": split, "pairs": len(pairs), "domain": domain,
            "threshold": float(threshold),
            "metrics": jsonable({k: metrics[k] for k in _METRICS})}


def change_fit(
    out_dir: Annotated[str, OutputPath("dir")],
    datasets: tuple[Literal["sim_buildings", "sim_landcover", "sim_sensor", "sim_new"], ...] = (
        "sim_buildings",),
    count: Annotated[int, Range(2, 100000)] = 16,
    size: Annotated[int, Range(32, 1024)] = 64,
    epochs: Annotated[int, Range(1, 1000)] = 10,
    batch_size: Annotated[int, Range(1, 1024)] = 8,
    lr: Annotated[float, Range(0, 1, exclusive_minimum=True)] = 2e-3,
    seed: int = 0,
) -> dict[str, Any]:
    """Train a CANet change model on simulated datasets (joint training, one head per dataset).

    Runs the same training as 'eokit change fit' on a config it writes to out_dir/config.yaml
    (simulated pairs only, so every input is generated inside the output folder). Writes
    model.safetensors, val_metrics.json and checkpoints/.

    Args:
        out_dir: Run folder.
        datasets: Simulated datasets to train on jointly (each its own batch norm and head).
        count: Simulated training pairs per dataset (validation pairs are drawn separately).
        size: Side of the simulated pairs in pixels.
        epochs: Training epochs.
        batch_size: Pairs per training batch.
        lr: Learning rate.
        seed: Seed of the simulated data and the initial weights.

    Returns:
        The model path (for change_predict / change_evaluate), the datasets it knows and the
        validation metrics per dataset.
    """
    import json

    import yaml

    from eokit.change.cli import fit
    from eokit.core.errors import InputError
    from eokit.core.metrics import jsonable

    names = list(datasets)
    if not names or len(set(names)) != len(names):
        raise InputError(f"give one or more different datasets, got {names}",
                         parameter="datasets")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "seed": seed,
        "model": {"in_channels": 6},
        "datasets": [{"name": n, "source": "sim", "count": count, "size": size} for n in names],
        "train": {"batch_size": batch_size, "lr": lr},
        "trainer": {"max_epochs": epochs, "enable_progress_bar": False, "logger": False},
    }
    config_path = out / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    fit.callback(config_path=config_path, out_dir=out, resume=False,  # type: ignore[misc]
                 trainer_args=())
    metrics = json.loads((out / "val_metrics.json").read_text())
    return {
        "model": str(out / "model.safetensors"),
        "config": str(config_path),
        "datasets": names,
        "val_metrics": jsonable({n: {k: m[k] for k in _METRICS if k in m}
                                 for n, m in metrics.items()}),
    }


TOOLS: list[ToolSpec] = [
    ToolSpec("change_predict", change_predict, effect="write"),
    ToolSpec("change_evaluate", change_evaluate, effect="read"),
    ToolSpec("change_fit", change_fit, effect="long"),
]
