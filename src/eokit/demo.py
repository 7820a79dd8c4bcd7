"""``eokit demo``: run every installed capability on simulated scenes and write one HTML report.

The core part simulates a scene (optical reflectance, land cover, SAR), writes it as GeoTIFFs,
and runs a tiled-inference round trip: a tiny convolutional land-cover classifier, trained for a
few seconds on a *different* simulated scene, is streamed over the written GeoTIFF with
:func:`eokit.core.tiling.predict_raster` into a Cloud-Optimized GeoTIFF, which is read back and
compared with whole-image inference. Then each capability that is installed adds its section
(``eokit.<cap>.demo.add_demo_section``). A capability that fails is shown as failed in the report
and makes the command exit with a non-zero code; it never stops the other sections.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from eokit.core.cliopts import out_option

if TYPE_CHECKING:
    import numpy as np
    import torch

    from eokit.core.report import Report

logger = logging.getLogger(__name__)

#: Capability packages the demo looks for, in report order.
CAPABILITIES: tuple[str, ...] = (
    "change",
    "curation",
    "timeseries",
    "lst",
    "noisy",
    "urban",
    "agent",
    "openvocab",
    "grounding",
)

#: Display colours of land-cover classes the simulator has no colour for (by name).
CLASS_COLOURS: dict[str, str] = {
    "water": "#2f6db5",
    "conifer": "#1b5e38",
    "broadleaf": "#52a447",
    "grass": "#b9d870",
    "crop": "#e8c547",
    "bare": "#a9825a",
    "building": "#d1495b",
    "road": "#5c5c5c",
}


@dataclass
class DemoResult:
    """What a demo run produced.

    Attributes:
        report: Path of the HTML report.
        outputs: GIS files written (GeoTIFF, GeoJSON, CSV), sorted.
        failures: Section name -> error message for every part that failed.
        timings_s: Section name -> wall time in seconds.
    """

    report: Path
    outputs: list[Path] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)


@dataclass
class DemoSettings:
    """Sizes of the core demo; ``quick`` keeps the core part well under a minute on 2 cores."""

    scene_size: int
    samples_per_class: int
    tile: int
    overlap: int

    @classmethod
    def for_mode(cls, quick: bool) -> DemoSettings:
        """Quick (256 px scene) or full (512 px scene, more training pixels) settings."""
        if quick:
            return cls(scene_size=256, samples_per_class=500, tile=128, overlap=32)
        return cls(scene_size=512, samples_per_class=1500, tile=256, overlap=48)


# --------------------------------------------------------------------------------------------
# The tiny model of the round trip
# --------------------------------------------------------------------------------------------


#: Normalised differences the demo classifier adds to the bands: NDVI, NDWI (green/NIR), NDBI.
INDEX_PAIRS: tuple[tuple[int, int], ...] = ((3, 2), (1, 3), (4, 3))


def build_classifier(in_channels: int, num_classes: int, *, context_px: int = 5) -> torch.nn.Module:
    """A tiny land-cover classifier as an ``nn.Module``: logistic regression on pixel + context.

    Per-pixel features are the bands plus three normalised differences (NDVI, NDWI, NDBI); the
    same features averaged over a ``context_px`` x ``context_px`` neighbourhood are appended, so
    the model has spatial context and tiled inference must handle window borders. A 1x1
    convolution holds the regression weights (see :func:`fit_classifier`). Returns class
    probabilities (B, num_classes, H, W).
    """
    import torch
    from torch import nn

    pairs = [(a, b) for a, b in INDEX_PAIRS if max(a, b) < in_channels]

    class SpectralClassifier(nn.Module):
        """(Bands + normalised differences) and their local mean -> 1x1 conv -> softmax."""

        def __init__(self) -> None:
            super().__init__()
            per_pixel = in_channels + len(pairs)
            self.context = nn.AvgPool2d(
                context_px, stride=1, padding=context_px // 2, count_include_pad=False
            )
            self.linear = nn.Conv2d(2 * per_pixel, num_classes, 1)

        def features(self, image: torch.Tensor) -> torch.Tensor:
            """(B, C, H, W) reflectance -> (B, 2 * (C + len(pairs)), H, W) features."""
            ratios = [
                (image[:, a] - image[:, b]) / (image[:, a] + image[:, b]).clamp_min(1e-4)
                for a, b in pairs
            ]
            pixel = torch.cat([image, torch.stack(ratios, dim=1)], dim=1) if ratios else image
            return torch.cat([pixel, self.context(pixel)], dim=1)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            scores: torch.Tensor = self.linear(self.features(image))
            return scores.softmax(dim=1)

    return SpectralClassifier()


def fit_classifier(
    model: torch.nn.Module,
    image: np.ndarray,
    labels: np.ndarray,
    *,
    samples_per_class: int,
    seed: int,
) -> dict[str, float]:
    """Fit the classifier's regression weights on pixels of one scene (scikit-learn).

    Args:
        model: A model from :func:`build_classifier`.
        image: (C, H, W) float32 reflectance of the training scene.
        labels: (H, W) class ids of the training scene.
        samples_per_class: Pixels drawn per class (fewer if a class is smaller).
        seed: Seed of the pixel sample.

    Returns:
        {"pixels": number of training pixels, "train_accuracy": per-pixel accuracy on them}.
    """
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    generator = np.random.default_rng(seed)
    linear: torch.nn.Conv2d = getattr(model, "linear")  # noqa: B009 - typed attribute access
    with torch.no_grad():
        pixels = torch.from_numpy(image[None].astype(np.float32))
        features = getattr(model, "features")(pixels)  # noqa: B009
    table = features[0].reshape(features.shape[1], -1).T.numpy()
    flat = labels.ravel()
    chosen = []
    for class_id in np.unique(flat):
        where = np.flatnonzero(flat == class_id)
        chosen.append(generator.choice(where, min(samples_per_class, where.size), replace=False))
    index = np.concatenate(chosen)
    sample = table[index].astype(np.float64)
    # Standardised features converge fast; the scaling is folded back into the 1x1 conv.
    mean, std = sample.mean(axis=0), np.maximum(sample.std(axis=0), 1e-6)
    regression = LogisticRegression(C=1.0, max_iter=200)
    regression.fit((sample - mean) / std, flat[index])
    weight = np.zeros((linear.out_channels, table.shape[1]), dtype=np.float32)
    bias = np.full(linear.out_channels, -30.0, dtype=np.float32)  # classes absent from training
    weight[regression.classes_] = regression.coef_ / std
    bias[regression.classes_] = regression.intercept_ - (regression.coef_ / std) @ mean
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight)[:, :, None, None])
        if linear.bias is not None:
            linear.bias.copy_(torch.from_numpy(bias))
    model.eval()
    accuracy = float(regression.score((sample - mean) / std, flat[index]))
    return {"pixels": float(index.size), "train_accuracy": accuracy}


# --------------------------------------------------------------------------------------------
# Core sections
# --------------------------------------------------------------------------------------------


def _class_colours(names: Sequence[str]) -> list[Any]:
    """Colours of the classes: the simulator's colour table (as in landcover.tif) if it has one."""
    import importlib

    scene_module = importlib.import_module("eokit.core.synth.scene")
    table: dict[str, Any] = {
        name: tuple(channel / 255.0 for channel in rgb)
        for name, rgb in getattr(scene_module, "CLASS_COLORS", {}).items()
    }
    fallback = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
    return [
        table.get(name, CLASS_COLOURS.get(name, fallback[index % len(fallback)]))
        for index, name in enumerate(names)
    ]


def _scene_section(report: Report, out_dir: Path, settings: DemoSettings, seed: int) -> Any:
    """Simulate and write the scene; show its RGB, land cover and SAR. Returns (scene, files)."""
    import numpy as np

    from eokit.core.raster import raster_info
    from eokit.core.report import rgb_quicklook
    from eokit.core.synth.scene import generate_scene, write_scene

    scene = generate_scene(size=settings.scene_size, seed=seed)
    files = write_scene(scene, out_dir / "core" / "scene")
    pixel_size_m = scene.grid.pixel_size_m
    names = list(scene.class_names)
    report.text(
        f"A procedural scene of {scene.grid.width} x {scene.grid.height} px at "
        f"{pixel_size_m:g} m ({scene.grid.crs}): six-band surface reflectance "
        "(B, G, R, NIR, SWIR1, SWIR2), land cover in "
        f"{len(names)} classes and SAR backscatter with speckle. Written as GeoTIFFs below."
    )
    report.image_map(
        rgb_quicklook(scene.reflectance),
        title="True-colour quick-look (R, G, B; 2–98 % stretch)",
        pixel_size_m=pixel_size_m,
        overlay=scene.landcover == names.index("water") if "water" in names else None,
        overlay_label="water (truth)",
        overlay_color="#00e5ff",
    )
    report.image_map(
        scene.landcover,
        title="Land cover (truth)",
        pixel_size_m=pixel_size_m,
        classes=names,
        class_colors=_class_colours(names),
    )
    report.image_map(
        scene.sar_db,
        title="SAR backscatter",
        pixel_size_m=pixel_size_m,
        cmap="gray",
        colorbar_label="σ0 (dB)",
    )
    red, nir = scene.reflectance[2], scene.reflectance[3]
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    rows = []
    total = scene.landcover.size
    for index, name in enumerate(names):
        where = scene.landcover == index
        if not where.any():
            continue
        rows.append(
            {
                "class": name,
                "share (%)": 100.0 * float(where.sum()) / total,
                "mean NDVI": float(ndvi[where].mean()),
                "mean SWIR1": float(scene.reflectance[4][where].mean()),
                "mean σ0 (dB)": float(scene.sar_db[where].mean()),
            }
        )
    report.table(rows, caption="Per-class statistics of the simulated scene")
    file_rows = []
    for name, path in files.items():
        if Path(path).suffix.lower() not in (".tif", ".tiff"):
            continue
        grid, count, dtype = raster_info(path)
        file_rows.append(
            {
                "layer": name,
                "file": str(Path(path).relative_to(out_dir)),
                "bands": count,
                "dtype": dtype,
                "grid": grid.describe(),
            }
        )
    report.table(file_rows, caption="GeoTIFFs written")
    return scene, files


def _reflectance_file(files: dict[str, Path], bands: int) -> Path:
    """The written file holding the reflectance (by name, else by band count)."""
    from eokit.core.errors import DataError
    from eokit.core.raster import raster_info

    for key in ("reflectance", "optical", "image"):
        if key in files:
            return Path(files[key])
    for path in files.values():
        if raster_info(path)[1] == bands:
            return Path(path)
    raise DataError(f"no {bands}-band reflectance GeoTIFF among {sorted(files)}")


def _tiling_section(
    report: Report,
    out_dir: Path,
    settings: DemoSettings,
    seed: int,
    scene: Any,
    files: dict[str, Path],
) -> list[Path]:
    """Train the tiny classifier, stream it over the GeoTIFF, compare with whole-image output."""
    import numpy as np
    import torch

    from eokit.core.metrics import ConfusionMatrix
    from eokit.core.raster import check_aligned, raster_info, read_raster
    from eokit.core.synth.scene import generate_scene
    from eokit.core.tiling import plan_windows, predict_raster

    names = list(scene.class_names)
    bands = scene.reflectance.shape[0]
    torch.manual_seed(seed)
    model = build_classifier(bands, len(names))
    # Fit on another scene (seed + 1) so that the accuracy below is out of sample.
    training_scene = generate_scene(size=settings.scene_size, seed=seed + 1)
    start = time.perf_counter()
    fitted = fit_classifier(
        model,
        training_scene.reflectance,
        training_scene.landcover,
        samples_per_class=settings.samples_per_class,
        seed=seed,
    )
    train_s = time.perf_counter() - start

    source = _reflectance_file(files, bands)
    output = out_dir / "core" / "tiling" / "landcover_probability.tif"
    start = time.perf_counter()
    predict_raster(
        model,
        [source],
        output,
        out_channels=len(names),
        tile=settings.tile,
        overlap=settings.overlap,
        batch_size=4,
        cog=True,
        band_names=[f"p_{name}" for name in names],
        progress=True,
    )
    tiled_s = time.perf_counter() - start
    tiled = read_raster(output)
    check_aligned(input=raster_info(source)[0], output=tiled.grid)

    start = time.perf_counter()
    whole_input = read_raster(source).data.astype(np.float32)
    with torch.no_grad():
        whole = model(torch.from_numpy(whole_input)[None])[0].numpy()
    whole_s = time.perf_counter() - start

    difference = np.abs(tiled.data.astype(np.float32) - whole).max(axis=0)
    margin = settings.overlap
    interior = difference[margin:-margin, margin:-margin]
    tiled_class = tiled.data.argmax(axis=0).astype(np.uint8)
    whole_class = whole.argmax(axis=0).astype(np.uint8)
    windows = plan_windows(
        scene.grid.height, scene.grid.width, tile=settings.tile, overlap=settings.overlap
    )
    matrix = ConfusionMatrix(len(names))
    matrix.update(tiled_class, scene.landcover)
    scores = matrix.compute()

    report.text(
        "A tiny land-cover classifier (logistic regression on the six bands plus NDVI, NDWI "
        "and NDBI, each also averaged over 5 x 5 px for context; "
        f"{sum(p.numel() for p in model.parameters()):,} parameters in a 1x1 convolution) "
        "was fitted on "
        f"{int(fitted['pixels']):,} pixels of a *different* simulated scene (seed {seed + 1}, "
        f"{train_s:.1f} s), then streamed over `{source.relative_to(out_dir)}` in "
        f"{len(windows)} windows of {settings.tile} px with {settings.overlap} px overlap "
        "(cosine blending) into a Cloud-Optimized GeoTIFF, read back, and compared with running "
        "the same model on the "
        "whole image at once."
    )
    round_trip: list[dict[str, Any]] = [
        {
            "check": "max |tiled − whole| (all pixels)",
            "value": float(difference.max()),
        },
        {
            "check": f"max |tiled − whole| (≥ {margin} px from the image edge)",
            "value": float(interior.max()) if interior.size else float("nan"),
        },
        {"check": "mean |tiled − whole|", "value": float(difference.mean())},
        {
            "check": "argmax agreement tiled vs whole (%)",
            "value": 100.0 * float((tiled_class == whole_class).mean()),
        },
        {"check": "output grid equals input grid", "value": True},
        {"check": "output CRS", "value": str(tiled.grid.crs)},
        {"check": "tiled inference time (s)", "value": tiled_s},
        {"check": "whole-image inference time (s)", "value": whole_s},
    ]
    report.table(round_trip, caption="Round trip: tiled COG vs whole-image inference")
    _round_trip_figure(report, tiled_class, whole_class, difference, names, margin)
    report.image_map(
        tiled_class,
        title="Predicted land cover (tiled inference, read back from the COG)",
        pixel_size_m=scene.grid.pixel_size_m,
        classes=names,
        class_colors=_class_colours(names),
    )
    report.image_map(
        (tiled_class != scene.landcover).astype(np.uint8),
        title="Where the prediction differs from the simulated truth",
        pixel_size_m=scene.grid.pixel_size_m,
        classes=["agrees", "differs"],
        class_colors=["#e8e8e8", "#c2185b"],
    )
    per_class = [
        {
            "class": name,
            "precision": scores["precision"][index],
            "recall": scores["recall"][index],
            "IoU": scores["iou"][index],
            "support (px)": scores["support"][index],
        }
        for index, name in enumerate(names)
    ]
    report.table(
        [
            {"metric": "overall accuracy", "value": scores["oa"]},
            {"metric": "mean IoU", "value": scores["mean_iou"]},
            {"metric": "Cohen's kappa", "value": scores["kappa"]},
        ],
        caption="Accuracy of the tiled prediction against the simulated truth (out of sample)",
    )
    report.table(per_class, caption="Per class")
    _confusion_figure(report, matrix.matrix, names)
    return [output]


def _round_trip_figure(
    report: Report,
    tiled_class: np.ndarray,
    whole_class: np.ndarray,
    difference: np.ndarray,
    names: Sequence[str],
    margin: int,
) -> None:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 3.9), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
    colormap = ListedColormap(_class_colours(names))
    norm = BoundaryNorm(np.arange(-0.5, len(names)), len(names))
    for ax, array, title in (
        (axes[0], tiled_class, "Tiled (COG read back)"),
        (axes[1], whole_class, "Whole image"),
    ):
        ax.imshow(array, cmap=colormap, norm=norm, interpolation="nearest")
        ax.set_title(title)
    image = axes[2].imshow(difference, cmap="magma", interpolation="nearest")
    height, width = difference.shape
    axes[2].add_patch(
        _rectangle(margin, margin, width - 2 * margin, height - 2 * margin, "#3cb371")
    )
    axes[2].set_title("max |difference| over classes")
    figure.colorbar(image, ax=axes[2], shrink=0.8, label="probability difference")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    report.figure(
        figure,
        caption=(
            "Class maps from tiled and whole-image inference and their largest per-pixel "
            f"probability difference; the green frame marks {margin} px from the image edge."
        ),
    )


def _rectangle(x: float, y: float, width: float, height: float, colour: str) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), width, height, fill=False, edgecolor=colour, lw=1.2)


def _confusion_figure(report: Report, matrix: np.ndarray, names: Sequence[str]) -> None:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.float64)
    row_share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    figure = Figure(figsize=(6.4, 5.2), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    image = ax.imshow(row_share, cmap="Blues", vmin=0.0, vmax=1.0)
    for (row, col), share in np.ndenumerate(row_share):
        if counts[row].sum() == 0:
            continue
        colour = "white" if share > 0.6 else "black"
        ax.text(col, row, f"{share:.2f}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title("Confusion matrix (row-normalised)")
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    report.figure(figure, caption="Rows: true class; each row sums to 1 (recall on the diagonal).")


# --------------------------------------------------------------------------------------------
# Capabilities
# --------------------------------------------------------------------------------------------


def _find_capability(name: str) -> bool:
    try:
        return importlib.util.find_spec(f"eokit.{name}.demo") is not None
    except ModuleNotFoundError:
        return False


def _run_capability(
    report: Report, name: str, out_dir: Path, *, quick: bool, seed: int
) -> tuple[float, str | None]:
    """Run one capability's demo section; returns (seconds, error message or None)."""
    first_new = len(report.sections)
    start = time.perf_counter()
    error: BaseException | None = None
    try:
        module = importlib.import_module(f"eokit.{name}.demo")
        module.add_demo_section(report, out_dir, quick=quick, seed=seed)
    except Exception as caught:  # noqa: BLE001 - reported in the report and in the exit code
        error = caught
        logger.exception("demo section %r failed", name)
    elapsed = time.perf_counter() - start
    added = report.sections[first_new:]
    if error is not None:
        if not added:
            report.section(name)
            added = report.sections[first_new:]
        # report.current is the capability's last section (or the one just opened).
        report.error(f"{type(error).__name__}: {error}", error)
    status = "failed" if error is not None else "ok"
    for section in added:
        section.status = status
    if added:
        added[0].elapsed_s = elapsed
    message = None if error is None else f"{type(error).__name__}: {error}"
    return elapsed, message


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def run_demo(
    out_dir: str | Path = "eokit-demo",
    *,
    quick: bool = False,
    seed: int = 0,
    capabilities: Sequence[str] | None = None,
    command: str | None = None,
    settings: DemoSettings | None = None,
) -> DemoResult:
    """Run the core demo and every installed capability's demo section; write the report.

    Args:
        out_dir: Output folder (created; existing files of a previous run are replaced).
        quick: Small scene and short training (core part well under a minute on 2 cores).
        seed: Seed of every simulated scene and model.
        capabilities: Capability packages to look for (``eokit.<name>.demo``; default
            :data:`CAPABILITIES`).
        command: Command line recorded in the report.
        settings: Sizes of the core part (default: :meth:`DemoSettings.for_mode`).

    Returns:
        A :class:`DemoResult`; ``failures`` is empty when every section succeeded.
    """
    from eokit.core.raster import check_output_path
    from eokit.core.report import Report, SectionTimer

    out = Path(out_dir)
    check_output_path(out / "report.html")
    settings = settings or DemoSettings.for_mode(quick)
    capabilities = CAPABILITIES if capabilities is None else tuple(capabilities)
    report = Report(
        "eokit demo" + (" (quick)" if quick else ""),
        command=command if command is not None else _default_command(out, quick, seed),
    )
    report.text(
        "Everything below runs on **simulated** data on the CPU, so numbers describe the "
        "simulator, not real sensors. Each section lists its wall time; GIS outputs "
        f"(GeoTIFF/COG, GeoJSON, CSV) are in `{out}`."
    )
    result = DemoResult(report=out / "report.html")
    scene: Any = None
    files: dict[str, Path] = {}

    timer = SectionTimer(report, "Simulated scene", swallow=True)
    with timer as section:
        scene, files = _scene_section(report, out, settings, seed)
    _record(result, section.title, section.elapsed_s, timer.failed)

    timer = SectionTimer(report, "Tiled inference round trip", swallow=True)
    with timer as section:
        if scene is None:
            raise RuntimeError("skipped: the simulated scene could not be made")
        _tiling_section(report, out, settings, seed, scene, files)
    _record(result, section.title, section.elapsed_s, timer.failed)

    found = [name for name in capabilities if _find_capability(name)]
    logger.info("capability demo sections found: %s", ", ".join(found) or "none")
    for name in found:
        logger.info("running demo section %s", name)
        elapsed, error = _run_capability(report, name, out, quick=quick, seed=seed)
        result.timings_s[name] = elapsed
        if error is not None:
            result.failures[name] = error
    missing = [name for name in capabilities if name not in found]

    report.section("Run summary")
    report.table(
        [
            {
                "section": name,
                "status": "failed" if name in result.failures else "ok",
                "wall time (s)": seconds,
            }
            for name, seconds in result.timings_s.items()
        ],
        caption="Wall time per section",
    )
    if missing:
        report.text("Not installed in this build: " + ", ".join(f"`{m}`" for m in missing) + ".")
    result.outputs = sorted(
        path
        for pattern in ("*.tif", "*.tiff", "*.geojson", "*.csv")
        for path in out.rglob(pattern)
        if not path.name.startswith(".")
    )
    report.provenance(
        seed=seed,
        config={
            "quick": quick,
            "out_dir": str(out),
            **{key: value for key, value in vars(settings).items()},
            "capabilities_run": found,
        },
        inputs={name: path for name, path in files.items()},
        extra={"total wall time (s)": round(sum(result.timings_s.values()), 1)},
    )
    report.write(result.report)
    return result


def _record(
    result: DemoResult, name: str, elapsed: float | None, failed: BaseException | None
) -> None:
    result.timings_s[name] = elapsed or 0.0
    if failed is not None:
        logger.error("demo section %r failed: %s", name, failed, exc_info=failed)
        result.failures[name] = f"{type(failed).__name__}: {failed}"


def _default_command(out: Path, quick: bool, seed: int) -> str:
    return f"eokit demo -o {out}" + (" --quick" if quick else "") + f" --seed {seed}"


@click.command("demo")
@out_option("out_dir",
    default="eokit-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder for report.html and the GIS outputs.",
)
@click.option("--quick", is_flag=True, help="Small scenes and short training (about a minute).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of all simulations.")
def demo_command(out_dir: Path, quick: bool, seed: int) -> None:
    """Run every capability on simulated scenes on the CPU; write an HTML report + GeoTIFFs."""
    started = time.perf_counter()
    result = run_demo(out_dir, quick=quick, seed=seed)
    click.echo(f"Report:  {result.report}")
    if result.outputs:
        click.echo(f"Outputs ({len(result.outputs)} files under {out_dir}):")
        for path in result.outputs:
            click.echo(f"  {path}")
    click.echo(f"Done in {time.perf_counter() - started:.0f} s.")
    if result.failures:
        for name, message in result.failures.items():
            click.echo(f"FAILED {name}: {message}", err=True)
        raise click.exceptions.Exit(1)
