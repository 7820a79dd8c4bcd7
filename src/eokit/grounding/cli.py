"""``eokit grounding``: train on simulated scenes, detect objects by name, ground expressions."""

from __future__ import annotations

import json
from pathlib import Path

import click

from eokit.core.cliopts import out_option


@click.group(name="grounding")
def grounding() -> None:
    """Open-set object detection and visual grounding (MB-ORES) on remote-sensing images."""


def _print(summary: dict[str, object]) -> None:
    click.echo(json.dumps(summary, indent=2, default=str))


def _classes(text: str | None) -> list[str] | None:
    return None if text is None else text.split(",")


@grounding.command()
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
            help="Model folder (model.safetensors, model.json).")
@click.option("--simulate", type=click.IntRange(min=6), default=200, show_default=True,
              help="Number of simulated object scenes (one in six held out for the scores).")
@click.option("--size", type=click.IntRange(min=64, max=1024), default=128, show_default=True,
              help="Side of the simulated scenes in pixels (multiple of 32).")
@click.option("--det-epochs", type=click.IntRange(min=1), default=12, show_default=True,
              help="Detector (stage 1) epochs.")
@click.option("--head-epochs", type=click.IntRange(min=1), default=30, show_default=True,
              help="Grounding head (stage 2) epochs.")
@click.option("--expressions", type=click.Choice(["mixed", "attribute", "relation"]),
              default="mixed", show_default=True, help="Expression style of the scenes.")
@click.option("--no-pretrained", is_flag=True, help="Random image-encoder initialisation.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of scenes and weights.")
def fit(out_dir: Path, simulate: int, size: int, det_epochs: int, head_epochs: int,
        expressions: str, no_pretrained: bool, seed: int) -> None:
    """Train the detector and the MB-ORES head on simulated scenes."""
    from eokit.grounding.pipeline import fit_simulated

    _print(fit_simulated(out_dir, scenes=simulate, size=size, seed=seed, det_epochs=det_epochs,
                         head_epochs=head_epochs, pretrained=not no_pretrained,
                         expression_mix=expressions))


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
def detect(model_dir: Path, image: Path, out: Path, classes: str | None, tile: int,
           overlap: int, score_threshold: float) -> None:
    """Detect objects of the named classes in IMAGE (any size); boxes to GeoJSON."""
    from eokit.grounding.pipeline import detect_image, load_model

    _print(detect_image(load_model(model_dir), image, out, classes=_classes(classes), tile=tile,
                        overlap=overlap, score_threshold=score_threshold))


@grounding.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("image", type=click.Path(path_type=Path))
@click.argument("expression")
@out_option("out", type=click.Path(path_type=Path), required=True, help="Output GeoJSON.")
@click.option("--tile", type=click.IntRange(min=64), default=512, show_default=True,
              help="Window in pixels (multiple of 32).")
@click.option("--overlap", type=click.IntRange(min=0), default=128, show_default=True,
              help="Overlap of neighbouring windows.")
def ground(model_dir: Path, image: Path, expression: str, out: Path, tile: int,
           overlap: int) -> None:
    """Find the object EXPRESSION describes in IMAGE; prints its box, writes GeoJSON."""
    from eokit.grounding.pipeline import ground_image, load_model

    _print(ground_image(load_model(model_dir), image, expression, out, tile=tile,
                        overlap=overlap))
