"""eokit: Earth-observation analysis toolkit.

Importing the package is cheap: no torch, rasterio or matplotlib is loaded until a
sub-package is used (``eokit.core``, ``eokit.change`` ...).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = frozenset(
    {
        "core",
        "change",
        "curation",
        "timeseries",
        "lst",
        "noisy",
        "urban",
        "openvocab",
        "grounding",
        "agent",
    }
)


def __getattr__(name: str) -> Any:
    """Import capability sub-packages on first attribute access."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f"eokit.{name}")
    raise AttributeError(f"module 'eokit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBPACKAGES])
