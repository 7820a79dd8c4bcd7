"""Detection and visual-grounding operations described for the agent server."""

from __future__ import annotations

from typing import Annotated, Any

from eokit.core.tools import InputPath, OutputPath, Range, ToolSpec


def grounding_detect(
    model_dir: Annotated[str, InputPath("dir")],
    image: Annotated[str, InputPath("file")],
    out_geojson: Annotated[str, OutputPath("file")],
    classes: list[str] | None = None,
    score_threshold: Annotated[float, Range(0, 1)] = 0.3,
    tile: Annotated[int, Range(64, 4096)] = 512,
) -> dict[str, Any]:
    """Detect objects of the named classes in a scene of any size; boxes as GeoJSON polygons.

    Args:
        model_dir: Model folder of 'eokit grounding fit'.
        image: Image GeoTIFF (or PNG) with the bands the model was trained on.
        out_geojson: Output GeoJSON (boxes in lon/lat, class and score per box).
        classes: Class names to look for (default: the training vocabulary). Names far from
            every training class are flagged in the summary.
        score_threshold: Lowest detection score kept.
        tile: Window in pixels (multiple of 32).

    Returns:
        GeoJSON path, count per class, and each name's closest training class with its
        similarity.
    """
    from eokit.grounding.pipeline import detect_image, load_model

    return detect_image(load_model(model_dir), image, out_geojson, classes=classes,
                        score_threshold=score_threshold, tile=tile)


def grounding_ground(
    model_dir: Annotated[str, InputPath("dir")],
    image: Annotated[str, InputPath("file")],
    expression: str,
    out_geojson: Annotated[str, OutputPath("file")],
    tile: Annotated[int, Range(64, 4096)] = 512,
) -> dict[str, Any]:
    """Locate the one object a referring expression describes ("the ship nearest the bridge").

    Args:
        model_dir: Model folder of 'eokit grounding fit'.
        image: Image GeoTIFF (or PNG).
        expression: The referring expression.
        out_geojson: Output GeoJSON with the answer box as a polygon.
        tile: Window in pixels (multiple of 32).

    Returns:
        The box in pixels and in map coordinates (with the CRS), its probability and the top
        proposals with their probabilities.
    """
    from eokit.grounding.pipeline import ground_image, load_model

    return ground_image(load_model(model_dir), image, expression, out_geojson, tile=tile)


def grounding_evaluate(
    model_dir: Annotated[str, InputPath("dir")],
    out_dir: Annotated[str, OutputPath("dir")],
    data: Annotated[str, InputPath("any")],
    data_format: str,
    split_dir: Annotated[str, InputPath("dir")] | None = None,
    split_name: str = "test",
) -> dict[str, Any]:
    """Score a grounding model on a records folder: Pr@0.5-0.9, meanIoU, cumIoU and mAP.

    Args:
        model_dir: Model folder of 'eokit grounding fit'.
        out_dir: Folder for metrics.json and expressions.csv (one row per expression).
        data: Records folder (COCO: the json file).
        data_format: One of dior-rsvg, opt-rsvg, synth, dota, coco, isaid.
        split_dir: Split folder (sha256sum files); without it every image is scored.
        split_name: Split scored when split_dir is given.

    Returns:
        The metrics, the split used (split file and its sha256) and the output files.
    """
    from eokit.grounding.evaluate import evaluate_model

    return evaluate_model(model_dir, out_dir, data=data, fmt=data_format, split_dir=split_dir,
                          split_name=split_name)


def grounding_adapt(
    model_dir: Annotated[str, InputPath("dir")],
    out_adapter: Annotated[str, OutputPath("file")],
    method: str = "lora:fusion",
    records: Annotated[str, InputPath("dir")] | None = None,
    simulate: Annotated[int, Range(2, 2000)] = 40,
    gsd_m: Annotated[float, Range(0.1, 5.0)] = 1.0,
    gain: Annotated[float, Range(0.01, 10.0)] = 1.0,
    blur: Annotated[float, Range(0.0, 10.0)] = 0.0,
    classes: list[str] | None = None,
    label_share: Annotated[float, Range(0.01, 1.0)] = 1.0,
    steps: Annotated[int, Range(1, 100000)] = 60,
    domain: str = "target",
) -> dict[str, Any]:
    """Adapt a grounding model to a new domain training only the part the method names.

    Args:
        model_dir: Model folder of 'eokit grounding fit' (the base model, left unchanged).
        out_adapter: Adapter file to write (.safetensors; a cost report goes beside it as .json).
        method: lora:text|vision|fusion|decoder|all, bitfit, adapter:R, head-only or full;
            comma combinations allowed.
        records: Folder of scene folders (expressions.json + image) instead of simulated scenes.
        simulate: Simulated target scenes when no records are given (one in five held out).
        gsd_m: Pixel size of the simulated target domain in metres.
        gain: Radiometric gain of the simulated target sensor.
        blur: Point-spread blur sigma of the simulated target sensor in pixels.
        classes: Object classes of the simulated target domain.
        label_share: Share of the target training scenes used.
        steps: Optimiser steps.
        domain: Name of the target domain stored in the adapter file.

    Returns:
        The cost report: trainable parameters and %, optimizer-state memory, step time, peak
        RSS, adapter file size, and held-out Pr@0.5 / meanIoU / cumIoU before and after.
    """
    from pathlib import Path

    from eokit.grounding.adapt import adapt_model_dir, target_samples

    samples = target_samples(scenes=simulate, gsd_m=gsd_m, gain=gain, blur_sigma=blur,
                             classes=classes, records=records)
    return adapt_model_dir(model_dir, out_adapter, method=method, samples=samples,
                           label_share=label_share, steps=steps, domain=domain,
                           report_path=Path(out_adapter).with_suffix(".json"))


TOOLS: list[ToolSpec] = [
    ToolSpec("grounding_detect", grounding_detect, effect="write"),
    ToolSpec("grounding_ground", grounding_ground, effect="write"),
    ToolSpec("grounding_evaluate", grounding_evaluate, effect="write"),
    ToolSpec("grounding_adapt", grounding_adapt, effect="write"),
]
