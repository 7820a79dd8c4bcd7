"""Change-detection data: readers for common folder layouts, pair datasets and grouped batches.

Layouts (each resolved to a list of :class:`PairFiles`):

* ``levir``: LEVIR-CD / BIT / ChangeFormer: ``root/{A,B,label}/<name>`` + ``root/list/<split>.txt``;
* ``split``: ``root/<split>/{A,B,label}/<name>`` (open-cd, TorchGeo-style exports);
* ``whu``: WHU-CD-style folders of one split, dates and labels in named folders, e.g.
  ``root/{2012,2016,change_label}``, ``root/{before,after,label}``, ``root/{image1,image2,mask}``;
* ``pair``: any pair of GeoTIFFs (or PNGs) + optional label (``geotiff_pair``).

Labels: ``0/255`` (255 = change) or ``0/1``; with ``label_mode="0-1-ignore255"`` (or ``auto`` when
a label holds 0, 1 and 255) the value 255 means "ignore". Other values are an ``InputError``
naming the file. Images: uint8 / 255, uint16 / 10000, floats as they are.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from eokit.core.errors import InputError
from eokit.core.types import IGNORE_INDEX

logger = logging.getLogger(__name__)

__all__ = [
    "LABEL_MODES",
    "ChangeDataset",
    "DomainGroupedBatchSampler",
    "PairFiles",
    "collate_pairs",
    "detect_layout",
    "find_pairs",
    "geotiff_pair",
    "levir_pairs",
    "read_label",
    "read_pair",
    "simulated_pairs",
    "split_layout_pairs",
    "to_float",
    "whu_pairs",
]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".bmp")
LABEL_MODES = ("auto", "0-255", "0-1", "0-1-ignore255")

_WHU_A = ("2012", "before", "image1", "im1", "t1", "time1", "a", "pre")
_WHU_B = ("2016", "after", "image2", "im2", "t2", "time2", "b", "post")
_WHU_LABEL = ("change_label", "label", "labels", "mask", "gt", "change", "cm", "ol")


@dataclass(frozen=True)
class PairFiles:
    """Files of one bitemporal pair (``label`` None when unlabelled)."""

    name: str
    a: Path
    b: Path
    label: Path | None = None


def _stem_index(folder: Path) -> dict[str, Path]:
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    }


def _match_folders(
    name_root: str, a_dir: Path, b_dir: Path, label_dir: Path | None, names: Sequence[str] | None
) -> list[PairFiles]:
    """Pairs by file stem across A/B/label folders; a listed/A-side file without B is an error."""
    a_files = _stem_index(a_dir)
    b_files = _stem_index(b_dir)
    label_files = _stem_index(label_dir) if label_dir is not None and label_dir.is_dir() else {}
    stems = [Path(n).stem for n in names] if names is not None else list(a_files)
    pairs = []
    for stem in stems:
        if stem not in a_files:
            raise InputError(f"listed pair {stem!r} has no image in {a_dir}", path=a_dir / stem)
        if stem not in b_files:
            raise InputError(
                f"no date-B image for {a_files[stem].name} in {b_dir}", path=a_files[stem]
            )
        pairs.append(PairFiles(stem, a_files[stem], b_files[stem], label_files.get(stem)))
    if not pairs:
        raise InputError(f"no image pairs found in {name_root}", path=a_dir)
    return pairs


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError("list file not found", path=path)
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    names = [n for n in names if not n.startswith("#")]
    if not names:
        raise InputError("list file is empty", path=path)
    return names


def levir_pairs(root: str | Path, split: str | None = None) -> list[PairFiles]:
    """Pairs of a LEVIR-CD/BIT folder: ``A/ B/ label/ list/<split>.txt``.

    Args:
        root: Dataset folder.
        split: List name (``train``, ``val``, ``test``, ``all`` ... or a path to a list file);
            None, or a folder without ``list/``, takes every image in ``A/``. Without
            ``list/<split>.txt``, files named ``<split>_*`` (the LEVIR-CD crop naming) form
            the split when there are any.
    """
    root = Path(root)
    for sub in ("A", "B"):
        if not (root / sub).is_dir():
            raise InputError(f"not a LEVIR/BIT folder (no {sub}/)", path=root)
    names = None
    if split is not None and not Path(split).suffix == ".txt" and not (root / "list").is_dir():
        logger.warning("%s has no list/ folder: split %r uses every pair in A/", root, split)
        split = None
    if split is not None:
        candidate = Path(split)
        list_file = candidate if candidate.suffix == ".txt" else root / "list" / f"{split}.txt"
        prefixed = sorted(p.stem for p in (root / "A").glob(f"{split}_*"))
        if not list_file.is_file() and candidate.suffix != ".txt" and prefixed:
            logger.info("%s: no %s; split %r = the %d files named %s_*", root, list_file.name,
                        split, len(prefixed), split)
            names = prefixed
        else:
            names = _read_list(list_file)
    return _match_folders(str(root), root / "A", root / "B", root / "label", names)


def split_layout_pairs(root: str | Path, split: str) -> list[PairFiles]:
    """Pairs of ``root/<split>/{A,B,label}``."""
    base = Path(root) / split
    if not (base / "A").is_dir() or not (base / "B").is_dir():
        raise InputError(f"no {split}/A and {split}/B folders", path=root)
    return _match_folders(str(base), base / "A", base / "B", base / "label", None)


def _find_child(root: Path, candidates: Sequence[str]) -> Path | None:
    children = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    for name in candidates:
        if name in children:
            return children[name]
    return None


def whu_pairs(root: str | Path) -> list[PairFiles]:
    """Pairs of a WHU-CD-style folder (``2012/ 2016/ change_label/``, ``before/ after/ label/``)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("dataset folder not found", path=root)
    a_dir = _find_child(root, _WHU_A)
    b_dir = _find_child(root, _WHU_B)
    if a_dir is None or b_dir is None:
        raise InputError(
            "cannot find the two date folders (expected e.g. 2012/ and 2016/, before/ and after/)",
            path=root,
        )
    return _match_folders(str(root), a_dir, b_dir, _find_child(root, _WHU_LABEL), None)


def geotiff_pair(a: str | Path, b: str | Path, label: str | Path | None = None) -> list[PairFiles]:
    """A single pair from explicit files."""
    for path in (a, b, label):
        if path is not None and not Path(path).is_file():
            raise InputError("file not found", path=path)
    return [PairFiles(Path(a).stem, Path(a), Path(b), Path(label) if label else None)]


def detect_layout(root: str | Path, split: str | None = None) -> str:
    """Guess the layout of a dataset folder: ``levir``, ``split`` or ``whu``."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("dataset folder not found", path=root)
    if (root / "A").is_dir() and (root / "B").is_dir():
        return "levir"
    if split is not None and (root / split / "A").is_dir():
        return "split"
    if any((root / s / "A").is_dir() for s in ("train", "val", "test")):
        return "split"
    if _find_child(root, _WHU_A) is not None and _find_child(root, _WHU_B) is not None:
        return "whu"
    raise InputError(
        "unknown change-dataset layout (expected A/ B/ label/ list/, train|val|test/{A,B,label}, "
        "or WHU-CD-style date folders)",
        path=root,
    )


def find_pairs(root: str | Path, split: str | None = None, layout: str = "auto") -> list[PairFiles]:
    """Pairs of a dataset folder in any supported layout.

    Args:
        root: Dataset folder.
        split: Split or list name (``train``, ``val``, ``test``); layout-dependent.
        layout: ``auto``, ``levir``, ``split`` or ``whu``.
    """
    if layout == "auto":
        layout = detect_layout(root, split)
    if layout == "levir":
        return levir_pairs(root, split)
    if layout == "split":
        if split is None:
            raise InputError("the split layout needs a split name", parameter="split")
        return split_layout_pairs(root, split)
    if layout == "whu":
        return whu_pairs(root)
    raise InputError(
        f"unknown layout {layout!r}; use auto, levir, split or whu", parameter="layout"
    )


# ---------------------------------------------------------------------------------- reading
def to_float(data: np.ndarray) -> np.ndarray:
    """Scale image values to float32 around 0-1 (uint8 / 255, uint16 / 10000, floats unchanged)."""
    if data.dtype == np.uint8:
        return data.astype(np.float32) / 255.0
    if data.dtype == np.uint16:
        return data.astype(np.float32) / 10000.0
    return np.nan_to_num(data.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def _read_any(path: Path) -> Any:
    from eokit.core.raster import read_image

    return read_image(path)


def read_label(path: Path, label_mode: str = "auto") -> np.ndarray:
    """Read a change label as (H, W) int64 with 0/1 and 255 = ignore.

    Raises:
        InputError: unknown mode, more than one band, or values outside the mode's set.
    """
    if label_mode not in LABEL_MODES:
        raise InputError(f"unknown label mode {label_mode!r}; use {LABEL_MODES}",
                         parameter="label_mode")
    from eokit.core.raster import read_raster

    # The label's own nodata is not used: 0 is a common nodata tag and also "no change".
    data = read_raster(path, allow_empty=True, check_finite=False).data
    if data.shape[0] != 1:
        # RGB-saved masks are common; accept them only when the bands are identical.
        if not all(np.array_equal(data[0], band) for band in data[1:]):
            raise InputError(f"label has {data.shape[0]} different bands, expected one", path=path)
    values = data[0]
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise InputError("label holds non-integer values; expected 0/1 or 0/255", path=path)
    values = values.astype(np.int64)
    present = set(np.unique(values).tolist())
    mode = label_mode
    if mode == "auto":
        if present <= {0, 255}:
            mode = "0-255"
        elif present <= {0, 1}:
            mode = "0-1"
        elif present <= {0, 1, 255}:
            mode = "0-1-ignore255"
    allowed = {"0-255": {0, 255}, "0-1": {0, 1}, "0-1-ignore255": {0, 1, 255}}.get(mode, set())
    if not present <= allowed:
        bad = sorted(present - {0, 1, 255})[:5] or sorted(present)[:5]
        raise InputError(
            f"label values {bad} are not allowed; use 0/255 or 0/1 (255 = ignore with "
            "label_mode 0-1-ignore255)",
            path=path,
        )
    if mode == "0-255":
        values = np.where(values == 255, 1, 0)
    return np.asarray(values, dtype=np.int64)


def read_pair(
    pair: PairFiles, *, label_mode: str = "auto", bands: int | None = None
) -> dict[str, Any]:
    """Read and check one pair.

    Returns:
        ``{"image_a", "image_b": (C, H, W) float32, "mask": (H, W) int64 or None,
        "valid": (H, W) bool, "grid": Grid of A}``.

    Raises:
        InputError: A/B of different size, CRS or band count; label of another size; band count
            different from ``bands``.
    """
    from eokit.core.raster import check_aligned

    raster_a = _read_any(pair.a)
    raster_b = _read_any(pair.b)
    if raster_a.data.shape[0] != raster_b.data.shape[0]:
        raise InputError(
            f"date A has {raster_a.data.shape[0]} bands, date B ({pair.b}) has "
            f"{raster_b.data.shape[0]}",
            path=pair.a,
        )
    if raster_a.grid.shape != raster_b.grid.shape:
        raise InputError(
            f"date A is {raster_a.grid.width}x{raster_a.grid.height} px, date B ({pair.b}) is "
            f"{raster_b.grid.width}x{raster_b.grid.height} px",
            path=pair.a,
        )
    check_aligned(image_a=raster_a, image_b=raster_b)
    if bands is not None and raster_a.data.shape[0] != bands:
        raise InputError(
            f"has {raster_a.data.shape[0]} bands but the model expects {bands}", path=pair.a
        )
    mask = None
    valid = raster_a.valid & raster_b.valid
    if pair.label is not None:
        mask = read_label(pair.label, label_mode)
        if mask.shape != valid.shape:
            raise InputError(
                f"label is {mask.shape[1]}x{mask.shape[0]} px but the images are "
                f"{valid.shape[1]}x{valid.shape[0]}",
                path=pair.label,
            )
        mask = np.where(valid, mask, IGNORE_INDEX)
    return {
        "image_a": to_float(raster_a.data),
        "image_b": to_float(raster_b.data),
        "mask": mask,
        "valid": valid,
        "grid": raster_a.grid,
    }


# ---------------------------------------------------------------------------------- datasets
class ChangeDataset(Dataset):  # type: ignore[type-arg]
    """Pairs of one dataset (one domain) as ``PairSample`` dicts.

    Args:
        pairs: Files (read lazily, cached in memory) or in-memory samples (dicts with
            ``image_a``, ``image_b`` (C, H, W) float arrays and ``mask`` (H, W)).
        domain: Domain index of every sample.
        crop: Random crop size in pixels for training (None = whole images).
        augment: Random flips and 90-degree rotations, identical for both dates and the label.
        label_mode: See :func:`read_label`.
        bands: Expected band count (checked).
        seed: Seed of the augmentation stream (combined with the index and epoch).
        cache: Keep read pairs in memory.
    """

    def __init__(
        self,
        pairs: Sequence[PairFiles] | Sequence[dict[str, Any]],
        *,
        domain: int = 0,
        crop: int | None = None,
        augment: bool = False,
        label_mode: str = "auto",
        bands: int | None = None,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        if len(pairs) == 0:
            raise InputError("dataset has no pairs", parameter="pairs")
        self.pairs = list(pairs)
        self.domain = domain
        self.crop = crop
        self.augment = augment
        self.label_mode = label_mode
        self.bands = bands
        self.seed = seed
        self.epoch = 0
        self.cache = cache
        self._cache: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> dict[str, Any]:
        """The full pair ``index`` as numpy arrays (cached)."""
        if index in self._cache:
            return self._cache[index]
        item = self.pairs[index]
        if isinstance(item, PairFiles):
            sample = read_pair(item, label_mode=self.label_mode, bands=self.bands)
            sample["name"] = item.name
        else:
            sample = dict(item)  # type: ignore[call-overload]
            sample.setdefault("name", f"pair_{index}")
            sample.setdefault("valid", np.ones(np.asarray(sample["image_a"]).shape[-2:], bool))
        if self.cache:
            self._cache[index] = sample
        return sample

    def check_labels(self) -> None:
        """Read every pair once so bad files fail before training starts."""
        for index in range(len(self)):
            sample = self.load(index)
            if sample.get("mask") is None:
                item = self.pairs[index]
                name = item.a if isinstance(item, PairFiles) else f"pair {index}"
                raise InputError("pair has no label; training and evaluation need one", path=name)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (training calls :func:`set_loader_epoch`)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.load(index)
        image_a = np.asarray(sample["image_a"], np.float32)
        image_b = np.asarray(sample["image_b"], np.float32)
        height, width = image_a.shape[-2:]
        mask = sample.get("mask")
        mask = (
            np.full((height, width), IGNORE_INDEX, np.int64)
            if mask is None
            else np.asarray(mask, np.int64)
        )
        valid = np.asarray(sample["valid"], bool)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.crop is not None and (height > self.crop or width > self.crop):
            r = int(rng.integers(0, max(height - self.crop, 0) + 1))
            c = int(rng.integers(0, max(width - self.crop, 0) + 1))
            window = (slice(r, r + self.crop), slice(c, c + self.crop))
            image_a, image_b = image_a[:, window[0], window[1]], image_b[:, window[0], window[1]]
            mask, valid = mask[window], valid[window]
        if self.augment:
            k = int(rng.integers(0, 4))
            flip = bool(rng.integers(0, 2))
            arrays = [image_a, image_b, mask[None], valid[None]]
            arrays = [np.rot90(x, k, axes=(-2, -1)) for x in arrays]
            if flip:
                arrays = [x[..., ::-1] for x in arrays]
            image_a, image_b, mask, valid = (
                arrays[0], arrays[1], arrays[2][0], arrays[3][0]
            )
        return {
            "image_a": torch.from_numpy(np.ascontiguousarray(image_a)),
            "image_b": torch.from_numpy(np.ascontiguousarray(image_b)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)),
            "valid": torch.from_numpy(np.ascontiguousarray(valid)),
            "domain": self.domain,
        }


def collate_pairs(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of pair samples (one domain per batch is checked)."""
    domains = {int(s["domain"]) for s in samples}
    if len(domains) != 1:
        raise InputError(f"a batch mixes domains {sorted(domains)}", parameter="batch")
    return {
        "image_a": torch.stack([s["image_a"] for s in samples]),
        "image_b": torch.stack([s["image_b"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "valid": torch.stack([s["valid"] for s in samples]),
        "domain": domains.pop(),
    }


def set_loader_epoch(loader: Any, epoch: int) -> None:
    """Start epoch ``epoch`` of a training loader: new batch order and new augmentations.

    Calls ``set_epoch`` on the loader's batch sampler and sampler and on every dataset inside it
    (through ``ConcatDataset`` and ``Subset``). Lightning itself only reaches ``loader.sampler``
    and ``loader.batch_sampler.sampler``, so neither :class:`DomainGroupedBatchSampler` nor
    :class:`ChangeDataset` would see a new epoch: every pair would get the same crop, rotation
    and flip, in the same batch order, at every epoch.
    """
    targets = [getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)]
    stack = [getattr(loader, "dataset", None)]
    while stack:
        dataset = stack.pop()
        if dataset is None:
            continue
        targets.append(dataset)
        stack.extend(getattr(dataset, "datasets", []))
        stack.append(getattr(dataset, "dataset", None))
    seen: set[int] = set()
    for target in targets:
        set_epoch = getattr(target, "set_epoch", None)
        if callable(set_epoch) and id(target) not in seen:
            seen.add(id(target))
            set_epoch(epoch)


def resume_loader(loader: Any, checkpoint: str | Path) -> tuple[int, int]:
    """Point a training loader at the place a run resumed from ``checkpoint`` goes on.

    Sets the epoch everywhere inside the loader (:func:`set_loader_epoch`) and, for a checkpoint
    written within an epoch, makes its :class:`DomainGroupedBatchSampler` skip the batches already
    trained, so the rest of that epoch follows the uninterrupted order.

    Returns:
        (epoch, batches of it already trained), as :func:`eokit.core.train.resume_position`.
    """
    from eokit.core.train import resume_position

    epoch, done = resume_position(checkpoint)
    set_loader_epoch(loader, epoch)
    sampler = getattr(loader, "batch_sampler", None)
    if done and isinstance(sampler, DomainGroupedBatchSampler):
        sampler.resume_within_epoch(epoch, done)
    return epoch, done


class DomainGroupedBatchSampler(Sampler[list[int]]):
    """Batches of one domain each over a ``ConcatDataset`` of per-domain datasets; DDP-aware.

    Every epoch, each domain's indices are shuffled (seed + epoch) and cut into batches; the
    batches of all domains are interleaved in a shuffled order, then dealt round-robin to the
    ranks, padded so every rank runs the same number of steps (no DDP hang).

    Args:
        sizes: Number of samples of each domain, in ``ConcatDataset`` order.
        batch_size: Samples per batch.
        shuffle: Shuffle indices and batch order.
        seed: Base seed.
        drop_last: Drop each domain's last incomplete batch.
        rank: This process's rank (default: from ``torch.distributed`` if initialised, else 0).
        world_size: Number of processes (default: from ``torch.distributed``, else 1).
        balance: Repeat the batches of smaller domains so every domain has as many batches per
            epoch as the largest one.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        balance: bool = False,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"must be >= 1, got {batch_size}", parameter="batch_size")
        if not sizes or min(sizes) < 1:
            raise InputError(f"every domain needs samples, got sizes {list(sizes)}",
                             parameter="sizes")
        self.sizes = list(sizes)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.balance = balance
        if rank is None or world_size is None:
            import torch.distributed as dist

            ready = dist.is_available() and dist.is_initialized()
            rank = dist.get_rank() if ready else 0
            world_size = dist.get_world_size() if ready else 1
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for a new epoch (same order on every rank)."""
        self.epoch = epoch

    def resume_within_epoch(self, epoch: int, batches: int) -> None:
        """Skip this rank's first ``batches`` batches the next time ``epoch`` is iterated (once).

        What remains is the rest of the epoch a mid-epoch checkpoint was written in. ``len``
        stays the full epoch's (Lightning counts the remaining batches from its progress).
        """
        if batches < 0:
            raise InputError(f"must be >= 0, got {batches}", parameter="batches")
        self._resume = (int(epoch), int(batches)) if batches else None

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        offsets = np.cumsum([0, *self.sizes])
        per_domain: list[list[list[int]]] = []
        for domain, size in enumerate(self.sizes):
            order = rng.permutation(size) if self.shuffle else np.arange(size)
            indices = (order + offsets[domain]).tolist()
            batches = [indices[i : i + self.batch_size] for i in range(0, size, self.batch_size)]
            if self.drop_last and len(batches) > 1 and len(batches[-1]) < self.batch_size:
                batches.pop()
            per_domain.append(batches)
        if self.balance:
            longest = max(len(b) for b in per_domain)
            per_domain = [
                (b * math.ceil(longest / len(b)))[:longest] for b in per_domain
            ]
        batches = [batch for group in per_domain for batch in group]
        if self.shuffle:
            order = rng.permutation(len(batches))
            batches = [batches[i] for i in order]
        return batches

    def _rank_batches(self) -> list[list[int]]:
        batches = self._all_batches()
        per_rank = math.ceil(len(batches) / self.world_size)
        padded = batches + batches[: per_rank * self.world_size - len(batches)]
        return padded[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._rank_batches()
        if self._resume is not None and self._resume[0] == self.epoch:
            batches = batches[self._resume[1]:]
            self._resume = None
        return iter(batches)

    def __len__(self) -> int:
        return len(self._rank_batches())


def simulated_pairs(
    domain: str, *, count: int, size: int = 64, seed: int = 0
) -> list[dict[str, Any]]:
    """``count`` in-memory pairs from ``synth.change.change_pair`` for one simulated dataset.

    Seeds are derived from ``seed`` and the dataset name, so datasets do not share scenes.
    """
    import zlib

    from eokit.core.synth.change import change_pair

    offset = zlib.crc32(domain.encode()) % 10_000
    pairs = []
    for index in range(count):
        pair = change_pair(size, seed=seed * 1_000_003 + offset * 1000 + index, domain=domain)
        pairs.append(
            {
                "image_a": pair.image_a,
                "image_b": pair.image_b,
                "mask": pair.label.astype(np.int64),
                "valid": np.ones(pair.label.shape, bool),
                "change_type": pair.change_type,
                "grid": pair.grid,
                "name": f"{domain}_{index:04d}",
            }
        )
    return pairs
