"""Demo section: a small detector + MB-ORES head trained on simulated scenes, detect and ground."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def add_demo_section(report: Any, out_dir: Path, *, quick: bool, seed: int) -> None:
    """Train on simulated object scenes; detect and ground on a new scene in ``out_dir/grounding``.

    Demo-sized (seconds of training): the pictures show the workflow, not the quality, which
    ``benchmarks/results/grounding_sim.json`` measures.
    """
    import torch

    from eokit.core.synth.objects import generate_object_scene, write_object_scene
    from eokit.grounding.boxes import elementwise_iou
    from eokit.grounding.dataset import encoder_array
    from eokit.grounding.pipeline import detect_image, fit_simulated, ground_image, load_model
    from eokit.grounding.report import answer_figure, detections_figure

    start = time.perf_counter()
    out = Path(out_dir) / "grounding"
    out.mkdir(parents=True, exist_ok=True)
    scenes, det_epochs, head_epochs = (16, 6, 4) if quick else (90, 14, 12)
    fit = fit_simulated(out / "model", scenes=scenes, size=96, seed=seed,
                        det_epochs=det_epochs, head_epochs=head_epochs, pretrained=True,
                        dim=64, head_dim=64, branch_layers=1, reasoner_layers=1)
    scene = generate_object_scene(128, seed=seed + 1000, n_expressions=3)
    image_path = write_object_scene(scene, out / "scene")["image"]
    model = load_model(out / "model")
    expression = scene.expressions[0]
    answer = ground_image(model, image_path, expression.text, out / "answer.geojson",
                          report_path=None)
    names = list(model.class_names)
    dets_summary = detect_image(model, image_path, out / "detections.geojson", classes=names,
                                score_threshold=0.3, report_path=None)
    image = encoder_array(image_path)
    target = torch.as_tensor(scene.boxes()[expression.target])[None]
    iou = float(elementwise_iou(torch.tensor([answer["box_px"]]), target)[0])
    elapsed = time.perf_counter() - start
    report.section(
        "Detection and visual grounding (MB-ORES)",
        f"A text-conditioned detector on the ImageNet EfficientNet-Lite0 encoder "
        f"({det_epochs} epochs) and an MB-ORES grounding head ({head_epochs} epochs) trained on "
        f"{scenes - max(1, scenes // 6)} simulated 96 px object scenes ({elapsed:.0f} s in all), "
        "then run on a new 128 px scene: `eokit grounding detect` finds objects by class name "
        "and `eokit grounding ground` finds the one object an expression describes. Outputs in "
        "`grounding/` (GeoJSON in the scene's CRS). Demo-sized: see "
        "`benchmarks/results/grounding_sim.json` for measured quality.",
    )
    report.figure(answer_figure(image, answer),
                  caption=f"Expression ({expression.kind}): \u201c{expression.text}\u201d. "
                          f"IoU of the answer with the true object: {iou:.2f}.")
    from eokit.grounding.pipeline import detect_array

    dets = detect_array(model, image, names, score_threshold=0.3)
    report.figure(detections_figure(image, dets, names), caption="Detections by class name.")
    report.table([{"class": n, "detected": dets_summary["per_class"][n],
                   "true objects": scene.labels().count(n)} for n in names],
                 caption="Detections (score >= 0.3) against the scene's objects.")
    report.table([{"held-out Pr@0.5": fit["test_grounding"]["Pr@0.5"],
                   "held-out meanIoU": fit["test_grounding"]["meanIoU"],
                   "held-out mAP@0.5": fit["test_detection"]["mAP@0.5"],
                   "held-out scenes": fit["test_scenes"]}],
                 caption="Scores on the held-out simulated scenes of this demo-sized run.")
