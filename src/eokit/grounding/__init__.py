"""Object detection and visual grounding (referring expressions) on remote-sensing images."""

from __future__ import annotations
