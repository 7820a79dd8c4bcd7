"""Image/label folder readers (xBD, WHU, Inria layouts), tiled datasets, simulated buildings."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from eokit.core.errors import InputError
from eokit.core.raster import check_aligned, read_image, to_unit
from eokit.core.types import IGNORE_INDEX, Grid

logger = logging.getLogger(__name__)

__all__ = [
    "LAYOUTS",
    "LabelledImage",
    "TileDataset",
    "find_pairs",
    "read_labelled_image",
    "simulated_buildings",
    "to_tiles",
]

#: (image folder, label folder) names per layout, tried in order under a root.
LAYOUTS: dict[str, tuple[str, str]] = {
    "xbd": ("images", "masks"),
    "whu": ("image", "label"),
    "inria": ("images", "gt"),
    "generic": ("images", "labels"),
}
_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg"}


@dataclass
class LabelledImage:
    """One image with its (possibly noisy) label.

    Attributes:
        key: File stem (pairs images, labels and noise streams).
        image: (C, H, W) float32 in 0-1.
        label: (H, W) int64 class ids, ``IGNORE_INDEX`` where unlabelled or nodata.
        grid: Georeference of the image (plain grid for PNGs).
        clean: (H, W) clean label when known (simulator, or a clean reference folder).
    """

    key: str
    image: np.ndarray
    label: np.ndarray
    grid: Grid
    clean: np.ndarray | None = None


def _files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in _SUFFIXES}


def find_pairs(root: str | Path, *, pattern: str = "") -> list[tuple[str, Path, Path]]:
    """Image/label pairs of a dataset folder in any known layout (matched by file stem).

    Args:
        root: Folder holding ``images/`` + ``masks/`` (xBD), ``image/`` + ``label/`` (WHU),
            ``images/`` + ``gt/`` (Inria) or ``images/`` + ``labels/``.
        pattern: Keep only stems containing this text (e.g. ``"pre_disaster"``).

    Returns:
        Sorted ``(key, image path, label path)``.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("is not a folder", path=root)
    for image_dir, label_dir in LAYOUTS.values():
        if (root / image_dir).is_dir() and (root / label_dir).is_dir():
            images, labels = _files(root / image_dir), _files(root / label_dir)
            pairs = [(k, images[k], labels[k]) for k in sorted(images)
                     if k in labels and pattern in k]
            if not pairs:
                raise InputError(f"no image/label pairs with matching names in {image_dir}/ and "
                                 f"{label_dir}/", path=root)
            return pairs
    known = ", ".join(f"{a}/+{b}/" for a, b in LAYOUTS.values())
    raise InputError(f"no image/label folders found (expected one of {known})", path=root)


def read_labelled_image(image_path: str | Path, label_path: str | Path, *,
                        num_classes: int = 2, label_map: Mapping[int, int] | None = None,
                        ignore_value: int = IGNORE_INDEX, bands: Sequence[int] | None = None,
                        key: str | None = None) -> LabelledImage:
    """Read an image and its label, checking shape, grid and label values.

    Labels may hold class ids ``0..K-1`` or, for binary masks, 0/255 (255 becomes 1 unless
    ``ignore_value`` is 255 and 1 is present too). ``label_map`` maps file values to ids.

    Raises:
        InputError: shape or grid differ, or a label value is neither a class nor the ignore value.
    """
    image_path, label_path = Path(image_path), Path(label_path)
    image = read_image(image_path)
    label = read_image(label_path)
    if label.count != 1:
        raise InputError(f"label has {label.count} bands, expected 1", path=label_path)
    if image.shape != label.shape:
        raise InputError(f"label is {label.shape[0]}x{label.shape[1]} but the image is "
                         f"{image.shape[0]}x{image.shape[1]}", path=label_path)
    if image.grid.crs is not None and label.grid.crs is not None:
        check_aligned(image=image.grid, label=label.grid)
    data = image.data if bands is None else image.data[[b - 1 for b in bands]]
    values = label.data[0].astype(np.int64)
    if label_map:
        mapped = np.full_like(values, -1)
        for src, dst in label_map.items():
            mapped[values == src] = dst
        mapped[values == ignore_value] = IGNORE_INDEX
        values = mapped
    elif num_classes == 2 and (values == 255).any() and not (values == 1).any():
        # a 0/255 building mask: 255 is the building class, not the ignore value
        values = np.where(values == 255, 1, values)
    values = np.where(values == ignore_value, IGNORE_INDEX, values)
    bad = ~(((values >= 0) & (values < num_classes)) | (values == IGNORE_INDEX))
    if bad.any():
        found = sorted(set(np.unique(label.data[0][bad]).tolist()))[:5]
        raise InputError(f"label values {found} are neither classes 0..{num_classes - 1} nor the "
                         f"ignore value {ignore_value}", path=label_path)
    values[~image.valid] = IGNORE_INDEX
    return LabelledImage(key or image_path.stem, to_unit(data, image_path), values, image.grid)


def to_tiles(items: Sequence[LabelledImage], tile: int) -> list[LabelledImage]:
    """Cut images into non-overlapping ``tile`` x ``tile`` pieces (edges dropped).

    Fixed tiles (not random crops) let each tile keep its own posterior parameters.
    """
    out = []
    for item in items:
        h, w = item.label.shape
        if h < tile or w < tile:
            raise InputError(f"{item.key} is {h}x{w}, smaller than the tile {tile}",
                             parameter="tile")
        for top in range(0, h - tile + 1, tile):
            for left in range(0, w - tile + 1, tile):
                window = (slice(top, top + tile), slice(left, left + tile))
                out.append(LabelledImage(
                    f"{item.key}@{top},{left}", item.image[(slice(None), *window)],
                    item.label[window], item.grid,
                    None if item.clean is None else item.clean[window]))
    return out


class TileDataset(Dataset[dict[str, Any]]):
    """Map-style dataset of equally sized labelled tiles.

    Samples: ``{"image": (C, H, W) float32 0-1, "mask": (H, W) int64 (255 = ignore),
    "index": int, "clean": (H, W) int64}`` (``clean`` only when every tile has one).
    """

    def __init__(self, items: Sequence[LabelledImage]) -> None:
        if not items:
            raise InputError("no labelled images", parameter="images")
        shapes = {item.label.shape for item in items}
        if len(shapes) != 1:
            raise InputError(f"tiles of several sizes {sorted(shapes)}; cut them with a tile size",
                             parameter="tile")
        self.items = list(items)
        self.shape: tuple[int, int] = next(iter(shapes))
        self.has_clean = all(item.clean is not None for item in items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def keys(self) -> list[str]:
        """Tile keys in index order."""
        return [item.key for item in self.items]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        sample = {"image": torch.from_numpy(np.ascontiguousarray(item.image, dtype=np.float32)),
                  "mask": torch.from_numpy(item.label.astype(np.int64)),
                  "index": index}
        if self.has_clean:
            assert item.clean is not None
            sample["clean"] = torch.from_numpy(item.clean.astype(np.int64))
        return sample


def simulated_buildings(n: int, size: int = 128, *, seed: int = 0,
                        gsd_m: float = 1.5) -> list[LabelledImage]:
    """Simulated scenes (``core.synth``) as RGB reflectance with binary building masks.

    Scenes without buildings are skipped (seeds move on), so every image holds objects.
    """
    from eokit.core.synth.scene import BANDS, BUILDING, generate_scene

    rgb = [BANDS.index("red"), BANDS.index("green"), BANDS.index("blue")]
    out: list[LabelledImage] = []
    offset = 0
    while len(out) < n:
        scene = generate_scene(size, seed=seed * 100003 + offset, gsd_m=gsd_m)
        offset += 1
        mask = (scene.landcover == BUILDING).astype(np.int64)
        if mask.mean() < 0.01:
            if offset > 20 * n:
                raise InputError("simulator gives no buildings at this size", parameter="size")
            continue
        # reflectance is dark (0-0.3); a fixed gain gives encoder-friendly contrast
        image = np.clip(scene.reflectance[rgb] * 3.0, 0.0, 1.0).astype(np.float32)
        out.append(LabelledImage(f"sim_{seed}_{offset - 1:05d}", image, mask.copy(), scene.grid,
                                 mask.copy()))
    return out
