"""Figures of the urban analysis: density profile with bands, trend, minima, LD and regions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from eokit.urban.regions import mean_gradient, region_gradient

REGION_COLOURS = {"uniform": "#8fd18f", "variation": "#f4a582", "unknown": "#cccccc"}


def profile_axes(ax: Any, result: Any, *, title: str | None = None, legend: bool = True) -> None:
    """Draw the density profile of ``result`` (an ``UrbanResult``) on ``ax``."""
    p, t = result.profile, result.trend
    x = result.distance_km
    for region in result.regions:
        x0 = x[region.start]
        x1 = x[min(region.end + 1, len(x) - 1)] if region.end + 1 < len(x) else x[region.end]
        ax.axvspan(x0, x1, color=REGION_COLOURS.get(region.kind, "#cccccc"), alpha=0.35, lw=0)
    ax.fill_between(x, p.minimum, p.maximum, color="tab:blue", alpha=0.10, lw=0, label="min-max")
    ax.fill_between(x, p.q1, p.q3, color="tab:blue", alpha=0.30, lw=0, label="IQR")
    ax.plot(x, p.mean, color="tab:blue", lw=1.6, label="mean")
    ax.plot(x, p.median, color="tab:green", lw=1.0, label="median")
    ax.plot(
        x,
        t.trend(p.distance_px),
        "r--",
        lw=1.6,
        label=f"trend, profile alpha {t.alpha_per_km:.3g} C/km",
    )
    ax.plot(x[t.minima], p.mean[t.minima], "rx", ms=7, label="minima used")
    ax.axhline(t.target, color="m", ls=":", lw=1, label=f"target (min Q1) {t.target:.2f}")
    state = ld_state(result)
    if state == "drawn":
        ax.axvline(t.ld_km, color="m", ls="--", lw=1)
        ax.plot([t.ld_km], [t.target], "mo", ms=6, label=f"LD {t.ld_km:.3g} km")
    elif state == "beyond":
        ax.annotate(
            f"LD {t.ld_km:.3g} km \u2192",
            xy=(0.99, t.target),
            xycoords=("axes fraction", "data"),
            ha="right",
            va="top",
            color="m",
            fontsize=8,
        )
        ax.plot([], [], "m>", label=f"LD {t.ld_km:.3g} km (beyond the plot)")
    elif state == "negative":
        ax.plot([], [], " ", label=f"LD {t.ld_km:.3g} km (negative: not drawn)")
    else:
        ax.plot([], [], " ", label="LD undefined (flat trend)")
    ax.set_xlabel("distance to nearest centre pixel (km)")
    ax.set_ylabel("fused value C")
    ax.set_ylim(0, 2)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    if legend:
        ax.legend(fontsize=7, loc="upper right")


def ld_state(result: Any) -> str:
    """How the profile figure shows LD: "drawn", "beyond" (arrow), "negative" or "undefined"."""
    ld, x_max = result.trend.ld_km, float(result.distance_km[-1])
    if not math.isfinite(ld):
        return "undefined"
    if ld < 0:
        return "negative"
    return "drawn" if ld <= x_max * 1.5 else "beyond"


def profile_caption(result: Any) -> str:
    """Caption (and alt text) of :func:`profile_figure` that describes what is drawn."""
    t = result.trend
    ld = {
        "drawn": f"LD ({t.ld_km:.3g} km, magenta dashed line and dot)",
        "beyond": f"LD ({t.ld_km:.3g} km) lies beyond the plotted range: arrow at the right edge",
        "negative": f"LD is negative ({t.ld_km:.3g} km) and not drawn",
        "undefined": "LD is undefined (flat trend)",
    }[ld_state(result)]
    return (
        "Density profile: min-max and IQR bands, mean, median, trend through the minima (x), "
        f"target level (dotted); {ld}. Bottom: residuals with the K-means regions (green "
        "uniform, orange high variation)."
    )


def profile_figure(result: Any, *, title: str | None = None) -> Any:
    """Profile (top) and residuals with K-means regions (bottom) for one city."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    fig = Figure(figsize=(9, 7))
    gs = fig.add_gridspec(2, 1, height_ratios=[3, 1.2], hspace=0.08)
    ax = fig.add_subplot(gs[0])
    profile_axes(ax, result, title=title)
    ax.set_xlabel("")
    bottom = fig.add_subplot(gs[1], sharex=ax)
    x = result.distance_km
    residuals = result.trend.residuals
    for i, region in enumerate(result.regions):
        x0 = x[region.start]
        x1 = x[region.end + 1] if region.end + 1 < len(x) else x[region.end]
        bottom.axvspan(x0, x1, color=REGION_COLOURS.get(region.kind, "#cccccc"), alpha=0.5, lw=0)
        steep = abs(region_gradient(x, result.profile.mean, region)) > mean_gradient(
            x, result.profile.mean
        )
        label = f"R{i + 1}" + (" (steep)" if steep and region.kind == "uniform" else "")
        bottom.text(
            (x0 + x1) / 2, 0, label, ha="center", va="bottom", fontsize=8, fontweight="bold"
        )
    bottom.plot(x, residuals, "k-", lw=1.2)
    bottom.axhline(0, color="k", lw=0.6)
    bottom.set_ylabel("mean - trend")
    bottom.set_xlabel("distance to nearest centre pixel (km)")
    bottom.grid(alpha=0.3)
    bottom.legend(
        handles=[
            Patch(color=REGION_COLOURS["uniform"], label="uniform"),
            Patch(color=REGION_COLOURS["variation"], label="high variation"),
        ],
        fontsize=7,
        loc="lower right",
    )
    return fig


def clark_figure(result: Any) -> Any | None:
    """Clark fit (geo mode): log density above the rural baseline vs distance to centre points."""
    if result.clark is None or "clark_profile" not in result.extra:
        return None
    from matplotlib.figure import Figure

    rows = result.extra["clark_profile"]
    r = np.array([row["distance_km"] for row in rows])
    mean = np.array([row["mean"] for row in rows])
    c = result.clark
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot(111)
    d = mean - c.baseline
    ok = d > 0
    ax.semilogy(r[ok], d[ok], ".", ms=3, color="tab:blue", label="mean C - rural baseline")
    if math.isfinite(c.alpha_per_km):
        ax.semilogy(
            r,
            c.d0 * np.exp(-c.alpha_per_km * r),
            "r-",
            label=f"Clark: alpha {c.alpha_per_km:.3f}/km (95% CI {c.ci_low:.3f}-{c.ci_high:.3f})",
        )
    ax.set_xlabel("distance to nearest centre point (km)")
    ax.set_ylabel("density above rural baseline")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig
