"""Urban density-gradient metrics from optical + SAR imagery (Tomkiewicz et al. 2025 + geo mode)."""

from eokit.urban.model import UrbanResult, analyze_paper, clark_fit, run_pipeline, structure_call

__all__ = ["UrbanResult", "analyze_paper", "clark_fit", "run_pipeline", "structure_call"]
