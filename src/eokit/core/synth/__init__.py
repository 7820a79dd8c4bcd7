"""Procedural scene simulator: land cover, reflectance, SAR and per-capability generators.

``eokit.core.synth.scene`` holds the shared land-cover scene generator; capabilities add their
own generator modules beside it. Names of ``scene`` are re-exported lazily, so importing a
sibling module does not pull in OpenCV or SciPy.
"""

from __future__ import annotations

import importlib
from typing import Any

_SCENE_NAMES = frozenset(
    {
        "BANDS",
        "BAND_CENTRES_NM",
        "CLASS_COLORS",
        "LANDCOVER_CLASSES",
        "Scene",
        "SensorDomain",
        "apply_domain",
        "generate_landcover",
        "generate_layout",
        "generate_scene",
        "green_fraction",
        "ndvi",
        "quicklook_figure",
        "render_reflectance",
        "render_sar",
        "write_scene",
    }
)

__all__ = sorted(_SCENE_NAMES)


def __getattr__(name: str) -> Any:
    if name in _SCENE_NAMES:
        return getattr(importlib.import_module("eokit.core.synth.scene"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SCENE_NAMES)
