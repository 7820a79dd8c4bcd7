"""Image-disjoint splits by content hash: determinism, duplicates, written files, leakage."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from eokit.core.errors import InputError
from eokit.grounding.data import GroundingRecord, read_dior_rsvg, read_index_split
from eokit.grounding.split import (
    build_image_split,
    check_leakage,
    file_sha256,
    find_leakage,
    read_split,
    records_by_index_split,
    split_records,
    verify_split,
    write_split,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
DIOR_SAMPLE = SHARED / "grounding" / "dior_rsvg_sample"


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for i in range(20):
        path = folder / f"img_{i:02d}.png"
        path.write_bytes(f"image bytes {i}".encode())  # content is all the split looks at
        paths.append(path)
    duplicate = folder / "copy_of_img_03.png"
    shutil.copy(paths[3], duplicate)
    return [*paths, duplicate]


def records_of(paths: list[Path], per_image: int = 2) -> list[GroundingRecord]:
    return [GroundingRecord(image=p, expression=f"object {k}", box=(0, 0, 1, 1),
                            class_name="ship") for p in paths for k in range(per_image)]


def test_split_is_deterministic_image_disjoint_and_order_free(images: list[Path]) -> None:
    records = records_of(images)
    split = build_image_split(records, seed=1)
    assert split.counts() == {"train": 14, "val": 3, "test": 3}  # 20 distinct images
    shuffled = [records[i] for i in np.random.default_rng(0).permutation(len(records))]
    assert build_image_split(shuffled, seed=1).assignment == split.assignment
    assert build_image_split(images, seed=2).assignment != split.assignment
    groups = split_records(records, split)
    assert sum(len(g) for g in groups.values()) == len(records)
    assert find_leakage(groups) == []
    # the copy under another name lands with its original
    sha = file_sha256(images[3])
    assert split.paths[sha] == (images[-1], images[3])
    owner = [name for name, group in groups.items() if any(r.image == images[-1] for r in group)]
    assert owner == [split.assignment[sha]]
    assert all(r.image != images[3] for name, g in groups.items() if name != owner[0] for r in g)


def test_split_checks_its_arguments(images: list[Path]) -> None:
    with pytest.raises(InputError, match="fractions"):
        build_image_split(images, fractions=(0.5, 0.6, 0.1))
    with pytest.raises(InputError, match="names"):
        build_image_split(images, fractions=(0.5, 0.5), names=("a", "a"))
    with pytest.raises(InputError, match="cannot fill 3 splits"):
        build_image_split(images[:2])
    with pytest.raises(InputError, match="not in the split"):
        split_records([images[0]], build_image_split(images[1:6]))
    with pytest.raises(InputError, match="cannot be read"):
        build_image_split([images[0].with_name("missing.png")])


def test_written_split_reads_back_and_verifies(images: list[Path], tmp_path: Path) -> None:
    split = build_image_split(images, fractions=(0.5, 0.25, 0.25), seed=3)
    written = write_split(split, tmp_path / "splits")
    assert set(written) == {"train", "val", "test", "manifest"}
    line = written["train"].read_text().splitlines()[0]
    sha, rel = line.split("  ")
    assert len(sha) == 64 and rel.startswith("../images/")
    entries = read_split(tmp_path / "splits")
    assert {name: len({s for s, _ in e}) for name, e in entries.items()} == split.counts()
    assert verify_split(tmp_path / "splits") == split.counts()
    # the bytes of one image change: verify names it
    changed = Path(entries["val"][0][1])
    changed.write_bytes(b"edited")
    with pytest.raises(InputError, match=rf"1 image\(s\) changed since the split was written: "
                                         rf"{changed.name}"):
        verify_split(tmp_path / "splits")
    changed.unlink()
    with pytest.raises(InputError, match=rf"missing: {changed.name}"):
        verify_split(tmp_path / "splits")


def test_leakage_names_the_shared_images(images: list[Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"1 image\(s\) are in more than one split: "
                                         r"copy_of_img_03\.png = img_03\.png \(test, train\)"):
        check_leakage({"train": images[:5], "test": [images[-1], images[10]]})
    check_leakage({"train": images[:5], "test": images[5:10]})
    # a hand-edited split file that repeats a train image in test
    split = build_image_split(images, seed=0)
    write_split(split, tmp_path / "splits")
    train_line = (tmp_path / "splits" / "train.txt").read_text().splitlines()[0]
    with open(tmp_path / "splits" / "test.txt", "a") as stream:
        stream.write(train_line + "\n")
    with pytest.raises(InputError, match=r"splits: 1 image\(s\) are in more than one split"):
        verify_split(tmp_path / "splits")
    (tmp_path / "splits" / "test.txt").write_text("not a hash  x.png\n")
    with pytest.raises(InputError, match=r"test\.txt: line 1 is not"):
        read_split(tmp_path / "splits")


def test_index_splits_that_share_an_image_are_caught(images: list[Path]) -> None:
    records = [GroundingRecord(image=images[i // 2], expression=str(i), box=(0, 0, 1, 1),
                               class_name="ship", index=i) for i in range(8)]
    # expressions 0 and 1 are of one image, split apart as an expression-level split would
    groups = records_by_index_split(records, {"train": [0, 2, 3, 4], "test": [1, 5, 6, 7]})
    leaks = find_leakage(groups)
    assert [leak.paths for leak in leaks] == [(images[0],), (images[2],)]
    assert leaks[0].splits == ("test", "train")
    with pytest.raises(InputError, match=r"1 index\(es\) are listed by two splits"):
        records_by_index_split(records, {"train": [0, 1], "test": [1]})


@pytest.mark.skipif(not DIOR_SAMPLE.is_dir(), reason="shared DIOR-RSVG sample absent")
@pytest.mark.parametrize("folder", ["splits_DIOR_RSVG", "splits_RSVGD_early"])
def test_released_dior_rsvg_splits(folder: str) -> None:
    """The released files split 38,320 expressions, index-disjoint; the one sample image is in
    one split. Indices of one image are consecutive (objects of an XML), and consecutive indices
    share a split no more often than chance: the split is drawn per expression, not per image,
    so images with several expressions fall into several splits (image-level leakage)."""
    index_splits = {name: read_index_split(DIOR_SAMPLE / folder / f"{name}.txt")
                    for name in ("train", "val", "test")}
    every = sorted(i for indices in index_splits.values() for i in indices)
    assert every == list(range(38320))
    records = read_dior_rsvg(DIOR_SAMPLE)
    groups = records_by_index_split(records, index_splits)  # also refuses shared indices
    assert find_leakage(groups) == []  # one image with one expression: nothing to leak
    split_of = np.empty(38320, dtype=np.int8)
    for k, indices in enumerate(index_splits.values()):
        split_of[indices] = k
    share = np.bincount(split_of) / split_of.size
    same_as_next = float((split_of[1:] == split_of[:-1]).mean())
    assert abs(same_as_next - float((share**2).sum())) < 0.02
