"""``eokit grounding``: train on simulated scenes, detect objects by name, ground expressions."""

from __future__ import annotations

import json
from pathlib import Path

import click

from eokit.core.cliopts import out_option

#: eokit.grounding.dataset.FORMATS, spelled out so ``eokit --help`` does not import torch.
FORMATS = ("dior-rsvg", "opt-rsvg", "synth", "dota", "coco", "isaid")


@click.group(name="grounding")
def grounding() -> None:
    """Open-set object detection and visual grounding (MB-ORES) on remote-sensing images."""


def _print(summary: dict[str, object]) -> None:
    click.echo(json.dumps(summary, indent=2, default=str))


def _classes(text: str | None) -> list[str] | None:
    return None if text is None else text.split(",")


@grounding.command()
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
            help="Model folder (model.safetensors, model.json; split/ when built here).")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Records folder to train on (COCO: the json file) instead of simulated "
                   "scenes; needs --format.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Layout of --data.")
@click.option("--split", "split_dir", type=click.Path(path_type=Path), default=None,
              help="Split folder (<name>.txt in sha256sum format) to use with --data; "
                   "default: build an image-disjoint split into OUT/split.")
@click.option("--simulate", type=click.IntRange(min=6), default=200, show_default=True,
              help="Number of simulated object scenes (one in six held out for the scores); "
                   "ignored with --data.")
@click.option("--size", type=click.IntRange(min=64, max=1024), default=None,
              help="Training image side in pixels, multiple of 32 (default 128 simulated, "
                   "512 with --data: whole images resized for grounding data, windows for "
                   "detection data).")
@click.option("--det-epochs", type=click.IntRange(min=1), default=12, show_default=True,
              help="Detector (stage 1) epochs.")
@click.option("--head-epochs", type=click.IntRange(min=1), default=30, show_default=True,
              help="Grounding head (stage 2) epochs.")
@click.option("--expressions", type=click.Choice(["mixed", "attribute", "relation"]),
              default="mixed", show_default=True, help="Expression style of the scenes.")
@click.option("--no-pretrained", is_flag=True, help="Random image-encoder initialisation.")
@click.option("--selection", type=click.Choice(["hard", "soft"]), default="hard",
              show_default=True,
              help="Grounding answer: the arg-max proposal (hard) or the probability-weighted "
                   "box (soft).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of scenes, split and weights.")
def fit(out_dir: Path, data: Path | None, fmt: str | None, split_dir: Path | None,
        simulate: int, size: int | None, det_epochs: int, head_epochs: int, expressions: str,
        no_pretrained: bool, selection: str, seed: int) -> None:
    """Train the detector and the MB-ORES head on simulated scenes or a records folder."""
    from eokit.core.errors import InputError
    from eokit.grounding.pipeline import fit_records, fit_simulated

    if data is None:
        if fmt is not None or split_dir is not None:
            raise InputError("--format and --split need --data", parameter="data")
        _print(fit_simulated(out_dir, scenes=simulate, size=size or 128, seed=seed,
                             det_epochs=det_epochs, head_epochs=head_epochs,
                             pretrained=not no_pretrained, expression_mix=expressions,
                             selection=selection))
        return
    if fmt is None:
        raise InputError("give the layout of --data", parameter="format")
    _print(fit_records(out_dir, data, fmt, size=size or 512, split_dir=split_dir, seed=seed,
                       det_epochs=det_epochs, head_epochs=head_epochs,
                       pretrained=not no_pretrained, selection=selection))


@grounding.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
            help="Folder for metrics.json and expressions.csv.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Records folder (COCO: the json file); needs --format.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Layout of --data.")
@click.option("--split", "split_dir", type=click.Path(path_type=Path), default=None,
              help="Split folder (e.g. MODEL/split); only images of --split-name are scored.")
@click.option("--split-name", default="test", show_default=True,
              help="Split scored when --split is given.")
@click.option("--simulate", type=click.IntRange(min=1), default=None,
              help="Score on this many simulated scenes instead of --data.")
@click.option("--size", type=click.IntRange(min=64, max=1024), default=128, show_default=True,
              help="Side of the simulated scenes.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of the simulated scenes (differ from the training seed).")
@click.option("--tile", type=click.IntRange(min=64), default=512, show_default=True,
              help="Window in pixels for large images (multiple of 32).")
@click.option("--overlap", type=click.IntRange(min=0), default=128, show_default=True,
              help="Overlap of neighbouring windows.")
@click.option("--max-detections", type=click.IntRange(min=1), default=300, show_default=True,
              help="Detections per image the mAP counts (COCO maxDets).")
def evaluate(model_dir: Path, out_dir: Path, data: Path | None, fmt: str | None,
             split_dir: Path | None, split_name: str, simulate: int | None, size: int,
             seed: int, tile: int, overlap: int, max_detections: int) -> None:
    """Score MODEL_DIR: Pr@0.5-0.9, meanIoU, cumIoU, mAP; metrics.json + expressions.csv."""
    from eokit.grounding.evaluate import evaluate_model

    result = evaluate_model(model_dir, out_dir, data=data, fmt=fmt, split_dir=split_dir,
                            split_name=split_name, simulate=simulate, size=size, seed=seed,
                            tile=tile, overlap=overlap, max_detections=max_detections)
    grounding_scores = result.get("grounding") or {}
    _print({"split": result["split"],
            "grounding": {k: grounding_scores.get(k) for k in
                          ("Pr@0.5", "Pr@0.6", "Pr@0.7", "Pr@0.8", "Pr@0.9", "meanIoU",
                           "cumIoU", "count")} if grounding_scores else None,
            "detection": {k: result["detection"][k] for k in ("mAP@0.5", "mAP@[.5:.95]")},
            "files": result["files"]})


@grounding.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("image", type=click.Path(path_type=Path))
@out_option("out", type=click.Path(path_type=Path), required=True, help="Output GeoJSON.")
@click.option("--classes", default=None,
              help="Comma-separated class names (default: the training vocabulary).")
@click.option("--tile", type=click.IntRange(min=64), default=512, show_default=True,
              help="Window in pixels (multiple of 32).")
@click.option("--overlap", type=click.IntRange(min=0), default=128, show_default=True,
              help="Overlap of neighbouring windows; keep it above the largest object.")
@click.option("--score-threshold", type=click.FloatRange(0, 1), default=0.3, show_default=True,
              help="Lowest detection score kept.")
@click.option("--report/--no-report", default=True, show_default=True,
              help="Write an HTML report (boxes drawn, counts per class) beside the GeoJSON.")
def detect(model_dir: Path, image: Path, out: Path, classes: str | None, tile: int,
           overlap: int, score_threshold: float, report: bool) -> None:
    """Detect objects of the named classes in IMAGE (any size); boxes to GeoJSON."""
    from eokit.grounding.pipeline import detect_image, load_model

    _print(detect_image(load_model(model_dir), image, out, classes=_classes(classes), tile=tile,
                        overlap=overlap, score_threshold=score_threshold,
                        report_path=out.with_suffix(".html") if report else None))


@grounding.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("image", type=click.Path(path_type=Path))
@click.argument("expression")
@out_option("out", type=click.Path(path_type=Path), required=True, help="Output GeoJSON.")
@click.option("--tile", type=click.IntRange(min=64), default=512, show_default=True,
              help="Window in pixels (multiple of 32).")
@click.option("--overlap", type=click.IntRange(min=0), default=128, show_default=True,
              help="Overlap of neighbouring windows.")
@click.option("--report/--no-report", default=True, show_default=True,
              help="Write an HTML report (answer, top proposals, boxes) beside the GeoJSON.")
def ground(model_dir: Path, image: Path, expression: str, out: Path, tile: int,
           overlap: int, report: bool) -> None:
    """Find the object EXPRESSION describes in IMAGE; prints its box, writes GeoJSON."""
    from eokit.grounding.pipeline import ground_image, load_model

    _print(ground_image(load_model(model_dir), image, expression, out, tile=tile,
                        overlap=overlap,
                        report_path=out.with_suffix(".html") if report else None))


from eokit.grounding.adapt_cli import adapt_command  # noqa: E402

grounding.add_command(adapt_command)
