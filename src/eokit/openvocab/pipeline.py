"""User-facing operations: fit on simulated scenes or a labelled folder, predict a scene, evaluate.

A run folder holds ``model.safetensors`` (the segmenter, encoders included, so a model trained
with random or user weights reloads as it was), ``model.json`` (the encoder pair, the block
switches, the prompt templates and the training vocabulary) and ``report.html``. The text
encoder is rebuilt from the catalogue (or the open_clip weights named in ``model.json``); it is
never trained, so its weights are not copied into the run folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eokit.core.errors import InputError
from eokit.core.types import IGNORE_INDEX
from eokit.openvocab.backbones import build_encoders
from eokit.openvocab.model import OpenVocabSegmenter
from eokit.openvocab.prompts import (
    DOMAIN_TEMPLATES,
    ClassText,
    PromptBank,
    check_class_names,
    vocabulary_similarity,
)

logger = logging.getLogger(__name__)

__all__ = [
    "OpenVocabModel",
    "build_model",
    "evaluate_run",
    "fit_run",
    "load_model",
    "parse_classes",
    "predict_image",
    "save_model",
]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
FORMAT = "eokit.openvocab/1"
PALETTE: tuple[str, ...] = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c",
    "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000",
    "#ffd8b1", "#000075", "#808080", "#282828",
)
#: Segmenter sizes: ``small`` runs on a laptop CPU (the benchmarks), ``base`` is the default.
SIZES: dict[str, dict[str, Any]] = {
    "small": {"embed_dim": 24, "guidance_dim": 24, "decoder_dims": [16]},
    "base": {"embed_dim": 32, "guidance_dim": 32, "decoder_dims": [32, 16]},
}


@dataclass
class OpenVocabModel:
    """A segmenter, its prompt bank over the locked text encoder, and its config."""

    segmenter: OpenVocabSegmenter
    bank: PromptBank
    config: dict[str, Any]
    trained: list[ClassText] = field(default_factory=list)

    def embeddings(self, classes: Sequence[Any]) -> Tensor:
        """(K, P, D) prompt embeddings of the classes."""
        return self.bank(classes)

    def probabilities(self, image: Tensor, text: Tensor) -> Tensor:
        """Softmax over the K classes of a (B, C, H, W) 0-1 batch."""
        return torch.softmax(self.segmenter(image, text), 1)


def build_model(encoder: Mapping[str, Any] | None = None, *, size: str = "base",
                pretrained: bool = True, templates: Sequence[str] = DOMAIN_TEMPLATES,
                descriptions: bool = True, **switches: Any) -> OpenVocabModel:
    """A new model: encoder pair from ``encoder`` (see :func:`build_encoders`), blocks by size.

    ``switches`` are :class:`OpenVocabSegmenter` arguments (``rotations``, ``guidance``,
    ``back_projection``, ``class_refinement``, ``head``...).
    """
    if size not in SIZES:
        raise InputError(f"size must be one of {', '.join(SIZES)}", parameter="size")
    enc_cfg = dict(encoder or {})
    image_encoder, text_encoder, guidance = build_encoders(enc_cfg, pretrained=pretrained)
    bank = PromptBank(text_encoder.encode, tuple(templates), descriptions)
    kwargs = {**SIZES[size], **switches}
    segmenter = OpenVocabSegmenter(image_encoder, int(text_encoder.dim), bank.num_prompts,
                                   guidance_encoder=guidance, **kwargs)
    config = {"format": FORMAT, "encoder": enc_cfg, "size": size, "switches": switches,
              "templates": list(bank.templates), "descriptions": descriptions,
              "segmenter": segmenter.config, "in_chans": segmenter.in_chans}
    return OpenVocabModel(segmenter, bank, config)


def save_model(model: OpenVocabModel, out_dir: str | Path, **extra: Any) -> Path:
    """Write ``model.safetensors`` and ``model.json`` (atomically) into ``out_dir``."""
    from eokit.core.metrics import jsonable
    from eokit.core.raster import atomic_write
    from eokit.core.train import save_weights

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model.segmenter, out / MODEL_FILE)
    config = {**model.config, **extra,
              "trained_classes": [{"name": c.name, "synonyms": list(c.synonyms),
                                   "description": c.description} for c in model.trained]}
    with atomic_write(out / CONFIG_FILE) as tmp:
        Path(tmp).write_text(json.dumps(jsonable(config), indent=2) + "\n")
    model.config = config
    return out / MODEL_FILE


def load_model(model_dir: str | Path) -> OpenVocabModel:
    """The model of a run folder (or of a ``model.safetensors`` path)."""
    from eokit.core.train import load_weights

    path = Path(model_dir)
    weights = path / MODEL_FILE if path.is_dir() else path
    config_path = weights.with_name(CONFIG_FILE)
    if not weights.is_file():
        raise InputError(f"no trained model ({MODEL_FILE}) here", path=path)
    if not config_path.is_file():
        raise InputError(f"{CONFIG_FILE} missing beside the weights", path=config_path)
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"not valid JSON ({err.msg})", path=config_path) from None
    if config.get("format") != FORMAT:
        raise InputError(f"not an open-vocabulary model (format {config.get('format')!r})",
                         path=config_path)
    model = build_model(config["encoder"], size=config["size"],
                        pretrained=bool(config.get("pretrained", True)),
                        templates=config["templates"], descriptions=config["descriptions"],
                        **config.get("switches", {}))
    load_weights(model.segmenter, weights)
    model.segmenter.eval()
    model.config = config
    model.trained = [ClassText(c["name"], tuple(c.get("synonyms", ())), c.get("description", ""))
                     for c in config.get("trained_classes", [])]
    return model


# --------------------------------------------------------------------------------------------------
# classes
# --------------------------------------------------------------------------------------------------
def _default_vocabulary() -> dict[str, Any]:
    try:
        from eokit.openvocab.data import load_vocabulary
    except ImportError:
        return {}
    try:
        return dict(load_vocabulary())
    except (InputError, OSError):
        return {}


def parse_classes(classes: str | Sequence[str] | None = None,
                  vocabulary: str | Path | None = None) -> list[ClassText]:
    """Class texts from a comma-separated list and/or a vocabulary YAML.

    Names from ``classes`` take synonyms and descriptions from the vocabulary (the given file, or
    the packaged one) when it has them. Raises an InputError for an empty list, an empty name or
    a duplicate.
    """
    from eokit.openvocab.prompts import class_texts

    vocab: dict[str, Any] = {}
    if vocabulary is not None:
        from eokit.openvocab.data import load_vocabulary

        vocab = dict(load_vocabulary(vocabulary))
    if classes is None or (isinstance(classes, str) and not classes.strip() and vocab):
        if not vocab:
            raise InputError("give class names (--classes) or a vocabulary file",
                             parameter="--classes")
        names = check_class_names(list(vocab), "--vocabulary")
    else:
        parts = classes.split(",") if isinstance(classes, str) else list(classes)
        names = check_class_names(parts, "--classes")
    return class_texts(names, vocab or _default_vocabulary())


def class_colours(names: Sequence[str]) -> list[str]:
    """A colour per class: the simulator vocabulary's when it knows the name, else a palette."""
    known: dict[str, str] = {}
    try:
        from eokit.core.synth.vocab import VOCABULARY

        for item in VOCABULARY:
            colour = getattr(item, "colour", None)
            if colour is not None:
                if not isinstance(colour, str):
                    values = [float(c) for c in list(colour)[:3]]
                    if max(values) <= 1.0:
                        values = [v * 255 for v in values]
                    colour = "#" + "".join(f"{int(round(v)):02x}" for v in values)
                known[str(item.name).lower()] = colour
    except ImportError:
        pass
    def rgb(c: str) -> np.ndarray:
        return np.array([int(c.lstrip("#")[k:k + 2], 16) for k in (0, 2, 4)], float)

    def distinct(c: str, used: list[str], gap: float = 60.0) -> bool:
        return all(np.linalg.norm(rgb(c) - rgb(u)) >= gap for u in used)

    # names the simulator knows keep its colours; the others take the first palette colour
    # that is not close to a colour already taken (two reds side by side read as one class)
    fixed = {i: known[n.lower()] for i, n in enumerate(names) if n.lower() in known}
    out: list[str] = []
    for i, _ in enumerate(names):
        colour = fixed.get(i)
        taken = out + [c for j, c in fixed.items() if j > i]
        if colour is None or not distinct(colour, out, 1.0):
            colour = next((c for c in PALETTE if distinct(c, taken)),
                          next((c for c in PALETTE if c not in taken), PALETTE[i % len(PALETTE)]))
        out.append(colour)
    return out


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
def tiles_of(image: np.ndarray, label: np.ndarray,
             tile: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Non-overlapping ``tile`` crops (the edge beyond the last full tile is dropped)."""
    h, w = label.shape
    if h < tile or w < tile:
        raise InputError(f"image {h}x{w} is smaller than the tile {tile}", parameter="tile")
    return [(image[:, r:r + tile, c:c + tile], label[r:r + tile, c:c + tile])
            for r in range(0, h - tile + 1, tile) for c in range(0, w - tile + 1, tile)]


def index_map(source: Sequence[str], target: Sequence[str], where: str) -> list[int]:
    """``mapping[i]`` = index in ``target`` of source class i (IGNORE_INDEX when absent)."""
    lookup = {n.lower(): i for i, n in enumerate(target)}
    return [lookup.get(n.lower(), IGNORE_INDEX) for n in source]


def check_labels(label: np.ndarray, num_names: int, where: str | Path) -> None:
    """InputError when a label value has no class name (and is not the ignore value)."""
    values = np.unique(label)
    bad = [int(v) for v in values if v != IGNORE_INDEX and (v < 0 or v >= num_names)]
    if bad:
        raise InputError(f"label value {bad[0]} has no class name ({num_names} classes named)",
                         path=where)


def simulated_scenes(count: int, size: int, seed: int, classes: Sequence[str] | None = None
                     ) -> list[Any]:
    """``count`` simulator scenes (``eokit.core.synth.vocab``) with seeds ``seed + i``."""
    from eokit.core.synth.vocab import generate_vocab_scene

    return [generate_vocab_scene(size, seed=seed + i,
                                 classes=None if classes is None else list(classes))
            for i in range(count)]


def load_named_split(split: str | Path) -> Any:
    """The seen/unseen split (a packaged name such as ``sim`` or a YAML file)."""
    from eokit.openvocab.data import load_split

    return load_split(str(split))


def scene_items(scenes: Sequence[Any], names: Sequence[str], tile: int
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Tiles of simulator scenes with labels in the index space of ``names``."""
    from eokit.openvocab.task import remap_labels

    images, labels = [], []
    for scene in scenes:
        mapping = index_map(list(scene.class_names), names, "scene")
        label = remap_labels(np.asarray(scene.label), mapping)
        for img, lab in tiles_of(np.asarray(scene.image, dtype=np.float32), label, tile):
            images.append(img)
            labels.append(lab)
    return images, labels


def folder_items(root: str | Path, *, layout: str, split: str | None, names: Sequence[str],
                 tile: int, dataset_split: str | None = None
                 ) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Tiles of a labelled folder (``data.read_folder``) in the index space of ``names``."""
    from eokit.openvocab.data import read_folder
    from eokit.openvocab.task import remap_labels

    dataset = read_folder(root, layout=layout, split=dataset_split)
    table = getattr(dataset, "classes", None) or getattr(dataset, "class_table", None)
    folder_names = list(getattr(table, "names", table or []))
    if not folder_names:
        raise InputError("the folder gives no class names", path=root)
    mapping = index_map(folder_names, names, str(root))
    images, labels = [], []
    for i in range(len(dataset)):
        image, label = dataset[i]
        image = np.asarray(image, dtype=np.float32)
        label = np.asarray(label)
        check_labels(label, len(folder_names), f"{root} (item {i})")
        for img, lab in tiles_of(image, remap_labels(label, mapping), tile):
            images.append(img)
            labels.append(lab)
    return images, labels, folder_names


# --------------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------------
def fit_run(out_dir: str | Path, *, root: str | Path | None = None, layout: str = "auto",
            simulate: int = 0, split: str | Path = "sim", size_px: int = 256, tile: int = 128,
            epochs: int = 10, batch_size: int = 4, lr: float = 2e-3, bp_weight: float = 0.5,
            encoder: Mapping[str, Any] | None = None, model_size: str = "base",
            pretrained: bool = True, seed: int = 0, resume: bool = False,
            progress: bool = False, trainer_overrides: dict[str, Any] | None = None,
            **switches: Any) -> dict[str, Any]:
    """Train on the *seen* classes of ``split`` (simulated scenes or a folder), write a run.

    Unseen-class pixels are ignored in training. With locked encoders the encoder outputs are
    computed once and the aggregation network trains on them.
    """
    from eokit.openvocab.task import (
        EncodedDataset,
        OpenVocabTask,
        TileDataset,
        encode_dataset,
        fit_task,
    )

    if tile % 32 or tile < 32:
        raise InputError(f"must be a multiple of 32, got {tile}", parameter="--tile")
    spl = load_named_split(split)
    seen = check_class_names(list(spl.seen), "split seen classes")
    unseen = list(spl.unseen)
    if root is None:
        if simulate < 1:
            raise InputError("give a dataset folder or --simulate N", parameter="root")
        scenes = simulated_scenes(simulate, size_px, seed)
        images, labels = scene_items(scenes, seen, tile)
        source = f"{simulate} simulated scenes ({size_px} px)"
    else:
        images, labels, _ = folder_items(root, layout=layout, split=None, names=seen, tile=tile)
        source = str(root)
    if not images:
        raise InputError("no training tiles", parameter="root")
    if all((lab == IGNORE_INDEX).all() for lab in labels):
        raise InputError("no pixel of a seen class in the training data", parameter="split")
    torch.manual_seed(seed)
    model = build_model(encoder, size=model_size, pretrained=pretrained, **switches)
    model.trained = [ClassText.of(c) for c in parse_classes(seen)]
    text = model.embeddings(model.trained)
    seg = model.segmenter
    if not seg.train_encoder and seg.stem is None:
        train_set: Any = EncodedDataset(encode_dataset(seg, images), torch.from_numpy(
            np.stack(labels)))
    else:
        train_set = TileDataset(images, labels, augment=True, seed=seed)
    task = OpenVocabTask(seg, text, bp_weight=bp_weight, lr=lr, image_size=(tile, tile))
    out = Path(out_dir)
    overrides = dict(trainer_overrides or {})
    fit_task(task, train_set, None, out, max_epochs=epochs, batch_size=batch_size, seed=seed,
             resume=resume, progress=progress, trainer_overrides=overrides)
    seg.eval()
    save_model(model, out, split=str(split), seen=seen, unseen=unseen, tile=tile,
               pretrained=pretrained, source=source, seed=seed, epochs=epochs)
    summary = {"model": str(out / MODEL_FILE), "config": str(out / CONFIG_FILE),
               "train_tiles": len(images), "seen": seen, "unseen": unseen, "source": source}
    summary["report"] = str(_fit_report(out, model, images, labels, seen))
    return summary


def _fit_report(out: Path, model: OpenVocabModel, images: Sequence[np.ndarray],
                labels: Sequence[np.ndarray], seen: Sequence[str]) -> Path:
    from eokit.core.report import Report, rgb_quicklook

    report = Report("Open-vocabulary segmentation: training")
    report.section("Run", "Trained on the seen classes only; unseen-class pixels were ignored.")
    report.metrics({"train_tiles": len(images), "seen_classes": ", ".join(seen),
                    "encoder": model.config["encoder"].get("encoder", "efficientnet_lite0"),
                    "rotations": str(model.segmenter.rotations.angles)})
    colours = class_colours(seen)
    with torch.no_grad():
        text = model.embeddings(model.trained)
        probs = model.probabilities(torch.from_numpy(images[0][None]), text)[0].numpy()
    report.image_map(rgb_quicklook(images[0], (0, 1, 2)), title="Training tile")
    label = labels[0].astype(np.float32)
    label[labels[0] == IGNORE_INDEX] = np.nan
    report.image_map(label, title="Label (seen classes; unseen and ignore in grey)",
                     classes=list(seen), class_colors=colours)
    report.image_map(probs.argmax(0).astype(np.float32), title="Prediction", classes=list(seen),
                     class_colors=colours)
    return report.write(out / "report.html")


# --------------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------------
def _input_scale(path: str | Path) -> float:
    import rasterio

    with rasterio.open(path) as src:
        dtype = src.dtypes[0]
    return {"uint8": 255.0, "uint16": 10000.0}.get(dtype, 1.0)


def predict_image(model_dir: str | Path, image: str | Path, out_dir: str | Path, *,
                  classes: str | Sequence[str] | None = None,
                  vocabulary: str | Path | None = None, bands: Sequence[int] | None = None,
                  tile: int = 512, overlap: int = 64, batch_size: int = 2, device: str = "cpu",
                  warn_below: float = 0.5, progress: bool = False) -> dict[str, Any]:
    """Stream a scene of any size to a class COG, a probability COG and an HTML report.

    Returns:
        Paths, CRS, per-class area (m^2 when the grid is metric) and the similarity of each
        requested name to the training vocabulary.
    """
    from eokit.core.raster import open_writer, raster_info, read_raster
    from eokit.core.tiling import plan_windows, predict_raster

    requested = parse_classes(classes, vocabulary)
    names = [c.name for c in requested]
    if len(names) > 254:
        raise InputError("at most 254 classes fit the uint8 class map", parameter="--classes")
    model = load_model(model_dir)
    grid, count, _ = raster_info(image)
    need = model.segmenter.in_chans
    if bands is not None:
        bands = [int(b) for b in bands]
        if len(bands) != need or any(b < 1 or b > count for b in bands):
            raise InputError(f"--bands must name {need} bands in 1..{count}", parameter="--bands")
    elif count != need:
        raise InputError(f"has {count} bands but the model's image encoder takes {need} "
                         "(choose them with --bands)", path=image)
    if tile % model.segmenter.align:
        raise InputError(f"must be a multiple of {model.segmenter.align}", parameter="--tile")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scale = _input_scale(image)
    with torch.no_grad():
        text = model.embeddings(requested)
    similarity = vocabulary_similarity(model.bank, requested, model.trained,
                                       warn_below=warn_below)
    for row in similarity:
        if row["warning"]:
            logger.warning("class %r: %s", row["class"], row["warning"])

    def preprocess(arrays: list[np.ndarray]) -> list[Tensor]:
        return [torch.from_numpy(arrays[0].astype(np.float32) / scale)]

    class _Probabilities(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model.segmenter
            self.register_buffer("text", text, persistent=False)

        def forward(self, x: Tensor) -> Tensor:
            return torch.softmax(self.net(x, self.text), 1)

    probability_path = out / "probability.tif"
    predict_raster(_Probabilities(), [image], probability_path, out_channels=len(names),
                   tile=tile, overlap=overlap, batch_size=batch_size, preprocess=preprocess,
                   band_names=[f"p_{n}" for n in names], progress=progress, device=device,
                   align=model.segmenter.align, bands=bands, expected_bands=None)
    classes_path = out / "classes.tif"
    colours = class_colours(names)
    counts = np.zeros(len(names), dtype=np.int64)
    height, width = grid.shape
    with open_writer(classes_path, grid, 1, "uint8", nodata=255, cog=True, band_names=["class"],
                     class_names=names, class_colors=colours) as writer:
        for row, col, h, w in plan_windows(height, width, tile=1024, overlap=0):
            block = read_raster(probability_path, window=(row, col, h, w)).data
            valid = np.isfinite(block).all(axis=0)
            if valid.any() and not np.allclose(block[:, valid].sum(0), 1.0, atol=1e-3):
                raise RuntimeError("class probabilities do not sum to 1")
            labels = np.where(valid, np.nan_to_num(block).argmax(0), 255).astype(np.uint8)
            counts += np.bincount(labels[valid].ravel(), minlength=len(names))[: len(names)]
            writer.write_window(labels[None], row, col)
    try:
        pixel_area, unit = grid.pixel_size_m ** 2, "m2"
    except InputError:
        pixel_area, unit = 1.0, "pixels"
    areas = {n: float(c * pixel_area) for n, c in zip(names, counts, strict=True)}
    report = _predict_report(out, image, classes_path, names, colours, areas, unit, similarity,
                             scale, bands)
    return {"classes": str(classes_path), "probability": str(probability_path),
            "report": str(report), "crs": None if grid.crs is None else str(grid.crs),
            "class_names": names, "class_area": areas, "area_unit": unit,
            "similarity": similarity,
            "warnings": [f"{r['class']}: {r['warning']}" for r in similarity if r["warning"]]}


def _predict_report(out: Path, image: str | Path, classes_path: Path, names: Sequence[str],
                    colours: Sequence[str], areas: Mapping[str, float], unit: str,
                    similarity: Sequence[Mapping[str, Any]], scale: float,
                    bands: Sequence[int] | None) -> Path:
    from eokit.core.raster import read_raster
    from eokit.core.report import Report, rgb_quicklook

    report = Report("Open-vocabulary segmentation")
    report.section("Classes", f"{len(names)} requested classes scored against the image.")
    report.table([{"class": n, f"area_{unit}": round(areas[n], 1)} for n in names],
                 caption="Area per predicted class.")
    report.table([dict(r) for r in similarity],
                 caption="Nearest training class of each requested name (cosine of the "
                         "prompt-ensembled text embeddings); a warning marks names far from "
                         "anything learnt.")
    for row in similarity:
        if row["warning"]:
            report.error(f"class {row['class']!r}: {row['warning']}")
    raster = read_raster(classes_path)
    step = max(1, max(raster.data.shape[-2:]) // 1024)
    cls = raster.data[0, ::step, ::step].astype(np.float32)
    cls[cls == 255] = np.nan
    try:
        px = raster.grid.pixel_size_m * step
    except InputError:
        px = None
    img = read_raster(image, bands=list(bands) if bands else None).data[:3, ::step, ::step]
    if img.shape[0] == 3:
        report.image_map(rgb_quicklook(img.astype(np.float32) / scale, (0, 1, 2)),
                         title="Image", pixel_size_m=px)
    report.image_map(cls, title="Classes", classes=list(names), class_colors=list(colours),
                     pixel_size_m=px)
    return report.write(out / "report.html")


# --------------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------------
def evaluate_run(model_dir: str | Path, *, root: str | Path | None = None,
                 layout: str = "auto", simulate: int = 0, split: str | Path | None = None,
                 size_px: int = 256, seed: int = 10_000, out_dir: str | Path | None = None,
                 tile: int = 512) -> dict[str, Any]:
    """Seen/unseen/h-mIoU of a run on simulated scenes or a folder, from one confusion matrix.

    The classes scored are the split's seen + unseen classes (default: the run's split); the
    per-class IoU goes to ``per_class_iou.csv`` when ``out_dir`` is given.
    """
    from eokit.core.metrics import ConfusionMatrix, jsonable
    from eokit.core.raster import atomic_write, write_csv
    from eokit.core.tiling import predict_array
    from eokit.openvocab.model import seen_unseen_scores
    from eokit.openvocab.task import remap_labels

    model = load_model(model_dir)
    spl = load_named_split(split if split is not None else model.config.get("split", "sim"))
    seen, unseen = list(spl.seen), list(spl.unseen)
    names = check_class_names(seen + unseen, "split classes")
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    if root is None:
        if simulate < 1:
            raise InputError("give a dataset folder or --simulate N", parameter="root")
        for scene in simulated_scenes(simulate, size_px, seed):
            mapping = index_map(list(scene.class_names), names, "scene")
            pairs.append((np.asarray(scene.image, np.float32),
                          remap_labels(np.asarray(scene.label), mapping)))
        source = f"{simulate} simulated scenes (seeds from {seed})"
    else:
        from eokit.openvocab.data import read_folder

        dataset = read_folder(root, layout=layout)
        table = getattr(dataset, "classes", None)
        folder_names = list(getattr(table, "names", table or []))
        mapping = index_map(folder_names, names, str(root))
        for i in range(len(dataset)):
            image, label = dataset[i]
            label = np.asarray(label)
            check_labels(label, len(folder_names), f"{root} (item {i})")
            pairs.append((np.asarray(image, np.float32), remap_labels(label, mapping)))
        source = str(root)
    if not pairs:
        raise InputError("nothing to evaluate", parameter="root")
    need = model.segmenter.in_chans
    with torch.no_grad():
        text = model.embeddings(parse_classes(names))
    cm = ConfusionMatrix(len(names), class_names=names)

    def net(x: Tensor) -> Tensor:
        return torch.softmax(model.segmenter(x, text), 1)

    for image, label in pairs:
        if image.shape[0] != need:
            raise InputError(f"image has {image.shape[0]} bands; the encoder takes {need}",
                             parameter="root")
        probs = predict_array(net, [image], out_channels=len(names), tile=tile, overlap=32,
                              align=model.segmenter.align)
        cm.update(np.nan_to_num(probs).argmax(0), label)
    if cm.total == 0:
        raise InputError("no labelled pixel of a split class to evaluate", parameter="root")
    scores = seen_unseen_scores(cm, range(len(seen)), range(len(seen), len(names)))
    rows = [{**r, "split": "seen" if i < len(seen) else "unseen"}
            for i, r in enumerate(cm.per_class_rows())]
    result: dict[str, Any] = {
        "seen_miou": scores["seen_miou"], "unseen_miou": scores["unseen_miou"],
        "h_miou": scores["h_miou"], "miou": scores["miou"], "pixels": cm.total,
        "images": len(pairs), "source": source, "seen": seen, "unseen": unseen,
        "per_class": rows}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "per_class_iou.csv", rows)
        with atomic_write(out / "metrics.json") as tmp:
            Path(tmp).write_text(json.dumps(jsonable(result), indent=2) + "\n")
        result["metrics_file"] = str(out / "metrics.json")
        result["per_class_csv"] = str(out / "per_class_iou.csv")
    return result
