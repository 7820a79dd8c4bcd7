"""Tiny image/label folders in the real layouts, written from the simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def xbd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """xBD layout (images/ + masks/, RGB PNG and 0/255 masks), three 64 px scenes."""
    from eokit.noisy.data import simulated_buildings

    root = tmp_path_factory.mktemp("xbd")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for item in simulated_buildings(3, 128, seed=0):
        rgb = (item.image[:, :64, :64].transpose(1, 2, 0) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(root / "images" / f"{item.key}.png")
        assert item.clean is not None
        mask = (item.clean[:64, :64] * 255).astype(np.uint8)
        Image.fromarray(mask).save(root / "masks" / f"{item.key}.png")
    return root
