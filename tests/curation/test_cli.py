"""``eokit curation cluster|sample``: outputs on disk and one-line errors with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eokit.cli import main


def _run(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as done:
        code = done.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def embeddings(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 8)) * 6
    labels = rng.choice(6, size=900, p=[0.6, 0.2, 0.1, 0.05, 0.03, 0.02])
    x = (centres[labels] + rng.normal(size=(900, 8))).astype(np.float32)
    path = tmp_path / "emb.npy"
    np.save(path, x)
    return path


def test_cluster_then_sample(embeddings, tmp_path, capsys):
    out = tmp_path / "clusters"
    code, stdout, err = _run(["curation", "cluster", str(embeddings), "--levels", "30,8,3",
                              "-o", str(out), "--chunk-rows", "200"], capsys)
    assert code == 0, err
    for level in (1, 2, 3):
        labels = np.load(out / f"assign_level{level}.npy")
        assert labels.shape == (900,) and labels.max() < (30, 8, 3)[level - 1]
    assert (out / "report.html").stat().st_size > 10_000
    assert "level 3: k=3" in stdout
    code, stdout, err = _run(["curation", "sample", str(out), "--keep", "0.3", "--strategy",
                              "balanced", "-o", str(tmp_path / "s1")], capsys)
    assert code == 0, err
    kept = np.load(tmp_path / "s1" / "kept_indices.npy")
    assert len(kept) == 270 and np.all(np.diff(kept) > 0)
    summary = json.loads((tmp_path / "s1" / "sample.json").read_text())
    top = summary["size_statistics"][-1]
    assert top["entropy_kept"] > top["entropy_all"]
    code, stdout, err = _run(["curation", "sample", str(out), "--keep", "0.3", "--strategy",
                              "closest", "--previous", str(tmp_path / "s1" / "kept_indices.npy"),
                              "-o", str(tmp_path / "s2")], capsys)
    assert code == 0, err
    overlap = json.loads((tmp_path / "s2" / "sample.json").read_text())["overlap_with_previous"]
    assert 0 < overlap < 1
    assert "Overlap with the previous round" in stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--levels", "10,40"], "must shrink"),
        (["--levels", "5000"], "more clusters than points"),
        (["--levels", "ten"], "comma-separated"),
    ],
)
def test_cluster_bad_levels(embeddings, tmp_path, capsys, args, needle):
    code, _, err = _run(["curation", "cluster", str(embeddings), *args, "-o",
                         str(tmp_path / "o")], capsys)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cluster_nan_rows_and_missing_file(tmp_path, capsys):
    x = np.ones((50, 3), dtype=np.float32)
    x[7] = np.nan
    np.save(tmp_path / "bad.npy", x)
    code, _, err = _run(["curation", "cluster", str(tmp_path / "bad.npy"), "--levels", "5",
                         "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "row 7" in err and "bad.npy" in err
    code, _, err = _run(["curation", "cluster", str(tmp_path / "none.npy"), "--levels", "5",
                         "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "not found" in err
    (tmp_path / "text.npy").write_text("hello")
    code, _, err = _run(["curation", "cluster", str(tmp_path / "text.npy"), "--levels", "5",
                         "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "not a readable .npy" in err


@pytest.mark.parametrize("keep", ["0", "1.5", "-0.2"])
def test_sample_bad_keep(embeddings, tmp_path, capsys, keep):
    out = tmp_path / "clusters"
    assert _run(["curation", "cluster", str(embeddings), "--levels", "10,3", "-o", str(out),
                 "--resample-steps", "0"], capsys)[0] == 0
    code, _, err = _run(["curation", "sample", str(out), "--keep", keep], capsys)
    assert code == 2 and "keep" in err and len(err.strip().splitlines()) == 1


def test_sample_needs_a_clusters_folder(tmp_path, capsys):
    code, _, err = _run(["curation", "sample", str(tmp_path), "--keep", "0.5"], capsys)
    assert code == 2 and "not a clusters folder" in err
