"""Tests for ``eokit demo``: report, georeferenced outputs, failures shown and not hidden."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from eokit import demo
from eokit.core.raster import read_raster

TINY = demo.DemoSettings(scene_size=96, samples_per_class=50, tile=64, overlap=16)


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``eokit demo --quick`` run once (core only: capabilities test their own sections)."""
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, "CAPABILITIES", ())
        result = CliRunner().invoke(demo.demo_command, ["--quick", "-o", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.mark.slow
def test_demo_quick_writes_report_and_georeferenced_outputs(quick_demo: tuple[Path, str]) -> None:
    out, output = quick_demo
    report = out / "report.html"
    assert f"Report:  {report}" in output
    document = report.read_text(encoding="utf-8")
    for heading in ("Simulated scene", "Tiled inference round trip", "Run summary", "Provenance"):
        assert heading in document
    assert 'class="badge failed"' not in document
    assert len(re.findall(r'src="data:image/png;base64,', document)) >= 5
    tifs = sorted(out.rglob("*.tif"))
    assert tifs and all(str(path) in output for path in tifs)
    assert not list(out.rglob(".*partial*"))
    prediction = out / "core" / "tiling" / "landcover_probability.tif"
    assert prediction in tifs
    for path in tifs:
        raster = read_raster(path)
        assert raster.grid.crs is not None and raster.grid.crs.is_projected
        assert raster.grid.pixel_size_m == pytest.approx(10.0)
    probabilities = read_raster(prediction).data
    assert probabilities.shape[1:] == (256, 256)
    assert abs(float(probabilities.sum(axis=0).mean()) - 1.0) < 1e-3
    # The round-trip difference is reported as a number, and it is small.
    cell = r"</td><td class=\"num\">([^<]+)<"
    match = re.search(r"max \|tiled − whole\| \(≥ \d+ px from the image edge\)" + cell, document)
    assert match and float(match.group(1)) < 1e-4


def _install_fake_capability(
    monkeypatch: pytest.MonkeyPatch, name: str, add_demo_section: object
) -> None:
    package = types.ModuleType(f"eokit.{name}")
    module = types.ModuleType(f"eokit.{name}.demo")
    module.add_demo_section = add_demo_section  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, f"eokit.{name}", package)
    monkeypatch.setitem(sys.modules, f"eokit.{name}.demo", module)


def test_failing_capability_is_reported_and_sets_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Path, bool, int]] = []

    def good(report: object, out_dir: Path, *, quick: bool, seed: int) -> None:
        calls.append((out_dir, quick, seed))
        report.section("Fake good", "worked")  # type: ignore[attr-defined]

    def bad(report: object, out_dir: Path, *, quick: bool, seed: int) -> None:
        report.section("Fake bad")  # type: ignore[attr-defined]
        raise ValueError("simulated <failure>")

    _install_fake_capability(monkeypatch, "fakegood", good)
    _install_fake_capability(monkeypatch, "fakebad", bad)
    monkeypatch.setattr(demo, "_find_capability", lambda name: name.startswith("fake"))
    result = demo.run_demo(
        tmp_path, quick=True, seed=5, capabilities=("fakebad", "missing", "fakegood"), settings=TINY
    )
    assert calls == [(tmp_path, True, 5)]  # the failure did not stop later sections
    assert list(result.failures) == ["fakebad"]
    assert "simulated <failure>" in result.failures["fakebad"]
    assert {"fakebad", "fakegood"} <= set(result.timings_s)
    document = result.report.read_text(encoding="utf-8")
    assert "ValueError: simulated &lt;failure&gt;" in document
    assert "Not installed in this build" in document and "missing" in document
    sections = re.findall(r'<section id="[^"]+"><h2>(.*?)</h2>', document)
    bad_heading = next(s for s in sections if s.startswith("Fake bad"))
    good_heading = next(s for s in sections if s.startswith("Fake good"))
    assert "badge failed" in bad_heading and "badge ok" in good_heading
    assert re.search(r'class="time">[0-9.]+ s', good_heading)

    # Through the command: the same failure gives a non-zero exit code and a message.
    monkeypatch.setattr(demo, "CAPABILITIES", ("fakebad",))
    monkeypatch.setattr(demo.DemoSettings, "for_mode", classmethod(lambda cls, quick: TINY))
    cli = CliRunner().invoke(demo.demo_command, ["--quick", "-o", str(tmp_path / "again")])
    assert cli.exit_code == 1
    assert "FAILED fakebad: ValueError" in cli.output
    assert (tmp_path / "again" / "report.html").exists()


CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  document.title = "RESULT" + JSON.stringify({
    images: images.length,
    broken: images.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length,
    overflow: document.documentElement.scrollWidth > window.innerWidth
  });
});
</script>"""


@pytest.mark.slow
@pytest.mark.browser
def test_demo_report_opens_in_chromium(
    chromium: Callable[..., dict[str, Any]], quick_demo: tuple[Path, str], tmp_path: Path
) -> None:
    out, _ = quick_demo
    document = (out / "report.html").read_text(encoding="utf-8")
    measured = chromium(out / "report.html", CHECK_SCRIPT, tmp_path)
    expected = len(re.findall(r'<img src="data:image/png;base64,', document))
    assert measured == {"images": expected, "broken": 0, "overflow": False}
