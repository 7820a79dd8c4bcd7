"""Demo: simulated pixel time series -> pretrain, fine-tune on 3 % labels, canopy maps + change."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from eokit.core.report import Report

logger = logging.getLogger(__name__)

_CANOPY_COLOURS = ("#e8e0c0", "#1b5e38", "#52a447")


def add_demo_section(report: Report, out_dir: Path, *, quick: bool, seed: int) -> None:
    """Simulate a multi-year series, pretrain, fine-tune a head, map canopy and its changes.

    Writes ``out_dir/timeseries/``: ``canopy_probability_<date>.tif`` (3-band COG),
    ``becomes_forest.tif`` / ``stops_forest.tif`` / ``stops_forest_refined.tif`` (YYYYMMDD COGs),
    ``backbone.safetensors`` and ``model.safetensors``.
    """
    import torch

    from eokit.core.metrics import binary_ranking_metrics
    from eokit.core.raster import write_raster
    from eokit.core.synth.pixel_series import CANOPY_CLASSES, generate_pixel_series
    from eokit.timeseries.data import from_scene
    from eokit.timeseries.model import save_model
    from eokit.timeseries.predict import (
        DATE_NODATA,
        PROBABILITY_NODATA,
        date_code,
        forecast_figure,
    )
    from eokit.timeseries.task import (
        compute_summary,
        finetune,
        forecast_residual_series,
        forecast_series,
        forest_change_dates,
        predict_series,
        pretrain,
        refine_change_dates,
    )

    start = time.perf_counter()
    folder = Path(out_dir) / "timeseries"
    folder.mkdir(parents=True, exist_ok=True)
    size, years, epochs = (32, 1, 2) if quick else (64, 3, 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scene = generate_pixel_series(size, seed=seed, years=years, n_events=4)
        data = from_scene(scene)
        assert data.dates is not None and data.grid is not None and data.targets is not None
        with tempfile.TemporaryDirectory(prefix="eokit_ts_demo_") as work:
            backbone, pre = pretrain(data, Path(work) / "pre", size="tiny", epochs=epochs,
                                     batch_size=128, lr=3e-3, seed=seed, progress=False)
            rng = np.random.default_rng(seed)
            labelled = np.sort(rng.choice(len(data), max(8, int(0.03 * len(data))),
                                          replace=False))
            subset = data.subset(labelled)
            model, fine = finetune(backbone, subset, data.targets[labelled], Path(work) / "ft",
                                   class_names=list(CANOPY_CLASSES), epochs=15 if quick else 40,
                                   batch_size=32, seed=seed, progress=False,
                                   # ~30 labelled pixels in quick mode: too few to hold out.
                                   val_fraction=0.0 if quick else 0.2)
        compute = compute_summary(pre, fine)
        save_model(backbone, folder / "backbone.safetensors",
                   extra={"compute": {"pretraining": pre.as_dict()}})
        save_model(model, folder / "model.safetensors", extra={"compute": compute})
        probs = predict_series(model, data)  # (N, T, 3)
        h, w = data.shape or (size, size)
        last = str(data.dates[-1].astype("datetime64[D]"))
        cube = np.nan_to_num(probs[:, -1, :], nan=PROBABILITY_NODATA).T.reshape(3, h, w)
        write_raster(folder / f"canopy_probability_{last}.tif", cube.astype(np.float32),
                     data.grid, nodata=PROBABILITY_NODATA, cog=True,
                     band_names=list(CANOPY_CLASSES))
        forest = probs[:, :, 1] + probs[:, :, 2]
        warm = int(np.searchsorted(data.dates, data.dates[0] + np.timedelta64(120, "D")))
        becomes, stops = forest_change_dates(forest, data.valid, warmup=warm, smooth=5,
                                             hysteresis=0.1)
        # Each loss of forest dated where the series departs most from the backbone's forecast.
        refined = refine_change_dates(stops, forecast_residual_series(backbone, data),
                                      data.dates)
        for name, index in (("becomes_forest", becomes), ("stops_forest", stops),
                            ("stops_forest_refined", refined)):
            write_raster(folder / f"{name}.tif", date_code(data.dates, index).reshape(1, h, w),
                         data.grid, nodata=DATE_NODATA, dtype="int32", cog=True)
        truth = data.targets
        unlabelled = np.setdiff1d(np.arange(len(data)), labelled)
        scores = {}
        for k, cls in enumerate(CANOPY_CLASSES):
            scores[cls] = binary_ranking_metrics(probs[unlabelled, -1, k],
                                                 truth[unlabelled, -1] == k)["roc_auc"]
        sample = rng.choice(unlabelled, 3, replace=False)
        values, future = forecast_series(backbone, data.subset(sample), 4,
                                         step_days=float(np.median(np.diff(
                                             data.dates.astype("datetime64[D]")).astype(int))))
    finally:
        torch.set_num_threads(threads)

    report.section(
        "Pixel time series: canopy maps from a pretrained series model",
        f"A simulated {size}×{size} px scene observed {len(data.dates)} times over {years} "
        "year(s) at irregular revisit with clouds. An EarthPT-style causal transformer is "
        "pretrained on every pixel without labels (next-date prediction); a small head is then "
        f"trained on {len(labelled)} labelled pixels ({100 * len(labelled) / len(data):.1f} %) "
        "with the backbone frozen. Every date is classified from the observations up to it, "
        "so canopy can be mapped (and its changes dated) through time.",
    )
    report.metrics({
        **{f"ROC-AUC {cls} (last date, unlabelled pixels)": v for cls, v in scores.items()},
        "fine-tuning FLOPs / pretraining FLOPs": f"{100 * compute['flops_ratio']:.2f} %",
        "pretraining tokens": pre.tokens,
        "seconds": round(time.perf_counter() - start, 1),
    }, caption="Quick demo numbers (tiny model, few epochs); see benchmarks for real runs.")
    pixel_size = data.grid.pixel_size_m if data.grid is not None else None
    pred_map = np.where(np.isnan(probs[:, -1, 0]), np.nan,
                        np.nanargmax(np.nan_to_num(probs[:, -1, :], nan=-1), axis=1)).reshape(h, w)
    report.image_map(scene.canopy[-1].astype(np.float32), title=f"canopy truth {last}",
                     pixel_size_m=pixel_size, classes=list(CANOPY_CLASSES),
                     class_colors=list(_CANOPY_COLOURS))
    report.image_map(pred_map, title=f"predicted canopy {last}", pixel_size_m=pixel_size,
                     classes=list(CANOPY_CLASSES), class_colors=list(_CANOPY_COLOURS))
    days = (data.dates.astype("datetime64[D]") - data.dates[0].astype("datetime64[D]")).astype(
        np.float32)
    for index, title in ((stops, "stops being forest (days after first date)"),
                         (refined, "stops being forest, dated by the backbone's forecast")):
        stop_days = np.where(index >= 0, days[np.clip(index, 0, None)], np.nan).reshape(h, w)
        report.image_map(stop_days, title=title, pixel_size_m=pixel_size, cmap="plasma",
                         vmin=0.0, vmax=float(days[-1]), colorbar_label="days",
                         overlay=scene.event_type == 1, overlay_label="true clear-cuts")
    if future is not None:
        report.figure(forecast_figure(data.dates, data.series[sample], data.valid[sample],
                                      future, values, data.band_names,
                                      [f"pixel {n}" for n in sample]),
                      caption="Observed NDVI (valid dates) and a 4-date forecast.")
    report.text(f"Outputs: `{folder}` (probability COG for {last}, change COGs, models).")
