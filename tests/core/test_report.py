"""Tests for the HTML report builder."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eokit.core.errors import InputError
from eokit.core.report import (
    Report,
    SectionTimer,
    format_value,
    markdown_to_html,
    nice_scale_length,
    rgb_quicklook,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _embedded_pngs(document: str) -> list[bytes]:
    return [
        base64.b64decode(match)
        for match in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', document)
    ]


def _sample_report(tmp_path: Path) -> tuple[Report, Path]:
    rng = np.random.default_rng(0)
    image = rng.random((6, 120, 200)).astype(np.float32)
    input_file = tmp_path / "input.bin"
    input_file.write_bytes(b"eokit" * 100)
    report = Report("Scene <report> & friends", command="eokit demo --quick --seed 0")
    report.text("Intro with **bold**, `code` and <script>alert('x')</script>.")
    report.section("Maps", "Simulated *scene*.")
    report.image_map(
        rgb_quicklook(image),
        title="RGB quick-look",
        pixel_size_m=10.0,
        overlay=image[3] > 0.95,
        overlay_label="bright",
    )
    continuous = image[3].copy()
    continuous[:10] = np.nan
    report.image_map(
        continuous, title="NIR", pixel_size_m=10.0, colorbar_label="reflectance", cmap="magma"
    )
    report.image_map(
        rng.integers(0, 4, (120, 200)),
        title="Classes",
        pixel_size_m=10.0,
        classes=["water", "forest", "crop", "urban"],
    )
    report.section("Tables")
    report.table(
        [{f"a_rather_long_column_name_{index}": index * 1234.5 for index in range(30)}],
        caption="A very wide table",
    )
    report.table([{"name": "x" * 400, "value": 0.123456, "count": 123456}], caption="<b>cap</b>")
    report.metrics({"oa": 0.9, "iou": [0.5, 0.25, 0.125]}, caption="Metrics")
    report.text("unbroken_" * 60)
    report.provenance(seed=7, config={"tile": 256, "bands": np.arange(3)}, inputs=[input_file])
    return report, input_file


def test_format_value_is_readable() -> None:
    assert format_value(None) == "—"
    assert format_value(3) == "3"
    assert format_value(np.int64(1234567)) == "1,234,567"
    assert format_value(0.123456789) == "0.1235"
    assert format_value(np.float32(2.5)) == "2.5"
    assert format_value(12345.678) == "12,345.7"
    assert format_value(1.5e-7) == "1.500e-07"
    assert format_value(float("nan")) == "NaN"
    assert format_value(True) == "yes"
    assert format_value([0.5, 1, "a"]) == "[0.5, 1, a]"
    assert format_value(np.arange(20)).endswith(", …]")


def test_markdown_subset_escapes_html() -> None:
    rendered = markdown_to_html(
        "# Head\n\nSome **bold** and `a<b>`\n\n- one\n- two <i>\n\n"
        "[ok](https://example.org) [bad](javascript:alert(1))"
    )
    assert "<h3>Head</h3>" in rendered
    assert "<strong>bold</strong>" in rendered
    assert "<code>a&lt;b&gt;</code>" in rendered
    assert "<li>two &lt;i&gt;</li>" in rendered
    assert '<a href="https://example.org">ok</a>' in rendered
    assert "javascript" in rendered and 'href="javascript' not in rendered
    assert "<i>" not in rendered


def test_rgb_quicklook_stretches_and_orders_bands() -> None:
    image = np.zeros((4, 10, 10), dtype=np.float32)
    image[2] = np.linspace(0, 0.3, 100).reshape(10, 10)  # "red" band
    image[0, 0, 0] = np.nan
    rgb = rgb_quicklook(image)
    assert rgb.shape == (10, 10, 3) and rgb.dtype == np.float32
    assert 0.0 <= rgb.min() and rgb.max() <= 1.0
    assert rgb[..., 0].max() == pytest.approx(1.0) and rgb[..., 0].min() == 0.0
    assert np.all(rgb[..., 2] == 0.0)  # blue band 0 constant / NaN -> 0
    with pytest.raises(InputError, match="bands"):
        rgb_quicklook(image, bands=(5, 1, 0))
    with pytest.raises(InputError, match="image"):
        rgb_quicklook(np.zeros((2, 2, 2, 2)))


def test_nice_scale_length() -> None:
    assert nice_scale_length(1234.0) == 1000.0
    assert nice_scale_length(480.0) == 200.0
    assert nice_scale_length(5.0) == 5.0
    assert nice_scale_length(0.7) == pytest.approx(0.5)
    with pytest.raises(InputError):
        nice_scale_length(0.0)


def test_report_is_self_contained_escaped_and_complete(tmp_path: Path) -> None:
    report, input_file = _sample_report(tmp_path)
    path = report.write(tmp_path / "out" / "report.html")
    document = path.read_text(encoding="utf-8")
    pngs = _embedded_pngs(document)
    assert len(pngs) == 3 and all(png.startswith(PNG_SIGNATURE) for png in pngs)
    assert not re.search(r'(src|href)="(https?:)?//', document)  # nothing fetched from outside
    assert "<script>" not in document and "&lt;script&gt;" in document
    assert "Scene &lt;report&gt; &amp; friends" in document and "&lt;b&gt;cap&lt;/b&gt;" in document
    # The table of contents links to every section.
    anchors = re.findall(r'<li><a href="#([^"]+)"', document)
    assert len(anchors) == 3  # Maps, Tables, Provenance
    for anchor in anchors:
        assert f'id="{anchor}"' in document
    # Provenance: command, seed, config, versions, input file hash.
    assert "eokit demo --quick --seed 0" in document
    assert hashlib.sha256(input_file.read_bytes()).hexdigest() in document
    assert "tile: 256" in document and "torch" in document and "rasterio" in document
    assert "north up" in document and "120 px at 10 m" in document
    assert "(per class)" in document
    assert os.listdir(path.parent) == ["report.html"]  # no temp file left behind


def test_report_write_unwritable_raises_input_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="file"):
        Report("x").write(blocker / "report.html")


def test_image_map_rejects_bad_shapes() -> None:
    report = Report("x")
    with pytest.raises(InputError, match="array"):
        report.image_map(np.zeros((2, 4, 5, 6)), title="bad")
    with pytest.raises(InputError, match="overlay"):
        report.image_map(np.zeros((4, 5)), title="bad", overlay=np.zeros((5, 4), dtype=bool))
    with pytest.raises(InputError, match="pixel_size_m"):
        report.image_map(np.zeros((4, 5)), title="bad", pixel_size_m=-1.0)


def test_large_map_is_decimated() -> None:
    report = Report("x")
    report.image_map(np.random.default_rng(0).random((4000, 3000)), title="big", pixel_size_m=1.0)
    document = report.to_html()
    assert "Shown at 1/3 resolution" in document
    (png,) = _embedded_pngs(document)
    assert len(png) < 3_000_000


def test_section_timer_records_status_and_errors() -> None:
    report = Report("x")
    with SectionTimer(report, "good"):
        report.text("fine")
    timer = SectionTimer(report, "bad", swallow=True)
    with timer:
        raise ValueError("broken <thing>")
    assert isinstance(timer.failed, ValueError)
    with pytest.raises(RuntimeError), SectionTimer(report, "loud"):
        raise RuntimeError("not swallowed")
    good, bad, loud = report.sections
    assert good.status == "ok" and good.elapsed_s is not None
    assert bad.status == "failed" and loud.status == "failed"
    document = report.to_html()
    assert "ValueError: broken &lt;thing&gt;" in document
    assert document.count('class="badge failed"') == 4  # TOC + heading, two sections


CHECK_SCRIPT = """
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (img) { return !img.complete || img.naturalWidth === 0; });
  document.title = "RESULT" + JSON.stringify({
    images: images.length,
    broken: broken.length,
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth
  });
});
</script>
"""


@pytest.mark.browser
def test_report_renders_in_chromium(
    chromium: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    report, _ = _sample_report(tmp_path)
    page = report.write(tmp_path / "report.html")
    for width in (1280, 420):
        measured = chromium(page, CHECK_SCRIPT, tmp_path, width=width, hide_scrollbars=True)
        assert measured["images"] == 3
        assert measured["broken"] == 0
        assert measured["scrollWidth"] <= measured["innerWidth"], measured
    # The check itself can fail: a page that overflows is caught.
    wide = tmp_path / "wide.html"
    wide.write_text(
        '<html><body><div style="width:3000px">x</div><img src="missing.png"></body></html>'
    )
    measured = chromium(wide, CHECK_SCRIPT, tmp_path, width=800, hide_scrollbars=True)
    assert measured["scrollWidth"] > measured["innerWidth"]
    assert measured["broken"] == 1


def test_overlay_outline_lies_on_the_masked_pixels() -> None:
    from matplotlib.image import imread

    height, width = 100, 200
    mask = np.zeros((height, width), dtype=bool)
    mask[10:40, 120:180] = True
    report = Report("x")
    report.image_map(np.zeros((3, height, width)), title="", overlay=mask, overlay_color="#ff0000")
    (png,) = _embedded_pngs(report.to_html())
    pixels = imread(io.BytesIO(png))[..., :3]
    dark = pixels.max(axis=-1) < 0.5  # the black map (with the overlay on it), legend text
    map_rows = np.flatnonzero(dark.sum(axis=1) > 0.5 * dark.sum(axis=1).max())
    map_cols = np.flatnonzero(dark.sum(axis=0) > 0.5 * dark.sum(axis=0).max())
    top, bottom, left, right = map_rows[0], map_rows[-1], map_cols[0], map_cols[-1]
    scale_y, scale_x = (bottom - top + 1) / height, (right - left + 1) / width
    on_map = np.zeros(pixels.shape[:2], dtype=bool)
    on_map[top : bottom + 1, left : right + 1] = True  # not the legend beside it
    outline = np.argwhere((pixels[..., 0] > 0.6) & (pixels[..., 1] < 0.4) & on_map)
    assert outline.size
    rows = (outline[:, 0] - top) / scale_y
    cols = (outline[:, 1] - left) / scale_x
    assert 8 <= rows.min() and rows.max() <= 42, (rows.min(), rows.max())
    assert 118 <= cols.min() and cols.max() <= 182, (cols.min(), cols.max())


# ------------------------------------------------------------------- map layout and legends


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Figures rendered by the report, kept for inspection after their PNG is made."""
    from eokit.core import report as report_module

    figures: list[Any] = []
    original = report_module._figure_png

    def keep(fig: Any, dpi: int) -> tuple[bytes, int, int]:
        out = original(fig, dpi)
        figures.append(fig)
        return out

    monkeypatch.setattr(report_module, "_figure_png", keep)
    return figures


def _extent(artist: Any, fig: Any) -> Any:
    return artist.get_window_extent(fig.canvas.get_renderer())


def test_colour_bar_is_as_tall_as_the_map_and_clear_of_the_legend(drawn: list[Any]) -> None:
    values = np.random.default_rng(0).random((100, 300)).astype(np.float32)
    mask = np.zeros((100, 300), bool)
    mask[20:60, 100:200] = True
    Report("x").image_map(values, title="p", pixel_size_m=10.0, colorbar_label="probability",
                          overlay=mask, overlay_label="reference")
    fig = drawn[0]
    map_ax = fig.axes[0]
    (bar_ax,) = map_ax.child_axes
    renderer = fig.canvas.get_renderer()
    map_box, bar_box = map_ax.get_window_extent(renderer), bar_ax.get_window_extent(renderer)
    assert bar_box.height == pytest.approx(map_box.height, rel=0.02)
    assert bar_box.y0 == pytest.approx(map_box.y0, abs=2)
    legend_box = _extent(map_ax.get_legend(), fig)
    assert legend_box.x0 >= bar_ax.get_tightbbox(renderer).x1  # not on the colour bar's labels


def test_binary_map_gets_a_legend_not_a_colour_bar(drawn: list[Any]) -> None:
    binary = (np.arange(200)[None, :] > 80).repeat(50, 0).astype(np.float32)
    binary[0, 0] = np.nan
    Report("x").image_map(binary, title="b", pixel_size_m=10.0, cmap="gray", vmin=0, vmax=1,
                          binary_labels=("no change", "change"))
    fig = drawn[0]
    assert len(fig.axes) == 1 and not fig.axes[0].child_axes  # no colour bar
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["no change", "change", "no data"]


def test_binary_map_against_a_reference_is_keyed_tp_fp_fn(drawn: list[Any]) -> None:
    from matplotlib.image import imread

    predicted = np.zeros((60, 120), np.float32)
    predicted[:, 40:] = 1
    reference = np.zeros((60, 120), bool)
    reference[:, 80:] = True
    reference[:, :20] = True
    report = Report("x")
    report.image_map(predicted, title="b", cmap="gray", vmin=0, vmax=1, overlay=reference,
                     overlay_label="reference change")
    labels = [t.get_text() for t in drawn[0].axes[0].get_legend().get_texts()]
    assert [label[:3] for label in labels] == ["TP:", "FP:", "FN:", "TN:"]
    assert "reference change" in labels[0] and "(33.3%)" in labels[0]
    (png,) = _embedded_pngs(report.to_html())
    pixels = imread(io.BytesIO(png))[..., :3]
    box = _extent(drawn[0].axes[0], drawn[0])
    row = int(pixels.shape[0] - (box.y0 + box.y1) / 2)  # middle of the map, image rows downwards

    def colour_at(column_fraction: float) -> np.ndarray:
        return pixels[row, int(box.x0 + column_fraction * box.width)]

    assert colour_at(0.5) == pytest.approx((0.894, 0.102, 0.110), abs=0.02)  # FP red
    assert colour_at(0.08) == pytest.approx((0.216, 0.494, 0.722), abs=0.02)  # FN blue


def test_scale_bar_and_north_marker_lie_outside_the_map(drawn: list[Any]) -> None:
    Report("x").image_map(np.zeros((100, 200)), title="m", pixel_size_m=10.0)
    fig = drawn[0]
    ax = fig.axes[0]
    map_box = _extent(ax, fig)
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    (bar,) = [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]
    assert _extent(bar, fig).y1 <= map_box.y0 + 1
    (north,) = [t for t in ax.texts if "N" in t.get_text()]
    assert _extent(north, fig).y1 <= map_box.y0 + 1


def test_rgb_quicklook_keeps_grey_surfaces_grey() -> None:
    rng = np.random.default_rng(0)
    image = np.stack([0.03 + 0.25 * rng.random((50, 50)), 0.05 + 0.05 * rng.random((50, 50)),
                      0.04 + 0.02 * rng.random((50, 50))]).astype(np.float32)
    image[:, 20:25, :] = 0.12  # a road: the same reflectance in every band
    rgb = rgb_quicklook(image, bands=(0, 1, 2))
    road = rgb[22, 10]
    assert 0.05 < road[0] < 0.95
    assert road[0] == pytest.approx(road[1]) == pytest.approx(road[2])


def test_days_map_shows_dates_and_its_origin(drawn: list[Any]) -> None:
    days = np.linspace(0, 365, 100 * 100).reshape(100, 100).astype(np.float32)
    Report("x").image_map(days, title="d", cmap="plasma", vmin=0, vmax=365,
                          colorbar_label="days", time_origin="2021-03-01")
    (bar,) = drawn[0].axes[0].child_axes
    assert "2021-03-01" in bar.get_ylabel()
    drawn[0].canvas.draw()
    ticks = [t.get_text() for t in bar.get_yticklabels() if t.get_text()]
    assert ticks and all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", t) for t in ticks), ticks
    assert ticks[0] == "2021-03-01"
