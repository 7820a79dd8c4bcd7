"""Segmentation that learns from spatially correlated label noise (KMS-covariance model)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "kms_kl": "eokit.noisy.kms",
    "noisy_label_elbo": "eokit.noisy.kms",
    "sample_kms": "eokit.noisy.kms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the public API on first use (keeps ``import eokit.noisy`` cheap)."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'eokit.noisy' has no attribute {name!r}")
