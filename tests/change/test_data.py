import numpy as np
import pytest
import torch
from PIL import Image

from eokit.change.data import (
    ChangeDataset,
    DomainGroupedBatchSampler,
    collate_pairs,
    detect_layout,
    find_pairs,
    geotiff_pair,
    levir_pairs,
    read_label,
    read_pair,
    set_loader_epoch,
    split_layout_pairs,
    whu_pairs,
)
from eokit.core.errors import InputError
from eokit.core.raster import write_raster


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _rgb(rng, size=32):
    return rng.integers(0, 255, (size, size, 3), dtype=np.uint8)


def _label(rng, size=32, high=255):
    return (rng.random((size, size)) > 0.8).astype(np.uint8) * high


def _levir(root, names, rng, split_lists=None):
    for name in names:
        _png(root / "A" / f"{name}.png", _rgb(rng))
        _png(root / "B" / f"{name}.png", _rgb(rng))
        _png(root / "label" / f"{name}.png", _label(rng))
    (root / "list").mkdir(parents=True, exist_ok=True)
    for split, members in (split_lists or {}).items():
        (root / "list" / f"{split}.txt").write_text("".join(f"{m}.png\n" for m in members))


def test_levir_layout_lists_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    _levir(tmp_path, ["t1", "t2", "t3"], rng, {"train": ["t1", "t2"], "test": ["t3"]})
    assert detect_layout(tmp_path) == "levir"
    train = levir_pairs(tmp_path, "train")
    assert [p.name for p in train] == ["t1", "t2"]
    assert len(find_pairs(tmp_path, None)) == 3
    sample = read_pair(train[0])
    assert sample["image_a"].shape == (3, 32, 32) and sample["image_a"].max() <= 1.0
    assert set(np.unique(sample["mask"])) <= {0, 1}
    expected = np.asarray(Image.open(tmp_path / "label" / "t1.png")) == 255
    assert np.array_equal(sample["mask"] == 1, expected)


def test_split_layout_and_whu_layout(tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for name in ("x", "y"):
            _png(tmp_path / "s" / split / "A" / f"{name}.png", _rgb(rng))
            _png(tmp_path / "s" / split / "B" / f"{name}.png", _rgb(rng))
            _png(tmp_path / "s" / split / "label" / f"{name}.png", _label(rng, high=1))
    assert detect_layout(tmp_path / "s") == "split"
    pairs = split_layout_pairs(tmp_path / "s", "test")
    assert len(pairs) == 2 and pairs[0].label is not None
    assert set(np.unique(read_pair(pairs[0])["mask"])) <= {0, 1}
    for name in ("tile_1", "tile_2"):
        _png(tmp_path / "w" / "2012" / f"{name}.png", _rgb(rng))
        _png(tmp_path / "w" / "2016" / f"{name}.png", _rgb(rng))
        _png(tmp_path / "w" / "change_label" / f"{name}.png", _label(rng))
    assert detect_layout(tmp_path / "w") == "whu"
    pairs = whu_pairs(tmp_path / "w")
    assert [p.name for p in pairs] == ["tile_1", "tile_2"]
    assert pairs[0].a.parent.name == "2012" and pairs[0].label.parent.name == "change_label"


def test_geotiff_pair_with_label_and_nodata(tmp_path, grid_factory):
    grid = grid_factory()
    rng = np.random.default_rng(2)
    a = rng.random((4, 32, 40)).astype(np.float32)
    a[:, 0, 0] = np.nan
    write_raster(tmp_path / "a.tif", a, grid)
    write_raster(tmp_path / "b.tif", rng.random((4, 32, 40)).astype(np.float32), grid)
    label = (rng.random((32, 40)) > 0.5).astype(np.uint8)
    label[5, 5] = 255
    write_raster(tmp_path / "l.tif", label, grid)
    (pair,) = geotiff_pair(tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "l.tif")
    sample = read_pair(pair, bands=4)
    assert sample["grid"].same_as(grid)
    assert sample["mask"][0, 0] == 255  # nodata pixel ignored
    assert sample["mask"][5, 5] == 255  # 0/1/255 label: 255 = ignore
    assert sample["mask"][1, 1] == label[1, 1]


def test_label_modes(tmp_path):
    path = tmp_path / "l.png"
    _png(path, np.array([[0, 1], [255, 1]], np.uint8))
    assert read_label(path).tolist() == [[0, 1], [255, 1]]
    with pytest.raises(InputError, match="not allowed"):
        read_label(path, "0-255")
    _png(path, np.array([[0, 7], [255, 1]], np.uint8))
    with pytest.raises(InputError, match=r"l\.png.*\[7\]"):
        read_label(path)


def test_bad_pairs(tmp_path, grid_factory):
    rng = np.random.default_rng(3)
    write_raster(tmp_path / "a.tif", rng.random((3, 32, 40)).astype(np.float32), grid_factory())
    write_raster(tmp_path / "b4.tif", rng.random((4, 32, 40)).astype(np.float32), grid_factory())
    write_raster(tmp_path / "bs.tif", rng.random((3, 30, 40)).astype(np.float32),
                 grid_factory(height=30))
    write_raster(tmp_path / "bc.tif", rng.random((3, 32, 40)).astype(np.float32),
                 grid_factory(crs="EPSG:32632"))
    write_raster(tmp_path / "ls.tif", np.zeros((30, 40), np.uint8), grid_factory(height=30))
    cases = {
        "b4.tif": "bands",
        "bs.tif": "px",
        "bc.tif": "CRS",
    }
    for name, message in cases.items():
        (pair,) = geotiff_pair(tmp_path / "a.tif", tmp_path / name)
        with pytest.raises(InputError, match=message):
            read_pair(pair)
    (pair,) = geotiff_pair(tmp_path / "a.tif", tmp_path / "a.tif", tmp_path / "ls.tif")
    with pytest.raises(InputError, match="label is"):
        read_pair(pair)
    (pair,) = geotiff_pair(tmp_path / "a.tif", tmp_path / "a.tif")
    with pytest.raises(InputError, match="expects 6"):
        read_pair(pair, bands=6)
    with pytest.raises(InputError, match="not found"):
        geotiff_pair(tmp_path / "a.tif", tmp_path / "missing.tif")


def test_missing_b_and_empty_list(tmp_path):
    rng = np.random.default_rng(4)
    _levir(tmp_path, ["p1", "p2"], rng, {"train": ["p1"], "empty": []})
    (tmp_path / "B" / "p2.png").unlink()
    with pytest.raises(InputError, match="no date-B image for p2.png"):
        levir_pairs(tmp_path)
    with pytest.raises(InputError, match="list file is empty"):
        levir_pairs(tmp_path, "empty")
    with pytest.raises(InputError, match="list file not found"):
        levir_pairs(tmp_path, "nope")
    (tmp_path / "list" / "ghost.txt").write_text("p9.png\n")
    with pytest.raises(InputError, match="p9"):
        levir_pairs(tmp_path, "ghost")
    with pytest.raises(InputError, match="unknown change-dataset layout"):
        detect_layout(tmp_path / "list")


def test_augmentation_identical_for_both_dates_and_label():
    size = 24
    image_a = np.random.default_rng(5).random((2, size, size)).astype(np.float32)
    image_b = image_a + 1.0
    mask = (image_a[0] > 0.5).astype(np.int64)
    data = ChangeDataset([{"image_a": image_a, "image_b": image_b, "mask": mask}],
                         augment=True, crop=16, seed=0)
    seen = set()
    for epoch in range(8):
        data.set_epoch(epoch)
        sample = data[0]
        a, b, m = sample["image_a"], sample["image_b"], sample["mask"]
        assert a.shape == (2, 16, 16)
        assert torch.allclose(b - a, torch.ones_like(a))
        assert torch.equal(m, (a[0] > 0.5).long())
        seen.add(tuple(a[0, 0, :3].tolist()))
    assert len(seen) > 1  # augmentation actually varies


def test_grouped_batches_one_domain_each_and_ddp_shards():
    sizes = [10, 3, 7]
    sampler = DomainGroupedBatchSampler(sizes, 4, seed=1)
    offsets = np.cumsum([0, *sizes])
    batches = list(sampler)
    for batch in batches:
        domains = {int(np.searchsorted(offsets, i, side="right") - 1) for i in batch}
        assert len(domains) == 1
    assert sorted(i for b in batches for i in b) == list(range(sum(sizes)))
    ranks = [list(DomainGroupedBatchSampler(sizes, 4, seed=1, rank=r, world_size=2))
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    covered = {i for r in ranks for b in r for i in b}
    assert covered == set(range(sum(sizes)))
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_collate_refuses_mixed_domains():
    sample = {"image_a": torch.zeros(1, 2, 2), "image_b": torch.zeros(1, 2, 2),
              "mask": torch.zeros(2, 2), "valid": torch.ones(2, 2, dtype=torch.bool)}
    with pytest.raises(InputError, match="mixes domains"):
        collate_pairs([{**sample, "domain": 0}, {**sample, "domain": 1}])


def _crop_sets(size=32, count=4):
    rng = np.random.default_rng(3)
    return [ChangeDataset([{"image_a": rng.random((2, size, size)).astype(np.float32),
                            "image_b": rng.random((2, size, size)).astype(np.float32),
                            "mask": np.zeros((size, size), np.int64)} for _ in range(count)],
                          domain=d, crop=16, augment=True, seed=0) for d in range(2)]


def test_each_training_pass_is_a_new_epoch_of_order_and_augmentation():
    from torch.utils.data import ConcatDataset, DataLoader

    from eokit.change.task import _cycle

    sets = _crop_sets()
    sampler = DomainGroupedBatchSampler([len(s) for s in sets], 2, seed=0)
    loader = DataLoader(ConcatDataset(sets), batch_sampler=sampler, collate_fn=collate_pairs)
    set_loader_epoch(loader, 3)
    assert sampler.epoch == 3 and all(s.epoch == 3 for s in sets)
    batches = _cycle(loader)
    per_pass = len(sampler)
    first = [next(batches)["image_a"] for _ in range(per_pass)]
    second = [next(batches)["image_a"] for _ in range(per_pass)]
    assert sampler.epoch == 1  # the second pass
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    # Same pixels, other crops: the pair set is the same, the windows are not.
    assert sorted(float(t.sum()) for t in first) != sorted(float(t.sum()) for t in second)


def test_lightning_training_sees_new_augmentations_each_epoch(tmp_path):
    import lightning
    from torch.utils.data import ConcatDataset, DataLoader

    from eokit.change.lit import ChangeTask
    from eokit.change.model import build_canet

    sets = _crop_sets()
    sampler = DomainGroupedBatchSampler([len(s) for s in sets], 2, seed=0)
    loader = DataLoader(ConcatDataset(sets), batch_sampler=sampler, collate_fn=collate_pairs)
    seen: dict[int, list[float]] = {}

    class Record(lightning.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):  # noqa: ANN001
            seen.setdefault(trainer.current_epoch, []).append(float(batch["image_a"].sum()))

    model = build_canet(["a", "b"], in_channels=2)
    trainer = lightning.Trainer(max_epochs=2, accelerator="cpu", logger=False,
                                enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, use_distributed_sampler=False,
                                default_root_dir=tmp_path, callbacks=[Record()])
    trainer.fit(ChangeTask(model, mode="joint"), loader)
    assert len(seen[0]) == len(seen[1]) == len(sampler)
    assert sorted(seen[0]) != sorted(seen[1])


def test_worker_processes_give_the_same_batches_as_the_main_process():
    from eokit.change.cli import _loaders

    sets = _crop_sets()
    batches = {}
    for workers in (0, 2):
        loader, _ = _loaders(sets, [], batch_size=2, seed=0, num_workers=workers)
        batches[workers] = []
        for epoch in range(2):
            set_loader_epoch(loader, epoch)
            batches[workers] += [b["image_a"] for b in loader]
    assert len(batches[0]) == len(batches[2]) == 8
    assert all(torch.equal(a, b) for a, b in zip(batches[0], batches[2], strict=True))
    assert not torch.equal(batches[0][0], batches[0][4])  # epoch 1 differs from epoch 0
    with pytest.raises(InputError, match="train.num_workers"):
        _loaders(sets, [], batch_size=2, seed=0, num_workers=-1)


def test_batch_sampler_resumes_within_an_epoch_from_a_checkpoint(tmp_path):
    from torch.utils.data import DataLoader

    from eokit.change.data import resume_loader

    def sampler():  # noqa: ANN202
        return DomainGroupedBatchSampler([5, 7], 2, seed=3)

    reference = sampler()
    reference.set_epoch(3)
    epoch3 = list(reference)
    resumed = sampler()
    resumed.set_epoch(3)
    resumed.resume_within_epoch(3, 2)
    assert len(resumed) == len(epoch3)  # Lightning's count of the epoch is unchanged
    assert list(resumed) == epoch3[2:]  # the rest of epoch 3 in the uninterrupted order
    assert list(resumed) == epoch3  # skipped once only
    # The loader of `eokit change fit` pointed at a checkpoint written after 2 batches of epoch 3.
    progress = {"current": {"ready": 4, "started": 4, "processed": 3, "completed": 3}}
    batches = {"current": {"ready": 3, "started": 3, "processed": 2, "completed": 1}}
    torch.save({"epoch": 3, "loops": {"fit_loop": {"epoch_progress": progress,
                                                   "epoch_loop.batch_progress": batches}}},
               tmp_path / "last.ckpt")
    loader = DataLoader(list(range(12)), batch_sampler=sampler())
    assert resume_loader(loader, tmp_path / "last.ckpt") == (3, 2)
    assert list(loader.batch_sampler) == epoch3[2:]


def test_levir_split_from_file_names_when_the_list_is_missing(tmp_path):
    """The LEVIR-CD sample ships list/all.txt only; its crops are named train_*, val_*, test_*."""
    from PIL import Image

    from eokit.change.data import levir_pairs
    from eokit.core.errors import InputError

    for sub in ("A", "B", "label"):
        (tmp_path / sub).mkdir()
        for name in ("train_1", "train_2", "test_3"):
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / sub / f"{name}.png")
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "all.txt").write_text("train_1\ntrain_2\ntest_3\n")
    assert [p.name for p in levir_pairs(tmp_path, "train")] == ["train_1", "train_2"]
    assert [p.name for p in levir_pairs(tmp_path, "test")] == ["test_3"]
    assert len(levir_pairs(tmp_path, "all")) == 3
    with pytest.raises(InputError, match="val.txt: list file not found"):
        levir_pairs(tmp_path, "val")
