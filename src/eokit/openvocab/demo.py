"""Demo section: train on the seen classes of simulated scenes, then name unseen ones at predict."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def add_demo_section(report: Any, out_dir: Path, *, quick: bool, seed: int) -> None:
    """Fit a small open-vocabulary model on simulated scenes; predict seen + unseen classes.

    Demo-sized (a few epochs on a few scenes): the workflow, not the quality, is what it shows;
    ``benchmarks/results/openvocab_sim.json`` has the measured seen/unseen/h-mIoU.
    """
    from eokit.core.raster import read_raster, write_raster
    from eokit.core.report import rgb_quicklook
    from eokit.openvocab.pipeline import (
        evaluate_run,
        fit_run,
        load_named_split,
        predict_image,
        simulated_scenes,
    )

    start = time.perf_counter()
    out = Path(out_dir) / "openvocab"
    out.mkdir(parents=True, exist_ok=True)
    scenes, epochs = (1, 2) if quick else (4, 8)
    fit = fit_run(out / "run", simulate=scenes, size_px=128, tile=128, epochs=epochs,
                  batch_size=4, model_size="small", seed=seed,
                  trainer_overrides={"logger": False})
    split = load_named_split("sim")
    scene = simulated_scenes(1, 128, seed + 7_000)[0]
    image_path = out / "scene.tif"
    write_raster(image_path, np.asarray(scene.image, dtype=np.float32), scene.grid)
    names = list(split.seen) + list(split.unseen)
    pred = predict_image(out / "run", image_path, out / "predict", classes=",".join(names),
                         tile=128, overlap=0)
    scores = evaluate_run(out / "run", simulate=1 if quick else 2, size_px=128,
                          seed=seed + 8_000, out_dir=out / "evaluate")
    report.section(
        "Open-vocabulary segmentation (rotation-ensembled, guided cost aggregation)",
        f"A small open-vocabulary segmenter (locked all-MiniLM-L6-v2 text encoder, locked "
        f"ImageNet EfficientNet-Lite0, four rotations) trained for {epochs} epochs on "
        f"{scenes} simulated scenes with only the {len(split.seen)} seen classes of the `sim` "
        f"split ({', '.join(split.seen)}), then asked at prediction time for those and the "
        f"{len(split.unseen)} unseen ones ({', '.join(split.unseen)}) "
        f"({time.perf_counter() - start:.0f} s). Outputs under `openvocab/predict/`. "
        "Demo-sized: see `benchmarks/results/openvocab_sim.json` for measured quality.")
    report.image_map(rgb_quicklook(np.asarray(scene.image), (0, 1, 2)), title="Image")
    from eokit.openvocab.pipeline import class_colours, index_map
    from eokit.openvocab.task import remap_labels

    colours = class_colours(names)
    truth = remap_labels(np.asarray(scene.label),
                         index_map(list(scene.class_names), names, "scene")).astype(np.float32)
    truth[truth == 255] = np.nan
    report.image_map(truth, title="Reference (seen + unseen classes)", classes=names,
                     class_colors=colours)
    classes = read_raster(pred["classes"]).data[0].astype(np.float32)
    classes[classes == 255] = np.nan
    report.image_map(classes, title="Prediction", classes=names, class_colors=colours)
    report.table([{"seen_miou": scores["seen_miou"], "unseen_miou": scores["unseen_miou"],
                   "h_miou": scores["h_miou"], "train_tiles": fit["train_tiles"]}],
                 caption="Held-out simulated scenes, one confusion matrix over all pixels.")
