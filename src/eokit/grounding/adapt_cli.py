"""``eokit grounding adapt``: parameter-efficient adaptation of a model folder to a new domain."""

from __future__ import annotations

import json
from pathlib import Path

import click

from eokit.core.cliopts import out_option


@click.command(name="adapt")
@click.argument("model_dir", type=click.Path(path_type=Path))
@out_option("out", type=click.Path(path_type=Path), default=None,
            help="Adapter file to write (.safetensors; default MODEL_DIR/adapter-DOMAIN).")
@click.option("--method", default="lora:fusion", show_default=True,
              help="lora:text|vision|fusion|decoder|all, bitfit, adapter:R, head-only or full; "
                   "comma combinations allowed (lora:text,bitfit).")
@click.option("--records", type=click.Path(path_type=Path), default=None,
              help="Folder of scene folders (expressions.json + image) instead of simulation.")
@click.option("--simulate", type=click.IntRange(min=2), default=40, show_default=True,
              help="Simulated target scenes (one in five held out for the scores).")
@click.option("--size", type=click.IntRange(min=64, max=512), default=64, show_default=True,
              help="Side of the simulated scenes in pixels (multiple of 32).")
@click.option("--gsd", type=click.FloatRange(0.1, 5.0), default=1.0, show_default=True,
              help="Ground sampling distance of the simulated target domain (m).")
@click.option("--gain", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="Radiometric gain of the simulated target sensor.")
@click.option("--blur", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="Point-spread blur sigma of the simulated target sensor (pixels).")
@click.option("--classes", default=None,
              help="Comma-separated object classes of the simulated target domain.")
@click.option("--expressions", type=click.Choice(["mixed", "attribute", "relation"]),
              default="relation", show_default=True, help="Expression style of the target.")
@click.option("--phrasing", type=click.Choice(["plain", "wordy"]), default="plain",
              show_default=True, help="Phrasing of the simulated expressions.")
@click.option("--label-share", type=click.FloatRange(0.0, 1.0, min_open=True), default=1.0,
              show_default=True, help="Share of the target training scenes used (labels).")
@click.option("--steps", type=click.IntRange(min=1), default=60, show_default=True,
              help="Optimiser steps.")
@click.option("--rank", type=click.IntRange(min=1), default=8, show_default=True,
              help="LoRA rank.")
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=1e-3,
              show_default=True, help="Learning rate (full fine-tuning uses a tenth).")
@click.option("--domain", default="target", show_default=True,
              help="Name of the target domain (stored in the adapter file).")
@click.option("--evaluate", "evaluate_file", type=click.Path(path_type=Path), default=None,
              help="Score an existing adapter file on the target data instead of training.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), default=None,
              help="Cost report JSON (default: the adapter file with .json).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of scenes, label subset and training.")
def adapt_command(model_dir: Path, out: Path | None, method: str, records: Path | None,
                  simulate: int, size: int, gsd: float, gain: float, blur: float,
                  classes: str | None, expressions: str, phrasing: str, label_share: float,
                  steps: int, rank: int, lr: float, domain: str, evaluate_file: Path | None,
                  report_path: Path | None, seed: int) -> None:
    """Adapt MODEL_DIR to a target domain training only the parameters --method names.

    Prints and writes the cost report: trainable parameters, optimizer-state memory, step
    time, peak RSS, adapter file size, and the target scores before and after.
    """
    from eokit.grounding.adapt import adapt_model_dir, evaluate_adapter, target_samples

    names = None if classes is None else [c.strip() for c in classes.split(",")]
    samples = target_samples(scenes=simulate, size=size, seed=1000 + seed, gsd_m=gsd,
                             gain=gain, blur_sigma=blur, classes=names,
                             expression_mix=expressions, phrasing=phrasing, records=records)
    if evaluate_file is not None:
        summary = evaluate_adapter(model_dir, evaluate_file, samples)
    else:
        target = out if out is not None else model_dir / f"adapter-{domain}.safetensors"
        summary = adapt_model_dir(model_dir, target, method=method, samples=samples,
                                  label_share=label_share, steps=steps, rank=rank, lr=lr,
                                  seed=seed, domain=domain,
                                  report_path=report_path or target.with_suffix(".json"))
    click.echo(json.dumps(summary, indent=2, default=str))
