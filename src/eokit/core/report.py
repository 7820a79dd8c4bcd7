"""One self-contained HTML report per run: sections, tables, maps, plots and provenance.

A :class:`Report` collects items section by section and writes a single HTML file whose
figures are embedded PNGs (matplotlib, Agg canvas), so the file can be mailed, archived or
opened offline. All user text is HTML-escaped; text accepts a small, safe Markdown subset
(paragraphs, ``- `` lists, ``#`` headings, ``**bold**``, ``*italic*``, ```code```, links).

Example:
    >>> report = Report("Change detection", command="eokit change predict ...")
    >>> report.section("Scene", "Simulated 256 x 256 px scene at 10 m.")
    >>> report.image_map(rgb_quicklook(image), title="RGB", pixel_size_m=10.0)
    >>> report.table([{"class": "water", "iou": 0.91}], caption="Per-class IoU")
    >>> report.provenance(seed=0, config={"tile": 512}, inputs=["scene.tif"])
    >>> report.write("out/report.html")
"""

from __future__ import annotations

import base64
import hashlib
import html
import importlib.metadata
import io
import json
import logging
import math
import platform
import re
import sys
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eokit.core.errors import InputError
from eokit.core.raster import atomic_write

if TYPE_CHECKING:
    from collections.abc import Iterator

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

#: Longest side (pixels) an array is decimated to before it is drawn; keeps reports small.
MAX_MAP_PIXELS = 1600
#: Input files up to this size get a sha256 in the provenance section.
HASH_LIMIT_BYTES = 64 * 1024 * 1024
#: Packages whose versions the provenance section lists (when installed).
VERSION_PACKAGES = ("torch", "lightning", "rasterio", "numpy", "matplotlib")


# --------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------


def format_value(value: Any, *, max_items: int = 12) -> str:
    """Format a table cell: numbers readable (4 significant digits), sequences shortened.

    Args:
        value: Any value (numbers, numpy scalars/arrays, sequences, paths, None...).
        max_items: Sequences longer than this are shortened with an ellipsis.

    Returns:
        Plain (not yet HTML-escaped) text.
    """
    if value is None:
        return "—"
    if isinstance(value, bool | np.bool_):
        return "yes" if bool(value) else "no"
    if isinstance(value, int | np.integer):
        number = int(value)
        return f"{number:,}" if abs(number) >= 10_000 else str(number)
    if isinstance(value, float | np.floating):
        return _format_float(float(value))
    if isinstance(value, str | Path):
        return str(value)
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return format_value(value.item())
        value = value.ravel().tolist()
    if isinstance(value, Mapping):
        parts = [f"{key}: {format_value(item)}" for key, item in list(value.items())[:max_items]]
        suffix = ", …" if len(value) > max_items else ""
        return "{" + ", ".join(parts) + suffix + "}"
    if isinstance(value, Sequence | set | frozenset):
        items = list(value)
        shown = ", ".join(format_value(item) for item in items[:max_items])
        return f"[{shown}{', …' if len(items) > max_items else ''}]"
    if hasattr(value, "item") and callable(value.item):
        try:
            return format_value(value.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)


def _format_float(number: float) -> str:
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "∞" if number > 0 else "−∞"
    if number == 0:
        return "0"
    magnitude = abs(number)
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{number:.3e}"
    if magnitude >= 1000:
        return f"{number:,.1f}"
    return f"{number:.4g}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


_INLINE_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")
_LINK = re.compile(r"\[([^\]]+)\]\(((?:https?://|#|\./|\.\./)?[^)\s\"'<>]*)\)")


def _inline(text: str) -> str:
    """Escape ``text`` and apply the inline Markdown subset (code, bold, italic, links)."""
    escaped = html.escape(text, quote=True)
    codes: list[str] = []

    def keep_code(match: re.Match[str]) -> str:
        codes.append(f"<code>{match.group(1)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    escaped = _INLINE_CODE.sub(keep_code, escaped)
    escaped = _BOLD.sub(r"<strong>\1</strong>", escaped)
    escaped = _ITALIC.sub(r"<em>\1</em>", escaped)

    def link(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) and not re.match(r"^https?:", target):
            return match.group(0)  # javascript:, data: ... are left as plain text
        return f'<a href="{target}">{label}</a>'

    escaped = _LINK.sub(link, escaped)
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], escaped)


def markdown_to_html(text: str) -> str:
    """Render a safe Markdown subset to HTML (all raw HTML in ``text`` is escaped).

    Supports blank-line separated paragraphs, ``#``/``##``/``###`` headings, ``- ``/``* ``
    bullet lists, fenced code blocks (```), and inline code, bold, italic and links.
    """
    out: list[str] = []
    lines = text.strip("\n").splitlines()
    paragraph: list[str] = []
    bullets: list[str] = []
    code: list[str] | None = None

    def flush() -> None:
        if paragraph:
            out.append("<p>" + _inline(" ".join(line.strip() for line in paragraph)) + "</p>")
            paragraph.clear()
        if bullets:
            out.append("<ul>" + "".join(f"<li>{_inline(b)}</li>" for b in bullets) + "</ul>")
            bullets.clear()

    for line in lines:
        stripped = line.strip()
        if code is not None:
            if stripped.startswith("```"):
                out.append("<pre>" + html.escape("\n".join(code)) + "</pre>")
                code = None
            else:
                code.append(line)
            continue
        if stripped.startswith("```"):
            flush()
            code = []
        elif not stripped:
            flush()
        elif heading := re.match(r"^(#{1,3})\s+(.*)$", stripped):
            flush()
            level = len(heading.group(1)) + 2  # h3..h5: h1/h2 belong to the report itself
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif bullet := re.match(r"^[-*]\s+(.*)$", stripped):
            if paragraph:
                flush()
            bullets.append(bullet.group(1))
        elif bullets and line.startswith((" ", "\t")):
            bullets[-1] += " " + stripped
        else:
            if bullets:
                flush()
            paragraph.append(stripped)
    if code is not None:
        out.append("<pre>" + html.escape("\n".join(code)) + "</pre>")
    flush()
    return "\n".join(out)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:40] or "section"


# --------------------------------------------------------------------------------------------
# Arrays -> pictures
# --------------------------------------------------------------------------------------------


def rgb_quicklook(
    image: np.ndarray,
    bands: Sequence[int] = (2, 1, 0),
    percentiles: tuple[float, float] = (2, 98),
) -> np.ndarray:
    """Contrast-stretched RGB composite of a multi-band image, for display.

    The three chosen bands are stretched jointly: one linear stretch between the low/high
    percentiles of all three together (finite values only, on a subsample for large images),
    clipped to 0..1, so a grey surface (equal values in every band, e.g. a road) stays grey; a
    stretch per band would tint it. Non-finite pixels become 0 (black).

    Args:
        image: (C, H, W) array, any numeric dtype (e.g. reflectance B,G,R,NIR,... 0–1).
        bands: Indices of the bands shown as red, green, blue (default: B,G,R order -> 2,1,0).
            A single-band image may be shown as grey with ``bands=(0, 0, 0)``.
        percentiles: Low and high percentile of the stretch.

    Returns:
        (H, W, 3) float32 array in 0..1.

    Raises:
        InputError: if ``image`` is not (C, H, W) or a band index is out of range.
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise InputError(f"expected a (C, H, W) array, got shape {array.shape}", parameter="image")
    if len(bands) != 3:
        raise InputError(f"need three band indices, got {list(bands)}", parameter="bands")
    channels = array.shape[0]
    for band in bands:
        if not -channels <= int(band) < channels:
            raise InputError(
                f"band index {band} out of range for a {channels}-band image", parameter="bands"
            )
    low_pct, high_pct = percentiles
    if not 0 <= low_pct < high_pct <= 100:
        raise InputError(f"need 0 <= low < high <= 100, got {percentiles}", parameter="percentiles")
    height, width = array.shape[1:]
    step = max(1, int(math.sqrt(height * width / 250_000)))
    out = np.zeros((height, width, 3), dtype=np.float32)
    channels_shown = [array[int(band)].astype(np.float32) for band in bands]
    samples = [c[::step, ::step] for c in channels_shown]
    sample = np.concatenate([c[np.isfinite(c)] for c in samples])
    if sample.size == 0:
        return out
    low, high = np.percentile(sample, [low_pct, high_pct])
    scale = float(high - low) if high > low else 1.0
    for position, channel in enumerate(channels_shown):
        stretched = (channel - float(low)) / scale
        stretched[~np.isfinite(channel)] = 0.0
        out[..., position] = np.clip(stretched, 0.0, 1.0)
    return out


def _decimation_step(height: int, width: int) -> int:
    return max(1, math.ceil(max(height, width) / MAX_MAP_PIXELS))


def _block_mean(array: np.ndarray, step: int) -> np.ndarray:
    """Mean over step x step blocks of the last two axes, ignoring NaN (continuous data)."""
    if step == 1:
        return array
    height, width = array.shape[-2:]
    h, w = height // step * step, width // step * step
    cropped = array[..., :h, :w].astype(np.float32)
    shape = (*cropped.shape[:-2], h // step, step, w // step, step)
    blocks = cropped.reshape(shape)
    with np.errstate(invalid="ignore"), _quiet_nan_warnings():
        return np.asarray(np.nanmean(blocks, axis=(-3, -1)))


@contextmanager
def _quiet_nan_warnings() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        yield


def nice_scale_length(max_length_m: float) -> float:
    """Largest 1, 2 or 5 x 10^k metres not exceeding ``max_length_m`` (scale-bar length)."""
    if not max_length_m > 0 or not math.isfinite(max_length_m):
        raise InputError(f"must be a positive length, got {max_length_m}", parameter="length")
    exponent = math.floor(math.log10(max_length_m))
    for mantissa in (5, 2, 1):
        candidate = mantissa * 10.0**exponent
        if candidate <= max_length_m * (1 + 1e-9):
            return candidate
    return 10.0**exponent  # pragma: no cover - loop always returns


def _format_length(metres: float) -> str:
    if metres >= 1000:
        km = metres / 1000
        return f"{km:g} km"
    if metres >= 1:
        return f"{metres:g} m"
    return f"{metres * 100:g} cm"


def _new_figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _figure_png(fig: Figure, dpi: int) -> tuple[bytes, int, int]:
    """Render ``fig`` to PNG bytes with the Agg canvas; returns (png, width_px, height_px)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        # A pyplot figure on another backend: render with Agg without touching the backend.
        FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        plt.close(fig)
    png = buffer.getvalue()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    return png, width, height


def _add_scale_bar(ax: Axes, width_px: int, pixel_size_m: float, *, north_arrow: bool) -> None:
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    # Scale bar and north marker sit under the map, outside it: a box on the map hides data.
    length_m = nice_scale_length(0.25 * width_px * pixel_size_m)
    bar = AnchoredSizeBar(
        ax.transData,
        length_m / pixel_size_m,
        _format_length(length_m),
        loc="upper right",
        bbox_to_anchor=(1.0, -0.01),
        bbox_transform=ax.transAxes,
        pad=0.1,
        borderpad=0.0,
        sep=3,
        color="black",
        frameon=False,
        size_vertical=max(1.0, 0.008 * width_px),
    )
    ax.add_artist(bar)
    if not north_arrow:
        return
    ax.text(
        0.0,
        -0.015,
        "▲ N (north up)",
        transform=ax.transAxes,
        ha="left",
        va="top",
        fontsize=9,
        fontweight="bold",
        color="black",
    )


def _is_binary(data: np.ndarray) -> bool:
    """True for a single-band array whose finite values are only 0 and 1 (at least one)."""
    if data.ndim != 2 or data.dtype == np.bool_:
        return data.ndim == 2
    values = np.asarray(data)
    if np.issubdtype(values.dtype, np.floating):
        values = values[np.isfinite(values)]
    return bool(values.size) and bool(np.isin(values, (0, 1)).all())


#: Agreement map colours: true negative, false positive, false negative, true positive.
AGREEMENT_COLOURS = ("#1a1a1a", "#e41a1c", "#377eb8", "#f7f7f7")


def _draw_agreement(
    ax: Axes,
    predicted: np.ndarray,
    reference: np.ndarray,
    extent: tuple[float, float, float, float],
    *,
    positive: str,
    reference_name: str,
) -> list[Any]:
    """Draw TP/FP/FN/TN of a binary map against a boolean reference; returns the legend key."""
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    values = np.asarray(predicted, dtype=np.float32)
    missing = np.isnan(values)
    mapped = np.nan_to_num(values) > 0.5
    code = mapped.astype(np.int8) + 2 * reference.astype(np.int8)  # 0 TN, 1 FP, 2 FN, 3 TP
    shown = np.ma.masked_where(missing, code)
    colormap = ListedColormap(list(AGREEMENT_COLOURS)).with_extremes(bad=(0.85, 0.85, 0.85, 1.0))
    ax.imshow(
        shown, cmap=colormap, norm=BoundaryNorm(np.arange(-0.5, 4), 4), extent=extent,
        interpolation="nearest",
    )
    names = (
        "TN: neither",
        f"FP: {positive}, not {reference_name}",
        f"FN: {reference_name}, not {positive}",
        f"TP: {positive} and {reference_name}",
    )
    order = (3, 1, 2, 0)
    handles = [
        Patch(
            facecolor=AGREEMENT_COLOURS[i],
            edgecolor="0.3",
            label=f"{names[i]} ({float((code[~missing] == i).mean()):.1%})",
        )
        for i in order
    ]
    if missing.any():
        handles.append(Patch(facecolor=(0.85, 0.85, 0.85), edgecolor="0.3", label="no data"))
    return handles


class _DateFromDays:
    """Colour-bar tick formatter: days after an origin shown as calendar dates."""

    def __init__(self, origin: np.datetime64) -> None:
        self.origin = origin

    def __call__(self, value: float, position: Any = None) -> str:
        if not math.isfinite(value):
            return ""
        return str(self.origin + np.timedelta64(int(round(value)), "D"))


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


@dataclass
class Section:
    """A report section; ``status`` ("ok", "failed", "skipped") and ``elapsed_s`` go in the TOC."""

    title: str
    anchor: str
    items: list[str] = field(default_factory=list)
    status: str | None = None
    elapsed_s: float | None = None


class Report:
    """Collects sections, tables, maps and plots; writes one self-contained HTML file.

    Items are added to the current section (the one opened last by :meth:`section`); items
    added before any section go to an untitled introduction. Figures are rendered to PNG as
    they are added, so memory holds compressed pictures, not arrays.

    Args:
        title: Report title (escaped).
        command: Command line that produced the report (default: ``sys.argv``).
    """

    def __init__(self, title: str, *, command: str | None = None) -> None:
        self.title = str(title)
        self.command = command if command is not None else " ".join(sys.argv)
        self.created = datetime.now(UTC)
        self._intro = Section(title="", anchor="intro")
        self.sections: list[Section] = []
        self._current = self._intro
        self._provenance_html: str | None = None
        self._figure_count = 0

    # -- structure --------------------------------------------------------------------------

    @property
    def current(self) -> Section:
        """The section new items go to."""
        return self._current

    def section(self, title: str, text: str | None = None) -> Section:
        """Start a new section; subsequent items go in it.

        Args:
            title: Section heading (also listed in the table of contents).
            text: Optional introductory text (Markdown subset).

        Returns:
            The new :class:`Section` (set ``status``/``elapsed_s`` on it to show them in the TOC).
        """
        anchor = f"s{len(self.sections) + 1}-{_slug(str(title))}"
        self._current = Section(title=str(title), anchor=anchor)
        self.sections.append(self._current)
        if text:
            self.text(text)
        return self._current

    def _add(self, fragment: str) -> None:
        self._current.items.append(fragment)

    # -- content ----------------------------------------------------------------------------

    def text(self, markdown_or_plain: str) -> None:
        """Add text: plain or a small Markdown subset; raw HTML is shown escaped, never run."""
        self._add(f'<div class="text">{markdown_to_html(str(markdown_or_plain))}</div>')

    def error(self, message: str, details: str | BaseException | None = None) -> None:
        """Add a visible error box (e.g. a failed step) with optional traceback details."""
        body = f'<div class="error"><strong>Failed:</strong> {html.escape(str(message))}'
        if isinstance(details, BaseException):
            details = "".join(traceback.format_exception(details))
        if details:
            body += (
                f"<details><summary>Details</summary><pre>{html.escape(details)}</pre></details>"
            )
        self._add(body + "</div>")

    def table(self, rows: Sequence[Mapping[str, Any]], caption: str | None = None) -> None:
        """Add a table: one row per dict; columns are the union of keys in first-seen order.

        Numbers are right-aligned and formatted with :func:`format_value`; missing cells show "—".
        """
        self._add(_table_html(list(rows), caption))

    def metrics(self, values: Mapping[str, Any], caption: str | None = None) -> None:
        """Add a metric/value table; per-class lists of equal length get their own table.

        Args:
            values: e.g. the dict of :meth:`eokit.core.metrics.ConfusionMatrix.compute`.
            caption: Table caption.
        """
        scalars: list[dict[str, Any]] = []
        per_item: dict[str, list[Any]] = {}
        for key, value in values.items():
            sequence = value.tolist() if isinstance(value, np.ndarray) else value
            if isinstance(sequence, list | tuple) and len(sequence) > 1:
                per_item[str(key)] = list(sequence)
            else:
                scalars.append({"metric": str(key), "value": value})
        if scalars:
            self.table(scalars, caption=caption)
        lengths = {len(items) for items in per_item.values()}
        if per_item and len(lengths) == 1:
            count = lengths.pop()
            rows = [
                {"#": index, **{key: items[index] for key, items in per_item.items()}}
                for index in range(count)
            ]
            self.table(rows, caption=(f"{caption} (per class)" if caption else "Per class"))
        elif per_item:
            self.table(
                [{"metric": key, "value": items} for key, items in per_item.items()],
                caption=caption if not scalars else None,
            )

    def figure(self, fig: Figure, caption: str | None = None, *, dpi: int = 100) -> None:
        """Add a matplotlib figure as an embedded PNG (the figure is closed afterwards)."""
        png, width, height = _figure_png(fig, dpi)
        self._add_png(png, width, height, caption)

    def _add_png(self, png: bytes, width: int, height: int, caption: str | None) -> None:
        self._figure_count += 1
        encoded = base64.b64encode(png).decode("ascii")
        alt = html.escape(caption or f"Figure {self._figure_count}", quote=True)
        fragment = (
            f'<figure><img src="data:image/png;base64,{encoded}" alt="{alt}" '
            f'width="{width}" height="{height}">'
        )
        if caption:
            fragment += f"<figcaption>{_inline(caption)}</figcaption>"
        self._add(fragment + "</figure>")

    def image_map(
        self,
        array: np.ndarray,
        *,
        title: str,
        pixel_size_m: float | None = None,
        cmap: str = "viridis",
        vmin: float | None = None,
        vmax: float | None = None,
        colorbar_label: str | None = None,
        overlay: np.ndarray | None = None,
        caption: str | None = None,
        classes: Sequence[str] | None = None,
        class_colors: Sequence[Any] | None = None,
        overlay_label: str | None = None,
        overlay_color: str = "#ff2020",
        north_up: bool = True,
        binary_labels: tuple[str, str] = ("0", "1"),
        time_origin: Any = None,
    ) -> None:
        """Add a map: a raster drawn north-up, with colour bar, scale bar and overlay.

        A single-band map whose values are only 0 and 1 (and NaN) is drawn as two categories with
        a legend (``binary_labels``), not a colour bar; with a boolean ``overlay`` (a reference)
        it becomes an agreement map: true/false positives, false/true negatives, with a key.

        Args:
            array: (H, W) values (NaN = no data, shown grey) or (3, H, W) / (H, W, 3) RGB in 0..1
                (e.g. from :func:`rgb_quicklook`; uint8 RGB is divided by 255).
            title: Map title.
            pixel_size_m: Pixel size in metres; when given a scale bar and north arrow are drawn.
            cmap: Colormap of single-band maps.
            vmin: Lower colour limit (default: 2nd percentile).
            vmax: Upper colour limit (default: 98th percentile).
            colorbar_label: Label of the colour bar (quantity and unit).
            overlay: (H, W) bool mask (red fill + outline) or int labels (0 = none) drawn on top.
            caption: Caption under the map.
            classes: Class names for a categorical (H, W) map of class ids; draws a legend.
            class_colors: One matplotlib colour per class (default: tab10/tab20).
            overlay_label: Legend entry for a boolean overlay.
            overlay_color: Colour of a boolean overlay (outline, and fill at 25 % opacity).
            north_up: Rows run north to south (true for grids without rotation); draws "N" arrow.
            binary_labels: Legend names of the values 0 and 1 of a binary map.
            time_origin: Date (anything ``numpy.datetime64`` takes) that value 0 of a map of
                days stands for: the colour bar then shows calendar dates and names the origin.

        Raises:
            InputError: if the array or overlay shape is wrong.
        """
        from matplotlib import colormaps
        from matplotlib.colors import BoundaryNorm, ListedColormap, to_rgba
        from matplotlib.patches import Patch

        data = np.asarray(array)
        is_rgb = data.ndim == 3 and (data.shape[0] == 3 or data.shape[-1] == 3)
        if data.ndim == 3 and data.shape[0] == 1:
            data, is_rgb = data[0], False
        if not (data.ndim == 2 or is_rgb):
            raise InputError(
                f"expected (H, W) or (3, H, W) array, got shape {data.shape}", parameter="array"
            )
        if is_rgb and data.shape[0] == 3:
            data = np.moveaxis(data, 0, -1)  # channels-first is the convention; (H, W, 3) also ok
        height, width = data.shape[:2]
        if height == 0 or width == 0:
            raise InputError("empty array", parameter="array")
        if pixel_size_m is not None and not (pixel_size_m > 0 and math.isfinite(pixel_size_m)):
            raise InputError(f"must be positive, got {pixel_size_m}", parameter="pixel_size_m")
        step = _decimation_step(height, width)
        extent = (0.0, float(width), float(height), 0.0)

        aspect = height / width
        fig_width = 8.0
        fig = _new_figure(fig_width, max(2.5, min(fig_width * aspect, 9.0)) + 0.5)
        ax = fig.add_subplot()
        legend_handles: list[Any] = []
        colorbar_axes: Any = None
        binary = not is_rgb and classes is None and _is_binary(data)
        agreement = (
            binary and overlay is not None and np.asarray(overlay).dtype == np.bool_
        )
        if agreement:
            reference = np.asarray(overlay)
            if reference.shape != (height, width):
                raise InputError(
                    f"overlay shape {reference.shape} differs from the map's {(height, width)}",
                    parameter="overlay",
                )
            legend_handles = _draw_agreement(
                ax, data[::step, ::step], reference[::step, ::step], extent,
                positive="mapped" if tuple(binary_labels) == ("0", "1") else binary_labels[1],
                reference_name=overlay_label or "overlay",
            )
            overlay = None
        elif binary:
            scalar = colormaps[cmap]
            colors = [scalar(0.0), scalar(1.0)]
            shown = data[::step, ::step].astype(np.float32)
            colormap = ListedColormap(colors).with_extremes(bad=(0.85, 0.85, 0.85, 1.0))
            ax.imshow(
                np.ma.masked_invalid(shown),
                cmap=colormap,
                norm=BoundaryNorm([-0.5, 0.5, 1.5], 2),
                extent=extent,
                interpolation="nearest",
            )
            legend_handles = [
                Patch(facecolor=color, edgecolor="0.3", label=str(name))
                for color, name in zip(colors, binary_labels, strict=True)
            ]
            if np.isnan(shown).any():
                legend_handles.append(
                    Patch(facecolor=(0.85, 0.85, 0.85), edgecolor="0.3", label="no data")
                )
        elif is_rgb:
            rgb = data.astype(np.float32)
            if data.dtype == np.uint8:
                rgb = rgb / 255.0
            elif np.nanmax(rgb) > 1.0 or np.nanmin(rgb) < 0.0:
                rgb = rgb_quicklook(np.moveaxis(rgb, -1, 0), bands=(0, 1, 2))
            rgb = np.moveaxis(_block_mean(np.moveaxis(rgb, -1, 0), step), 0, -1)
            ax.imshow(np.nan_to_num(np.clip(rgb, 0, 1)), extent=extent, interpolation="nearest")
        elif classes is not None:
            count = len(classes)
            if class_colors is None:
                base = colormaps["tab10" if count <= 10 else "tab20"]
                class_colors = [base(index % base.N) for index in range(count)]
            if len(class_colors) != count:
                raise InputError(
                    f"{len(class_colors)} colours for {count} classes", parameter="class_colors"
                )
            colormap = ListedColormap([to_rgba(color) for color in class_colors]).with_extremes(
                bad=(0.85, 0.85, 0.85, 1.0)
            )
            labels = data[::step, ::step]
            shown = np.ma.masked_where((labels < 0) | (labels >= count), labels)
            norm = BoundaryNorm(np.arange(-0.5, count), count)
            ax.imshow(shown, cmap=colormap, norm=norm, extent=extent, interpolation="nearest")
            present = set(np.unique(labels[(labels >= 0) & (labels < count)]).tolist())
            legend_handles = [
                Patch(facecolor=class_colors[index], edgecolor="0.3", label=str(name))
                for index, name in enumerate(classes)
                if index in present
            ]
        else:
            values = _block_mean(data.astype(np.float32), step)
            finite = values[np.isfinite(values)]
            low = vmin if vmin is not None else (np.percentile(finite, 2) if finite.size else 0)
            high = vmax if vmax is not None else (np.percentile(finite, 98) if finite.size else 1)
            if high <= low:
                high = low + 1e-6
            scalar_cmap = colormaps[cmap].with_extremes(bad=(0.85, 0.85, 0.85, 1.0))
            image = ax.imshow(
                np.ma.masked_invalid(values),
                cmap=scalar_cmap,
                vmin=float(low),
                vmax=float(high),
                extent=extent,
                interpolation="nearest",
            )
            # attached to the map axes: exactly the map's height, beside it
            colorbar_axes = ax.inset_axes((1.02, 0.0, 0.03, 1.0))
            colorbar = fig.colorbar(image, cax=colorbar_axes)
            label = str(colorbar_label) if colorbar_label else None
            if time_origin is not None:
                origin = np.datetime64(time_origin, "D")
                colorbar.ax.yaxis.set_major_formatter(_DateFromDays(origin))
                label = f"date (colour: {label or 'days'} after {origin})"
            if label:
                colorbar.set_label(label)
        if overlay is not None:
            legend_handles += self._draw_overlay(
                ax, overlay, (height, width), step, extent, overlay_color
            )
            if overlay_label and legend_handles:
                legend_handles[-1].set_label(str(overlay_label))
        if pixel_size_m is not None:
            # Without a pixel size the image is not known to be a map: no scale, no north.
            _add_scale_bar(ax, width, float(pixel_size_m), north_arrow=north_up)
        ax.set_title(str(title))
        ax.set_xticks([])
        ax.set_yticks([])
        if legend_handles:
            if colorbar_axes is not None:
                from matplotlib.transforms import offset_copy

                # right of the colour bar's tick labels and label, measured once drawn
                fig.canvas.draw()
                renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
                outer = colorbar_axes.get_tightbbox(renderer)
                points = (outer.x1 - colorbar_axes.bbox.x1) * 72.0 / fig.dpi + 6.0
                anchor = offset_copy(colorbar_axes.transAxes, fig=fig, x=points, units="points")
            else:
                anchor = ax.transAxes
            ax.legend(
                handles=legend_handles,
                loc="upper left",
                bbox_to_anchor=(1.02 if colorbar_axes is None else 1.0, 1.0),
                bbox_transform=anchor,
                frameon=False,
                fontsize=9,
            )
        notes = [caption] if caption else []
        if pixel_size_m is not None:
            size = f"{pixel_size_m:g} m" if pixel_size_m >= 1 else f"{pixel_size_m * 100:g} cm"
            notes.append(
                f"{width} x {height} px at {size}"
                + (", north up." if north_up else ".")
                + (f" Shown at 1/{step} resolution." if step > 1 else "")
            )
        elif step > 1:
            notes.append(f"Shown at 1/{step} resolution.")
        png, png_width, png_height = _figure_png(fig, dpi=100)
        self._add_png(png, png_width, png_height, " ".join(notes) or str(title))

    @staticmethod
    def _draw_overlay(
        ax: Axes,
        overlay: np.ndarray,
        shape: tuple[int, int],
        step: int,
        extent: tuple[float, float, float, float],
        color: str,
    ) -> list[Any]:
        from matplotlib import colormaps
        from matplotlib.colors import to_rgba
        from matplotlib.patches import Patch

        mask = np.asarray(overlay)
        if mask.shape != shape:
            raise InputError(
                f"overlay shape {mask.shape} differs from the map's {shape}", parameter="overlay"
            )
        mask = mask[::step, ::step]
        rgba = np.zeros((*mask.shape, 4), dtype=np.float32)
        handles: list[Any] = []
        if mask.dtype == np.bool_:
            red, green, blue, _ = to_rgba(color)
            rgba[mask] = (red, green, blue, 0.25)
            if mask.any() and not mask.all():
                # Pixel centres in the map's data coordinates (rows grow downwards).
                columns = (np.arange(mask.shape[1]) + 0.5) * step
                rows = (np.arange(mask.shape[0]) + 0.5) * step
                ax.contour(
                    columns,
                    rows,
                    mask.astype(np.float32),
                    levels=[0.5],
                    colors=[color],
                    linewidths=0.9,
                )
            handles.append(Patch(facecolor=(red, green, blue, 0.25), edgecolor=color, label="mask"))
        else:
            labels = mask.astype(np.int64)
            palette = colormaps["tab10"]
            for value in np.unique(labels):
                if value == 0:
                    continue
                label_rgba = palette(int(value) % 10)
                rgba[labels == value] = (*label_rgba[:3], 0.45)
        ax.imshow(rgba, extent=extent, interpolation="nearest")
        return handles

    # -- provenance -------------------------------------------------------------------------

    def provenance(
        self,
        seed: int | None = None,
        config: Mapping[str, Any] | str | Path | None = None,
        inputs: Iterable[str | Path] | Mapping[str, str | Path] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Record how the results were made; shown as the last section of the report.

        Args:
            seed: Random seed of the run.
            config: Configuration dict (shown as YAML) or path to a config file (shown verbatim).
            inputs: Input files (list or name -> path); each is listed with its size, time of
                last change, and sha256 when smaller than 64 MiB.
            extra: Any further key/value facts (device, number of workers...).
        """
        rows: list[dict[str, Any]] = [
            {"item": "command", "value": self.command},
            {"item": "date (UTC)", "value": self.created.isoformat(timespec="seconds")},
            {"item": "seed", "value": None if seed is None else str(seed)},
            {"item": "python", "value": platform.python_version()},
            {"item": "platform", "value": platform.platform(terse=True)},
            *({"item": name, "value": version} for name, version in package_versions().items()),
        ]
        for key, value in (extra or {}).items():
            rows.append({"item": str(key), "value": value})
        parts = [_table_html(rows, "Run")]
        if config is not None:
            parts.append(
                '<h3>Configuration</h3><pre class="config">'
                + html.escape(_config_text(config))
                + "</pre>"
            )
        if inputs is not None:
            items = inputs.items() if isinstance(inputs, Mapping) else ((None, p) for p in inputs)
            parts.append("<h3>Input files</h3>")
            parts.append(_table_html([_describe_file(path, name) for name, path in items], None))
        self._provenance_html = "".join(parts)

    # -- output -----------------------------------------------------------------------------

    def to_html(self) -> str:
        """The complete HTML document as a string."""
        if self._provenance_html is None:
            self.provenance()
        sections = [s for s in self.sections]
        provenance = Section(title="Provenance", anchor="provenance")
        provenance.items.append(self._provenance_html or "")
        toc_entries = []
        for section in [*sections, provenance]:
            badge = ""
            if section.status:
                badge += f' <span class="badge {_slug(section.status)}">'
                badge += f"{html.escape(section.status)}</span>"
            if section.elapsed_s is not None:
                badge += f' <span class="time">{section.elapsed_s:.1f} s</span>'
            toc_entries.append(
                f'<li><a href="#{section.anchor}">{html.escape(section.title)}</a>{badge}</li>'
            )
        body = [
            f"<header><h1>{html.escape(self.title)}</h1>",
            f'<p class="meta">Generated {self.created.strftime("%Y-%m-%d %H:%M UTC")} '
            f"by eokit {html.escape(_eokit_version())}",
        ]
        if self.command:
            body.append(f" · <code>{html.escape(self.command)}</code>")
        body.append("</p></header>")
        body.append(f'<nav class="toc"><h2>Contents</h2><ol>{"".join(toc_entries)}</ol></nav>')
        if self._intro.items:
            body.append('<section class="intro">' + "\n".join(self._intro.items) + "</section>")
        for section in [*sections, provenance]:
            status = ""
            if section.status:
                status = f' <span class="badge {_slug(section.status)}">'
                status += f"{html.escape(section.status)}</span>"
            if section.elapsed_s is not None:
                status += f' <span class="time">{section.elapsed_s:.1f} s</span>'
            body.append(
                f'<section id="{section.anchor}"><h2>{html.escape(section.title)}{status}</h2>'
                + "\n".join(section.items)
                + "</section>"
            )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="eokit {html.escape(_eokit_version())}">'
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>\n<body>"
            + "\n".join(body)
            + "\n</body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """Write the report atomically (temp file in the same folder, then rename).

        Raises:
            InputError: if the folder cannot be created or written.
        """
        target = Path(path)
        document = self.to_html()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(target) as temporary:
                Path(temporary).write_text(document, encoding="utf-8")
        except OSError as error:
            raise InputError(f"cannot write report ({error.strerror})", path=target) from error
        logger.info("report written to %s (%.1f kB)", target, len(document) / 1024)
        return target


class SectionTimer:
    """Context manager timing a section: sets its ``elapsed_s`` and ``status`` on exit.

    An exception inside is recorded in the report (error box, status "failed") and re-raised
    unless ``swallow=True``; check ``.failed`` afterwards.
    """

    def __init__(
        self, report: Report, title: str, text: str | None = None, *, swallow: bool = False
    ):
        self.report = report
        self.section = report.section(title, text)
        self.swallow = swallow
        self.failed: BaseException | None = None
        self._start = 0.0

    def __enter__(self) -> Section:
        self._start = time.perf_counter()
        return self.section

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> bool:
        self.section.elapsed_s = time.perf_counter() - self._start
        if error is None:
            self.section.status = self.section.status or "ok"
            return False
        if not isinstance(error, Exception):
            return False  # KeyboardInterrupt, SystemExit: not a failed section
        self.failed = error
        self.section.status = "failed"
        self.report._current = self.section  # the error belongs to this section
        self.report.error(f"{type(error).__name__}: {error}", error)
        return self.swallow


def _table_html(rows: Sequence[Mapping[str, Any]], caption: str | None) -> str:
    """HTML of a table (see :meth:`Report.table`)."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if str(key) not in columns:
                columns.append(str(key))
    parts = []
    if caption:
        parts.append(f'<p class="caption">{html.escape(str(caption))}</p>')
    parts.append('<div class="table-wrap"><table>')
    parts.append(
        "<thead><tr>"
        + "".join(f"<th>{html.escape(column)}</th>" for column in columns)
        + "</tr></thead><tbody>"
    )
    for row in rows:
        by_name = {str(key): value for key, value in row.items()}
        cells = []
        for column in columns:
            value = by_name.get(column)
            css = ' class="num"' if _is_number(value) else ""
            cells.append(f"<td{css}>{html.escape(format_value(value))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    if not rows:
        parts.append('<tr><td class="empty">(no rows)</td></tr>')
    parts.append("</tbody></table></div>")
    return "".join(parts)


def _config_text(config: Mapping[str, Any] | str | Path) -> str:
    if isinstance(config, str | Path) and not isinstance(config, Mapping):
        candidate = Path(config)
        try:
            if candidate.is_file():
                return candidate.read_text(encoding="utf-8", errors="replace")
        except OSError:
            pass
        return str(config)
    plain = _plain(config)
    try:
        import yaml

        return str(yaml.safe_dump(plain, sort_keys=False, default_flow_style=False)).rstrip()
    except ImportError:  # pragma: no cover - pyyaml is a dependency
        return json.dumps(plain, indent=2, default=str)


def _plain(value: Any) -> Any:
    """Convert ``value`` into YAML-safe builtins (numpy, paths, dataclasses become plain)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return _plain(asdict(value))
    return str(value)


def _describe_file(path: str | Path, name: str | None) -> dict[str, Any]:
    candidate = Path(path)
    row: dict[str, Any] = {}
    if name is not None:
        row["name"] = name
    row["path"] = str(candidate)
    try:
        stat = candidate.stat()
    except OSError:
        row.update({"size": None, "modified (UTC)": None, "sha256": "missing"})
        return row
    if candidate.is_dir():
        row.update({"size": None, "modified (UTC)": None, "sha256": "directory"})
        return row
    row["size"] = _format_bytes(stat.st_size)
    row["modified (UTC)"] = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(timespec="seconds")
    if stat.st_size <= HASH_LIMIT_BYTES:
        try:
            with candidate.open("rb") as handle:
                row["sha256"] = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError:
            row["sha256"] = "unreadable"
    else:
        row["sha256"] = "not computed (large file)"
    return row


def _format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def _eokit_version() -> str:
    from eokit import __version__

    return __version__


def package_versions() -> dict[str, str]:
    """Versions of eokit and its main libraries (installed ones only), without importing them."""
    versions = {"eokit": _eokit_version()}
    for name in VERSION_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    if "rasterio" in sys.modules:
        gdal = getattr(sys.modules["rasterio"], "__gdal_version__", None)
        if gdal:
            versions["GDAL"] = str(gdal)
    return versions


_CSS = """
:root { --fg: #1d2329; --muted: #5b6670; --line: #d8dee4; --accent: #1f6feb; --bg-alt: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; color: var(--fg); max-width: 1100px; margin: 0 auto; padding: 1.5rem 1.25rem 4rem;
  overflow-wrap: anywhere; }
h1 { font-size: 1.7rem; margin: 0 0 .25rem; }
h2 { font-size: 1.3rem; border-bottom: 1px solid var(--line); padding-bottom: .3rem;
  margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin-top: 1.4rem; }
.meta { color: var(--muted); margin: 0 0 1rem; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code, pre { font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code { background: var(--bg-alt); padding: .05rem .3rem; border-radius: 3px; }
pre { background: var(--bg-alt); padding: .75rem 1rem; border-radius: 6px; overflow-x: auto;
  max-width: 100%; white-space: pre; overflow-wrap: normal; }
nav.toc { background: var(--bg-alt); border: 1px solid var(--line); border-radius: 6px;
  padding: .4rem 1.2rem .6rem; }
nav.toc h2 { font-size: 1rem; border: 0; margin: .4rem 0; }
nav.toc ol { margin: 0; padding-left: 1.4rem; }
.badge { font-size: .72rem; font-weight: 600; padding: .1rem .45rem; border-radius: 10px;
  vertical-align: middle; background: #e1e4e8; color: #24292f; }
.badge.ok { background: #dafbe1; color: #116329; }
.badge.failed { background: #ffebe9; color: #a40e26; }
.badge.skipped { background: #fff8c5; color: #7d4e00; }
.time { color: var(--muted); font-size: .8rem; font-weight: normal; }
.table-wrap { max-width: 100%; overflow-x: auto; margin: 1rem 0; }
table { border-collapse: collapse; font-size: 14px; }
p.caption { color: var(--muted); margin: 1rem 0 -.6rem; font-style: italic; }
th, td { border: 1px solid var(--line); padding: .3rem .6rem; text-align: left;
  vertical-align: top; overflow-wrap: normal; }
th { background: var(--bg-alt); white-space: nowrap; }
td { max-width: 40rem; overflow-wrap: anywhere; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.empty { color: var(--muted); }
figure { margin: 1.2rem 0; max-width: 100%; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: .9rem; margin-top: .35rem; }
.error { border: 1px solid #ff8182; background: #ffebe9; border-radius: 6px;
  padding: .6rem .9rem; margin: 1rem 0; }
.error pre { background: #fff; }
details summary { cursor: pointer; color: var(--muted); }
img { max-width: 100%; height: auto; }
"""
