"""Hierarchical k-means at scale: wall time and peak RSS on 1 M and 10 M memory-mapped embeddings.

Synthetic 128-d embeddings (a heavy-tailed mixture of 2000 Gaussian blobs, written chunk by chunk
to a memory-mapped ``.npy`` in --workdir) are clustered with levels 1000,100,10 in a fresh
subprocess per case, so that peak RSS belongs to that case alone:

- ``stream_1M``: every Lloyd iteration streams all 1 M rows from the memory-mapped file;
- ``inmemory_1M``: the same settings on the array loaded into memory (agreement with the
  streamed run: the algorithm must not depend on where the rows live);
- ``subset_1M``: level 1 fitted on 200 k random rows, then all rows assigned in one pass (the
  mode the 10 M case uses); adjusted Rand index against ``stream_1M``;
- ``subset_10M``: the same on 10 M rows (peak RSS must stay bounded as N grows);
- ``minibatch_1M``: scikit-learn ``MiniBatchKMeans`` with k=1000 on the in-memory 1 M array.

Single thread (OMP_NUM_THREADS=1). Purity against the generating blobs is reported too.

    python benchmarks/curation_scale.py            # 1 M and 10 M rows (several minutes)
    python benchmarks/curation_scale.py --quick    # 20 k and 100 k rows
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, add_common_args, environment, write_results  # noqa: E402

NAME = "curation_scale"
DIM = 128
BLOBS = 2000
LEVELS = [1000, 100, 10]
ITERATIONS = 8
RESAMPLE = 2
CHUNK = 65536


def make_embeddings(path: Path, n: int, seed: int) -> None:
    """Write ``n`` heavy-tailed mixture rows (float32) and their blob labels (int32)."""
    from numpy.lib.format import open_memmap

    labels_path = path.with_suffix(".labels.npy")
    if path.is_file() and labels_path.is_file():
        return
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, BLOBS + 1) ** 1.1
    weights /= weights.sum()
    centres = rng.normal(size=(BLOBS, DIM)).astype(np.float32) * 3.0
    tmp = path.with_name(path.name + ".tmp.npy")
    out = open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, DIM))
    labels = open_memmap(labels_path.with_name(labels_path.name + ".tmp.npy"), mode="w+",
                         dtype=np.int32, shape=(n,))
    for start in range(0, n, 500_000):
        stop = min(n, start + 500_000)
        blob = rng.choice(BLOBS, size=stop - start, p=weights)
        out[start:stop] = centres[blob] + rng.standard_normal((stop - start, DIM),
                                                              dtype=np.float32)
        labels[start:stop] = blob
    out.flush()
    labels.flush()
    del out, labels
    os.replace(tmp, path)
    os.replace(labels_path.with_name(labels_path.name + ".tmp.npy"), labels_path)


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """One clustering run (in its own process); returns timings and peak RSS."""
    import resource

    from eokit.curation.kmeans import hierarchical_kmeans

    path = Path(case["path"])
    started = time.perf_counter()
    if case["kind"] == "minibatch":
        from sklearn.cluster import MiniBatchKMeans

        x = np.load(path)
        model = MiniBatchKMeans(n_clusters=LEVELS[0], batch_size=4096, n_init=1,
                                max_iter=ITERATIONS, random_state=case["seed"])
        labels = model.fit_predict(x)
        inertia = float(model.inertia_)
    else:
        source: Any = np.load(path) if case["kind"] == "inmemory" else path
        result = hierarchical_kmeans(
            source, LEVELS, iterations=ITERATIONS, resample_steps=RESAMPLE, seed=case["seed"],
            chunk_rows=CHUNK, fit_points=case.get("fit_points"),
            out_dir=Path(case["out"]))
        labels = result.assignments(1)
        inertia = result.levels[0].inertia
    seconds = time.perf_counter() - started
    np.save(Path(case["out"]) / "level1.npy", labels.astype(np.int32))
    # VmHWM belongs to this process image; ru_maxrss would include the parent's RSS at fork.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 1024.0
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(rss, 1),
            "inertia_per_point": inertia / len(labels)}


def _spawn(case: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"case {case['name']} failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _purity(labels: np.ndarray, truth: np.ndarray) -> float:
    order = np.lexsort((truth, labels))
    pairs = np.stack([labels[order], truth[order]], axis=1)
    _, counts = np.unique(pairs, axis=0, return_counts=True)
    unique_pairs = np.unique(pairs, axis=0)
    best: dict[int, int] = {}
    for (cluster, _), count in zip(unique_pairs, counts, strict=True):
        best[int(cluster)] = max(best.get(int(cluster), 0), int(count))
    return sum(best.values()) / len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/eokit-curation-scale"))
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    from sklearn.metrics import adjusted_rand_score

    small, large = (20_000, 100_000) if args.quick else (1_000_000, 10_000_000)
    fit_points = 20_000 if args.quick else 200_000
    tag_small, tag_large = (("20k", "100k") if args.quick else ("1M", "10M"))
    work = args.workdir / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    files = {}
    for n, tag in ((small, tag_small), (large, tag_large)):
        files[tag] = work / f"emb_{tag}.npy"
        started = time.perf_counter()
        make_embeddings(files[tag], n, args.seed)
        print(f"data {tag}: {time.perf_counter() - started:.0f} s", flush=True)
    cases = [
        {"name": f"stream_{tag_small}", "kind": "stream", "path": str(files[tag_small])},
        {"name": f"inmemory_{tag_small}", "kind": "inmemory", "path": str(files[tag_small])},
        {"name": f"subset_{tag_small}", "kind": "stream", "path": str(files[tag_small]),
         "fit_points": fit_points},
        {"name": f"subset_{tag_large}", "kind": "stream", "path": str(files[tag_large]),
         "fit_points": fit_points},
        {"name": f"minibatch_{tag_small}", "kind": "minibatch", "path": str(files[tag_small])},
    ]
    results: dict[str, Any] = {}
    labels: dict[str, np.ndarray] = {}
    for case in cases:
        case.update(seed=args.seed, out=str(work / case["name"]))
        Path(case["out"]).mkdir(exist_ok=True)
        row = _spawn(case)
        lab = np.load(Path(case["out"]) / "level1.npy")
        truth = np.load(Path(case["path"]).with_suffix(".labels.npy"), mmap_mode="r")
        row["n"] = int(len(lab))
        row["purity_vs_blobs"] = round(_purity(lab, np.asarray(truth)), 4)
        labels[case["name"]] = lab
        results[case["name"]] = row
        print(case["name"], row, flush=True)
    reference = labels[f"stream_{tag_small}"]
    for name in (f"inmemory_{tag_small}", f"subset_{tag_small}", f"minibatch_{tag_small}"):
        results[name]["ari_vs_stream"] = round(float(adjusted_rand_score(reference,
                                                                         labels[name])), 4)
        results[name]["identical_fraction_vs_stream"] = round(
            float((reference == labels[name]).mean()), 4)
    rss_small = results[f"subset_{tag_small}"]["peak_rss_mb"]
    rss_large = results[f"subset_{tag_large}"]["peak_rss_mb"]
    notes = [
        f"Peak RSS with a fitting subset of {fit_points} rows: {rss_small} MiB at {small} rows, "
        f"{rss_large} MiB at {large} rows (x{rss_large / rss_small:.2f} for x{large // small} "
        "rows; what grows is the two per-row output arrays, 8 bytes a row).",
        f"Streamed vs in-memory on {small} rows: ARI "
        f"{results[f'inmemory_{tag_small}']['ari_vs_stream']} (the same algorithm; floating-point "
        "sums in a different order may flip boundary points).",
        f"Subset fit vs full streamed fit on {small} rows: ARI "
        f"{results[f'subset_{tag_small}']['ari_vs_stream']}.",
        "MiniBatchKMeans is one flat level (k=1000), without resampling; timings single thread.",
    ]
    payload = {
        "levels": LEVELS, "dim": DIM, "blobs": BLOBS, "iterations": ITERATIONS,
        "resample_steps": RESAMPLE, "chunk_rows": CHUNK, "fit_points": fit_points,
        "quick": args.quick, "seed": args.seed, "results": results, "notes": notes,
        "environment": environment(),
    }
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    names = list(results)
    axes[0].barh(names, [results[n]["seconds"] for n in names], color="#4477aa")
    axes[0].set_xlabel("wall time (s, one thread)")
    axes[1].barh(names, [results[n]["peak_rss_mb"] for n in names], color="#cc6677")
    axes[1].set_xlabel("peak RSS (MiB)")
    for ax in axes:
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"Hierarchical k-means {LEVELS}, {DIM}-d, memory-mapped input")
    fig.tight_layout()
    out = args.out if not args.quick or args.out != RESULTS_DIR else \
        work / "results"
    json_path, _ = write_results(NAME, payload, fig, out_dir=out)
    print("\n".join(notes))
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
