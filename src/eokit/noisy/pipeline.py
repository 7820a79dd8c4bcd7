"""User-facing operations: corrupt a label folder, fit, predict a scene to COGs, evaluate."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eokit.core.errors import InputError
from eokit.core.types import IGNORE_INDEX

logger = logging.getLogger(__name__)

__all__ = [
    "CLASS_COLORS",
    "corrupt_folder",
    "evaluate_folder",
    "fit_folder",
    "load_model",
    "predict_image",
]

#: Display colours per class id (background, building, then further classes).
CLASS_COLORS: tuple[str, ...] = (
    "#282828", "#e63c28", "#3ca03c", "#3c5ac8", "#dcc83c", "#a050c8", "#3cc8c8", "#c8783c",
)
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "model.json"


def _class_names(num_classes: int, names: Sequence[str] | None) -> list[str]:
    if names is not None:
        if len(names) != num_classes:
            raise InputError(f"{len(names)} class names for {num_classes} classes",
                             parameter="class_names")
        return list(names)
    return ["background", "building"] if num_classes == 2 else \
        [f"class_{i}" for i in range(num_classes)]


def _colors(num_classes: int) -> list[str]:
    return [CLASS_COLORS[i % len(CLASS_COLORS)] for i in range(num_classes)]


# --------------------------------------------------------------------------------------------------
# corrupt
# --------------------------------------------------------------------------------------------------
def simulate_folder(out_dir: str | Path, scenes: int, size: int = 256, *, seed: int = 0,
                    gsd_m: float = 1.5) -> dict[str, Any]:
    """Write simulated building scenes as an ``images/`` + ``masks/`` folder of GeoTIFFs.

    Images are 8-bit RGB, masks 0/255 buildings, both on the scene's projected grid; the layout
    is the one :func:`eokit.noisy.data.find_pairs` reads, so ``corrupt``, ``fit`` and
    ``evaluate`` take the folder as it is.

    Args:
        out_dir: Output folder.
        scenes: Number of scenes (each holds buildings).
        size: Scene size in pixels.
        seed: Simulator seed.
        gsd_m: Ground sampling distance in metres.

    Returns:
        ``{"images": folder, "masks": folder, "files": n, "building_fraction": mean}``.
    """
    from eokit.core.raster import write_raster
    from eokit.noisy.data import simulated_buildings

    if scenes < 1:
        raise InputError(f"must be at least 1, got {scenes}", parameter="scenes")
    out = Path(out_dir)
    folders = {sub: out / sub for sub in ("images", "masks")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    fractions = []
    for item in simulated_buildings(scenes, size, seed=seed, gsd_m=gsd_m):
        image = np.clip(np.round(item.image * 255.0), 0, 255).astype(np.uint8)
        write_raster(folders["images"] / f"{item.key}.tif", image, item.grid,
                     band_names=["red", "green", "blue"])
        write_raster(folders["masks"] / f"{item.key}.tif",
                     (item.clean * 255).astype(np.uint8)[None], item.grid, nodata=None)
        fractions.append(float(item.clean.mean()))
    logger.info("wrote %d simulated building scenes to %s", len(fractions), out)
    return {"images": str(folders["images"]), "masks": str(folders["masks"]),
            "files": len(fractions), "building_fraction": float(np.mean(fractions))}


def corrupt_folder(root: str | Path, out_dir: str | Path, *, level: str = "L2", seed: int = 0,
                   misregister_px: int = 0, pattern: str = "",
                   num_classes: int = 2) -> dict[str, Any]:
    """Write noisy copies of a dataset's labels (GeoTIFF, same grid) and the realised rates.

    Args:
        root: Dataset folder (see :func:`eokit.noisy.data.find_pairs`).
        out_dir: Output folder: ``labels/<key>.tif`` and ``noise.json``.
        level: ``clean``, ``L1``, ``L2`` or ``L3`` (object-level building noise).
        seed: Noise seed (per file: the same file always gets the same noise).
        misregister_px: Also shift each label by up to this many pixels.
        pattern: Only files whose name contains this text.
        num_classes: Classes of the labels.

    Returns:
        ``{"labels": folder, "files": n, "rates": mean realised rates, "noise": path}``.
    """
    from eokit.core.raster import atomic_write, read_image, write_raster
    from eokit.noisy.data import find_pairs, read_labelled_image
    from eokit.noisy.noise import NOISE_LEVELS, corrupt_objects, misregister, noise_rates

    if level not in NOISE_LEVELS:
        raise InputError(f"unknown level {level!r}; use {', '.join(NOISE_LEVELS)}",
                         parameter="level")
    pairs = find_pairs(root, pattern=pattern)
    out = Path(out_dir)
    labels_dir = out / "labels"
    labels_dir.mkdir(parents=True, exist_ok=True)
    per_file = {}
    for key, image_path, label_path in pairs:
        item = read_labelled_image(image_path, label_path, num_classes=num_classes)
        noisy = corrupt_objects(item.label, NOISE_LEVELS[level], seed=seed, key=key)
        shift = (0, 0)
        if misregister_px:
            noisy, shift = misregister(noisy, misregister_px, seed=seed, key=key)
        grid = read_image(label_path).grid
        write_raster(labels_dir / f"{key}.tif", noisy.astype(np.uint8)[None], grid, nodata=None,
                     class_names=_class_names(num_classes, None), class_colors=_colors(num_classes))
        per_file[key] = {**noise_rates(item.label, noisy), "shift_px": list(shift)}
    means = {name: float(np.mean([r[name] for r in per_file.values()]))
             for name in ("pixel_error", "removed", "added")}
    record = {"level": level, "seed": seed, "misregister_px": misregister_px, "mean": means,
              "files": per_file}
    noise_path = out / "noise.json"
    with atomic_write(noise_path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2) + "\n")
    logger.info("wrote %d noisy labels to %s (pixel error %.3f)", len(pairs), labels_dir,
                means["pixel_error"])
    return {"labels": str(labels_dir), "files": len(pairs), "rates": means,
            "noise": str(noise_path)}


# --------------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------------
def _read_items(root: str | Path | None, *, labels_dir: str | Path | None, pattern: str,
                num_classes: int, clean: bool, simulate: int, seed: int,
                tile: int) -> list[Any]:
    from eokit.noisy.data import find_pairs, read_labelled_image, simulated_buildings
    from eokit.noisy.noise import NOISE_LEVELS, corrupt_objects

    if root is None:
        if simulate < 1:
            raise InputError("give a dataset folder or --simulate N", parameter="data")
        items = simulated_buildings(simulate, max(128, tile), seed=seed)
        for item in items:
            assert item.clean is not None
            item.label = corrupt_objects(item.clean, NOISE_LEVELS["L2"], seed=seed, key=item.key)
        return items
    items = []
    for key, image_path, label_path in find_pairs(root, pattern=pattern):
        truth = read_labelled_image(image_path, label_path, num_classes=num_classes, key=key)
        if labels_dir is not None:
            noisy_path = Path(labels_dir) / f"{key}.tif"
            if not noisy_path.is_file():
                raise InputError(f"no noisy label for {key}", path=noisy_path)
            item = read_labelled_image(image_path, noisy_path, num_classes=num_classes, key=key)
            if clean:
                item.clean = truth.label
        else:
            item = truth
        items.append(item)
    return items


def fit_folder(root: str | Path | None, out_dir: str | Path, *,
               labels_dir: str | Path | None = None, loss: str = "kms", epochs: int = 20,
               tile: int = 256, batch_size: int = 8, rho: float = 0.75, lr: float = 1e-3,
               estep: int = 10, encoder: str = "efficientnet_lite0",
               pretrained: bool | str = True, num_classes: int = 2,
               pattern: str = "", val_fraction: float = 0.15, seed: int = 0,
               resume: bool = False, simulate: int = 0, error_maps: int = 4,
               report: bool = True, progress: bool = False, store_on_disk: bool = False,
               trainer_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train a segmentation model on (noisy) labels and save it with label-error maps.

    Args:
        root: Dataset folder (None with ``simulate``: simulated scenes with L2 noise).
        out_dir: Run folder: checkpoints, ``model.safetensors``, ``model.json``,
            ``error_maps/*.tif`` (kms), ``metrics.json``, ``report.html``.
        labels_dir: Folder of noisy labels ``<key>.tif`` (from :func:`corrupt_folder`); the
            dataset's own labels are then the clean reference for the report.
        loss: ``kms``, ``ce``, ``smooth``, ``gce`` or ``confusion``.
        epochs: Training epochs.
        tile: Training tile size (multiple of 32).
        batch_size: Tiles per batch.
        rho: KMS correlation in [0, 1).
        lr: Network learning rate.
        estep: E-step Adam steps per batch.
        encoder: Encoder name.
        pretrained: Catalogue weights (True), none (False) or a local weights file.
        num_classes: Classes K.
        pattern: Only files whose name contains this text.
        val_fraction: Share of tiles held out for validation.
        seed: Seed.
        resume: Continue from ``out_dir``'s last checkpoint.
        simulate: Number of simulated scenes when ``root`` is None.
        error_maps: Label-error maps written (first training tiles).
        report: Write ``report.html``.
        progress: Progress bar.
        store_on_disk: Memory-map the posterior store in ``out_dir/posterior`` (training sets
            whose per-pixel posterior does not fit in memory: 24 bytes per training pixel).
        trainer_overrides: ``--trainer.*`` options.

    Returns:
        Summary with output paths and validation metrics.
    """
    import torch

    from eokit.core.raster import atomic_write, write_raster
    from eokit.core.train import save_weights
    from eokit.noisy.data import TileDataset, to_tiles
    from eokit.noisy.store import dataset_fingerprint
    from eokit.noisy.task import NoisySegTask, evaluate_model, fit_noisy

    if tile % 32 or tile < 32:
        raise InputError(f"must be a positive multiple of 32, got {tile}", parameter="tile")
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"must lie in (0, 1), got {val_fraction}", parameter="val_fraction")
    items = _read_items(root, labels_dir=labels_dir, pattern=pattern, num_classes=num_classes,
                        clean=True, simulate=simulate, seed=seed, tile=tile)
    tiles = to_tiles(items, tile)
    if len(tiles) < 2:
        raise InputError(f"only {len(tiles)} tile of {tile} px: need 2 or more (smaller --tile)",
                         parameter="tile")
    order = np.random.default_rng(seed).permutation(len(tiles))
    n_val = max(1, int(round(val_fraction * len(tiles))))
    train = TileDataset([tiles[i] for i in sorted(order[n_val:])])
    val = TileDataset([tiles[i] for i in sorted(order[:n_val])])
    fingerprint = dataset_fingerprint(train.keys, train.shape)
    task = NoisySegTask(num_classes, in_chans=int(tiles[0].image.shape[0]), encoder=encoder,
                        pretrained=pretrained, loss=loss, num_images=len(train),
                        tile_shape=train.shape, fingerprint=fingerprint, rho=rho, lr=lr,
                        estep=estep, frozen_bn=pretrained is not False,
                        store_dir=str(Path(out_dir) / "posterior") if store_on_disk else None,
                        seed=seed)
    out = Path(out_dir)
    fit_noisy(task, train, val, out, max_epochs=epochs, batch_size=batch_size, seed=seed,
              resume=resume, progress=progress, trainer_overrides=trainer_overrides)
    config = {"num_classes": num_classes, "in_chans": int(tiles[0].image.shape[0]),
              "encoder": encoder, "loss": loss, "rho": rho, "tile": tile,
              "class_names": _class_names(num_classes, None), "fingerprint": fingerprint}
    save_weights(task.model, out / MODEL_FILE, metadata={"config": json.dumps(config)})
    with atomic_write(out / CONFIG_FILE) as tmp:
        Path(tmp).write_text(json.dumps(config, indent=2) + "\n")
    samples = [val[i] for i in range(len(val))]
    metrics = {"val_noisy": evaluate_model(task.model, samples, target_key="mask")}
    if val.has_clean:
        metrics["val_clean"] = evaluate_model(task.model, samples, target_key="clean")
    maps = []
    if task.store is not None:
        (out / "error_maps").mkdir(exist_ok=True)
        for index in range(min(error_maps, len(train))):
            item = train.items[index]
            error = task.store.error_probability(index).numpy().astype(np.float32)
            path = out / "error_maps" / f"{item.key.replace('@', '_').replace(',', '_')}.tif"
            grid = _tile_grid(item, tile)
            write_raster(path, error[None], grid, nodata=None, band_names=["error_probability"],
                         cog=False)
            maps.append(str(path))
    with atomic_write(out / "metrics.json") as tmp:
        from eokit.core.metrics import jsonable

        Path(tmp).write_text(json.dumps(jsonable(metrics), indent=2) + "\n")
    report_path = None
    if report:
        report_path = _fit_report(out, task, train, val, metrics, config)
    torch.set_grad_enabled(True)
    return {"model": str(out / MODEL_FILE), "error_maps": maps, "metrics": metrics,
            "report": None if report_path is None else str(report_path),
            "train_tiles": len(train), "val_tiles": len(val)}


def _tile_grid(item: Any, tile: int) -> Any:
    """Grid of a tile cut by :func:`to_tiles` (key ``<stem>@<top>,<left>``)."""
    top, left = (int(v) for v in item.key.rsplit("@", 1)[1].split(","))
    return item.grid.window_grid(top, left, tile, tile)


def _fit_report(out: Path, task: Any, train: Any, val: Any, metrics: dict[str, Any],
                config: dict[str, Any]) -> Path:
    import torch

    from eokit.core.report import Report, rgb_quicklook
    from eokit.noisy.task import predict_array

    report = Report("Segmentation with noisy labels")
    report.section("Run", f"Loss **{config['loss']}** (rho {config['rho']}), "
                   f"{len(train)} training and {len(val)} validation tiles of {config['tile']} px. "
                   "Metrics come from one confusion matrix over all validation pixels.")
    rows = [{"reference": name, **{k: v[k] for k in ("iou", "f1", "precision", "recall", "oa")
                                   if k in v}} for name, v in metrics.items()]
    report.table(rows)
    names = config["class_names"]
    colors = _colors(len(names))
    with torch.no_grad():
        for index in range(min(3, len(train))):
            item = train.items[index]
            report.section(f"Training tile {item.key}")
            rgb = item.image[:3] if item.image.shape[0] >= 3 else np.repeat(item.image[:1], 3, 0)
            report.image_map(rgb_quicklook(rgb, (0, 1, 2)), title="Image")
            label = np.where(item.label == IGNORE_INDEX, np.nan, item.label).astype(np.float32)
            report.image_map(label, title="Training (noisy) label", classes=names,
                             class_colors=colors)
            if item.clean is not None:
                report.image_map(item.clean.astype(np.float32), title="Clean label",
                                 classes=names, class_colors=colors)
            pred = predict_array(task.model, item.image).argmax(0).astype(np.float32)
            report.image_map(pred, title="Prediction", classes=names, class_colors=colors)
            if task.store is not None:
                report.image_map(task.store.error_probability(index).numpy(),
                                 title="Posterior label-error probability", cmap="magma",
                                 vmin=0.0, vmax=1.0, colorbar_label="P(label wrong)")
    report.provenance(extra={k: str(v) for k, v in config.items()})
    return report.write(out / "report.html")


# --------------------------------------------------------------------------------------------------
# load, predict, evaluate
# --------------------------------------------------------------------------------------------------
def load_model(model_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """The saved U-Net and its config from a run folder (or a ``model.safetensors`` path)."""
    from eokit.core.train import load_weights
    from eokit.noisy.model import UNet

    path = Path(model_dir)
    weights = path / MODEL_FILE if path.is_dir() else path
    config_path = weights.with_name(CONFIG_FILE)
    if not weights.is_file():
        raise InputError("no trained model (model.safetensors) here", path=path)
    if not config_path.is_file():
        raise InputError("model.json missing beside the weights", path=config_path)
    config = json.loads(config_path.read_text())
    model = UNet(config["num_classes"], in_chans=config["in_chans"], encoder=config["encoder"],
                 pretrained=False)
    load_weights(model, weights)
    model.eval()
    return model, config


def predict_image(model_dir: str | Path, image: str | Path, out_dir: str | Path, *,
                  tile: int = 512, overlap: int = 64, batch_size: int = 4,
                  device: str = "cpu", progress: bool = False) -> dict[str, Any]:
    """Stream a scene of any size through the model to a class COG and a probability COG.

    Outputs lie on the input's grid: ``classes.tif`` (uint8, colour table and class names,
    255 = nodata) and ``probability.tif`` (float32, one band per class).

    Returns:
        Paths, CRS and class areas (m^2 when the grid is metric, else pixels).
    """
    import torch

    from eokit.core.raster import open_writer, raster_info, read_raster
    from eokit.core.tiling import plan_windows, predict_raster

    model, config = load_model(model_dir)
    grid, count, _ = raster_info(image)
    if count < config["in_chans"]:
        raise InputError(f"has {count} bands but the model needs {config['in_chans']}",
                         path=image)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = config["class_names"]
    scale = _input_scale(image)
    if count > config["in_chans"]:
        logger.warning("%s has %d bands; the model uses the first %d", image, count,
                       config["in_chans"])

    def preprocess(arrays: list[np.ndarray]) -> list[torch.Tensor]:
        data = arrays[0][: config["in_chans"]].astype(np.float32) / scale
        return [torch.from_numpy(data)]

    class _Probabilities(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.net(x), 1)

    probability_path = out / "probability.tif"
    predict_raster(_Probabilities(), [image], probability_path, out_channels=len(names),
                   tile=tile, overlap=overlap, batch_size=batch_size, preprocess=preprocess,
                   band_names=[f"p_{n}" for n in names], progress=progress, device=device,
                   align=32)
    classes_path = out / "classes.tif"
    counts = np.zeros(len(names), dtype=np.int64)
    height, width = grid.shape
    with open_writer(classes_path, grid, 1, "uint8", nodata=255, cog=True,
                     band_names=["class"], class_names=names,
                     class_colors=_colors(len(names))) as writer:
        for row, col, h, w in plan_windows(height, width, tile=1024, overlap=0):
            block = read_raster(probability_path, window=(row, col, h, w)).data
            valid = np.isfinite(block).all(axis=0)
            labels = np.where(valid, np.nan_to_num(block).argmax(0), 255).astype(np.uint8)
            counts += np.bincount(labels[valid].ravel(), minlength=len(names))[: len(names)]
            writer.write_window(labels[None], row, col)
    try:
        pixel_area = grid.pixel_size_m ** 2
        unit = "m2"
    except InputError:
        pixel_area, unit = 1.0, "pixels"
    areas = {name: float(c * pixel_area) for name, c in zip(names, counts, strict=True)}
    return {"classes": str(classes_path), "probability": str(probability_path),
            "crs": None if grid.crs is None else str(grid.crs), "class_area": areas,
            "area_unit": unit}


def _full_probabilities(model: Any, image: np.ndarray) -> np.ndarray:
    """(K, H, W) probabilities of a whole image, reflect-padded to the U-Net's multiple of 32."""
    from eokit.noisy.task import predict_array

    height, width = image.shape[1:]
    pad_h, pad_w = (-height) % 32, (-width) % 32
    mode = "reflect" if pad_h < height and pad_w < width else "edge"
    padded = np.pad(image, ((0, 0), (0, pad_h), (0, pad_w)), mode=mode)
    return predict_array(model, padded)[:, :height, :width]


def issues_folder(model_dir: str | Path, root: str | Path, out_dir: str | Path, *,
                  labels_dir: str | Path | None = None, pattern: str = "",
                  max_pixels: int = 50_000_000) -> dict[str, Any]:
    """Label-issue maps of a labelled folder by confident learning on a model's probabilities.

    Each image's labels (ROOT's, or ``labels_dir``'s noisy copies) are scored against the
    trained model's probabilities; cleanlab's per-class thresholds are estimated over every
    labelled pixel of the folder (:func:`eokit.noisy.issues.cleanlab_issues`). With
    ``labels_dir``, ROOT's labels are the clean reference and precision/recall against the true
    label errors are reported too. Probabilities of images the model was trained on are
    over-confident in their labels, so fewer issues are found there than on held-out images.

    Args:
        model_dir: Run folder of ``fit``.
        root: Labelled folder (see :func:`eokit.noisy.data.find_pairs`).
        out_dir: Output: ``issues/<key>.tif`` (1 issue, 0 none, 255 unlabelled) and
            ``issues.json``.
        labels_dir: Labels to check instead of ROOT's (e.g. from ``corrupt``).
        pattern: Only files whose name contains this text.
        max_pixels: Refuse folders with more labelled pixels (every pixel's probabilities are
            held in memory).

    Returns:
        ``{"issues": folder, "files": n, "flagged_fraction": ..., "per_file": {...}}``.
    """
    import torch

    from eokit.core.metrics import jsonable
    from eokit.core.raster import atomic_write, read_image, write_raster
    from eokit.noisy.issues import cleanlab_issues, issue_agreement

    model, config = load_model(model_dir)
    items = _read_items(root, labels_dir=labels_dir, pattern=pattern,
                        num_classes=config["num_classes"], clean=labels_dir is not None,
                        simulate=0, seed=0, tile=config["tile"])
    pixels = sum(item.label.size for item in items)
    if pixels > max_pixels:
        raise InputError(f"{pixels} labelled pixels exceed max_pixels={max_pixels}; "
                         "check the folder in parts (--pattern)", parameter="max_pixels")
    with torch.no_grad():
        probs = [_full_probabilities(model, item.image) for item in items]
    masks = cleanlab_issues(probs, [item.label for item in items])
    out = Path(out_dir)
    folder = out / "issues"
    folder.mkdir(parents=True, exist_ok=True)
    per_file: dict[str, Any] = {}
    labelled = flagged = 0
    truth_flags, truth_wrong = [], []
    for item, mask in zip(items, masks, strict=True):
        valid = item.label != IGNORE_INDEX
        data = np.where(valid, mask.astype(np.uint8), 255).astype(np.uint8)
        label_path = (Path(labels_dir) / f"{item.key}.tif") if labels_dir is not None else None
        grid = read_image(label_path).grid if label_path is not None else item.grid
        write_raster(folder / f"{item.key}.tif", data[None], grid, nodata=255,
                     class_names=["label kept", "label issue"],
                     class_colors=["#d9d9d9", "#d7301f"])
        entry: dict[str, Any] = {"flagged_fraction": float(mask[valid].mean()) if valid.any()
                                 else 0.0}
        if item.clean is not None:
            wrong = (item.label != item.clean) & valid
            entry["true_error_fraction"] = float(wrong[valid].mean()) if valid.any() else 0.0
            truth_flags.append(mask[valid])
            truth_wrong.append(wrong[valid])
        per_file[item.key] = entry
        labelled += int(valid.sum())
        flagged += int(mask[valid].sum())
    summary: dict[str, Any] = {"method": "cleanlab confident learning",
                               "issues": str(folder), "files": len(items),
                               "flagged_fraction": flagged / labelled if labelled else 0.0,
                               "per_file": per_file}
    if truth_flags:
        summary["against_clean_labels"] = issue_agreement(np.concatenate(truth_flags),
                                                          np.concatenate(truth_wrong))
    with atomic_write(out / "issues.json") as tmp:
        Path(tmp).write_text(json.dumps(jsonable(summary), indent=2) + "\n")
    logger.info("flagged %.2f %% of %d labelled pixels as label issues", 100 *
                summary["flagged_fraction"], labelled)
    return summary


def _input_scale(path: str | Path) -> float:
    """Divisor to 0-1 values, as training read the images (see ``core.raster.to_unit``)."""
    import rasterio

    with rasterio.open(path) as src:
        dtype = src.dtypes[0]
    return {"uint8": 255.0, "uint16": 10000.0}.get(dtype, 1.0)


def evaluate_folder(model_dir: str | Path, root: str | Path, *, pattern: str = "",
                    out_dir: str | Path | None = None) -> dict[str, Any]:
    """Dataset-level metrics (one confusion matrix) of a model on a labelled folder.

    Images are cut into the model's training tile size (edges beyond the last full tile are
    not scored).
    """
    import torch

    from eokit.core.raster import atomic_write
    from eokit.noisy.data import TileDataset, find_pairs, read_labelled_image, to_tiles
    from eokit.noisy.task import evaluate_model

    model, config = load_model(model_dir)
    items = [read_labelled_image(i, lbl, num_classes=config["num_classes"], key=k)
             for k, i, lbl in find_pairs(root, pattern=pattern)]
    data = TileDataset(to_tiles(items, config["tile"]))
    with torch.no_grad():
        metrics = evaluate_model(model, [data[i] for i in range(len(data))], target_key="mask")
    metrics["images"] = len(items)
    metrics["tiles"] = len(data)
    if out_dir is not None:
        from eokit.core.metrics import jsonable

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "metrics.json") as tmp:
            Path(tmp).write_text(json.dumps(jsonable(metrics), indent=2) + "\n")
        metrics["metrics_file"] = str(out / "metrics.json")
    return metrics
