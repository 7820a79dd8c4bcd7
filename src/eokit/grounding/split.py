"""Image-disjoint train/val/test splits for detection and grounding records, keyed by content hash.

Grounding datasets hold several expressions per image, detection datasets several crops or
copies of one scene. A split drawn over expressions puts one image in train and test and
inflates test scores (the released DIOR-RSVG split files index expressions, not images). Here
each image is identified by the sha256 of its file bytes -- the same picture saved under two
names counts once -- and every record of that image goes to one split.

The assignment depends only on the set of image hashes and the seed: hashes are ordered by
``sha256(f"{seed}:{hash}")`` and cut into splits by largest remainder, so the order of the file
list does not matter, and adding images moves few of the others. :func:`write_split` writes one
``<split>.txt`` per split in ``sha256sum`` format (``<sha256>  <path>``, paths relative to the
split folder, so ``sha256sum -c train.txt`` checks it too) plus ``split.json``;
:func:`verify_split` re-hashes every file and runs the leakage check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from eokit.core.errors import InputError
from eokit.core.split import SPLIT_NAMES, split_counts

logger = logging.getLogger(__name__)

__all__ = [
    "MANIFEST",
    "ImageSplit",
    "Leak",
    "build_image_split",
    "check_leakage",
    "file_sha256",
    "find_leakage",
    "read_split",
    "records_by_index_split",
    "split_records",
    "verify_split",
    "write_split",
]

#: Name of the manifest written beside the split files.
MANIFEST = "split.json"
_LISTED = 8  # overlapping or changed images named in one error message

PathLike = str | os.PathLike[str]
RecordT = TypeVar("RecordT")


def file_sha256(path: PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})", path=Path(path)) from None
    return digest.hexdigest()


def _image_of(item: Any) -> Path:
    """The image file of a record (anything with ``.image``) or a path."""
    image = getattr(item, "image", item)
    if not isinstance(image, str | os.PathLike):
        raise InputError(f"expected a record with .image or a path, got {type(item).__name__}",
                         parameter="records")
    return Path(image)


class _Hasher:
    """Hashes each file once, however many records point to it."""

    def __init__(self) -> None:
        self._cache: dict[Path, str] = {}

    def __call__(self, path: Path) -> str:
        key = path.resolve()
        if key not in self._cache:
            self._cache[key] = file_sha256(path)
        return self._cache[key]


@dataclass(frozen=True)
class ImageSplit:
    """Which split each image (by content hash) belongs to.

    Attributes:
        names: Split names, e.g. ``("train", "val", "test")``.
        fractions: Share of images per split.
        seed: Seed of the assignment.
        assignment: sha256 -> split name.
        paths: sha256 -> the files with those bytes (several when an image is duplicated).
    """

    names: tuple[str, ...]
    fractions: tuple[float, ...]
    seed: int
    assignment: dict[str, str]
    paths: dict[str, tuple[Path, ...]]

    def counts(self) -> dict[str, int]:
        """Images (distinct hashes) per split."""
        out = dict.fromkeys(self.names, 0)
        for name in self.assignment.values():
            out[name] += 1
        return out

    def hashes(self, name: str) -> list[str]:
        """Sorted hashes of the images in split ``name``."""
        if name not in self.names:
            raise InputError(f"no split {name!r}; splits are {', '.join(self.names)}",
                             parameter="name")
        return sorted(h for h, n in self.assignment.items() if n == name)


def _order_key(seed: int, sha256: str) -> str:
    return hashlib.sha256(f"{seed}:{sha256}".encode()).hexdigest()


def build_image_split(records: Iterable[Any], *,
                      fractions: Sequence[float] = (0.7, 0.15, 0.15),
                      names: Sequence[str] = SPLIT_NAMES, seed: int = 0) -> ImageSplit:
    """Assign every distinct image of ``records`` to one split.

    Args:
        records: Detection or grounding records (anything with ``.image``) or image paths.
        fractions: Share of distinct images per split; must sum to 1.
        names: Split names, one per fraction.
        seed: Seed of the assignment (same images and seed -> same split, in any input order).

    Returns:
        The :class:`ImageSplit`.

    Raises:
        InputError: fractions that are negative or do not sum to 1, a name count that differs
            from the fraction count, or fewer images than non-empty splits.
    """
    shares = tuple(float(f) for f in fractions)
    names = tuple(str(n) for n in names)
    if len(names) != len(shares) or len(set(names)) != len(names):
        raise InputError(f"need one distinct name per fraction, got names {list(names)} for "
                         f"{len(shares)} fractions", parameter="names")
    if not shares or any(not 0 <= f <= 1 for f in shares) or abs(sum(shares) - 1) > 1e-6:
        raise InputError(f"need shares in [0, 1] that sum to 1, got {list(shares)}",
                         parameter="fractions")
    hasher = _Hasher()
    paths: dict[str, set[Path]] = {}
    for item in records:
        image = _image_of(item)
        paths.setdefault(hasher(image), set()).add(image)
    needed = sum(f > 0 for f in shares)
    if len(paths) < needed:
        raise InputError(f"{len(paths)} distinct image(s) cannot fill {needed} splits",
                         parameter="records")
    ordered = sorted(paths, key=lambda h: _order_key(seed, h))
    counts = split_counts(len(ordered), shares)
    assignment: dict[str, str] = {}
    start = 0
    for name, count in zip(names, counts, strict=True):
        for sha in ordered[start:start + count]:
            assignment[sha] = name
        start += count
    duplicated = sum(len(p) > 1 for p in paths.values())
    if duplicated:
        logger.info("%d image(s) appear under more than one file name; each stays in one split",
                    duplicated)
    logger.info("image split (seed %d): %s", seed, dict(zip(names, counts, strict=True)))
    return ImageSplit(names=names, fractions=shares, seed=int(seed), assignment=assignment,
                      paths={h: tuple(sorted(p)) for h, p in paths.items()})


def split_records(records: Iterable[RecordT], split: ImageSplit) -> dict[str, list[RecordT]]:
    """Group records by the split of their image (records keep their order within a split).

    Raises:
        InputError: a record whose image is not in ``split`` (its bytes changed, or it is new).
    """
    hasher = _Hasher()
    out: dict[str, list[RecordT]] = {name: [] for name in split.names}
    for record in records:
        image = _image_of(record)
        sha = hasher(image)
        if sha not in split.assignment:
            raise InputError("is not in the split (new image, or its bytes changed); rebuild "
                             "the split", path=image)
        out[split.assignment[sha]].append(record)
    return out


def write_split(split: ImageSplit, out_dir: PathLike) -> dict[str, Path]:
    """Write ``<name>.txt`` per split (``<sha256>  <path>`` lines) and ``split.json``.

    Paths are written relative to ``out_dir`` (so the folder can move together with the
    images), sorted; an image stored under several names has one line per name.

    Returns:
        {split name: its file, ``"manifest"``: split.json}.
    """
    from eokit.core.raster import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name in split.names:
        lines = sorted(
            f"{sha}  {Path(os.path.relpath(path.resolve(), out.resolve())).as_posix()}"
            for sha in split.hashes(name) for path in split.paths[sha])
        with atomic_write(out / f"{name}.txt") as tmp:
            tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        written[name] = out / f"{name}.txt"
    manifest = {"format": "sha256sum", "names": list(split.names),
                "fractions": list(split.fractions), "seed": split.seed,
                "images": split.counts(),
                "files": {name: f"{name}.txt" for name in split.names}}
    with atomic_write(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    written["manifest"] = out / MANIFEST
    return written


def read_split(directory: PathLike) -> dict[str, list[tuple[str, Path]]]:
    """Read split files written by :func:`write_split`.

    Args:
        directory: The split folder (with ``split.json``; without it every ``*.txt``).

    Returns:
        {split name: [(sha256, absolute image path)]}.
    """
    folder = Path(directory)
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            files = dict(json.loads(manifest.read_text(encoding="utf-8"))["files"])
        except (ValueError, KeyError, TypeError):
            raise InputError("is not a split manifest (no 'files')", path=manifest) from None
    elif folder.is_dir():
        files = {p.stem: p.name for p in sorted(folder.glob("*.txt"))}
    else:
        raise InputError(f"split folder not found: {folder}", parameter="directory")
    if not files:
        raise InputError("holds no split files", path=folder)
    out: dict[str, list[tuple[str, Path]]] = {}
    for name, file_name in files.items():
        path = folder / file_name
        if not path.is_file():
            raise InputError("split file not found", path=path)
        entries = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            sha, sep, rel = line.partition("  ")
            if not sep or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise InputError(f"line {number} is not '<sha256>  <path>'", path=path)
            entries.append((sha, (folder / rel.removeprefix("*")).resolve()))
        out[name] = entries
    return out


@dataclass(frozen=True)
class Leak:
    """One image found in more than one split.

    Attributes:
        sha256: Its content hash.
        splits: The splits that hold it, sorted.
        paths: The files with those bytes, sorted.
    """

    sha256: str
    splits: tuple[str, ...]
    paths: tuple[Path, ...]

    def describe(self) -> str:
        """``a.jpg = b.jpg (train, test)``."""
        files = " = ".join(p.name for p in self.paths)
        return f"{files} ({', '.join(self.splits)})"


def _leaks(entries: Mapping[str, Iterable[tuple[str, Path]]]) -> list[Leak]:
    splits: dict[str, set[str]] = {}
    paths: dict[str, set[Path]] = {}
    for name, items in entries.items():
        for sha, path in items:
            splits.setdefault(sha, set()).add(name)
            paths.setdefault(sha, set()).add(path)
    return [Leak(sha, tuple(sorted(splits[sha])), tuple(sorted(paths[sha])))
            for sha in sorted(splits, key=lambda h: sorted(paths[h])) if len(splits[sha]) > 1]


def find_leakage(groups: Mapping[str, Iterable[Any]]) -> list[Leak]:
    """Images whose bytes occur in more than one group.

    Args:
        groups: {split name: records (with ``.image``) or image paths}, e.g. the output of
            :func:`split_records` or :func:`records_by_index_split`, or lists of files of a
            split made elsewhere.

    Returns:
        One :class:`Leak` per shared image, sorted by file name (empty: the splits are
        image-disjoint).
    """
    hasher = _Hasher()
    entries = {name: [(hasher(p), p) for p in (_image_of(item) for item in items)]
               for name, items in groups.items()}
    return _leaks(entries)


def _leak_message(leaks: Sequence[Leak]) -> str:
    listed = "; ".join(leak.describe() for leak in leaks[:_LISTED])
    more = f"; and {len(leaks) - _LISTED} more" if len(leaks) > _LISTED else ""
    return f"{len(leaks)} image(s) are in more than one split: {listed}{more}"


def check_leakage(groups: Mapping[str, Iterable[Any]]) -> None:
    """Refuse splits that share an image (by content); see :func:`find_leakage`.

    Raises:
        InputError: listing the shared images and the splits that hold them.
    """
    leaks = find_leakage(groups)
    if leaks:
        raise InputError(_leak_message(leaks), parameter="split")


def verify_split(directory: PathLike) -> dict[str, int]:
    """Re-hash every file of a written split and check that no image is in two splits.

    Returns:
        Distinct images per split.

    Raises:
        InputError: naming files that are missing or whose bytes changed since the split was
            written, or images that are in more than one split.
    """
    folder = Path(directory)
    entries = read_split(folder)
    hasher = _Hasher()
    missing, changed = [], []
    for items in entries.values():
        for sha, path in items:
            if not path.is_file():
                missing.append(path)
            elif hasher(path) != sha:
                changed.append(path)
    for problem, paths in (("missing", missing), ("changed since the split was written", changed)):
        if paths:
            names = ", ".join(p.name for p in paths[:_LISTED])
            more = f" and {len(paths) - _LISTED} more" if len(paths) > _LISTED else ""
            raise InputError(f"{len(paths)} image(s) {problem}: {names}{more}", path=folder)
    leaks = _leaks(entries)
    if leaks:
        raise InputError(_leak_message(leaks), path=folder)
    counts = {name: len({sha for sha, _ in items}) for name, items in entries.items()}
    logger.info("%s: split verified, images per split %s", folder, counts)
    return counts


def records_by_index_split(records: Iterable[RecordT],
                           index_splits: Mapping[str, Iterable[int]]) -> dict[str, list[RecordT]]:
    """Group records by released index split files (DIOR-RSVG, OPT-RSVG ``<split>.txt``).

    Feed the result to :func:`find_leakage` to learn whether a released split is
    image-disjoint. Records without an index, or whose index no split lists, are left out.

    Args:
        records: Records with an ``index`` attribute (:class:`~eokit.grounding.data.
            GroundingRecord` from the RSVG readers).
        index_splits: {split name: sample indices}, e.g. from
            :func:`eokit.grounding.data.read_index_split`.

    Raises:
        InputError: an index listed by two splits (naming the first few).
    """
    owner: dict[int, str] = {}
    twice: list[int] = []
    for name, indices in index_splits.items():
        for index in indices:
            if owner.setdefault(int(index), name) != name:
                twice.append(int(index))
    if twice:
        raise InputError(f"{len(twice)} index(es) are listed by two splits, e.g. "
                         f"{sorted(twice)[:_LISTED]}", parameter="index_splits")
    out: dict[str, list[RecordT]] = {name: [] for name in index_splits}
    for record in records:
        position = getattr(record, "index", None)
        if position is not None and position in owner:
            out[owner[position]].append(record)
    return out
