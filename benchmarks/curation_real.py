"""Clusters of 15 real Sentinel-1 WV quick-looks vs their multi-labels (tiny sanity check).

Data: ``../shared/data/sar/wvnet_samples`` (15 WV imagettes, 2019, with WV-Net's multi-hot labels
and WV-Net ResNet-50 embeddings; see its PROVENANCE.md). Two embeddings are clustered with
``hierarchical_kmeans`` (levels 4, then 2): the published WV-Net embeddings, and the frozen
ImageNet EfficientNet-Lite0 of the weights catalogue applied to the quick-looks read by
``eokit.curation.data``. Agreement statistic: the mean Jaccard similarity of the label sets of
image pairs that share a level-1 cluster; its chance distribution comes from 20 000 random
relabellings with the same cluster sizes (one-sided p-value). Fifteen images: the numbers say
whether the clusters carry label information at all, nothing more.

    python benchmarks/curation_real.py            # 3 k-means seeds
    python benchmarks/curation_real.py --quick    # 1 seed
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, add_common_args, environment, write_results  # noqa: E402

NAME = "curation_real"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sar" / "wvnet_samples"


def within_cluster_jaccard(labels: np.ndarray, tags: np.ndarray) -> float:
    """Mean label-set Jaccard over image pairs in the same cluster."""
    inter = tags @ tags.T
    sizes = tags.sum(axis=1)
    union = sizes[:, None] + sizes[None, :] - inter
    jaccard = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    same = (labels[:, None] == labels[None, :]) & ~np.eye(len(labels), dtype=bool)
    return float(jaccard[same].mean()) if same.any() else float("nan")


def imagenet_embeddings(paths: list[Path]) -> np.ndarray:
    import cv2
    import torch

    from eokit.core.encoders import build_image_encoder
    from eokit.curation.data import read_imagette

    encoder = build_image_encoder("efficientnet_lite0", pretrained=True, in_chans=1)
    encoder.eval()
    rows = []
    with torch.no_grad():
        for path in paths:
            image = read_imagette(path) / 255.0
            h, w = image.shape
            side = min(h, w)
            crop = image[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:
                         (w - side) // 2 + side]
            crop = cv2.resize(crop, (224, 224), interpolation=cv2.INTER_AREA)
            x = torch.from_numpy(crop[None, None].astype(np.float32))
            rows.append(encoder(encoder.normalize(x))[-1].mean(dim=(2, 3))[0].numpy())
    return np.stack(rows).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args()
    if not (DATA / "sample_data.csv").is_file():
        print(f"skipped: {DATA} not present")
        return
    from eokit.curation.kmeans import hierarchical_kmeans

    with open(DATA / "sample_data.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    paths = [DATA / r[0] for r in body]
    tags = np.array([[int(v) for v in r[1:]] for r in body], dtype=np.float64)
    embeddings = {"wvnet": np.load(DATA / "valid_embs.npy").astype(np.float32),
                  "imagenet_lite0": imagenet_embeddings(paths)}
    rng = np.random.default_rng(args.seed)
    seeds = [args.seed] if args.quick else [args.seed + i for i in range(3)]
    results: dict[str, Any] = {}
    for name, x in embeddings.items():
        per_seed = []
        for seed in seeds:
            clusters = hierarchical_kmeans(x, [4, 2], resample_steps=2, sample_size=2,
                                           seed=seed)
            labels = clusters.assignments(1)
            observed = within_cluster_jaccard(labels, tags)
            null = np.array([within_cluster_jaccard(rng.permutation(labels), tags)
                             for _ in range(20000)])
            per_seed.append({
                "seed": seed, "cluster_sizes": np.bincount(labels, minlength=4).tolist(),
                "within_cluster_jaccard": round(observed, 4),
                "chance_mean": round(float(null.mean()), 4),
                "p_value": round(float((null >= observed).mean()), 4),
                "assignments": labels.tolist()})
        results[name] = per_seed
        print(name, [(p["within_cluster_jaccard"], p["chance_mean"], p["p_value"])
                     for p in per_seed], flush=True)
    notes = []
    for name, per_seed in results.items():
        better = sum(p["p_value"] < 0.05 for p in per_seed)
        notes.append(f"{name}: within-cluster label Jaccard "
                     f"{np.mean([p['within_cluster_jaccard'] for p in per_seed]):.3f} vs chance "
                     f"{np.mean([p['chance_mean'] for p in per_seed]):.3f}; p < 0.05 in "
                     f"{better} of {len(per_seed)} seeds (15 images: a sanity check only).")
    payload = {"images": len(paths), "label_codes": header[1:], "seeds": seeds,
               "results": results, "notes": notes, "environment": environment()}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for i, per_seed in enumerate(results.values()):
        ax.scatter([i - 0.1] * len(per_seed), [p["within_cluster_jaccard"] for p in per_seed],
                   color="#4477aa", label="observed" if i == 0 else None)
        ax.scatter([i + 0.1] * len(per_seed), [p["chance_mean"] for p in per_seed],
                   color="#999999", marker="x", label="chance mean" if i == 0 else None)
    ax.set_xticks(range(len(results)), list(results))
    ax.set_ylabel("within-cluster label Jaccard")
    ax.set_title("15 real WV quick-looks, k=4", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    out = args.out if not args.quick or args.out != RESULTS_DIR else Path("/tmp/curation_real")
    json_path, _ = write_results(NAME, payload, fig, out_dir=out)
    print("\n".join(notes))
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
