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

The records live in :mod:`eokit.grounding.records`, the detection readers (DOTA, iSAID, COCO) in
:mod:`eokit.grounding.detection_data`; this module re-exports both, so every reader is
``eokit.grounding.data.<name>``.

Every box is checked against its image (:func:`eokit.grounding.boxes.check_boxes`): an empty box
or one lying more than ``tolerance_px`` outside the image is an :class:`InputError` naming the
annotation file; smaller overshoots are clipped. Class names stay as the dataset writes them;
:func:`canonical_class_name` gives one spelling across datasets ("storage tank").
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from eokit.core.errors import InputError
from eokit.grounding.detection_data import (
    ISAID_PALETTE,
    read_coco,
    read_dota,
    read_dota_labels,
    read_isaid,
    read_isaid_masks,
)
from eokit.grounding.records import (
    DIOR_CLASSES,
    DetectionRecord,
    GroundingRecord,
    PathLike,
    box_tuple,
    canonical_class_name,
    checked_boxes,
    existing_dir,
    image_size,
)

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

#: The 14 OPT-RSVG classes (already in canonical spelling).
OPT_RSVG_CLASSES: tuple[str, ...] = (
    "airplane", "ground track field", "tennis court", "bridge", "basketball court",
    "storage tank", "ship", "baseball diamond", "T junction", "crossroad", "parking lot",
    "harbor", "vehicle", "swimming pool",
)



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
    root = existing_dir(root, "root")
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
            actual = image_size(image)
            if width is not None and actual != (width, height):
                raise InputError(f"<size> says {width}x{height} but {image.name} is "
                                 f"{actual[0]}x{actual[1]}", path=xml)
            width, height = actual
        boxes = checked_boxes([o[1] for o in objects], width, height, xml, tolerance_px)
        for (name, _, description), box in zip(objects, boxes, strict=True):
            if wanted is None or index in wanted:
                records.append(GroundingRecord(
                    image=image, expression=description, box=box_tuple(box),
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
    (``00001.xml``, ``00002.xml``, ...). The official loader walks the folder in file-system
    order, which is not defined; sorted order is the reproducible reading of the split files.

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
# Simulator
# --------------------------------------------------------------------------------------------


def read_synth_scene(folder: PathLike) -> tuple[DetectionRecord, list[GroundingRecord]]:
    """Read a scene written by :func:`eokit.core.synth.objects.write_object_scene`.

    Returns:
        (every object as a :class:`DetectionRecord` with colour/size attributes, one
        :class:`GroundingRecord` per expression with its ``kind``).
    """
    folder = existing_dir(folder, "folder")
    path = folder / "expressions.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        height, width = (int(v) for v in data["size"])
        objects: Iterable[Mapping[str, Any]] = data["objects"]
        expressions: Iterable[Mapping[str, Any]] = data["expressions"]
        image = folder / data["image"]
        boxes = checked_boxes([o["box_xyxy"] for o in objects], width, height, path, 0.0)
        labels = tuple(o["class"] for o in objects)
        attributes = tuple({"colour": o.get("colour"), "size": o.get("size")} for o in objects)
        grounding = [GroundingRecord(
            image=image, expression=e["text"], box=box_tuple(boxes[e["target"]]),
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
