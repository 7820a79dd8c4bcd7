"""``eokit noisy``: corrupt label folders, fit with noisy labels, predict scenes, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import click

from eokit.core.cliopts import out_option
from eokit.core.train import TRAINER_CONTEXT_SETTINGS


@click.group(name="noisy")
def noisy() -> None:
    """Segmentation that learns from spatially correlated label noise (KMS-covariance model)."""


def _print(summary: dict[str, object]) -> None:
    click.echo(json.dumps(summary, indent=2, default=str))


@noisy.command()
@click.argument("root", type=click.Path(path_type=Path))
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
              help="Output folder (labels/<name>.tif and noise.json).")
@click.option("--level", type=click.Choice(["clean", "L1", "L2", "L3"]), default="L2",
              show_default=True, help="Object-level noise (remove/add/outline probabilities).")
@click.option("--misregister-px", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also shift each label by up to this many pixels.")
@click.option("--pattern", default="", help="Only files whose name contains this text.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Noise seed (each file's noise depends only on the seed and its name).")
def corrupt(root: Path, out_dir: Path, level: str, misregister_px: int, pattern: str,
            seed: int) -> None:
    """Write noisy copies of ROOT's labels (xBD, WHU, Inria or images/+labels/ layout)."""
    from eokit.noisy.pipeline import corrupt_folder

    _print(corrupt_folder(root, out_dir, level=level, seed=seed, misregister_px=misregister_px,
                          pattern=pattern))


@noisy.command()
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
            help="Output folder (images/<name>.tif and masks/<name>.tif).")
@click.option("--scenes", type=click.IntRange(min=1), default=4, show_default=True,
              help="Number of simulated scenes (each holds buildings).")
@click.option("--size", type=click.IntRange(min=32), default=256, show_default=True,
              help="Scene size in pixels.")
@click.option("--gsd", type=click.FloatRange(min=0.1, max=30.0), default=1.5, show_default=True,
              help="Ground sampling distance in metres.")
@click.option("--seed", type=int, default=0, show_default=True, help="Simulator seed.")
def simulate(out_dir: Path, scenes: int, size: int, gsd: float, seed: int) -> None:
    """Write simulated building scenes with their clean masks, as an images/+masks/ folder."""
    from eokit.noisy.pipeline import simulate_folder

    _print(simulate_folder(out_dir, scenes, size, seed=seed, gsd_m=gsd))


@noisy.command(context_settings=TRAINER_CONTEXT_SETTINGS)
@click.argument("root", type=click.Path(path_type=Path), required=False)
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
              help="Run folder (checkpoints, model, error maps, report).")
@click.option("--labels", "labels_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of noisy labels from 'eokit noisy corrupt' (ROOT's labels are then "
                   "the clean reference).")
@click.option("--simulate", type=click.IntRange(min=0), default=0,
              help="Train on N simulated scenes with L2 noise instead of ROOT.")
@click.option("--loss", type=click.Choice(["kms", "ce", "smooth", "gce", "confusion"]),
              default="kms", show_default=True,
              help="kms (spatially correlated label-noise model) or a baseline.")
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True,
              help="Training epochs.")
@click.option("--tile", type=click.IntRange(min=32), default=256, show_default=True,
              help="Training tile size in pixels (multiple of 32).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Tiles per batch.")
@click.option("--rho", type=float, default=0.75, show_default=True,
              help="KMS correlation of the label-error field, in [0, 1).")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Learning rate.")
@click.option("--estep", type=click.IntRange(min=0), default=10, show_default=True,
              help="E-step Adam steps per batch.")
@click.option("--encoder", default="efficientnet_lite0", show_default=True,
              help="Image encoder (catalogue EfficientNet-Lite or a timm name).")
@click.option("--no-pretrained", is_flag=True, help="Random encoder initialisation.")
@click.option("--pattern", default="", help="Only files whose name contains this text.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of weights, tiles and order.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/last.ckpt.")
@click.option("--store-on-disk", is_flag=True,
              help="Memory-map the per-image posterior in OUT/posterior (24 bytes per training "
                   "pixel) instead of holding it in memory.")
@click.pass_context
def fit(ctx: click.Context, root: Path | None, out_dir: Path, labels_dir: Path | None,
        simulate: int, loss: str, epochs: int, tile: int, batch_size: int, rho: float,
        lr: float, estep: int, encoder: str, no_pretrained: bool, pattern: str, seed: int,
        resume: bool, store_on_disk: bool) -> None:
    """Train on ROOT's images with noisy labels; writes model, label-error maps and a report."""
    from eokit.core.train import parse_trainer_overrides
    from eokit.noisy.kms import check_rho
    from eokit.noisy.pipeline import fit_folder

    check_rho(rho, "--rho")
    overrides = parse_trainer_overrides(ctx.args)
    summary = fit_folder(root, out_dir, labels_dir=labels_dir, loss=loss, epochs=epochs,
                         tile=tile, batch_size=batch_size, rho=rho, lr=lr, estep=estep,
                         encoder=encoder, pretrained=not no_pretrained, pattern=pattern,
                         seed=seed, resume=resume, simulate=simulate,
                         store_on_disk=store_on_disk, trainer_overrides=overrides)
    _print(summary)


@noisy.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("image", type=click.Path(path_type=Path))
@out_option("out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--tile", type=click.IntRange(min=32), default=512, show_default=True,
              help="Inference window in pixels.")
@click.option("--overlap", type=click.IntRange(min=0), default=64, show_default=True,
              help="Overlap of neighbouring windows in pixels.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
def predict(model_dir: Path, image: Path, out_dir: Path, tile: int, overlap: int,
            device: str) -> None:
    """Classify IMAGE (any size, streamed in tiles) to classes.tif + probability.tif (COGs)."""
    from eokit.noisy.pipeline import predict_image

    _print(predict_image(model_dir, image, out_dir, tile=tile, overlap=overlap, device=device))


@noisy.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("root", type=click.Path(path_type=Path))
@out_option("out_dir", type=click.Path(path_type=Path), default=None,
              help="Write metrics.json here.")
@click.option("--pattern", default="", help="Only files whose name contains this text.")
def evaluate(model_dir: Path, root: Path, out_dir: Path | None, pattern: str) -> None:
    """Dataset-level IoU/F1 of a trained model on ROOT's labels (one confusion matrix)."""
    from eokit.noisy.pipeline import evaluate_folder

    _print(evaluate_folder(model_dir, root, pattern=pattern, out_dir=out_dir))


@noisy.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("root", type=click.Path(path_type=Path))
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
            help="Output folder (issues/<name>.tif and issues.json).")
@click.option("--labels", "labels_dir", type=click.Path(path_type=Path), default=None,
              help="Check these labels (e.g. from 'eokit noisy corrupt') instead of ROOT's; "
                   "ROOT's are then the clean reference.")
@click.option("--pattern", default="", help="Only files whose name contains this text.")
def issues(model_dir: Path, root: Path, out_dir: Path, labels_dir: Path | None,
           pattern: str) -> None:
    """Flag probable label errors of ROOT by confident learning (cleanlab) on MODEL_DIR's output."""
    from eokit.noisy.pipeline import issues_folder

    summary = issues_folder(model_dir, root, out_dir, labels_dir=labels_dir, pattern=pattern)
    summary.pop("per_file", None)
    _print(summary)
