"""`eokit predict`: a user's TorchScript or ONNX model over a GeoTIFF, streamed and tiled."""

import importlib.util

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from eokit.core.raster import read_raster, write_raster
from eokit.core.synth.scene import generate_scene


@pytest.fixture
def scene(tmp_path):
    scene = generate_scene(96, seed=0)
    return write_raster(tmp_path / "scene.tif", scene.reflectance, scene.grid), scene


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_torchscript_model_writes_a_cog_on_the_input_grid(tmp_path, scene, run_cli):
    path, sim = scene
    net = _Net().eval()
    model = tmp_path / "net.pt"
    torch.jit.script(net).save(str(model))
    out = tmp_path / "out.tif"
    code, stdout, err = run_cli(["predict", "--model", str(model), "--in", str(path),
                                 "-o", str(out), "--bands", "3,2,1", "--scale", "2",
                                 "--tile", "64", "--overlap", "32", "--activation", "softmax"])
    assert code == 0, err
    result = read_raster(out)
    assert result.grid.same_as(sim.grid) and result.data.shape == (4, 96, 96)
    with torch.no_grad():
        whole = torch.softmax(net(torch.from_numpy(sim.reflectance[[2, 1, 0]] * 2)[None]), 1)[0]
    assert np.abs(result.data - whole.numpy()).max() < 1e-4  # receptive field 1 px: exact
    with rasterio.open(out) as src:
        assert src.overviews(1) or src.width <= 512  # tiled COG layout
    assert (tmp_path / "out.html").is_file() and "report:" in stdout
    code, _, err = run_cli(["predict", "--model", str(model), "--in", str(path), "-o",
                            str(tmp_path / "cls.tif"), "--bands", "3,2,1", "--scale", "2",
                            "--argmax",
                            "--classes", "a,b,c,d", "--tile", "64", "--overlap", "32"])
    assert code == 0, err
    classes = read_raster(tmp_path / "cls.tif").data[0]
    assert classes.dtype == np.uint8 and np.array_equal(classes, whole.argmax(0).numpy())
    with rasterio.open(tmp_path / "cls.tif") as src:
        assert src.tags()["CLASS_2"] == "c" and src.descriptions == ("class",)


def test_bad_models_and_options_are_one_line(tmp_path, scene, run_cli):
    path, _ = scene
    pickle_file = tmp_path / "pickled.pt"
    torch.save(_Net(), pickle_file)  # a plain pickle: never loaded
    base = ["--in", str(path), "-o", str(tmp_path / "o.tif"), "--bands", "3,2,1"]
    for model, message in ((pickle_file, "not a TorchScript archive"),
                           (tmp_path / "missing.pt", "model file not found")):
        code, _, err = run_cli(["predict", "--model", str(model), *base])
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    scripted = tmp_path / "net.pt"
    torch.jit.script(_Net()).save(str(scripted))
    code, _, err = run_cli(["predict", "--model", str(scripted), *base, "--mean", "1,2"])
    assert code == 2 and "mean" in err
    code, _, err = run_cli(["predict", "--model", str(scripted), "--in", str(path), "-o",
                            str(tmp_path / "o.tif")])  # 6 bands into a 3-band conv
    assert code == 2 and "Traceback" not in err
    assert not (tmp_path / "o.tif").exists()


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None
                    or importlib.util.find_spec("onnx") is None, reason="onnxruntime absent")
def test_onnx_model(tmp_path, scene, run_cli):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path, sim = scene
    weight = np.random.default_rng(0).normal(size=(2, 3, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 2, "h", "w"])],
        [numpy_helper.from_array(weight, "w")])
    model = tmp_path / "net.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model)
    out = tmp_path / "onnx.tif"
    code, _, err = run_cli(["predict", "--model", str(model), "--in", str(path), "-o", str(out),
                            "--bands", "1,2,3", "--tile", "64", "--overlap", "32"])
    assert code == 0, err
    expected = np.einsum("oc,chw->ohw", weight[:, :, 0, 0], sim.reflectance[:3])
    assert np.abs(read_raster(out).data - expected).max() < 1e-4


def test_torch_export_archive(tmp_path, scene, run_cli):
    path, sim = scene
    net = _Net().eval()
    auto = torch.export.Dim.AUTO
    program = torch.export.export(net, (torch.rand(2, 3, 64, 64),),
                                  dynamic_shapes={"x": {0: auto, 2: auto, 3: auto}})
    model = tmp_path / "net.pt2"
    torch.export.save(program, str(model))
    out = tmp_path / "exp.tif"
    code, _, err = run_cli(["predict", "--model", str(model), "--in", str(path), "-o", str(out),
                            "--bands", "1,2,3", "--tile", "64", "--overlap", "32"])
    assert code == 0, err
    with torch.no_grad():
        whole = net(torch.from_numpy(sim.reflectance[:3])[None])[0].numpy()
    assert np.abs(read_raster(out).data - whole).max() < 1e-4
