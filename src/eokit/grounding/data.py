"""Readers for detection and visual-grounding datasets, all into two record types.

* :class:`DetectionRecord`: one image, every labelled object (xyxy pixel boxes, class names).
* :class:`GroundingRecord`: one referring expression and its target box in one image.

Layouts:

* DIOR-RSVG (Zhan et al. 2023) and OPT-RSVG (Li et al. 2024): VOC-style XML per image in
  ``Annotations/``, each ``<object>`` holding ``<name>``, ``<bndbox>`` and ``<description>`` (one
  expression, one sample); images in ``JPEGImages/`` (OPT-RSVG: ``Image/``); split files of
  *global object indices*, counted over the XML files in sorted name order and the objects
  inside each (:func:`read_dior_rsvg`, :func:`read_opt_rsvg`).
* DOTA v1 ``labelTxt``: ``x1 y1 x2 y2 x3 y3 x4 y4 class difficult`` per line, optional header
  lines ``imagesource:`` and ``gsd:``; oriented boxes become their axis-aligned enclosing boxes
  (:func:`eokit.grounding.boxes.polygon_to_box`), so IoU against them is lower than an oriented
  benchmark reports (:func:`read_dota`).
* iSAID instance masks: ``<name>_instance_id_RGB.png`` (one RGB colour per instance, id
  ``R + 256 G + 65536 B``) with ``<name>_instance_color_RGB.png`` (class by colour, the iSAID
  palette), boxes are the tight boxes of each instance's pixels (:func:`read_isaid`).
* COCO json (``images``, ``annotations`` with ``bbox`` ``[x, y, w, h]``, ``categories``), loaded
  with pycocotools (:func:`read_coco`).
* The simulator's ``expressions.json`` (:func:`read_synth_scene`).

Every box is checked against its image (:func:`eokit.grounding.boxes.check_boxes`): an empty box
or one lying more than ``tolerance_px`` outside the image is an :class:`InputError` naming the
annotation file; smaller overshoots are clipped. Class names stay as the dataset writes them;
:func:`canonical_class_name` gives one spelling across datasets ("storage tank").
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eokit.core.errors import InputError
from eokit.grounding.boxes import check_boxes, polygon_to_box

logger = logging.getLogger(__name__)

__all__ = [
    "DIOR_CLASSES",
    "ISAID_PALETTE",
    "OPT_RSVG_CLASSES",
    "DetectionRecord",
    "GroundingRecord",
    "canonical_class_name",
    "read_coco",
    "read_dior_rsvg",
    "read_dota",
    "read_dota_labels",
    "read_index_split",
    "read_isaid",
    "read_isaid_masks",
    "read_opt_rsvg",
    "read_rsvg_xml",
    "read_synth_scene",
]

PathLike = str | os.PathLike[str]

#: DIOR class names as DIOR-RSVG writes them -> canonical spelling.
DIOR_CLASSES: dict[str, str] = {
    "airplane": "airplane", "airport": "airport", "baseballfield": "baseball field",
    "basketballcourt": "basketball court", "bridge": "bridge", "chimney": "chimney",
    "dam": "dam", "Expressway-Service-area": "expressway service area",
    "Expressway-toll-station": "expressway toll station", "golffield": "golf field",
    "groundtrackfield": "ground track field", "harbor": "harbor", "overpass": "overpass",
    "ship": "ship", "stadium": "stadium", "storagetank": "storage tank",
    "tenniscourt": "tennis court", "trainstation": "train station", "vehicle": "vehicle",
    "windmill": "windmill",
}

#: The 14 OPT-RSVG classes (already in canonical spelling).
OPT_RSVG_CLASSES: tuple[str, ...] = (
    "airplane", "ground track field", "tennis court", "bridge", "basketball court",
    "storage tank", "ship", "baseball diamond", "T junction", "crossroad", "parking lot",
    "harbor", "vehicle", "swimming pool",
)

#: iSAID semantic-mask colours (RGB) -> class name (background is (0, 0, 0)).
ISAID_PALETTE: dict[tuple[int, int, int], str] = {
    (0, 0, 63): "ship", (0, 63, 63): "storage_tank", (0, 63, 0): "baseball_diamond",
    (0, 63, 127): "tennis_court", (0, 63, 191): "basketball_court",
    (0, 63, 255): "ground_track_field", (0, 127, 63): "bridge", (0, 127, 127): "large_vehicle",
    (0, 0, 127): "small_vehicle", (0, 0, 191): "helicopter", (0, 0, 255): "swimming_pool",
    (0, 191, 127): "roundabout", (0, 127, 191): "soccer_ball_field", (0, 127, 255): "plane",
    (0, 100, 155): "harbor",
}

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: The iSAID devkit skips instance ids below this (near-black colours are not instances).
_ISAID_MIN_ID = 1000


@dataclass(frozen=True, eq=False)
class DetectionRecord:
    """One image with every labelled object.

    Attributes:
        image: Image file.
        boxes: (N, 4) float32 xyxy pixel boxes, inside the image.
        labels: Class name of each box, as the dataset writes it.
        width: Image width in pixels (None when neither annotation nor image tells).
        height: Image height in pixels.
        annotation: The annotation file the boxes come from.
        difficult: Per-box "difficult" flag (DOTA), all False elsewhere.
        attributes: Per-box attributes where the source has them (simulator: colour, size).
        meta: Whatever else the annotation says (DOTA ``gsd``, ``imagesource``).
    """

    image: Path
    boxes: np.ndarray
    labels: tuple[str, ...]
    width: int | None = None
    height: int | None = None
    annotation: Path | None = None
    difficult: tuple[bool, ...] = ()
    attributes: tuple[dict[str, Any], ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class GroundingRecord:
    """One referring expression and the box of the object it names.

    Attributes:
        image: Image file.
        expression: The referring expression.
        box: Target box ``(x_min, y_min, x_max, y_max)`` in pixels.
        class_name: Class of the target, as the dataset writes it.
        width: Image width in pixels.
        height: Image height in pixels.
        annotation: The annotation file.
        index: Global sample index (the numbers in DIOR-RSVG / OPT-RSVG split files).
        kind: Expression type where known (simulator: ``attribute``, ``superlative``,
            ``ordinal``, ``relation``), else None.
    """

    image: Path
    expression: str
    box: tuple[float, float, float, float]
    class_name: str
    width: int | None = None
    height: int | None = None
    annotation: Path | None = None
    index: int | None = None
    kind: str | None = None


def canonical_class_name(name: str) -> str:
    """One spelling of a class name across datasets: lower case, words split by one space.

    ``"storage-tank"``, ``"storage_tank"``, ``"storagetank"`` (DIOR) and ``"Storage Tank"`` all
    become ``"storage tank"``; abbreviations such as ``"T junction"`` keep their capital.
    """
    if name in DIOR_CLASSES:
        return DIOR_CLASSES[name]
    words = re.split(r"[\s_\-]+", name.strip())
    return " ".join(w if len(w) == 1 and w.isupper() else w.lower() for w in words if w)


def _checked(boxes: Any, width: int | None, height: int | None, source: Path,
             tolerance_px: float) -> np.ndarray:
    tensor = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
    unbounded = 1 << 30  # size unknown: check only that boxes are finite and not empty
    checked = check_boxes(tensor, height or unbounded, width or unbounded,
                          source=os.fspath(source), tolerance_px=tolerance_px)
    return checked.numpy().astype(np.float32)


def _box_tuple(box: Sequence[float]) -> tuple[float, float, float, float]:
    return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, read from its header."""
    from eokit.core.raster import raster_info

    grid, _, _ = raster_info(path)
    return grid.width, grid.height


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in _IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def _check_dir(path: PathLike, parameter: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"folder not found: {folder}", parameter=parameter)
    return folder


# --------------------------------------------------------------------------------------------
# DIOR-RSVG and OPT-RSVG
# --------------------------------------------------------------------------------------------


def _text(element: ET.Element, tag: str, path: Path, what: str) -> str:
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise InputError(f"{what} has no <{tag}>", path=path)
    return child.text.strip()


def read_rsvg_xml(path: PathLike) -> tuple[str, int | None, int | None,
                                          list[tuple[str, tuple[float, float, float, float], str]]]:
    """Parse one DIOR-RSVG / OPT-RSVG annotation file.

    Args:
        path: The XML file (``<annotation><filename/><size/><object>*``).

    Returns:
        (image file name, width or None, height or None, [(class name, xyxy box,
        description)] in file order).

    Raises:
        InputError: naming the file, for XML that does not parse or an ``<object>`` without
            ``<name>``, ``<bndbox>`` coordinates or a non-empty ``<description>``.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(f"not readable as XML ({exc})", path=path) from None
    filename = _text(root, "filename", path, "<annotation>")
    width = height = None
    size = root.find("size")
    if size is not None and size.findtext("width") and size.findtext("height"):
        try:
            width, height = int(float(size.findtext("width", ""))), int(float(
                size.findtext("height", "")))
        except ValueError:
            raise InputError("<size> holds a non-numeric width or height", path=path) from None
    objects = []
    for number, element in enumerate(root.findall("object")):
        what = f"<object> {number}"
        name = _text(element, "name", path, what)
        bndbox = element.find("bndbox")
        if bndbox is None:
            raise InputError(f"{what} has no <bndbox>", path=path)
        try:
            box = tuple(float(_text(bndbox, tag, path, f"{what} <bndbox>"))
                        for tag in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise InputError(f"{what} <bndbox> holds a non-numeric coordinate",
                             path=path) from None
        description = _text(element, "description", path, what)
        objects.append((name, (box[0], box[1], box[2], box[3]), " ".join(description.split())))
    return filename, width, height, objects


def read_index_split(path: PathLike) -> list[int]:
    """Global sample indices of a DIOR-RSVG / OPT-RSVG split file (one integer a line)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("split file not found", path=path)
    indices = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if not line.strip().isdigit():
            raise InputError(f"line {number} is not a sample index: {line.strip()[:40]!r}",
                             path=path)
        indices.append(int(line))
    return indices


def _split_file(root: Path, split: str, split_file: PathLike | None) -> Path:
    if split_file is not None:
        return Path(split_file)
    for candidate in (root / f"{split}.txt", root / "split" / f"{split}.txt",
                      root / "splits" / f"{split}.txt"):
        if candidate.is_file():
            return candidate
    raise InputError(f"no {split}.txt in {root}, {root / 'split'} or {root / 'splits'}; "
                     "pass split_file", parameter="split")


def _read_rsvg(root: PathLike, split: str | None, split_file: PathLike | None,
               image_dirs: Sequence[str], *, strict: bool, check_images: bool,
               tolerance_px: float) -> list[GroundingRecord]:
    root = _check_dir(root, "root")
    annotations = root / "Annotations"
    if not annotations.is_dir():
        raise InputError(f"no Annotations/ folder in {root}", parameter="root")
    image_dir = next((root / d for d in image_dirs if (root / d).is_dir()), root / image_dirs[0])
    wanted: set[int] | None = None
    split_path = None
    if split is not None or split_file is not None:
        split_path = _split_file(root, split or "", split_file)
        wanted = set(read_index_split(split_path))
    records: list[GroundingRecord] = []
    index = 0
    for xml in sorted(annotations.glob("*.xml")):
        filename, width, height, objects = read_rsvg_xml(xml)
        image = image_dir / filename
        if check_images or width is None:
            if not image.is_file():
                raise InputError(f"image {image} not found", path=xml)
            actual = _image_size(image)
            if width is not None and actual != (width, height):
                raise InputError(f"<size> says {width}x{height} but {image.name} is "
                                 f"{actual[0]}x{actual[1]}", path=xml)
            width, height = actual
        boxes = _checked([o[1] for o in objects], width, height, xml, tolerance_px)
        for (name, _, description), box in zip(objects, boxes, strict=True):
            if wanted is None or index in wanted:
                records.append(GroundingRecord(
                    image=image, expression=description, box=_box_tuple(box),
                    class_name=name, width=width, height=height, annotation=xml, index=index))
            index += 1
    if wanted is not None:
        beyond = sorted(i for i in wanted if i >= index)
        if beyond:
            message = (f"lists {len(beyond)} indices beyond the {index} objects in "
                       f"{annotations} (largest {beyond[-1]})")
            if strict:
                raise InputError(message + "; is the dataset complete?", path=split_path)
            logger.warning("%s: %s; reading the %d that exist", split_path, message,
                           len(records))
    logger.info("%s: %d expressions%s", root, len(records), f" ({split})" if split else "")
    return records


def read_dior_rsvg(root: PathLike, split: str | None = None, *,
                   split_file: PathLike | None = None, strict: bool = True,
                   check_images: bool = False, tolerance_px: float = 1.0) -> list[GroundingRecord]:
    """Read DIOR-RSVG: ``root/Annotations/*.xml``, ``root/JPEGImages/``, ``root/<split>.txt``.

    Sample indices count the ``<object>`` elements over the XML files in sorted file-name order
    (the official loader walks the folder in directory order, which sorted order reproduces for
    the released files ``00001.xml`` ...).

    Args:
        root: Dataset folder.
        split: ``"train"``, ``"val"`` or ``"test"`` (None: every expression).
        split_file: Split file to use instead of ``root/<split>.txt``.
        strict: Refuse split indices beyond the annotations (False: warn and skip them, to read
            a partial copy of the dataset).
        check_images: Check that every image exists and has the size the XML gives.
        tolerance_px: Box overshoot beyond the image that is clipped rather than refused.

    Returns:
        One :class:`GroundingRecord` per expression, in index order.
    """
    return _read_rsvg(root, split, split_file, ("JPEGImages",), strict=strict,
                      check_images=check_images, tolerance_px=tolerance_px)


def read_opt_rsvg(root: PathLike, split: str | None = None, *,
                  split_file: PathLike | None = None, strict: bool = True,
                  check_images: bool = False, tolerance_px: float = 1.0) -> list[GroundingRecord]:
    """Read OPT-RSVG: ``Annotations/*.xml``, ``Image/`` (or ``JPEGImages/``), ``split/*.txt``.

    Split files are looked for in ``root/split/<split>.txt``, then ``root/<split>.txt``. The
    XML is DIOR-RSVG's (``<object>`` with ``<name>``, ``<bndbox>``, ``<description>``; boxes
    may be fractional); split files hold global object indices counted the same way (the
    released ``split.zip`` unpacks to ``split/{train,val,test}.txt``). Class names are those of
    :data:`OPT_RSVG_CLASSES`. Arguments as :func:`read_dior_rsvg`.
    """
    return _read_rsvg(root, split, split_file, ("Image", "JPEGImages", "images"), strict=strict,
                      check_images=check_images, tolerance_px=tolerance_px)


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
    labels_dir = _check_dir(label_dir or root / "labelTxt", "label_dir")
    images_dir = Path(image_dir) if image_dir is not None else root / "images"
    records = []
    for path in sorted(labels_dir.glob("*.txt")):
        polygons, names, difficult, meta = read_dota_labels(path)
        image = _find_image(images_dir, path.stem)
        width = height = None
        if image is not None:
            width, height = _image_size(image)
        elif require_images:
            raise InputError(f"no image {path.stem}.png (or .jpg/.tif) in {images_dir}; pass "
                             "require_images=False to read labels alone", path=path)
        else:
            image = images_dir / f"{path.stem}.png"
        boxes = (polygon_to_box(torch.from_numpy(polygons)).numpy() if len(polygons)
                 else np.zeros((0, 4), np.float32))
        boxes = _checked(boxes, width, height, path, tolerance_px)
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
        image=image_path, boxes=_checked(boxes, width, height, instance_mask, 0.0),
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
    root = _check_dir(root, "root")
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
            boxes=_checked(boxes, width, height, path, tolerance_px), labels=tuple(labels),
            width=width, height=height, annotation=path, difficult=(False,) * len(labels)))
    logger.info("%s: %d images, %d boxes", path, len(records), sum(len(r) for r in records))
    return records


# --------------------------------------------------------------------------------------------
# Simulator
# --------------------------------------------------------------------------------------------


def read_synth_scene(folder: PathLike) -> tuple[DetectionRecord, list[GroundingRecord]]:
    """Read a scene written by :func:`eokit.core.synth.objects.write_object_scene`.

    Returns:
        (every object as a :class:`DetectionRecord` with colour/size attributes, one
        :class:`GroundingRecord` per expression with its ``kind``).
    """
    folder = _check_dir(folder, "folder")
    path = folder / "expressions.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        height, width = (int(v) for v in data["size"])
        objects: Iterable[Mapping[str, Any]] = data["objects"]
        expressions: Iterable[Mapping[str, Any]] = data["expressions"]
        image = folder / data["image"]
        boxes = _checked([o["box_xyxy"] for o in objects], width, height, path, 0.0)
        labels = tuple(o["class"] for o in objects)
        attributes = tuple({"colour": o.get("colour"), "size": o.get("size")} for o in objects)
        grounding = [GroundingRecord(
            image=image, expression=e["text"], box=_box_tuple(boxes[e["target"]]),
            class_name=labels[e["target"]], width=width, height=height, annotation=path,
            index=i, kind=e["kind"]) for i, e in enumerate(expressions)]
    except FileNotFoundError:
        raise InputError("no expressions.json here", path=folder) from None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"not a simulator scene file ({type(exc).__name__}: {exc})",
                         path=path) from None
    detection = DetectionRecord(image=image, boxes=boxes, labels=labels, width=width,
                                height=height, annotation=path, difficult=(False,) * len(labels),
                                attributes=attributes, meta={"seed": data.get("seed"),
                                                             "gsd_m": data.get("gsd_m")})
    return detection, grounding
