"""Tiled change prediction at the CLI defaults equals whole-image inference, borders included."""

import numpy as np
import pytest
import torch

from eokit.change.model import build_canet
from eokit.change.predict import DEFAULT_OVERLAP, DEFAULT_TILE, predict_pair
from eokit.core.raster import read_raster, write_raster
from eokit.core.synth.change import change_pair


def _calibrated_model():
    """Random weights with BN statistics of real inputs and a sharp head: outputs that depend
    on context as a trained model's do (an untrained one is ~0.5 everywhere, hiding seams)."""
    torch.manual_seed(0)
    model = build_canet(["sim"], in_channels=6)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        for seed in range(4):
            pair = change_pair(96, seed=10 + seed, domain="sim_buildings")
            model(torch.from_numpy(pair.image_a[None]), torch.from_numpy(pair.image_b[None]))
        model.base.head.heads[0].weight.mul_(5)
    return model.eval()


@pytest.mark.slow
def test_defaults_match_whole_image_inside_and_at_the_borders(tmp_path):
    model = _calibrated_model()
    pair = change_pair(1000, seed=3, domain="sim_buildings")
    a = write_raster(tmp_path / "A.tif", pair.image_a, pair.grid)
    b = write_raster(tmp_path / "B.tif", pair.image_b, pair.grid)
    result = predict_pair(model, a, b, tmp_path / "out", domain="sim", progress=False,
                          report=False)
    tiled = read_raster(result["probability"]).data[0]
    with torch.no_grad():
        whole = torch.sigmoid(model(torch.from_numpy(pair.image_a[None]),
                                    torch.from_numpy(pair.image_b[None])))[0, 0].numpy()
    assert whole.std() > 0.1  # a model whose output varies, or the check proves nothing
    difference = np.abs(tiled - whole)
    border = np.zeros_like(difference, dtype=bool)
    border[:32], border[-32:], border[:, :32], border[:, -32:] = True, True, True, True
    assert difference[~border].max() <= 0.01
    assert difference[border].max() <= 0.01
    assert (DEFAULT_TILE, DEFAULT_OVERLAP) == (768, 320)


def test_tile_and_overlap_must_fit_the_models_stride(tmp_path):
    from eokit.core.errors import InputError

    model = build_canet(["sim"], in_channels=6).eval()
    pair = change_pair(64, seed=1, domain="sim_buildings")
    a = write_raster(tmp_path / "A.tif", pair.image_a, pair.grid)
    b = write_raster(tmp_path / "B.tif", pair.image_b, pair.grid)
    with pytest.raises(InputError, match="multiples of 32"):
        predict_pair(model, a, b, tmp_path / "out", domain="sim", tile=500, overlap=64)
    assert not (tmp_path / "out").exists()
