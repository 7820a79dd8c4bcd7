"""Hierarchical k-means and balanced sampling on embeddings with known structure."""

from __future__ import annotations

import numpy as np
import pytest

from eokit.core.errors import InputError
from eokit.curation.kmeans import EmbeddingSource, hierarchical_kmeans, load_clusters
from eokit.curation.sampling import (
    balanced_quota,
    normalised_entropy,
    sample_clusters,
    size_statistics,
)


def heavy_tailed_mixture(n: int = 6000, components: int = 24, dim: int = 12, seed: int = 0):
    """Well separated Gaussian blobs with Zipf-like frequencies (the first dominates)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, components + 1) ** 1.6
    weights /= weights.sum()
    centres = rng.normal(size=(components, dim)) * 8.0
    component = rng.choice(components, size=n, p=weights)
    x = centres[component] + rng.normal(size=(n, dim))
    return x.astype(np.float32), component


@pytest.fixture(scope="module")
def mixture():
    return heavy_tailed_mixture()


@pytest.fixture(scope="module")
def fitted(mixture, tmp_path_factory):
    x, _ = mixture
    folder = tmp_path_factory.mktemp("clusters")
    path = folder / "emb.npy"
    np.save(path, x)
    return hierarchical_kmeans(path, [48, 12, 4], iterations=15, resample_steps=2,
                               chunk_rows=1000, out_dir=folder / "out", seed=1)


def test_levels_shrink_and_assignments_are_consistent(fitted, mixture):
    x, _ = mixture
    assert [lv.k for lv in fitted.levels] == [48, 12, 4]
    a1, a2, a3 = (fitted.assignments(i) for i in (1, 2, 3))
    assert a1.shape == a2.shape == a3.shape == (len(x),)
    # Two points of one level-1 cluster share every upper-level cluster.
    for cluster in np.unique(a1):
        members = a1 == cluster
        assert len(np.unique(a2[members])) == 1
        assert len(np.unique(a3[members])) == 1
    # Sizes per level are the counts of the composed assignments.
    for level, labels in enumerate((a1, a2, a3), start=1):
        assert np.array_equal(np.bincount(labels, minlength=fitted.levels[level - 1].k),
                              fitted.levels[level - 1].sizes)
    # Level-1 assignment is the nearest centroid.
    centroids = fitted.levels[0].centroids
    d = ((x[:500, None, :] - centroids[None]) ** 2).sum(-1)
    assert (np.argmin(d, axis=1) == a1[:500]).mean() > 0.99


def test_saved_folder_round_trip(fitted):
    again = load_clusters(fitted.folder)
    for level in (1, 2, 3):
        assert np.array_equal(again.assignments(level), fitted.assignments(level))
        assert np.array_equal(
            np.load(fitted.folder / f"assign_level{level}.npy"), fitted.assignments(level))
    assert isinstance(again.levels[0].parent, np.memmap)


def test_clusters_recover_the_mixture(fitted, mixture):
    _, component = mixture
    labels = fitted.assignments(1)
    # Each level-1 cluster is (almost) pure: blobs are 8 sigma apart.
    purity = sum(np.bincount(component[labels == c]).max() for c in np.unique(labels))
    assert purity / len(labels) > 0.97


@pytest.mark.parametrize("strategy", ["balanced", "closest"])
def test_balanced_sampling_flattens_the_size_distribution(fitted, mixture, strategy):
    _, component = mixture
    keep = 0.2
    kept = sample_clusters(fitted, keep, strategy, seed=3)
    assert len(kept) == round(keep * len(component))
    assert len(np.unique(kept)) == len(kept)
    random = sample_clusters(fitted, keep, "random", seed=3)
    counts_all = np.bincount(component, minlength=24)
    counts_bal = np.bincount(component[kept], minlength=24)
    counts_rnd = np.bincount(component[random], minlength=24)
    # The dominant component loses most of its share; rare ones are kept whole or nearly so.
    assert counts_bal[0] / len(kept) < 0.5 * counts_rnd[0] / len(random)
    assert normalised_entropy(counts_bal) > normalised_entropy(counts_rnd) + 0.05
    assert normalised_entropy(counts_rnd) == pytest.approx(normalised_entropy(counts_all),
                                                           abs=0.03)
    rare = np.argsort(counts_all)[:5]
    assert counts_bal[rare].sum() > 2 * counts_rnd[rare].sum()
    top = size_statistics(fitted, kept)[-1]
    assert top["entropy_kept"] >= top["entropy_all"]


def test_closest_takes_points_near_centroids(fitted):
    kept = sample_clusters(fitted, 0.1, "closest")
    balanced = sample_clusters(fitted, 0.1, "balanced")
    distances = np.asarray(fitted.levels[0].distances)
    assert distances[kept].mean() < distances[balanced].mean()


def test_sampling_is_deterministic_and_seeded(fitted):
    a = sample_clusters(fitted, 0.3, "balanced", seed=5)
    assert np.array_equal(a, sample_clusters(fitted, 0.3, "balanced", seed=5))
    assert not np.array_equal(a, sample_clusters(fitted, 0.3, "balanced", seed=6))


def test_balanced_quota_is_water_filling():
    sizes = np.array([100, 50, 5, 1, 0])
    quota = balanced_quota(sizes, 40)
    assert quota.sum() == 40 and (quota <= sizes).all()
    assert quota[2] == 5 and quota[3] == 1 and quota[4] == 0
    assert abs(int(quota[0]) - int(quota[1])) <= 1
    assert np.array_equal(balanced_quota(sizes, int(sizes.sum())), sizes)


def test_chunking_and_backend_do_not_change_the_result(mixture):
    x, _ = mixture
    small = hierarchical_kmeans(x[:2000], [16, 4], chunk_rows=300, seed=2, backend="sklearn")
    large = hierarchical_kmeans(x[:2000], [16, 4], chunk_rows=5000, seed=2, backend="faiss")
    agree = (small.assignments(1) == large.assignments(1)).mean()
    assert agree > 0.99


def test_memory_mapped_source_reads_in_chunks(tmp_path):
    x = np.arange(50, dtype=np.float32).reshape(25, 2)
    np.save(tmp_path / "x.npy", x)
    source = EmbeddingSource.open(tmp_path / "x.npy", chunk_rows=7)
    assert source.chunks() == [(0, 7), (7, 14), (14, 21), (21, 25)]
    assert np.array_equal(source.take(np.array([24, 3, 8])), x[[3, 8, 24]])


def test_dask_cluster_gives_the_same_clusters(mixture, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    x, _ = mixture
    np.save(tmp_path / "x.npy", x[:1500])
    local = hierarchical_kmeans(tmp_path / "x.npy", [10, 3], chunk_rows=400, seed=4)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        remote = hierarchical_kmeans(tmp_path / "x.npy", [10, 3], chunk_rows=400, seed=4,
                                     client=client)
    assert remote.meta["distributed"]
    assert np.array_equal(local.assignments(1), remote.assignments(1))
    assert np.allclose(local.levels[0].centroids, remote.levels[0].centroids, atol=1e-4)


@pytest.mark.parametrize(
    ("levels", "message"),
    [([10, 20], "must shrink"), ([5000], "more clusters than points"), ([], "at least one"),
     ([0], ">= 1")],
)
def test_bad_levels(levels, message):
    x = np.zeros((100, 3), dtype=np.float32)
    with pytest.raises(InputError, match=message):
        hierarchical_kmeans(x, levels)


def test_nan_rows_are_named(tmp_path):
    x = np.ones((300, 4), dtype=np.float32)
    x[123, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(InputError, match="row 123"):
        hierarchical_kmeans(tmp_path / "x.npy", [5], chunk_rows=50, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("keep", [0.0, -0.1, 1.2, float("nan")])
def test_bad_keep_fraction(fitted, keep):
    with pytest.raises(InputError, match="keep"):
        sample_clusters(fitted, keep)


def test_fit_on_a_subset_then_assign_everything(mixture):
    x, component = mixture
    full = hierarchical_kmeans(x, [24, 6], seed=0, chunk_rows=1000)
    part = hierarchical_kmeans(x, [24, 6], seed=0, chunk_rows=1000, fit_points=1500)
    assert part.meta["fit_points"] == 1500
    assert part.assignments(1).shape == (len(x),)
    assert part.levels[0].sizes.sum() == len(x)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(component, part.assignments(1)) > 0.8 * adjusted_rand_score(
        component, full.assignments(1))
