"""Open-vocabulary segmentation operations described for the agent server."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from eokit.core.tools import InputPath, OutputPath, Range, ToolSpec, raster_summary


def openvocab_fit(
    out_dir: Annotated[str, OutputPath("dir")],
    root: Annotated[str, InputPath("dir")] | None = None,
    simulate: Annotated[int, Range(0, 10000)] = 0,
    layout: Literal["auto", "loveda", "isprs", "isaid", "openearthmap", "dlrsd",
                    "generic"] = "auto",
    split: str = "sim",
    epochs: Annotated[int, Range(1, 1000)] = 10,
    tile: Annotated[int, Range(32, 2048)] = 128,
    seed: int = 0,
) -> dict[str, Any]:
    """Train an open-vocabulary segmenter on the seen classes of a split.

    Args:
        out_dir: Run folder.
        root: Labelled dataset folder (or use ``simulate``).
        simulate: Train on this many simulated scenes instead of a folder.
        layout: Folder layout of ``root``.
        split: Seen/unseen split: a packaged name (``sim``...) or a YAML path.
        epochs: Training epochs.
        tile: Training tile size in pixels (multiple of 32).
        seed: Seed.

    Returns:
        Model path, seen/unseen class lists, tile count and report path.
    """
    from eokit.openvocab.pipeline import fit_run

    return fit_run(out_dir, root=root, simulate=simulate, layout=layout, split=split,
                   epochs=epochs, tile=tile, seed=seed, trainer_overrides={"logger": False})


def openvocab_predict(
    model_dir: Annotated[str, InputPath("dir")],
    image: Annotated[str, InputPath("file")],
    out_dir: Annotated[str, OutputPath("dir")],
    classes: str,
    tile: Annotated[int, Range(32, 4096)] = 512,
) -> dict[str, Any]:
    """Segment a scene of any size into classes named now (they need not have been trained).

    Args:
        model_dir: Run folder of openvocab_fit.
        image: Image GeoTIFF with the bands the model was trained on.
        out_dir: Output folder.
        classes: Comma-separated class names, e.g. "building,road,tree,water".
        tile: Inference window in pixels.

    Returns:
        Class and probability COGs, report, area per class and each name's similarity to the
        training vocabulary (with warnings for names far from anything learnt).
    """
    from eokit.openvocab.pipeline import predict_image

    result = predict_image(model_dir, image, out_dir, classes=classes, tile=tile)
    result["grid"] = raster_summary(result["classes"])
    return result


def openvocab_evaluate(
    model_dir: Annotated[str, InputPath("dir")],
    root: Annotated[str, InputPath("dir")] | None = None,
    simulate: Annotated[int, Range(0, 10000)] = 0,
    split: str | None = None,
) -> dict[str, Any]:
    """Seen, unseen and h-mIoU of a trained model from one dataset-level confusion matrix.

    Args:
        model_dir: Run folder of openvocab_fit.
        root: Labelled dataset folder (or use ``simulate``).
        simulate: Evaluate on this many new simulated scenes.
        split: Seen/unseen split (default: the one the model was trained with).

    Returns:
        seen_miou, unseen_miou, h_miou, miou and per-class IoU rows.
    """
    from eokit.openvocab.pipeline import evaluate_run

    return evaluate_run(model_dir, root=root, simulate=simulate, split=split)


TOOLS: list[ToolSpec] = [
    ToolSpec("openvocab_fit", openvocab_fit, effect="long"),
    ToolSpec("openvocab_predict", openvocab_predict, effect="write"),
    ToolSpec("openvocab_evaluate", openvocab_evaluate, effect="read"),
]
