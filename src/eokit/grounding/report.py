"""HTML reports of `eokit grounding ground` and `detect` (eokit.core.report), with figures."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["answer_figure", "detect_report", "detections_figure", "ground_report"]

_ANSWER = "#ffd400"
_PROPOSAL = "#00c8ff"


def _rgb(image: np.ndarray) -> np.ndarray:
    """(C, H, W) 0-1 encoder input -> (H, W, 3) for display (as the model saw it)."""
    rgb = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    return np.clip(np.moveaxis(rgb, 0, -1), 0, 1)


def _figure(image: np.ndarray, title: str) -> tuple[Figure, Any]:
    h, w = image.shape[-2:]
    scale = 6.0 / max(h, w)
    fig = Figure(figsize=(max(3.0, w * scale) + 0.4, max(3.0, h * scale) + 0.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(_rgb(image), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("column (px)")
    ax.set_ylabel("row (px)")
    return fig, ax


def _box(ax: Any, box: Sequence[float], color: str, width: float, label: str | None = None,
         style: str = "-") -> None:
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = (float(v) for v in box)
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color,
                           linewidth=width, linestyle=style))
    if label:
        ax.text(x0, y0 - 2, label, color=color, fontsize=7, va="bottom", clip_on=True,
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "edgecolor": "none"})


def answer_figure(image: np.ndarray, summary: Mapping[str, Any]) -> Figure:
    """The image with the top proposals (dashed, with probabilities) and the answer (bold)."""
    fig, ax = _figure(image, f"\u201c{summary['expression']}\u201d")
    for rank, prop in enumerate(summary["top_proposals"], start=1):
        _box(ax, prop["box_px"], _PROPOSAL, 1.0, f"#{rank} {prop['probability']:.2f}", "--")
    _box(ax, summary["box_px"], _ANSWER, 2.5, f"answer p={summary['probability']:.2f}")
    from matplotlib.lines import Line2D

    ax.legend(handles=[Line2D([], [], color=_ANSWER, lw=2.5, label="answer box"),
                       Line2D([], [], color=_PROPOSAL, lw=1, ls="--",
                              label="top proposals (probability)")],
              loc="lower right", fontsize=7, framealpha=0.7)
    fig.tight_layout()
    return fig


def detections_figure(image: np.ndarray, dets: Mapping[str, Tensor],
                      names: Sequence[str]) -> Figure:
    """The image with every detection, one colour per class."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    fig, ax = _figure(image, f"{len(dets['boxes'])} detections")
    palette = colormaps["tab10"]
    for box, score, label in zip(dets["boxes"], dets["scores"], dets["labels"], strict=True):
        _box(ax, box.tolist(), palette(int(label) % 10), 1.5, f"{float(score):.2f}")
    counts = {int(k): int((dets["labels"] == k).sum()) for k in range(len(names))}
    handles = [Line2D([], [], color=palette(k % 10), lw=2, label=f"{n} ({counts[k]})")
               for k, n in enumerate(names)]
    ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.7)
    fig.tight_layout()
    return fig


def ground_report(image: np.ndarray, summary: Mapping[str, Any], path: str | Path, *,
                  image_path: Path, feature: Mapping[str, Any]) -> Path:
    """HTML report of one grounding: figure, boxes in pixels and map coordinates, GeoJSON."""
    from eokit.core.report import Report

    report = Report("eokit grounding ground")
    report.section("Answer", f"Expression: **{summary['expression']}** on `{image_path.name}`.")
    report.figure(answer_figure(image, summary),
                  caption="Bold: the answer box. Dashed: the proposals the head weighs most, "
                          "with their probabilities.")
    report.table([{"box": "pixels (x0, y0, x1, y1)", "value": summary["box_px"]},
                  {"box": f"map ({summary['crs']})" if summary["crs"] else "map",
                   "value": summary["box_map"] if summary["box_map"] is not None
                   else "image has no CRS"},
                  {"box": "probability", "value": summary["probability"]}],
                 caption="Answer box")
    report.table([{"rank": n, **p} for n, p in enumerate(summary["top_proposals"], start=1)],
                 caption="Top proposals")
    report.section("GeoJSON", f"Written to `{summary['geojson']}`:")
    report.text("```\n" + json.dumps(feature, indent=1)[:4000] + "\n```")
    report.provenance(inputs={"image": image_path})
    return report.write(path)


def detect_report(image: np.ndarray, dets: Mapping[str, Tensor], names: Sequence[str],
                  summary: Mapping[str, Any], path: str | Path, *, image_path: Path,
                  far_similarity: float) -> Path:
    """HTML report of one detection run: boxes drawn, counts per class, vocabulary check."""
    from eokit.core.report import Report

    report = Report("eokit grounding detect")
    report.section("Detections", f"`{image_path.name}`: {summary['detections']} boxes; "
                   f"GeoJSON in `{summary['geojson']}`.")
    report.figure(detections_figure(image, dets, names), caption="Boxes coloured by class, "
                  "labelled with their scores.")
    rows = []
    for name in names:
        sim = summary["vocabulary_similarity"][name]
        rows.append({"class": name, "count": summary["per_class"][name],
                     "closest training class": sim["closest"], "cosine": sim["similarity"],
                     "reliable": "yes" if sim["similarity"] >= far_similarity else "no (far)"})
    report.table(rows, caption="Counts per class; names far from every training class are "
                               "searched by text similarity alone")
    report.provenance(inputs={"image": image_path})
    return report.write(path)
