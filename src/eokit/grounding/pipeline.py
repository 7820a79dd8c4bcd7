"""Grounding model files, training on simulated scenes, and detect/ground on GeoTIFFs of any size.

A model folder holds ``model.safetensors`` (detector and MB-ORES head) and ``model.json``
(class vocabulary, text encoder, widths, input scaling). Scenes larger than one window are
processed in overlapping windows: boxes that touch a window's inner edge are dropped (the
neighbouring window sees the whole object, as long as objects are smaller than the overlap),
and the rest are merged with per-class NMS across windows.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eokit.core.errors import InputError
from eokit.grounding.boxes import batched_nms
from eokit.grounding.detector import TextConditionedDetector, decode_detections, proposals
from eokit.grounding.mbores import MBORESHead

logger = logging.getLogger(__name__)

__all__ = ["GroundingModel", "detect_array", "detect_image", "fit_items", "fit_records",
           "fit_simulated",
           "ground_array", "ground_image", "load_model"]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
#: Proposals kept per image for the grounding head.
NUM_PROPOSALS = 16


class GroundingModel:
    """Detector + MB-ORES head + the text encoder's cache, with the vocabulary they learnt.

    Args:
        detector: The text-conditioned detector.
        head: The MB-ORES head.
        text: :class:`eokit.grounding.train.TextCache` of the text encoder.
        class_names: Training vocabulary (open-set: other names may be asked for).
        config: Everything needed to rebuild the modules (``model.json``).
    """

    def __init__(self, detector: TextConditionedDetector, head: MBORESHead, text: Any,
                 class_names: Sequence[str], config: dict[str, Any]) -> None:
        self.detector, self.head, self.text = detector.eval(), head.eval(), text
        self.class_names = list(class_names)
        self.config = config

    def save(self, out_dir: str | Path) -> Path:
        """Write ``model.safetensors`` and ``model.json`` into ``out_dir`` (atomically)."""
        from eokit.core.raster import atomic_write
        from eokit.core.train import save_weights

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        bundle = torch.nn.ModuleDict({"detector": self.detector, "head": self.head})
        save_weights(bundle, out / MODEL_FILE, metadata={"config": json.dumps(self.config)})
        with atomic_write(out / CONFIG_FILE) as tmp:
            Path(tmp).write_text(json.dumps(self.config, indent=2) + "\n")
        return out / MODEL_FILE

    def vocabulary_similarity(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """For each requested name, the closest training class and its cosine similarity."""
        asked = self.text.classes(names)
        known = self.text.classes(self.class_names)
        sim = torch.nn.functional.normalize(asked, dim=-1) @ torch.nn.functional.normalize(
            known, dim=-1).T
        best, idx = sim.max(1)
        return {n: {"closest": self.class_names[int(i)], "similarity": round(float(b), 3)}
                for n, b, i in zip(names, best, idx, strict=True)}


def _build(config: dict[str, Any], text: Any, pretrained: bool | str = False
           ) -> tuple[TextConditionedDetector, MBORESHead]:
    detector = TextConditionedDetector(encoder=config["encoder"], pretrained=pretrained,
                                       in_chans=config["in_chans"], text_dim=text.dim,
                                       dim=config["dim"], frozen_bn=config.get("frozen_bn", False))
    head = MBORESHead(detector.dim, text.dim, dim=config["head_dim"],
                      branch_layers=config["branch_layers"],
                      reasoner_layers=config["reasoner_layers"],
                      multi_branch=config.get("multi_branch", True),
                      selection=config.get("selection", "soft"))
    return detector, head


def _text_cache(name: str) -> Any:
    from eokit.core.encoders import build_text_encoder
    from eokit.grounding.train import TextCache

    return TextCache(build_text_encoder(name))


def load_model(model_dir: str | Path, *, text: Any = None) -> GroundingModel:
    """Load a model folder written by :meth:`GroundingModel.save`."""
    from eokit.core.train import load_weights

    folder = Path(model_dir)
    if not (folder / CONFIG_FILE).is_file():
        raise InputError(f"no {CONFIG_FILE} here: not a grounding model folder", path=folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    text = _text_cache(config["text_encoder"]) if text is None else text
    detector, head = _build(config, text)
    load_weights(torch.nn.ModuleDict({"detector": detector, "head": head}), folder / MODEL_FILE)
    return GroundingModel(detector, head, text, config["class_names"], config)


CHECKPOINT_DIR = "checkpoints/last"


class _Checkpointer:
    """Saves the model being trained as a loadable model folder, ``OUT/checkpoints/last``.

    Called at the end of every epoch of both stages, at most once per ``every_s`` seconds and
    always after the last epoch of a stage, so an interrupted ``fit`` (Ctrl-C: exit 130) keeps
    the state of its last finished epoch. ``model.json`` records the stage and epoch.
    """

    def __init__(self, out_dir: str | Path, model: GroundingModel, every_s: float = 60.0
                 ) -> None:
        self.folder = Path(out_dir) / CHECKPOINT_DIR
        self.model, self.every_s, self.last = model, every_s, time.perf_counter()

    def __call__(self, stage: str) -> Callable[[int, int], None]:
        def save(epoch: int, epochs: int) -> None:
            now = time.perf_counter()
            if epoch < epochs and now - self.last < self.every_s:
                return
            self.model.config = {**self.model.config,
                                 "checkpoint": {"stage": stage, "epoch": epoch, "of": epochs},
                                 "head_trained": stage == "head"}
            self.model.save(self.folder)
            self.last = now
            logger.info("checkpoint: %s epoch %d/%d -> %s", stage, epoch, epochs, self.folder)
        return save

    def finish(self) -> None:
        """Drop the checkpoint once the final model folder is written."""
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)
        parent = self.folder.parent
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()


def fit_simulated(out_dir: str | Path, *, scenes: int = 200, size: int = 128, seed: int = 0,
                  det_epochs: int = 12, head_epochs: int = 30, pretrained: bool | str = True,
                  encoder: str = "efficientnet_lite0", text_encoder: str = "minilm_l6",
                  expression_mix: str = "mixed", dim: int = 128, head_dim: int = 128,
                  branch_layers: int = 2, reasoner_layers: int = 2,
                  selection: str = "hard", text: Any = None) -> dict[str, Any]:
    """Train detector and head on simulated object scenes and save the model folder.

    ``selection`` is the head's answer: ``"hard"`` (the arg-max proposal, refined; the
    default, best in ``benchmarks/results/grounding_sim.json``) or ``"soft"`` (the
    probability-weighted box).

    Returns:
        Summary: model path, training seconds and losses, and test metrics on held-out
        simulated scenes (one scene in six).
    """
    from eokit.core.synth.objects import OBJECT_CLASSES, ObjectDomain, generate_object_dataset
    from eokit.grounding.metrics import detection_map, grounding_metrics
    from eokit.grounding.train import (
        build_nodes,
        detect,
        fit_detector,
        fit_grounder,
        predict_grounding,
        scene_samples,
    )

    if scenes < 6:
        raise InputError(f"need at least 6 scenes, got {scenes}", parameter="scenes")
    if size % 32:
        raise InputError(f"must be a multiple of 32, got {size}", parameter="size")
    text = _text_cache(text_encoder) if text is None else text
    torch.manual_seed(seed)
    data = scene_samples(generate_object_dataset(scenes, size, seed=seed,
                                                 domain=ObjectDomain(expression_mix=expression_mix),
                                                 n_expressions=4))
    n_test = max(1, scenes // 6)
    train, test = data[:-n_test], data[-n_test:]
    names = list(OBJECT_CLASSES)
    config = {"encoder": encoder, "in_chans": 3, "dim": dim, "head_dim": head_dim,
              "branch_layers": branch_layers, "reasoner_layers": reasoner_layers,
              "text_encoder": text_encoder, "class_names": names, "train_size": size,
              "frozen_bn": pretrained is not False, "reflectance_white": 0.3,
              "multi_branch": True, "selection": selection, "input_view": "window",
              "head_trained": True}
    detector, head = _build(config, text, pretrained)
    checkpoint = _Checkpointer(out_dir, GroundingModel(detector, head, text, names, config))
    det_fit = fit_detector(detector, train, names, text, epochs=det_epochs, seed=seed,
                           on_epoch=checkpoint("detector"))
    emb = text.classes(names)
    _, train_props = detect(detector, train, names, text)
    dets, test_props = detect(detector, test, names, text)
    head_fit = fit_grounder(head, train, build_nodes(train_props, emb, (size, size)), text,
                            epochs=head_epochs, seed=seed, on_epoch=checkpoint("head"))
    pred = predict_grounding(head, test, build_nodes(test_props, emb, (size, size)), text)
    vocab = {n: i for i, n in enumerate(names)}
    gt = [{"boxes": torch.as_tensor(s.boxes), "labels": torch.tensor([vocab[n] for n in s.labels])}
          for s in test]
    model = GroundingModel(detector, head, text, names, config)
    path = model.save(out_dir)
    checkpoint.finish()
    return {"model": str(path), "detector_fit": det_fit, "head_fit": head_fit,
            "test_grounding": grounding_metrics(pred["boxes"], pred["targets"]),
            "test_detection": detection_map(dets, gt), "test_scenes": n_test}


def fit_records(out_dir: str | Path, data: str | Path, fmt: str, *, size: int = 512,
                split_dir: str | Path | None = None,
                fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0,
                **options: Any) -> dict[str, Any]:
    """Train detector and head on a records folder and save the model folder.

    Images are split image-disjointly (:func:`eokit.grounding.dataset.assign_split`): with
    ``split_dir`` that split is verified and used, otherwise a new one is written to
    ``out_dir/split``. The model trains on ``train``; ``val`` gives the scores returned.
    Grounding formats train on whole images resized to ``size``; detection formats on
    ``size`` windows (their grounding head stays untrained and ``ground`` refuses them).
    ``options`` go to :func:`fit_items`.

    Returns:
        Summary: model path, split used (file hashes), training losses, val metrics.
    """
    from eokit.grounding.dataset import GROUNDING_FORMATS, assign_split, load_images

    if size % 32 or size < 64:
        raise InputError(f"must be a multiple of 32 and >= 64, got {size}", parameter="size")
    out = Path(out_dir)
    items = load_images(data, fmt)
    groups, split = assign_split(items, split_dir=split_dir, out_dir=out / "split",
                                 fractions=fractions, seed=seed)
    if not groups.get("train"):
        raise InputError("the split has no training image", parameter="split")
    split.name = "train"
    view = "resize" if fmt in GROUNDING_FORMATS else "tile"
    summary = fit_items(out, groups["train"], groups.get("val", []), size=size, view=view,
                        seed=seed, trained_on={"data": str(data), "format": fmt,
                                               **split.describe()}, **options)
    return {"model": summary.pop("model"), "split": split.describe(), **summary}


def fit_items(out_dir: str | Path, train_items: Sequence[Any], val_items: Sequence[Any] = (),
              *, size: int = 512, view: str = "resize", seed: int = 0, det_epochs: int = 12,
              head_epochs: int = 30, pretrained: bool | str = True,
              encoder: str = "efficientnet_lite0", text_encoder: str = "minilm_l6",
              dim: int = 128, head_dim: int = 128, branch_layers: int = 2,
              reasoner_layers: int = 2, batch_size: int = 8, max_detections: int = 300,
              selection: str = "hard", trained_on: dict[str, Any] | None = None,
              text: Any = None) -> dict[str, Any]:
    """Train on :class:`eokit.grounding.dataset.ImageItem` lists and save the model folder.

    Args:
        out_dir: Model folder.
        train_items: Training images.
        val_items: Images scored after training (boxes and expressions as trained).
        size: Training image side (multiple of 32).
        view: ``"resize"`` (whole images) or ``"tile"`` (``size`` windows).
        seed: Seed of weights and order.
        det_epochs: Detector epochs.
        head_epochs: Grounding-head epochs (only when the images hold expressions).
        pretrained: ImageNet encoder weights (catalogue) or a weights file.
        encoder: Image encoder name.
        text_encoder: Text encoder name.
        dim: Detector width.
        head_dim: Head width.
        branch_layers: Cross-attention layers per branch.
        reasoner_layers: Object-reasoner layers.
        batch_size: Detector batch size.
        max_detections: COCO ``maxDets`` of the val mAP.
        selection: Head answer, ``"hard"`` (arg-max proposal) or ``"soft"`` (weighted box).
        trained_on: Description of the data, stored in ``model.json``.
        text: A :class:`eokit.grounding.train.TextCache` to reuse.
    """
    from eokit.grounding.dataset import model_view
    from eokit.grounding.metrics import detection_map, grounding_metrics
    from eokit.grounding.train import (
        build_nodes,
        detect,
        fit_detector,
        fit_grounder,
        predict_grounding,
    )

    if size % 32 or size < 64:
        raise InputError(f"must be a multiple of 32 and >= 64, got {size}", parameter="size")
    train = model_view(train_items, size, view)
    val = model_view(val_items, size, view)
    names = sorted({n for s in train for n in s.labels})
    if not names:
        raise InputError("the training images hold no labelled box", parameter="data")
    logger.info("training on %d %s samples from %d images (%d classes), %d val samples",
                len(train), view, len(train_items), len(names), len(val))
    text = _text_cache(text_encoder) if text is None else text
    torch.manual_seed(seed)
    config: dict[str, Any] = {
        "encoder": encoder, "in_chans": 3, "dim": dim, "head_dim": head_dim,
        "branch_layers": branch_layers, "reasoner_layers": reasoner_layers,
        "text_encoder": text_encoder, "class_names": names, "train_size": size,
        "frozen_bn": pretrained is not False, "reflectance_white": 0.3, "multi_branch": True,
        "selection": selection, "input_view": "resize" if view == "resize" else "window",
        "trained_on": trained_on or {}}
    detector, head = _build(config, text, pretrained)
    checkpoint = _Checkpointer(out_dir, GroundingModel(detector, head, text, names, config))
    det_fit = fit_detector(detector, train, names, text, epochs=det_epochs, seed=seed,
                           batch_size=batch_size, on_epoch=checkpoint("detector"))
    emb = text.classes(names)
    with_text = [s for s in train if s.expressions]
    head_fit: dict[str, Any] | None = None
    if with_text:
        _, props = detect(detector, with_text, names, text)
        head_fit = fit_grounder(head, with_text, build_nodes(props, emb, (size, size)), text,
                                epochs=head_epochs, seed=seed, on_epoch=checkpoint("head"))
    config["head_trained"] = head_fit is not None
    model = GroundingModel(detector, head, text, names, config)
    path = model.save(out_dir)
    checkpoint.finish()
    scores: dict[str, Any] = {}
    if val:
        vocab = {n: i for i, n in enumerate(names)}
        dets, props = detect(detector, val, names, text)
        gt = [{"boxes": torch.as_tensor(s.boxes).reshape(-1, 4),
               "labels": torch.tensor([vocab.get(n, len(vocab)) for n in s.labels])}
              for s in val]
        scores["val_detection"] = detection_map(dets, gt, max_detections=max_detections)
        val_text = [(s, p) for s, p in zip(val, props, strict=True) if s.expressions]
        if head_fit is not None and val_text:
            vs = [s for s, _ in val_text]
            pred = predict_grounding(head, vs, build_nodes([p for _, p in val_text], emb,
                                                           (size, size)), text)
            scores["val_grounding"] = grounding_metrics(pred["boxes"], pred["targets"])
    return {"model": str(path), "train_samples": len(train), "classes": names,
            "detector_fit": det_fit, "head_fit": head_fit, **scores}


# --------------------------------------------------------------------------------------------
# Inference on rasters
# --------------------------------------------------------------------------------------------


def _encoder_input(data: np.ndarray, config: dict[str, Any], path: Path) -> np.ndarray:
    """Raster values -> 0-1 encoder input, as the model was trained."""
    bands = int(config["in_chans"])
    if data.shape[0] != bands:
        raise InputError(f"has {data.shape[0]} bands; the model takes {bands}", path=path)
    if data.dtype == np.uint8:
        return data.astype(np.float32) / 255.0
    values = data.astype(np.float32)
    if data.dtype == np.uint16:
        values = values / 10000.0
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise InputError("has no valid pixel", path=path)
    if float(np.nanpercentile(finite, 99)) > 2.0:
        raise InputError("values above reflectance 2: give 8-bit images or reflectance 0-1",
                         path=path)
    return np.clip(np.nan_to_num(values) / float(config.get("reflectance_white", 0.3)), 0, 1)


def _windows(height: int, width: int, tile: int, overlap: int
             ) -> Iterator[tuple[int, int, int, int]]:
    """(row, col, h, w) windows covering the scene; the last ones end at the scene edge."""
    step = tile - overlap

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        count = math.ceil((n - tile) / step) + 1
        return sorted({min(i * step, n - tile) for i in range(count)})

    for r in starts(height):
        for c in starts(width):
            yield r, c, min(tile, height - r), min(tile, width - c)


def _pad32(x: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    return torch.nn.functional.pad(x, (0, (-w) % 32, 0, (-h) % 32))


@torch.no_grad()
def _scene_outputs(model: GroundingModel, image: np.ndarray, emb: Tensor, *, tile: int,
                   overlap: int, score_threshold: float, num_proposals: int
                   ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Detections and proposals of a whole scene, merged across windows (scene pixels)."""
    if overlap >= tile or tile % 32:
        raise InputError(f"need a tile that is a multiple of 32 and overlap < tile, got tile "
                         f"{tile}, overlap {overlap}", parameter="tile")
    height, width = image.shape[-2:]
    det_parts: list[dict[str, Tensor]] = []
    prop_parts: list[dict[str, Tensor]] = []
    windows = list(_windows(height, width, tile, overlap))
    for n, (r, c, h, w) in enumerate(windows):
        x = _pad32(torch.from_numpy(np.ascontiguousarray(image[:, r:r + h, c:c + w]))[None])
        out = model.detector(x, emb)
        det = decode_detections(out, (h, w), model.detector.stride,
                                score_threshold=score_threshold)[0]
        prop = proposals(out, (h, w), model.detector.stride, num=num_proposals)
        prop = {k: v[0][prop["mask"][0]] for k, v in prop.items()}
        offset = torch.tensor([c, r, c, r], dtype=torch.float32)
        edge = 2.0
        for part, store in ((det, det_parts), (prop, prop_parts)):
            boxes = part["boxes"] + offset
            inner = torch.zeros(len(boxes), dtype=torch.bool)
            if c > 0:
                inner |= part["boxes"][:, 0] <= edge
            if r > 0:
                inner |= part["boxes"][:, 1] <= edge
            if c + w < width:
                inner |= part["boxes"][:, 2] >= w - edge
            if r + h < height:
                inner |= part["boxes"][:, 3] >= h - edge
            keep = ~inner
            store.append({**{k: v[keep] for k, v in part.items() if k != "boxes"},
                          "boxes": boxes[keep]})
        if len(windows) > 4 and (n + 1) % max(1, len(windows) // 10) == 0:
            logger.info("window %d/%d", n + 1, len(windows))

    def merge(parts: list[dict[str, Tensor]], by_label: bool,
              limit: int | None) -> dict[str, Tensor]:
        merged = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        labels = merged["labels"] if by_label else torch.zeros_like(merged["labels"])
        order = batched_nms(merged["boxes"], merged["scores"], labels, 0.5)
        if limit is not None:
            order = order[:limit]
        return {k: v[order] for k, v in merged.items()}

    return merge(det_parts, True, None), merge(prop_parts, False, num_proposals)


def _read(model: GroundingModel, image_path: str | Path) -> tuple[np.ndarray, Any]:
    from eokit.core.raster import read_image

    raster = read_image(image_path)
    return _encoder_input(raster.data, model.config, Path(image_path)), raster.grid


def _box_feature(grid: Any, box: Sequence[float], properties: dict[str, Any]) -> dict[str, Any]:
    x0, y0, x1, y1 = (float(v) for v in box)
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    if grid.crs is not None:
        t = grid.transform
        corners = [tuple(t @ (c, r)) for c, r in corners]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [corners]},
            "properties": properties}


def _map_box(grid: Any, box: Sequence[float]) -> list[float] | None:
    if grid.crs is None:
        return None
    t = grid.transform
    xa, ya = t @ (float(box[0]), float(box[1]))
    xb, yb = t @ (float(box[2]), float(box[3]))
    return [round(min(xa, xb), 3), round(min(ya, yb), 3), round(max(xa, xb), 3),
            round(max(ya, yb), 3)]


def _check_classes(names: Sequence[str] | None, model: GroundingModel) -> list[str]:
    if names is None:
        return list(model.class_names)
    clean = [n.strip() for n in names]
    if not clean or any(not n for n in clean):
        raise InputError("class names must be non-empty", parameter="classes")
    if len(set(clean)) != len(clean):
        raise InputError("class names must be unique", parameter="classes")
    return clean


def _view(model: GroundingModel, image: np.ndarray) -> tuple[np.ndarray, float]:
    """The image as the model sees it, and the factor from scene pixels to view pixels.

    Models trained on whole images (``input_view: resize``) see the image with its longer side
    scaled to the training size; others see it at full resolution, window by window.
    """
    if model.config.get("input_view") != "resize":
        return image, 1.0
    from eokit.grounding.dataset import ImageItem, resize_item

    item = ImageItem(Path("."), np.zeros((0, 4), np.float32), [])
    sample, scale = resize_item(item, int(model.config["train_size"]), pixels=image)
    return sample.image, scale


def detect_array(model: GroundingModel, image: np.ndarray, names: Sequence[str], *,
                 tile: int = 512, overlap: int = 128, score_threshold: float = 0.3
                 ) -> dict[str, Tensor]:
    """Detections (scene pixels) of the named classes in a (C, H, W) 0-1 image."""
    view, scale = _view(model, image)
    if scale != 1.0:
        tile = max(tile, int(model.config["train_size"]))
    emb = model.text.classes(list(names))
    dets, _ = _scene_outputs(model, view, emb, tile=tile, overlap=overlap,
                             score_threshold=score_threshold, num_proposals=NUM_PROPOSALS)
    h, w = image.shape[-2:]
    dets["boxes"] = (dets["boxes"] / scale).clamp(min=0)
    dets["boxes"] = torch.minimum(dets["boxes"], torch.tensor([w, h, w, h], dtype=torch.float32))
    return dets


def _check_expression(expression: str) -> str:
    text = " ".join(str(expression).split())
    if not text:
        raise InputError("the expression is empty", parameter="expression")
    return text


def ground_array(model: GroundingModel, image: np.ndarray, expressions: Sequence[str], *,
                 tile: int = 512, overlap: int = 128) -> dict[str, Any]:
    """Answer boxes (scene pixels) of several expressions on one (C, H, W) 0-1 image.

    Returns:
        ``boxes`` (E, 4), ``probs`` (E, P) over the ``proposals`` (``boxes`` (P, 4) scene
        pixels, ``labels`` (P,)), and the expressions as used (whitespace collapsed).

    Raises:
        InputError: an empty expression, a model whose grounding head learnt no expression,
            or an image without any proposal.
    """
    texts = [_check_expression(e) for e in expressions]
    if not model.config.get("head_trained", True):
        raise InputError("this model was trained on detection data only (no referring "
                         "expressions): its grounding head is untrained", parameter="model")
    view, scale = _view(model, image)
    if scale != 1.0:
        tile = max(tile, int(model.config["train_size"]))
    emb = model.text.classes(model.class_names)
    _, props = _scene_outputs(model, view, emb, tile=tile, overlap=overlap,
                              score_threshold=0.05, num_proposals=NUM_PROPOSALS)
    if not len(props["boxes"]):
        raise InputError("no object proposal found in the image", parameter="image")
    h, w = view.shape[-2:]
    norm = torch.tensor([w, h, w, h], dtype=torch.float32)
    probs = props["class_probs"]
    count = len(texts)
    nodes = {"features": props["features"][None].expand(count, -1, -1),
             "class_embed": ((probs / probs.sum(-1, keepdim=True).clamp(min=1e-6))
                             @ emb)[None].expand(count, -1, -1),
             "boxes": (props["boxes"] / norm)[None].expand(count, -1, -1),
             "mask": torch.ones(count, len(props["boxes"]), dtype=torch.bool)}
    tokens, token_mask = model.text.tokens(texts)  # the encoder warns when it truncates
    with torch.no_grad():
        out = model.head(nodes, tokens, token_mask)
    bound = torch.tensor([image.shape[-1], image.shape[-2]] * 2, dtype=torch.float32)
    answer = torch.minimum((out["box"] * norm / scale).clamp(min=0), bound)
    return {"boxes": answer, "probs": out["probs"],
            "proposals": {"boxes": props["boxes"] / scale, "labels": props["labels"]},
            "expressions": texts}


def detect_image(model: GroundingModel, image_path: str | Path, out_path: str | Path, *,
                 classes: Sequence[str] | None = None, tile: int = 512, overlap: int = 128,
                 score_threshold: float = 0.3, far_similarity: float = 0.6,
                 report_path: str | Path | None = None) -> dict[str, Any]:
    """Detect objects of the named classes in a scene of any size; writes GeoJSON.

    Class names outside the training vocabulary are allowed (open set); a name whose text
    embedding is far from every training class (cosine below ``far_similarity``) is logged as
    unreliable.

    Returns:
        Output path, counts per class, and for every requested name the closest training
        class with its similarity; ``report`` when ``report_path`` is given (HTML with the
        boxes drawn and the counts).
    """
    from eokit.core.raster import write_geojson

    names = _check_classes(classes, model)
    similarity = model.vocabulary_similarity(names)
    for name, s in similarity.items():
        if s["similarity"] < far_similarity:
            logger.warning("class %r is far from every training class (closest %r, cosine "
                           "%.2f): its detections are unreliable", name, s["closest"],
                           s["similarity"])
    image, grid = _read(model, image_path)
    dets = detect_array(model, image, names, tile=tile, overlap=overlap,
                        score_threshold=score_threshold)
    features = [_box_feature(grid, box.tolist(), {"class": names[int(k)],
                                                  "score": round(float(s), 4),
                                                  "box_px": [round(float(v), 1) for v in box]})
                for box, s, k in zip(dets["boxes"], dets["scores"], dets["labels"], strict=True)]
    frame = None if grid.crs is not None else "image pixels: x = column, y = row, origin top-left"
    path = write_geojson(out_path, features, grid.crs, frame=frame)
    counts = {n: int((dets["labels"] == i).sum()) for i, n in enumerate(names)}
    summary: dict[str, Any] = {"geojson": str(path), "detections": len(features),
                               "per_class": counts, "vocabulary_similarity": similarity}
    if report_path is not None:
        from eokit.grounding.report import detect_report

        summary["report"] = str(detect_report(image, dets, names, summary, report_path,
                                              image_path=Path(image_path),
                                              far_similarity=far_similarity))
    return summary


def ground_image(model: GroundingModel, image_path: str | Path, expression: str,
                 out_path: str | Path, *, tile: int = 512, overlap: int = 128,
                 top: int = 5, report_path: str | Path | None = None) -> dict[str, Any]:
    """Locate the one object ``expression`` describes; writes it as a GeoJSON polygon.

    Returns:
        The box in pixels and in map coordinates (None for plain images), its probability,
        the ``top`` proposals with their probabilities, the GeoJSON path, and ``report`` when
        ``report_path`` is given (HTML with the image, the answer and the top proposals).
    """
    from eokit.core.raster import write_geojson

    text = _check_expression(expression)
    image, grid = _read(model, image_path)
    answer = ground_array(model, image, [text], tile=tile, overlap=overlap)
    text = answer["expressions"][0]
    box = answer["boxes"][0].tolist()
    p = answer["probs"][0]
    props = answer["proposals"]
    order = p.argsort(descending=True)[:top]
    ranked = [{"box_px": [round(float(v), 1) for v in props["boxes"][i]],
               "probability": round(float(p[i]), 4),
               "class": model.class_names[int(props["labels"][i])]} for i in order]
    feature = _box_feature(grid, box, {"expression": text,
                                       "probability": round(float(p.max()), 4)})
    frame = None if grid.crs is not None else "image pixels: x = column, y = row, origin top-left"
    path = write_geojson(out_path, [feature], grid.crs, frame=frame)
    summary: dict[str, Any] = {
        "expression": text, "box_px": [round(v, 1) for v in box],
        "box_map": _map_box(grid, box), "crs": None if grid.crs is None else str(grid.crs),
        "probability": round(float(p.max()), 4), "top_proposals": ranked,
        "geojson": str(path)}
    if report_path is not None:
        from eokit.grounding.report import ground_report

        summary["report"] = str(ground_report(image, summary, report_path,
                                              image_path=Path(image_path),
                                              feature=json.loads(Path(path).read_text())))
    return summary
