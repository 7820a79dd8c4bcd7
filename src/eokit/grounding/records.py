"""Record types of the grounding readers and the checks they share (boxes, sizes, names).

The readers live in :mod:`eokit.grounding.data` (grounding, and the overview of layouts) and
:mod:`eokit.grounding.detection_data` (detection); both return these records.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eokit.core.errors import InputError
from eokit.grounding.boxes import check_boxes

PathLike = str | os.PathLike[str]

__all__ = [
    "DIOR_CLASSES",
    "DetectionRecord",
    "GroundingRecord",
    "box_tuple",
    "canonical_class_name",
    "checked_boxes",
    "existing_dir",
    "find_image",
    "image_size",
]

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


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


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


def checked_boxes(boxes: Any, width: int | None, height: int | None, source: Path,
                  tolerance_px: float) -> np.ndarray:
    """(N, 4) float32 boxes checked against a ``width`` x ``height`` image (None: unknown size).

    Raises:
        InputError: naming ``source``, for an empty box or one beyond ``tolerance_px`` outside
            the image (see :func:`eokit.grounding.boxes.check_boxes`).
    """
    tensor = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
    unbounded = 1 << 30  # size unknown: check only that boxes are finite and not empty
    checked = check_boxes(tensor, height or unbounded, width or unbounded,
                          source=os.fspath(source), tolerance_px=tolerance_px)
    return checked.numpy().astype(np.float32)


def box_tuple(box: Sequence[float]) -> tuple[float, float, float, float]:
    """A box as four plain floats."""
    return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, read from its header."""
    from eokit.core.raster import raster_info

    grid, _, _ = raster_info(path)
    return grid.width, grid.height


def find_image(folder: Path, stem: str) -> Path | None:
    """The image ``folder/stem.<suffix>`` for the usual image suffixes, or None."""
    for suffix in _IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def existing_dir(path: PathLike, parameter: str) -> Path:
    """``path`` as a Path, or an InputError naming ``parameter`` when it is not a folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"folder not found: {folder}", parameter=parameter)
    return folder
