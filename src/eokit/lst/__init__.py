"""Land-surface temperature from one thermal band: band physics, profiles, RT model, retrievals.

Public API (imported lazily so ``import eokit.lst`` stays light)::

    from eokit.lst import get_band, read_tigr, standard_atmosphere, BandRTModel
    from eokit.lst import generate_samples, SingleChannel, MonoWindow, rte_inversion
    from eokit.lst import PhysicsInformedLST, train_retrieval, retrieve_scene, RetrievalConfig
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Band": "eokit.lst.planck",
    "get_band": "eokit.lst.planck",
    "band_from_rsr_file": "eokit.lst.planck",
    "Profiles": "eokit.lst.profiles",
    "read_tigr": "eokit.lst.profiles",
    "read_level_table": "eokit.lst.profiles",
    "standard_atmosphere": "eokit.lst.profiles",
    "STANDARD_ATMOSPHERES": "eokit.lst.profiles",
    "BandRTModel": "eokit.lst.rt",
    "rte_forward": "eokit.lst.rt",
    "rte_inverse": "eokit.lst.rt",
    "generate_samples": "eokit.lst.data",
    "split_profiles": "eokit.lst.data",
    "SingleChannel": "eokit.lst.baselines",
    "MonoWindow": "eokit.lst.baselines",
    "rte_inversion": "eokit.lst.baselines",
    "PhysicsInformedLST": "eokit.lst.model",
    "MLPLST": "eokit.lst.model",
    "train_retrieval": "eokit.lst.task",
    "load_network": "eokit.lst.task",
    "RetrievalConfig": "eokit.lst.scene",
    "retrieve_scene": "eokit.lst.scene",
    "retrieve_arrays": "eokit.lst.scene",
    "load_tigr2000": "eokit.lst.profiles",
    "ndvi_emissivity": "eokit.lst.scene",
    "parse_mtl": "eokit.lst.scene",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'eokit.lst' has no attribute {name!r}")
