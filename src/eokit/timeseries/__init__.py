"""Pixel time-series foundation model (EarthPT recipe) and cheap canopy fine-tuning (Dargana).

Public API (imported lazily, so ``import eokit.timeseries`` does not load torch):
``PixelSeriesTransformer``, ``SeriesModelConfig``, ``FineTunedSeriesModel``, ``save_model``,
``load_model`` (model); ``SeriesData``, ``SeriesReader``, ``read_series``, ``read_geotiff_stack``,
``read_eopatch``, ``read_presto_npy``, ``from_scene`` (data); ``pretrain``, ``finetune``,
``predict_series``, ``embed_series``, ``forecast_series``, ``forecast_residual_series``,
``forest_change_dates``, ``refine_change_dates``, ``peak_departure`` (task);
``write_maps`` (predict).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PixelSeriesTransformer": "model", "SeriesModelConfig": "model",
    "FineTunedSeriesModel": "model", "save_model": "model", "load_model": "model",
    "SeriesData": "data", "SeriesReader": "data", "read_series": "data",
    "read_geotiff_stack": "data", "read_eopatch": "data", "read_presto_npy": "data",
    "from_scene": "data", "pretrain": "task", "finetune": "task", "predict_series": "task",
    "embed_series": "task", "forecast_series": "task", "forest_change_dates": "task",
    "forecast_residual_series": "task", "refine_change_dates": "task", "peak_departure": "task",
    "write_maps": "predict",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'eokit.timeseries' has no attribute {name!r}")
    return getattr(importlib.import_module(f"eokit.timeseries.{_EXPORTS[name]}"), name)
