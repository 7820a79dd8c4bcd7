"""Dataset curation (hierarchical k-means, balanced sampling) and SAR self-supervised pretraining.

Submodules are imported lazily so that ``import eokit.curation`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EmbeddingSource": "eokit.curation.kmeans",
    "HierarchicalClusters": "eokit.curation.kmeans",
    "hierarchical_kmeans": "eokit.curation.kmeans",
    "load_clusters": "eokit.curation.kmeans",
    "balanced_quota": "eokit.curation.sampling",
    "sample_clusters": "eokit.curation.sampling",
    "size_statistics": "eokit.curation.sampling",
    "cluster_embeddings": "eokit.curation.task",
    "sample_subset": "eokit.curation.task",
    "Normalisation": "eokit.curation.data",
    "ImagetteDataset": "eokit.curation.data",
    "MultiCrop": "eokit.curation.data",
    "load_imagettes": "eokit.curation.data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
