"""Change detection across datasets: CANet with per-dataset BN, adapters and ICM (lazy imports)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CANet": "eokit.change.model",
    "SiameseTimmUNet": "eokit.change.model",
    "SiameseUNet": "eokit.change.model",
    "build_canet": "eokit.change.model",
    "ChangeDataset": "eokit.change.data",
    "DomainGroupedBatchSampler": "eokit.change.data",
    "find_pairs": "eokit.change.data",
    "ChangeTask": "eokit.change.lit",
    "evaluate": "eokit.change.task",
    "prepare_adapt": "eokit.change.task",
    "save_model": "eokit.change.task",
    "load_model": "eokit.change.task",
    "save_domain_adapter": "eokit.change.task",
    "load_domain_adapter": "eokit.change.task",
    "predict_pair": "eokit.change.predict",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the public API on first use (keeps ``import eokit.change`` cheap)."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'eokit.change' has no attribute {name!r}")
