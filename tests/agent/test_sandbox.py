import pytest

from eokit.agent.sandbox import Sandbox
from eokit.core.errors import InputError


@pytest.fixture
def box(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.tif").write_bytes(b"x")
    (root / "sub").mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text("s")
    (root / "link.tif").symlink_to(outside)
    return Sandbox.create([root], tmp_path / "out"), root, outside


def test_inside_ok(box):
    sb, root, _ = box
    assert sb.input_path("image", "a.tif") == root / "a.tif"
    assert sb.input_path("image", str(root / "a.tif")) == root / "a.tif"


@pytest.mark.parametrize("value,word", [("../secret.txt", "outside"), ("link.tif", "outside"),
                                        ("sub", "not a file"), ("missing.tif", "does not exist")])
def test_refused(box, value, word):
    sb, _, _ = box
    with pytest.raises(InputError, match=word):
        sb.input_path("image", value)


def test_absolute_outside(box):
    sb, _, outside = box
    with pytest.raises(InputError, match="outside"):
        sb.input_path("image", str(outside))


def test_output_rules(box):
    sb, _, _ = box
    p = sb.output_path("out", "run1/x.tif")
    assert p.is_relative_to(sb.out_root)
    with pytest.raises(InputError, match="outside"):
        sb.output_path("out", "../x.tif")
    p.parent.mkdir(parents=True)
    p.write_bytes(b"1")
    with pytest.raises(InputError, match="overwrite"):
        sb.output_path("out", "run1/x.tif")
    assert sb.output_path("out", "run1/x.tif", overwrite=True) == p
