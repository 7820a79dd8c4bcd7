"""``eokit openvocab``: fit on seen classes, predict any class list on a scene, evaluate h-mIoU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from eokit.core.cliopts import out_option
from eokit.core.train import TRAINER_CONTEXT_SETTINGS


@click.group(name="openvocab")
def openvocab() -> None:
    """Open-vocabulary segmentation: name the classes at prediction time."""


def _print(summary: dict[str, Any]) -> None:
    click.echo(json.dumps(summary, indent=2, default=str))


def _rotations(text: str) -> tuple[int, ...]:
    from eokit.core.errors import InputError

    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise InputError(f"give angles like 0,90,180,270, not {text!r}",
                         parameter="--rotations") from None


def _bands(text: str | None) -> list[int] | None:
    from eokit.core.errors import InputError

    if not text:
        return None
    try:
        return [int(p) for p in text.split(",")]
    except ValueError:
        raise InputError(f"give 1-based band numbers like 1,2,3, not {text!r}",
                         parameter="--bands") from None


@openvocab.command(context_settings=TRAINER_CONTEXT_SETTINGS)
@click.argument("root", type=click.Path(path_type=Path), required=False)
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
            help="Run folder (model, config, checkpoints, report).")
@click.option("--simulate", type=click.IntRange(min=0), default=0,
              help="Train on N simulated scenes instead of ROOT.")
@click.option("--layout", type=click.Choice(["auto", "loveda", "isprs", "isaid", "openearthmap",
                                             "dlrsd", "generic"]), default="auto",
              show_default=True, help="Folder layout of ROOT.")
@click.option("--split", default="sim", show_default=True,
              help="Seen/unseen split: a packaged name (sim, ...) or a YAML file.")
@click.option("--size", "size_px", type=click.IntRange(min=64), default=256, show_default=True,
              help="Side of each simulated scene in pixels.")
@click.option("--tile", type=click.IntRange(min=32), default=128, show_default=True,
              help="Training tile size (multiple of 32).")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True,
              help="Training epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Tiles per batch.")
@click.option("--lr", type=float, default=2e-3, show_default=True, help="Learning rate.")
@click.option("--model-size", type=click.Choice(["small", "base"]), default="base",
              show_default=True, help="Aggregation network size (small: CPU benchmarks).")
@click.option("--rotations", default="0,90,180,270", show_default=True,
              help="Angles of the rotation ensemble (0 alone switches it off).")
@click.option("--no-guidance", is_flag=True, help="Ablation: spatial refinement unguided.")
@click.option("--no-back-projection", is_flag=True,
              help="Ablation: no semantic back-projection module and loss.")
@click.option("--no-class-refinement", is_flag=True, help="Ablation: no attention across classes.")
@click.option("--head", type=click.Choice(["aggregate", "cosine"]), default="aggregate",
              show_default=True, help="aggregate (full model) or cosine (dense-cosine baseline).")
@click.option("--encoder", default="efficientnet_lite0", show_default=True,
              help="Image encoder: efficientnet_lite0/efficientnet_lite2 (catalogue) or "
                   "open_clip (with --clip-model and --clip-weights).")
@click.option("--clip-model", default="ViT-B-16", show_default=True,
              help="open_clip architecture name.")
@click.option("--clip-weights", type=click.Path(path_type=Path), default=None,
              help="Local open_clip weights file for --clip-model.")
@click.option("--sam-checkpoint", type=click.Path(path_type=Path), default=None,
              help="Local Segment Anything checkpoint: its ViT image encoder guides the "
                   "spatial refinement.")
@click.option("--sam-variant", type=click.Choice(["vit_b", "vit_l", "vit_h"]), default="vit_b",
              show_default=True, help="Size of the SAM checkpoint.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of scenes and weights.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/last.ckpt.")
@click.pass_context
def fit(ctx: click.Context, root: Path | None, out_dir: Path, simulate: int, layout: str,
        split: str, size_px: int, tile: int, epochs: int, batch_size: int, lr: float,
        model_size: str, rotations: str, no_guidance: bool, no_back_projection: bool,
        no_class_refinement: bool, head: str, encoder: str, clip_model: str,
        clip_weights: Path | None, sam_checkpoint: Path | None, sam_variant: str, seed: int,
        resume: bool) -> None:
    """Train on the seen classes of --split (ROOT folder or --simulate N scenes)."""
    from eokit.core.train import parse_trainer_overrides
    from eokit.openvocab.pipeline import fit_run

    enc: dict[str, Any] = {"encoder": encoder}
    if encoder == "open_clip":
        enc.update(clip_model=clip_model, clip_weights=None if clip_weights is None
                   else str(clip_weights))
    if sam_checkpoint is not None:
        enc.update(guidance_encoder="sam", sam_checkpoint=str(sam_checkpoint),
                   sam_variant=sam_variant)
    extra = list(ctx.args)
    if root is not None and str(root).startswith("--"):  # click gave a trainer option as ROOT
        extra.insert(0, str(root))
        root = None
    overrides = parse_trainer_overrides(extra)
    _print(fit_run(out_dir, root=root, layout=layout, simulate=simulate, split=split,
                   size_px=size_px, tile=tile, epochs=epochs, batch_size=batch_size, lr=lr,
                   encoder=enc, model_size=model_size, seed=seed, resume=resume,
                   trainer_overrides=overrides, rotations=_rotations(rotations),
                   guidance=not no_guidance, back_projection=not no_back_projection,
                   class_refinement=not no_class_refinement, head=head))


@openvocab.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("image", type=click.Path(path_type=Path))
@out_option("out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--classes", default=None,
              help='Comma-separated class names, e.g. "building,road,tree,water".')
@click.option("--vocabulary", type=click.Path(path_type=Path), default=None,
              help="Vocabulary YAML (names, synonyms, descriptions); all its classes when "
                   "--classes is not given.")
@click.option("--bands", default=None, help="1-based bands of IMAGE to use, e.g. 1,2,3.")
@click.option("--tile", type=click.IntRange(min=32), default=512, show_default=True,
              help="Inference window in pixels.")
@click.option("--overlap", type=click.IntRange(min=0), default=64, show_default=True,
              help="Overlap of neighbouring windows in pixels.")
@click.option("--warn-below", type=click.FloatRange(-1, 1), default=0.5, show_default=True,
              help="Warn for a class whose text is less similar than this to every "
                   "training class.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
def predict(model_dir: Path, image: Path, out_dir: Path, classes: str | None,
            vocabulary: Path | None, bands: str | None, tile: int, overlap: int,
            warn_below: float, device: str) -> None:
    """Segment IMAGE (any size, streamed) into the named classes: COGs and an HTML report."""
    from eokit.openvocab.pipeline import predict_image

    _print(predict_image(model_dir, image, out_dir, classes=classes, vocabulary=vocabulary,
                         bands=_bands(bands), tile=tile, overlap=overlap, device=device,
                         warn_below=warn_below))


@openvocab.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("root", type=click.Path(path_type=Path), required=False)
@out_option("out_dir", type=click.Path(path_type=Path), default=None,
            help="Write metrics.json and per_class_iou.csv here.")
@click.option("--simulate", type=click.IntRange(min=0), default=0,
              help="Evaluate on N new simulated scenes instead of ROOT.")
@click.option("--layout", type=click.Choice(["auto", "loveda", "isprs", "isaid", "openearthmap",
                                             "dlrsd", "generic"]), default="auto",
              show_default=True, help="Folder layout of ROOT.")
@click.option("--split", default=None, help="Seen/unseen split (default: the run's).")
@click.option("--size", "size_px", type=click.IntRange(min=64), default=256, show_default=True,
              help="Side of each simulated scene in pixels.")
@click.option("--seed", type=int, default=10_000, show_default=True,
              help="First seed of the simulated evaluation scenes.")
def evaluate(model_dir: Path, root: Path | None, out_dir: Path | None, simulate: int,
             layout: str, split: str | None, size_px: int, seed: int) -> None:
    """Seen, unseen and h-mIoU (one dataset-level confusion matrix) with per-class IoU."""
    from eokit.openvocab.pipeline import evaluate_run

    result = evaluate_run(model_dir, root=root, layout=layout, simulate=simulate, split=split,
                          size_px=size_px, seed=seed, out_dir=out_dir)
    result.pop("per_class", None)
    _print(result)


@openvocab.command()
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
            help="Output folder: scene-<i>/image.tif, label.tif and classes.json.")
@click.option("--scenes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Number of scenes.")
@click.option("--size", "size_px", type=click.IntRange(min=16), default=256, show_default=True,
              help="Side of each scene in pixels.")
@click.option("--classes", default=None,
              help="Comma-separated simulator classes to draw (default: the whole vocabulary).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the first scene (scene i uses seed + i).")
def simulate(out_dir: Path, scenes: int, size_px: int, classes: str | None, seed: int) -> None:
    """Write simulated open-vocabulary scenes (RGB COG, label COG, legend) to try the commands."""
    from eokit.core.synth.vocab import generate_vocab_scene, write_vocab_scene

    written = []
    for i in range(scenes):
        scene = generate_vocab_scene(size_px, seed=seed + i,
                                     classes=None if classes is None else classes.split(","))
        files = write_vocab_scene(scene, out_dir / f"scene-{i:03d}")
        written.append({k: str(v) for k, v in files.items()})
    _print({"scenes": written})
