"""The agent's own operations: deterministic spatial reasoning over rasters and GeoJSON.

The capabilities describe theirs in ``eokit.<capability>.tools`` (found through the
``eokit.tools`` entry points); these are added by the server itself (``AGENT_TOOL_MODULES``).
"""

from __future__ import annotations

from eokit.agent.spatial import (
    geo_class_areas,
    geo_class_objects,
    geo_describe,
    geo_image_relation,
    geo_measure,
    geo_relate,
    geo_reproject,
    geo_reproject_box,
    geo_threshold_area,
    geo_zonal_stats,
)
from eokit.core.tools import ToolSpec

TOOLS: list[ToolSpec] = [
    ToolSpec("geo_describe", geo_describe),
    ToolSpec("geo_measure", geo_measure),
    ToolSpec("geo_relate", geo_relate),
    ToolSpec("geo_image_relation", geo_image_relation),
    ToolSpec("geo_class_objects", geo_class_objects),
    ToolSpec("geo_class_areas", geo_class_areas),
    ToolSpec("geo_zonal_stats", geo_zonal_stats),
    ToolSpec("geo_reproject", geo_reproject),
    ToolSpec("geo_reproject_box", geo_reproject_box),
    ToolSpec("geo_threshold_area", geo_threshold_area),
]

__all__ = ["TOOLS"]
