"""Records folders (DIOR-RSVG, OPT-RSVG, DOTA, COCO, iSAID, simulator) as model-ready images.

:func:`load_images` reads a folder with the matching reader and groups its records by image:
one :class:`ImageItem` holds every labelled box of one image (original pixels, canonical class
names) and the image's referring expressions. The model sees images in one of two views
(:func:`model_view`):

* ``resize``: the whole image, its longer side scaled to the training size and padded to a
  square (grounding datasets: an expression may refer to anything in the picture);
* ``tile``: the image cut into overlapping training-size windows (detection datasets with large
  scenes such as DOTA); a box stays in a window when at least half of it is inside.

:func:`assign_split` puts each image in one split, either from a split folder written by
:func:`eokit.grounding.split.write_split` (verified: re-hashed and leakage-checked) or from a new
image-disjoint split, and states which split the numbers use (file names and their sha256).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eokit.core.errors import InputError
from eokit.grounding.records import canonical_class_name
from eokit.grounding.train import GroundingSample

logger = logging.getLogger(__name__)

__all__ = [
    "DETECTION_FORMATS",
    "FORMATS",
    "GROUNDING_FORMATS",
    "ImageItem",
    "SplitInfo",
    "assign_split",
    "encoder_array",
    "load_images",
    "model_view",
    "resize_item",
    "simulated_images",
    "tile_item",
]

#: Formats whose records carry referring expressions.
GROUNDING_FORMATS: tuple[str, ...] = ("dior-rsvg", "opt-rsvg", "synth")
#: Formats with boxes and class names only.
DETECTION_FORMATS: tuple[str, ...] = ("dota", "coco", "isaid")
FORMATS: tuple[str, ...] = GROUNDING_FORMATS + DETECTION_FORMATS


@dataclass
class ImageItem:
    """One image with its labelled boxes and referring expressions (original pixels).

    Attributes:
        image: Image file.
        boxes: (N, 4) float32 xyxy boxes.
        labels: Canonical class name of each box.
        expressions: Referring expressions of the image.
        targets: Index into ``boxes`` of each expression's object.
        kinds: Kind of each expression ("" where the dataset does not say).
        complete: Every object of the image is labelled.
        array: (C, H, W) float32 0-1 pixels when already in memory (simulated scenes).
    """

    image: Path
    boxes: np.ndarray
    labels: list[str]
    expressions: list[str] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    complete: bool = True
    array: np.ndarray | None = None


def encoder_array(path: Path, in_chans: int = 3, reflectance_white: float = 0.3) -> np.ndarray:
    """(C, H, W) float32 0-1 pixels of an image file, scaled as the models are trained.

    8-bit values are divided by 255, 16-bit by 10000 (reflectance), reflectance by
    ``reflectance_white``; a single grey band is repeated when the model takes three.
    """
    from eokit.core.raster import read_image
    from eokit.grounding.pipeline import _encoder_input

    data = read_image(path).data
    if data.shape[0] == 1 and in_chans == 3:
        data = np.repeat(data, 3, axis=0)
    config = {"in_chans": in_chans, "reflectance_white": reflectance_white}
    return _encoder_input(data, config, Path(path)).astype(np.float32)


def _from_grounding(records: Sequence[Any], complete: bool) -> list[ImageItem]:
    items: dict[Path, ImageItem] = {}
    for record in records:
        item = items.setdefault(record.image, ImageItem(record.image, np.zeros((0, 4), np.float32),
                                                        [], complete=complete))
        box = np.asarray(record.box, dtype=np.float32)
        name = canonical_class_name(record.class_name)
        same = [i for i, (b, n) in enumerate(zip(item.boxes, item.labels, strict=True))
                if n == name and np.allclose(b, box)]
        if same:
            target = same[0]
        else:
            item.boxes = np.concatenate([item.boxes, box[None]])
            item.labels.append(name)
            target = len(item.labels) - 1
        item.expressions.append(record.expression)
        item.targets.append(target)
        item.kinds.append(record.kind or "")
    return list(items.values())


def _synth_folders(root: Path) -> list[ImageItem]:
    from eokit.grounding.data import read_synth_scene

    folders = sorted(p.parent for p in root.rglob("expressions.json"))
    items = []
    for folder in folders:
        detection, grounding = read_synth_scene(folder)
        boxes = np.asarray(detection.boxes, dtype=np.float32)
        names = [canonical_class_name(n) for n in detection.labels]
        item = ImageItem(detection.image, boxes, names)
        for record in grounding:
            match = np.flatnonzero(np.all(np.isclose(boxes, np.asarray(record.box)), axis=1))
            item.expressions.append(record.expression)
            item.targets.append(int(match[0]))
            item.kinds.append(record.kind or "")
        items.append(item)
    return items


def load_images(data: str | Path, fmt: str) -> list[ImageItem]:
    """Read a records folder (or a COCO json file) into one item per image.

    Args:
        data: Dataset folder; for ``coco`` a json file or a folder holding exactly one.
        fmt: One of :data:`FORMATS`.

    Raises:
        InputError: an unknown format, a missing folder, a folder without any image, or any
            error of the reader (naming the annotation file).
    """
    from eokit.grounding import data as readers

    root = Path(data)
    if fmt not in FORMATS:
        raise InputError(f"must be one of {', '.join(FORMATS)}, got {fmt!r}", parameter="format")
    if not root.exists():
        raise InputError(f"not found: {root}", parameter="data")
    if fmt == "dior-rsvg":
        items = _from_grounding(readers.read_dior_rsvg(root, check_images=True), complete=False)
    elif fmt == "opt-rsvg":
        items = _from_grounding(readers.read_opt_rsvg(root, check_images=True), complete=False)
    elif fmt == "synth":
        items = _synth_folders(readers.existing_dir(root, "data"))
    else:
        if fmt == "dota":
            records = readers.read_dota(root, require_images=False)
            missing = [r for r in records if not r.image.is_file()]
            if missing:
                logger.warning("%d DOTA label file(s) without an image are left out (first: %s)",
                               len(missing), missing[0].annotation)
            records = [r for r in records if r.image.is_file()]
        elif fmt == "coco":
            jsons = [root] if root.is_file() else sorted(root.glob("*.json"))
            if len(jsons) != 1:
                raise InputError(f"holds {len(jsons)} json files; give the COCO file itself",
                                 parameter="data")
            records = readers.read_coco(jsons[0])
        else:
            records = readers.read_isaid(root)
        items = [ImageItem(r.image, np.asarray(r.boxes, np.float32).reshape(-1, 4),
                           [canonical_class_name(n) for n in r.labels]) for r in records]
    missing_images = [i.image for i in items if not i.image.is_file()]
    if missing_images:
        raise InputError(f"{len(missing_images)} image(s) not found, first "
                         f"{missing_images[0]}", parameter="data")
    if not items:
        raise InputError(f"no labelled image found for format {fmt}", path=root)
    logger.info("%s: %d images, %d boxes, %d expressions", root, len(items),
                sum(len(i.labels) for i in items), sum(len(i.expressions) for i in items))
    return items


def simulated_images(count: int, size: int, seed: int, expression_mix: str = "mixed",
                     n_expressions: int = 4) -> list[ImageItem]:
    """Simulated object scenes as items (pixels in memory, every object labelled)."""
    from eokit.core.synth.objects import ObjectDomain, generate_object_dataset
    from eokit.grounding.train import to_unit

    scenes = generate_object_dataset(count, size, seed=seed,
                                     domain=ObjectDomain(expression_mix=expression_mix),
                                     n_expressions=n_expressions)
    return [ImageItem(Path(f"simulated/seed{seed}/scene{n:04d}"), s.boxes(), s.labels(),
                      [e.text for e in s.expressions], [e.target for e in s.expressions],
                      [e.kind for e in s.expressions], complete=True, array=to_unit(s.image))
            for n, s in enumerate(scenes)]


def _pixels(item: ImageItem) -> np.ndarray:
    return item.array if item.array is not None else encoder_array(item.image)


def resize_item(item: ImageItem, size: int, pixels: np.ndarray | None = None
                ) -> tuple[GroundingSample, float]:
    """The whole image, longer side scaled to ``size``, padded to a square; returns the scale."""
    image = _pixels(item) if pixels is None else pixels
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    x = torch.from_numpy(np.ascontiguousarray(image))[None]
    if (nh, nw) != (h, w):
        x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear",
                                            align_corners=False, antialias=scale < 1)
    x = torch.nn.functional.pad(x, (0, size - nw, 0, size - nh))
    sample = GroundingSample(x[0].numpy().astype(np.float32), item.boxes * scale,
                             list(item.labels), list(item.expressions), list(item.targets),
                             list(item.kinds), complete=item.complete)
    return sample, scale


def tile_item(item: ImageItem, size: int, overlap: int) -> list[GroundingSample]:
    """Overlapping ``size`` windows of the image (padded at the edges); no expressions."""
    from eokit.grounding.pipeline import _windows

    image = _pixels(item)
    height, width = image.shape[-2:]
    out = []
    for r, c, h, w in _windows(height, width, size, overlap):
        window = np.zeros((image.shape[0], size, size), np.float32)
        window[:, :h, :w] = image[:, r:r + h, c:c + w]
        boxes = item.boxes - np.array([c, r, c, r], np.float32)
        clipped = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
        area = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)
        inside = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), axis=1)
        keep = inside >= 0.5 * np.maximum(area, 1e-6)
        out.append(GroundingSample(window, clipped[keep].reshape(-1, 4),
                                   [item.labels[i] for i in np.flatnonzero(keep)], [], [], [],
                                   complete=item.complete))
    return out


def model_view(items: Sequence[ImageItem], size: int, view: str
               ) -> list[GroundingSample]:
    """Training samples of ``items`` in the ``resize`` or ``tile`` view."""
    if view == "resize":
        return [resize_item(i, size)[0] for i in items]
    if view == "tile":
        return [s for i in items for s in tile_item(i, size, size // 4)]
    raise InputError(f"use 'resize' or 'tile', got {view!r}", parameter="view")


@dataclass
class SplitInfo:
    """Which split a set of numbers uses.

    Attributes:
        name: Split name (``train``, ``val``, ``test``) or ``all``.
        folder: The split folder (None: no split file).
        files: {split name: sha256 of its ``<name>.txt``}.
        images: Images per split.
        built: The split was built by this run (False: read from ``folder``).
    """

    name: str
    folder: Path | None
    files: dict[str, str]
    images: dict[str, int]
    built: bool

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (split file name and hash of the split used)."""
        chosen = f"{self.name}.txt" if self.folder is not None else None
        return {"split": self.name,
                "split_file": None if chosen is None else str(self.folder / chosen),
                "split_file_sha256": self.files.get(self.name),
                "images_per_split": self.images, "built_by_this_run": self.built}


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assign_split(items: Sequence[ImageItem], *, split_dir: str | Path | None = None,
                 out_dir: str | Path | None = None, fractions: Sequence[float] = (0.7, 0.15, 0.15),
                 seed: int = 0) -> tuple[dict[str, list[ImageItem]], SplitInfo]:
    """Group items by image-disjoint split.

    With ``split_dir`` the split folder is verified (every image re-hashed; images in more
    than one split are refused, naming them) and used; otherwise a new split is built from the
    images' sha256 and written to ``out_dir``.

    Raises:
        InputError: a split that shares images between splits, a split file whose images
            changed, or an item whose image is in no split.
    """
    from eokit.grounding.split import (
        build_image_split,
        check_leakage,
        file_sha256,
        read_split,
        verify_split,
        write_split,
    )

    if split_dir is not None:
        folder = Path(split_dir)
        verify_split(folder)  # re-hashes and refuses leakage
        entries = read_split(folder)
        where = {sha: name for name, rows in entries.items() for sha, _ in rows}
        groups: dict[str, list[ImageItem]] = {name: [] for name in entries}
        for item in items:
            sha = file_sha256(item.image)
            if sha not in where:
                raise InputError(f"image {item.image.name} is in no split of {folder}",
                                 parameter="split")
            groups[where[sha]].append(item)
        built = False
    else:
        if out_dir is None:
            raise InputError("give a split folder or an output folder", parameter="split")
        split = build_image_split(items, fractions=fractions, seed=seed)
        folder = Path(out_dir)
        write_split(split, folder)
        groups = {name: [] for name in split.names}
        for item in items:
            groups[split.assignment[file_sha256(item.image)]].append(item)
        built = True
    check_leakage({name: [i.image for i in group] for name, group in groups.items()})
    files = {name: _file_hash(folder / f"{name}.txt") for name in groups
             if (folder / f"{name}.txt").is_file()}
    info = SplitInfo("all", folder, files, {n: len(g) for n, g in groups.items()}, built)
    return groups, info
