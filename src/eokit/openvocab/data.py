"""Labelled folders with a class-name table, the class vocabulary and seen/unseen split files.

Layouts read by :func:`read_folder` (labels are decoded to ``0..K-1`` in the order of the
layout's :class:`ClassTable`, ``IGNORE_INDEX`` where unlabelled):

* ``loveda``: ``img_dir/``+``ann_dir/`` (mmsegmentation) or ``images_png/``+``masks_png/`` (the
  release); raw values 0 = no data, 1-7 = background, building, road, water, barren, forest,
  agriculture.
* ``isprs``: Potsdam/Vaihingen, ``img_dir/``+``ann_dir/`` converted labels (0 = eroded boundary,
  1-6) or the released RGB colour labels. Vaihingen images are IR-R-G false colour.
* ``isaid``: ``P0003.png`` next to ``P0003_instance_color_RGB.png`` (devkit colour masks, 16
  classes with background) or ``images/``+``labels/`` single-band ids 0-15.
* ``openearthmap``: ``<region>/images/*.tif`` + ``<region>/labels/*.tif``, 0 = unknown, 1-8.
* ``dlrsd``: ``Images/<category>/*`` + ``Labels/<category>/*``, values 1-17 in the order of
  :data:`DLRSD`, 0 = unlabelled.
* ``generic``: ``images/``+``labels/`` and a ``classes.yaml`` (a list of names, value = position,
  or a list of ``{name, value}`` / ``{name, colour}`` entries, and an optional ``ignore`` list).

The packaged vocabulary (``vocabulary.yaml`` plus the simulator's classes) gives synonyms and
descriptions for prompts; split files (``splits/*.yaml``) are versioned and hashed.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from eokit.core.errors import InputError
from eokit.core.raster import read_image, to_unit
from eokit.core.types import IGNORE_INDEX

logger = logging.getLogger(__name__)

__all__ = [
    "LAYOUTS",
    "ClassTable",
    "SegDataset",
    "Split",
    "VocabEntry",
    "load_split",
    "load_vocabulary",
    "packaged_splits",
    "read_folder",
]

_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg"}
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class ClassTable:
    """Class names and how a label file encodes them.

    Attributes:
        names: Class names in output order (ids ``0..K-1``).
        values: File value of each class in a single-band label.
        colours: RGB of each class in a colour label (``None``: single-band labels only).
        ignore: File values that mean "unlabelled" (become ``IGNORE_INDEX``).
    """

    names: tuple[str, ...]
    values: tuple[int, ...]
    colours: tuple[RGB, ...] | None = None
    ignore: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.names) != len(self.values):
            raise ValueError("one value per class name")
        if self.colours is not None and len(self.colours) != len(self.names):
            raise ValueError("one colour per class name")

    def __len__(self) -> int:
        return len(self.names)

    def decode(self, label: np.ndarray, where: str | Path) -> np.ndarray:
        """(H, W) int64 class ids from a (1, H, W) value label or a (3, H, W) colour label.

        Raises:
            InputError: a value or colour that is neither a class nor an ignore value.
        """
        if label.ndim == 3 and label.shape[0] >= 3:
            return self._decode_colours(label[:3], where)
        values = np.asarray(label[0] if label.ndim == 3 else label).astype(np.int64)
        lut_size = max(max(self.values, default=0), max(self.ignore, default=0), 255) + 1
        if values.min(initial=0) < 0 or values.max(initial=0) >= lut_size:
            raise InputError(f"label values outside 0..{lut_size - 1}", path=where)
        lut = np.full(lut_size, -1, np.int64)
        for v in self.ignore:
            lut[v] = IGNORE_INDEX
        for i, v in enumerate(self.values):
            lut[v] = i
        out = lut[values]
        bad = out < 0
        if bad.any():
            found = sorted(np.unique(values[bad]).tolist())[:5]
            raise InputError(f"label values {found} have no class name (known: "
                             f"{dict(zip(self.values, self.names, strict=True))})", path=where)
        return out

    def _decode_colours(self, rgb: np.ndarray, where: str | Path) -> np.ndarray:
        if self.colours is None:
            raise InputError("label has 3 bands but this layout's labels are single-band",
                             path=where)
        code = ((rgb[0].astype(np.int64) << 16) | (rgb[1].astype(np.int64) << 8)
                | rgb[2].astype(np.int64))
        out = np.full(code.shape, -1, np.int64)
        for i, (r, g, b) in enumerate(self.colours):
            out[code == ((r << 16) | (g << 8) | b)] = i
        bad = out < 0
        if bad.any():
            found = [f"#{c:06x}" for c in np.unique(code[bad])[:5].tolist()]
            raise InputError(f"{int(bad.sum())} label pixels have colours {found} that are "
                             "no class of this layout", path=where)
        return out


def _table(names: Sequence[str], first: int = 1, ignore: Sequence[int] = (0,),
           colours: Sequence[RGB] | None = None) -> ClassTable:
    return ClassTable(tuple(names), tuple(range(first, first + len(names))),
                      None if colours is None else tuple(colours), tuple(ignore))


LOVEDA = _table(["background", "building", "road", "water", "barren", "forest", "agriculture"])
#: ISPRS converted ids 1-6; the colours are those of the released RGB labels.
ISPRS = _table(["impervious surface", "building", "low vegetation", "tree", "car", "clutter"],
               colours=[(255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0),
                        (255, 255, 0), (255, 0, 0)])
ISAID = _table(
    ["background", "ship", "storage tank", "baseball diamond", "tennis court",
     "basketball court", "ground track field", "bridge", "large vehicle", "small vehicle",
     "helicopter", "swimming pool", "roundabout", "soccer ball field", "plane", "harbor"],
    first=0, ignore=(255,),
    colours=[(0, 0, 0), (0, 0, 63), (0, 63, 63), (0, 63, 0), (0, 63, 127), (0, 63, 191),
             (0, 63, 255), (0, 127, 63), (0, 127, 127), (0, 0, 127), (0, 0, 191), (0, 0, 255),
             (0, 191, 127), (0, 127, 191), (0, 127, 255), (0, 100, 155)])
OPENEARTHMAP = _table(["bareland", "rangeland", "developed space", "road", "tree", "water",
                       "agriculture land", "building"])
DLRSD = _table(["airplane", "bare soil", "buildings", "cars", "chaparral", "court", "dock",
                "field", "grass", "mobile home", "pavement", "sand", "sea", "ship", "tanks",
                "trees", "water"])

#: Class table and (image folder, label folder) pairs of each layout; ``None``: same folder.
LAYOUTS: dict[str, tuple[ClassTable | None, tuple[tuple[str, str], ...]]] = {
    "loveda": (LOVEDA, (("img_dir", "ann_dir"), ("images_png", "masks_png"))),
    "isprs": (ISPRS, (("img_dir", "ann_dir"), ("images", "labels"))),
    "isaid": (ISAID, (("images", "labels"),)),
    "openearthmap": (OPENEARTHMAP, (("images", "labels"),)),
    "dlrsd": (DLRSD, (("Images", "Labels"), ("images", "labels"))),
    "generic": (None, (("images", "labels"), ("img_dir", "ann_dir"))),
}
_ISAID_MASK = "_instance_color_RGB"
_HINTS = (("loveda", "loveda"), ("potsdam", "isprs"), ("vaihingen", "isprs"),
          ("isprs", "isprs"), ("isaid", "isaid"), ("openearthmap", "openearthmap"),
          ("dlrsd", "dlrsd"))


@dataclass
class SegDataset:
    """Image/label pairs of a folder; ``dataset[i]`` is ((C, H, W) float32 0-1, (H, W) int64)."""

    root: Path
    layout: str
    classes: ClassTable
    pairs: list[tuple[Path, Path]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.pairs[i]
        image = read_image(image_path)
        label = read_image(label_path)
        if image.shape != label.shape:
            raise InputError(f"label is {label.shape[0]}x{label.shape[1]} but the image is "
                             f"{image.shape[0]}x{image.shape[1]}", path=label_path)
        ids = self.classes.decode(label.data, label_path)
        ids[~image.valid] = IGNORE_INDEX
        return to_unit(image.data, image_path), ids

    def class_pixels(self) -> dict[str, int]:
        """Labelled pixels per class over the whole folder (reads every label)."""
        counts = np.zeros(len(self.classes), np.int64)
        for _, label_path in self.pairs:
            ids = self.classes.decode(read_image(label_path).data, label_path)
            counts += np.bincount(ids[ids != IGNORE_INDEX].ravel(), minlength=len(counts))
        return dict(zip(self.classes.names, counts.tolist(), strict=True))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in _SUFFIXES)


def _folder_pairs(root: Path, image_dir: str, label_dir: str) -> list[tuple[Path, Path]]:
    """Pairs under every ``image_dir`` that has a sibling ``label_dir``.

    Files match by relative path; label stems may carry a ``_label``/``_mask``/``_gt`` suffix.
    """
    pairs = []
    dirs = [root] if root.name == image_dir else []
    dirs += [d for d in root.rglob(image_dir) if d.is_dir()]
    for images in dirs:
        labels = images.parent / label_dir
        if not labels.is_dir():
            continue
        index: dict[str, Path] = {}
        for p in _image_files(labels):
            rel = p.relative_to(labels).with_suffix("").as_posix()
            index.setdefault(re.sub(r"(_label|_mask|_gt)$", "", rel), p)
        for p in _image_files(images):
            rel = p.relative_to(images).with_suffix("").as_posix()
            if rel in index:
                pairs.append((p, index[rel]))
    return pairs


def _isaid_pairs(root: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for mask in sorted(root.rglob(f"*{_ISAID_MASK}.png")):
        stem = mask.name[: -len(f"{_ISAID_MASK}.png")]
        image = next((mask.with_name(stem + s) for s in (".png", ".tif", ".jpg")
                      if mask.with_name(stem + s).is_file()), None)
        if image is not None:
            pairs.append((image, mask))
    return pairs


def _generic_table(path: Path) -> ClassTable:
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read the class table: {exc}", path=path) from exc
    ignore: list[int] = []
    if isinstance(spec, Mapping):
        ignore = [int(v) for v in spec.get("ignore", [])]
        spec = spec.get("classes")
    if not isinstance(spec, list) or not spec:
        raise InputError("expected a non-empty list of classes (names, or {name, value} / "
                         "{name, colour} entries)", path=path)
    names, values, colours = [], [], []
    for i, item in enumerate(spec):
        if isinstance(item, str):
            names.append(item)
            values.append(i)
            continue
        if not isinstance(item, Mapping) or "name" not in item:
            raise InputError(f"class entry {i} has no name", path=path)
        names.append(str(item["name"]))
        values.append(int(item.get("value", i)))
        if "colour" in item or "color" in item:
            colour = item.get("colour", item.get("color"))
            if isinstance(colour, str):
                colour = [int(colour.lstrip("#")[k:k + 2], 16) for k in (0, 2, 4)]
            colours.append(tuple(int(c) for c in colour)[:3])
    if colours and len(colours) != len(names):
        raise InputError("give a colour for every class or for none", path=path)
    from eokit.openvocab.prompts import check_class_names

    check_class_names(names, str(path))
    if len(set(values)) != len(values):
        raise InputError("two classes share a label value", path=path)
    return ClassTable(tuple(n.strip() for n in names), tuple(values),
                      tuple(colours) if colours else None, tuple(ignore))  # type: ignore[arg-type]


def _guess_layout(root: Path) -> str:
    # the folder's structure first, then a dataset name in the path (nearest folder first)
    if (root / "classes.yaml").is_file():
        return "generic"
    if next(root.rglob(f"*{_ISAID_MASK}.png"), None) is not None:
        return "isaid"
    if next(root.rglob("images_png"), None) is not None:
        return "loveda"
    if (root / "Images").is_dir() and (root / "Labels").is_dir():
        return "dlrsd"
    for part in reversed(root.resolve().parts):
        for hint, layout in _HINTS:
            if hint in part.lower():
                return layout
    raise InputError("cannot tell the dataset layout; give --layout "
                     f"({'|'.join(LAYOUTS)}) or put a classes.yaml in the folder", path=root)


def read_folder(root: str | Path, *, layout: str = "auto", split: str | None = None
                ) -> SegDataset:
    """Image/label pairs of a labelled folder with the layout's class table.

    Args:
        root: Dataset folder.
        layout: One of :data:`LAYOUTS` or ``auto`` (a ``classes.yaml``, a dataset name in the
            path, or the folder structure).
        split: Keep only pairs with this folder name in their path (e.g. ``train``, ``val``).

    Raises:
        InputError: not a folder, unknown layout, no pairs, or a bad ``classes.yaml``.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("is not a folder", path=root)
    if layout == "auto":
        layout = _guess_layout(root)
        logger.info("%s: reading as the %s layout", root, layout)
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})",
                         parameter="--layout")
    table, folders = LAYOUTS[layout]
    if table is None:
        if not (root / "classes.yaml").is_file():
            raise InputError("the generic layout needs a classes.yaml", path=root)
        table = _generic_table(root / "classes.yaml")
    pairs = _isaid_pairs(root) if layout == "isaid" else []
    for image_dir, label_dir in folders:
        if not pairs:
            pairs = _folder_pairs(root, image_dir, label_dir)
    if split is not None:
        pairs = [p for p in pairs
                 if split.lower() in (q.lower() for q in p[0].relative_to(root).parts[:-1])]
    if not pairs:
        expected = " or ".join(f"{a}/+{b}/" for a, b in folders)
        if layout == "isaid":
            expected = f"P*.png next to P*{_ISAID_MASK}.png, or {expected}"
        raise InputError(f"no image/label pairs for the {layout} layout (expected {expected}"
                         f"{'' if split is None else f' under a {split!r} folder'})", path=root)
    logger.info("%s: %d image/label pairs, %d classes", root, len(pairs), len(table))
    return SegDataset(root, layout, table, sorted(pairs))


# --------------------------------------------------------------------------------------------------
# vocabulary
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VocabEntry:
    """Synonyms and a visual description of a class name (prompt material)."""

    name: str
    synonyms: tuple[str, ...] = ()
    description: str = ""


def _resource(name: str) -> Path:
    return Path(str(resources.files("eokit.openvocab").joinpath(name)))


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise InputError("no such file", path=path)
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read: {str(exc).splitlines()[0]}", path=path) from exc


def _vocab_entries(spec: Any, path: Path) -> dict[str, VocabEntry]:
    if isinstance(spec, Mapping) and "classes" in spec:
        spec = spec["classes"]
    if isinstance(spec, Mapping):
        spec = [{"name": k, **(v or {})} if isinstance(v, Mapping | type(None))
                else {"name": k, "description": str(v)} for k, v in spec.items()]
    if not isinstance(spec, list) or not spec:
        raise InputError("expected classes: a mapping of name -> {synonyms, description} or a "
                         "list of {name, synonyms, description}", path=path)
    out: dict[str, VocabEntry] = {}
    for i, item in enumerate(spec):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping) or not str(item.get("name", "")).strip():
            raise InputError(f"vocabulary entry {i} has no name", path=path)
        name = str(item["name"]).strip()
        if name.lower() in (k.lower() for k in out):
            raise InputError(f"class {name!r} is listed twice", path=path)
        synonyms = item.get("synonyms") or ()
        if isinstance(synonyms, str):
            synonyms = [s for s in synonyms.split(",")]
        out[name] = VocabEntry(name, tuple(str(s).strip() for s in synonyms if str(s).strip()),
                               str(item.get("description", "") or "").strip())
    return out


def load_vocabulary(path: str | Path | None = None) -> dict[str, VocabEntry]:
    """Class name -> :class:`VocabEntry` from a YAML file, or the packaged vocabulary.

    The packaged vocabulary holds the simulator's classes (``eokit.core.synth.vocab``) and the
    classes of the dataset layouts of :func:`read_folder`.
    """
    if path is not None:
        return _vocab_entries(_read_yaml(Path(path)), Path(path))
    from eokit.core.synth.vocab import VOCABULARY

    out = {c.name: VocabEntry(c.name, tuple(c.synonyms), c.description) for c in VOCABULARY}
    packaged = _resource("vocabulary.yaml")
    for name, entry in _vocab_entries(_read_yaml(packaged), packaged).items():
        out.setdefault(name, entry)
    return out


# --------------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    """A seen/unseen class split, read from a versioned YAML file."""

    name: str
    version: str
    seen: tuple[str, ...]
    unseen: tuple[str, ...]
    path: Path
    sha256: str
    note: str = ""


def packaged_splits() -> list[str]:
    """Names of the split files shipped with eokit."""
    folder = _resource("splits")
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_split(split: str | Path) -> Split:
    """A packaged split by name (``sim``, ``loveda``, ...) or a split YAML file.

    The file holds ``name``, ``version``, ``seen`` and ``unseen`` (lists of class names; no name
    in both, none twice).
    """
    path = Path(split)
    if not path.is_file():
        packaged = _resource("splits") / f"{split}.yaml"
        if not packaged.is_file():
            raise InputError(f"no split file {str(split)!r} and no packaged split of that name "
                             f"(packaged: {', '.join(packaged_splits())})", parameter="--split")
        path = packaged
    spec = _read_yaml(path)
    if not isinstance(spec, Mapping):
        raise InputError("expected a mapping with seen and unseen class lists", path=path)
    from eokit.openvocab.prompts import check_class_names

    lists = {}
    for key in ("seen", "unseen"):
        value = spec.get(key)
        if not isinstance(value, list) or not value:
            raise InputError(f"{key}: expected a non-empty list of class names", path=path)
        lists[key] = check_class_names([str(v) for v in value], f"{path}: {key}")
    both = {n.lower() for n in lists["seen"]} & {n.lower() for n in lists["unseen"]}
    if both:
        raise InputError(f"classes {sorted(both)} are both seen and unseen", path=path)
    return Split(str(spec.get("name", path.stem)), str(spec.get("version", "")),
                 tuple(lists["seen"]), tuple(lists["unseen"]), path,
                 hashlib.sha256(path.read_bytes()).hexdigest(), str(spec.get("note", "")))
