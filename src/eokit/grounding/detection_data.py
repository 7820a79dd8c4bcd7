"""Detection readers: DOTA v1 labelTxt, iSAID instance masks and COCO json, into records."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eokit.core.errors import InputError
from eokit.grounding.boxes import polygon_to_box
from eokit.grounding.records import (
    DetectionRecord,
    PathLike,
    checked_boxes,
    existing_dir,
    find_image,
    image_size,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ISAID_PALETTE",
    "read_coco",
    "read_dota",
    "read_dota_labels",
    "read_isaid",
    "read_isaid_masks",
]

#: iSAID semantic-mask colours (RGB) -> class name (background is (0, 0, 0)).
ISAID_PALETTE: dict[tuple[int, int, int], str] = {
    (0, 0, 63): "ship", (0, 63, 63): "storage_tank", (0, 63, 0): "baseball_diamond",
    (0, 63, 127): "tennis_court", (0, 63, 191): "basketball_court",
    (0, 63, 255): "ground_track_field", (0, 127, 63): "bridge", (0, 127, 127): "large_vehicle",
    (0, 0, 127): "small_vehicle", (0, 0, 191): "helicopter", (0, 0, 255): "swimming_pool",
    (0, 191, 127): "roundabout", (0, 127, 191): "soccer_ball_field", (0, 127, 255): "plane",
    (0, 100, 155): "harbor",
}


#: The iSAID devkit skips instance ids below this (near-black colours are not instances).
_ISAID_MIN_ID = 1000


# --------------------------------------------------------------------------------------------
# DOTA
# --------------------------------------------------------------------------------------------


def read_dota_labels(path: PathLike) -> tuple[np.ndarray, list[str], list[bool], dict[str, Any]]:
    """Parse one DOTA v1 ``labelTxt`` file.

    Args:
        path: The label file.

    Returns:
        ((N, 8) float32 polygons ``x1 y1 ... x4 y4``, class names, difficult flags, header
        values: ``{"imagesource": str, "gsd": float or None}`` where given).

    Raises:
        InputError: naming the file and line, for a line that is neither a header nor
            ``8 numbers, class[, difficult]``.
    """
    path = Path(path)
    polygons, labels, difficult = [], [], []
    meta: dict[str, Any] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("imagesource", "gsd"):
            value = value.strip()
            if key.strip() == "gsd":
                try:
                    meta["gsd"] = float(value)
                except ValueError:
                    meta["gsd"] = None  # DOTA writes "gsd:null" for unknown
            else:
                meta["imagesource"] = value
            continue
        parts = line.split()
        if len(parts) not in (9, 10):
            raise InputError(f"line {number}: expected 'x1 y1 ... x4 y4 class difficult', got "
                             f"{len(parts)} fields", path=path)
        try:
            polygons.append([float(v) for v in parts[:8]])
        except ValueError:
            raise InputError(f"line {number}: non-numeric corner coordinate", path=path) from None
        labels.append(parts[8])
        if len(parts) == 10 and parts[9] not in ("0", "1"):
            raise InputError(f"line {number}: difficult must be 0 or 1, got {parts[9]!r}",
                             path=path)
        difficult.append(len(parts) == 10 and parts[9] == "1")
    array = np.array(polygons, dtype=np.float32).reshape(-1, 8)
    return array, labels, difficult, meta


def read_dota(root: PathLike, *, label_dir: PathLike | None = None,
              image_dir: PathLike | None = None, require_images: bool = True,
              skip_difficult: bool = False, tolerance_px: float = 1.0) -> list[DetectionRecord]:
    """Read DOTA v1: ``root/labelTxt/<name>.txt`` beside ``root/images/<name>.png``.

    Oriented boxes become their axis-aligned enclosing boxes
    (:func:`eokit.grounding.boxes.polygon_to_box`).

    Args:
        root: Dataset folder (e.g. ``DOTA/train``).
        label_dir: Label folder instead of ``root/labelTxt``.
        image_dir: Image folder instead of ``root/images``.
        require_images: Refuse a label file without its image (False: keep it with an unknown
            size; boxes are then only checked for being non-empty).
        skip_difficult: Leave out objects flagged difficult.
        tolerance_px: Box overshoot beyond the image that is clipped rather than refused.

    Returns:
        One :class:`DetectionRecord` per label file, sorted by name; ``meta`` holds ``gsd``
        (metres, None if unknown) and ``imagesource``.
    """
    root = Path(root)
    labels_dir = existing_dir(label_dir or root / "labelTxt", "label_dir")
    images_dir = Path(image_dir) if image_dir is not None else root / "images"
    records = []
    for path in sorted(labels_dir.glob("*.txt")):
        polygons, names, difficult, meta = read_dota_labels(path)
        image = find_image(images_dir, path.stem)
        width = height = None
        if image is not None:
            width, height = image_size(image)
        elif require_images:
            raise InputError(f"no image {path.stem}.png (or .jpg/.tif) in {images_dir}; pass "
                             "require_images=False to read labels alone", path=path)
        else:
            image = images_dir / f"{path.stem}.png"
        boxes = (polygon_to_box(torch.from_numpy(polygons)).numpy() if len(polygons)
                 else np.zeros((0, 4), np.float32))
        boxes = checked_boxes(boxes, width, height, path, tolerance_px)
        keep = [i for i, d in enumerate(difficult) if not (skip_difficult and d)]
        records.append(DetectionRecord(
            image=image, boxes=boxes[keep], labels=tuple(names[i] for i in keep), width=width,
            height=height, annotation=path, difficult=tuple(difficult[i] for i in keep),
            meta=meta))
    logger.info("%s: %d label files, %d objects", labels_dir, len(records),
                sum(len(r) for r in records))
    return records


# --------------------------------------------------------------------------------------------
# iSAID instance masks
# --------------------------------------------------------------------------------------------


def _rgb_ids(path: Path) -> np.ndarray:
    from eokit.core.raster import read_raster

    data = read_raster(path).data
    if data.ndim != 3 or data.shape[0] < 3 or data.dtype != np.uint8:
        raise InputError(f"expected an 8-bit RGB PNG, got {data.shape[0]} band(s) of "
                         f"{data.dtype}", path=path)
    rgb = data[:3].astype(np.int64)
    ids: np.ndarray = rgb[0] + 256 * rgb[1] + 65536 * rgb[2]
    return ids


def read_isaid_masks(instance_mask: PathLike, semantic_mask: PathLike, *,
                     image: PathLike | None = None, min_pixels: int = 1) -> DetectionRecord:
    """Boxes and classes of every instance in one iSAID image.

    Each RGB colour of ``instance_mask`` other than black is one instance (id
    ``R + 256 G + 65536 B``; ids below 1000 are skipped, as the iSAID devkit does); its box is the
    tight box of its pixels (``x_max`` = last column + 1) and its class the most frequent
    :data:`ISAID_PALETTE` colour of ``semantic_mask`` under it.

    Args:
        instance_mask: ``<name>_instance_id_RGB.png``.
        semantic_mask: ``<name>_instance_color_RGB.png``.
        image: The image the masks belong to (default: ``<name>.png`` beside the masks).
        min_pixels: Instances with fewer pixels are left out.

    Returns:
        A :class:`DetectionRecord` (instances in increasing id order).

    Raises:
        InputError: masks of different sizes, a semantic colour outside the palette, or an
            instance with no class under it.
    """
    from scipy import ndimage

    instance_mask, semantic_mask = Path(instance_mask), Path(semantic_mask)
    instance_ids, semantic_ids = _rgb_ids(instance_mask), _rgb_ids(semantic_mask)
    if instance_ids.shape != semantic_ids.shape:
        raise InputError(f"is {semantic_ids.shape[1]}x{semantic_ids.shape[0]} but the instance "
                         f"mask is {instance_ids.shape[1]}x{instance_ids.shape[0]}",
                         path=semantic_mask)
    palette = {r + 256 * g + 65536 * b: i + 1 for i, (r, g, b) in enumerate(ISAID_PALETTE)}
    palette[0] = 0
    codes, inverse = np.unique(semantic_ids, return_inverse=True)
    unknown = [int(c) for c in codes if int(c) not in palette]
    if unknown:
        c = unknown[0]
        raise InputError(f"colour {(c % 256, c // 256 % 256, c // 65536)} is not an iSAID class "
                         "colour", path=semantic_mask)
    semantic = np.array([palette[int(c)] for c in codes])[inverse.reshape(semantic_ids.shape)]
    instance_ids = np.where(instance_ids < _ISAID_MIN_ID, 0, instance_ids)
    ids, labels = np.unique(instance_ids, return_inverse=True)
    labels = labels.reshape(instance_ids.shape)
    if ids[0] != 0:  # no background at all: shift so that label 0 stays "no instance"
        labels = labels + 1
        ids = np.concatenate([[0], ids])
    n_classes = len(ISAID_PALETTE) + 1
    votes = np.bincount((labels * n_classes + semantic).ravel(),
                        minlength=len(ids) * n_classes).reshape(len(ids), n_classes)
    names = list(ISAID_PALETTE.values())
    boxes, classes = [], []
    for label, window in enumerate(ndimage.find_objects(labels), start=1):
        if window is None or votes[label].sum() < min_pixels:
            continue
        class_votes = votes[label, 1:]
        if class_votes.sum() == 0:
            raise InputError(f"instance colour id {int(ids[label])} has no class under it in "
                             f"{semantic_mask.name}", path=instance_mask)
        rows, cols = window
        boxes.append((cols.start, rows.start, cols.stop, rows.stop))
        classes.append(names[int(np.argmax(class_votes))])
    height, width = instance_ids.shape
    stem = instance_mask.name.removesuffix("_instance_id_RGB.png")
    image_path = Path(image) if image is not None else instance_mask.with_name(f"{stem}.png")
    return DetectionRecord(
        image=image_path, boxes=checked_boxes(boxes, width, height, instance_mask, 0.0),
        labels=tuple(classes), width=width, height=height, annotation=instance_mask,
        difficult=(False,) * len(classes))


def read_isaid(root: PathLike, *, min_pixels: int = 1) -> list[DetectionRecord]:
    """Every ``*_instance_id_RGB.png`` under ``root`` (recursively) with its semantic mask.

    Args:
        root: A folder such as ``iSAID/train/images``.
        min_pixels: Instances with fewer pixels are left out.

    Returns:
        One :class:`DetectionRecord` per image, sorted by path.
    """
    root = existing_dir(root, "root")
    records = []
    for instance in sorted(root.rglob("*_instance_id_RGB.png")):
        semantic = instance.with_name(instance.name.replace("_instance_id_RGB",
                                                            "_instance_color_RGB"))
        if not semantic.is_file():
            raise InputError(f"semantic mask {semantic.name} not found beside it", path=instance)
        records.append(read_isaid_masks(instance, semantic, min_pixels=min_pixels))
    return records


# --------------------------------------------------------------------------------------------
# COCO json
# --------------------------------------------------------------------------------------------


_Json = dict[str, Any]


def _coco_index(data: _Json) -> tuple[list[_Json], dict[int, list[_Json]], dict[int, str]]:
    """(images, annotations by image id, category names by id), via pycocotools when present."""
    try:
        from pycocotools.coco import COCO
    except ImportError:
        by_image: dict[int, list[_Json]] = {}
        for ann in data.get("annotations", []):
            by_image.setdefault(ann["image_id"], []).append(ann)
        names = {c["id"]: c["name"] for c in data.get("categories", [])}
        return list(data["images"]), by_image, names
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    images = coco.loadImgs(coco.getImgIds())
    by_image = {image["id"]: coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
                for image in images}
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    return images, by_image, names


def read_coco(annotation: PathLike, image_dir: PathLike | None = None, *,
              skip_crowd: bool = True, tolerance_px: float = 1.0) -> list[DetectionRecord]:
    """Read a COCO-style detection json (``bbox`` ``[x, y, w, h]`` in pixels).

    The file is loaded with ``json`` and indexed with pycocotools when it is installed (the same
    records either way). A single-image variant with ``image_info`` instead of ``images`` (as
    some iSAID tools write) is accepted.

    Args:
        annotation: The json file.
        image_dir: Folder of the ``file_name`` entries (default: the json's folder).
        skip_crowd: Leave out ``iscrowd`` annotations (COCO counts them as "ignore").
        tolerance_px: Box overshoot beyond the image that is clipped rather than refused.

    Returns:
        One :class:`DetectionRecord` per image (also images without annotations), in file
        order; ``labels`` are category names.
    """
    path = Path(annotation)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not readable as json ({str(exc).splitlines()[0]})", path=path) from None
    if not isinstance(data, dict) or ("images" not in data and "image_info" not in data):
        raise InputError("not a COCO annotation file (no 'images')", path=path)
    if "images" not in data:
        info = data["image_info"]
        data = {**data, "images": [info]}
        data["annotations"] = [{"image_id": info.get("id"), **a}
                               for a in data.get("annotations", [])]
    categories = data.get("categories")
    if isinstance(categories, dict):  # {"1": "ship", ...} in some iSAID exports
        data = {**data, "categories": [{"id": int(k), "name": v} for k, v in categories.items()]}
    elif not isinstance(categories, list):
        raise InputError("has no 'categories' list", path=path)
    images, by_image, names = _coco_index(data)
    folder = Path(image_dir) if image_dir is not None else path.parent
    records = []
    for image in images:
        boxes, labels = [], []
        for ann in by_image.get(image["id"], []):
            if skip_crowd and ann.get("iscrowd", 0):
                continue
            if ann.get("category_id") not in names:
                raise InputError(f"annotation {ann.get('id')} has category_id "
                                 f"{ann.get('category_id')} not in 'categories'", path=path)
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes.append((x, y, x + w, y + h))
            labels.append(names[ann["category_id"]])
        width, height = image.get("width"), image.get("height")
        records.append(DetectionRecord(
            image=folder / image["file_name"],
            boxes=checked_boxes(boxes, width, height, path, tolerance_px), labels=tuple(labels),
            width=width, height=height, annotation=path, difficult=(False,) * len(labels)))
    logger.info("%s: %d images, %d boxes", path, len(records), sum(len(r) for r in records))
    return records
