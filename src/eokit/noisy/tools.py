"""Noisy-label segmentation operations described for the agent server."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from eokit.core.tools import InputPath, OutputPath, Range, ToolSpec, raster_summary


def noisy_simulate(
    out_dir: Annotated[str, OutputPath("dir")],
    scenes: Annotated[int, Range(1, 200)] = 4,
    size: Annotated[int, Range(32, 2048)] = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Write simulated building scenes with clean 0/255 masks (images/ + masks/ GeoTIFFs).

    Args:
        out_dir: Output folder.
        scenes: Number of scenes; each holds buildings.
        size: Scene size in pixels (1.5 m ground sampling distance).
        seed: Simulator seed.

    Returns:
        The two folders, the file count and the mean building fraction.
    """
    from eokit.noisy.pipeline import simulate_folder

    return simulate_folder(out_dir, scenes, size, seed=seed)


def noisy_corrupt(
    root: Annotated[str, InputPath("dir")],
    out_dir: Annotated[str, OutputPath("dir")],
    level: Literal["clean", "L1", "L2", "L3"] = "L2",
    misregister_px: Annotated[int, Range(0, 64)] = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Write noisy copies of a labelled folder's masks (object-level building noise).

    Args:
        root: Dataset folder (images/+masks/, image/+label/, images/+gt/ or images/+labels/).
        out_dir: Output folder for labels/<name>.tif and noise.json.
        level: Noise level: L1 mild, L2 moderate, L3 strong (remove/add/outline probabilities).
        misregister_px: Also shift each label by up to this many pixels.
        seed: Noise seed (each file's noise depends only on the seed and its name).

    Returns:
        Labels folder, file count and the realised mean noise rates.
    """
    from eokit.noisy.pipeline import corrupt_folder

    return corrupt_folder(root, out_dir, level=level, misregister_px=misregister_px, seed=seed)


def noisy_fit(
    root: Annotated[str, InputPath("dir")],
    out_dir: Annotated[str, OutputPath("dir")],
    labels_dir: Annotated[str, InputPath("dir")] | None = None,
    loss: Literal["kms", "ce", "smooth", "gce", "confusion"] = "kms",
    epochs: Annotated[int, Range(1, 1000)] = 20,
    tile: Annotated[int, Range(32, 2048)] = 256,
    rho: Annotated[float, Range(0, 1, exclusive_maximum=True)] = 0.75,
    seed: int = 0,
) -> dict[str, Any]:
    """Train a segmentation model from noisy labels; writes the model and label-error maps.

    Args:
        root: Dataset folder with images and labels.
        out_dir: Run folder.
        labels_dir: Noisy labels from noisy_corrupt (the folder's own labels become the
            clean reference).
        loss: kms (spatially correlated noise model) or a baseline.
        epochs: Training epochs.
        tile: Training tile size in pixels (multiple of 32).
        rho: Correlation of the label-error field.
        seed: Seed.

    Returns:
        Model path, label-error map GeoTIFFs, validation metrics and report path.
    """
    from eokit.noisy.pipeline import fit_folder

    return fit_folder(root, out_dir, labels_dir=labels_dir, loss=loss, epochs=epochs, tile=tile,
                      rho=rho, seed=seed)


def noisy_predict(
    model_dir: Annotated[str, InputPath("dir")],
    image: Annotated[str, InputPath("file")],
    out_dir: Annotated[str, OutputPath("dir")],
    tile: Annotated[int, Range(32, 4096)] = 512,
) -> dict[str, Any]:
    """Classify a scene of any size into a class COG and a probability COG on its grid.

    Args:
        model_dir: Run folder of noisy_fit.
        image: Image GeoTIFF (or PNG) with the bands the model was trained on.
        out_dir: Output folder.
        tile: Inference window in pixels.

    Returns:
        Output paths, CRS, extent and class areas.
    """
    from eokit.noisy.pipeline import predict_image

    result = predict_image(model_dir, image, out_dir, tile=tile)
    result["grid"] = raster_summary(result["classes"])
    return result


def noisy_evaluate(
    model_dir: Annotated[str, InputPath("dir")],
    root: Annotated[str, InputPath("dir")],
) -> dict[str, Any]:
    """Dataset-level IoU/F1/precision/recall of a trained model on a labelled folder.

    Args:
        model_dir: Run folder of noisy_fit.
        root: Labelled dataset folder.

    Returns:
        Metrics from one confusion matrix over every pixel.
    """
    from eokit.noisy.pipeline import evaluate_folder

    return evaluate_folder(model_dir, root)


def noisy_issues(
    model_dir: Annotated[str, InputPath("dir")],
    root: Annotated[str, InputPath("dir")],
    out_dir: Annotated[str, OutputPath("dir")],
    labels_dir: Annotated[str, InputPath("dir")] | None = None,
) -> dict[str, Any]:
    """Flag probable label errors of a labelled folder (confident learning on a model's output).

    Args:
        model_dir: Run folder of noisy_fit.
        root: Labelled dataset folder.
        out_dir: Output folder for issues/<name>.tif and issues.json.
        labels_dir: Labels to check instead of root's (root's are then the clean reference).

    Returns:
        Issue folder, file count, flagged fraction (and precision/recall with clean labels).
    """
    from eokit.noisy.pipeline import issues_folder

    summary = issues_folder(model_dir, root, out_dir, labels_dir=labels_dir)
    summary.pop("per_file", None)
    return summary


TOOLS: list[ToolSpec] = [
    ToolSpec("noisy_simulate", noisy_simulate, effect="write"),
    ToolSpec("noisy_corrupt", noisy_corrupt, effect="write"),
    ToolSpec("noisy_fit", noisy_fit, effect="long"),
    ToolSpec("noisy_predict", noisy_predict, effect="write"),
    ToolSpec("noisy_evaluate", noisy_evaluate, effect="read"),
    ToolSpec("noisy_issues", noisy_issues, effect="write"),
]
