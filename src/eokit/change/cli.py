"""``eokit change``: fit, adapt, predict and evaluate CANet change models."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from eokit.cli import device_option
from eokit.core.cliopts import out_option

logger = logging.getLogger(__name__)


def _command_line() -> str:
    return "eokit " + " ".join(shlex.quote(a) for a in sys.argv[1:])


#: A change-probability threshold: strictly between 0 and 1.
_THRESHOLD = click.FloatRange(0.0, 1.0, min_open=True, max_open=True)

#: Top-level keys of a change config (its ``train`` section: ``TRAIN_RULES``).
CONFIG_KEYS = ("seed", "out_dir", "model", "datasets", "train", "trainer", "checkpoint", "resume")
#: Keys of one ``datasets`` entry: a simulated dataset (``source: sim``) or a folder (``root``).
DATASET_KEYS = ("name", "source", "sim_domain", "count", "train_count", "val_count", "test_count",
                "size", "bands", "root", "train", "val", "test", "layout", "label_mode")


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a change YAML config; InputError naming the file when it is unusable."""
    import yaml

    from eokit.core.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError("config file not found", path=path)
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise InputError(f"not valid YAML ({str(error).splitlines()[0]})", path=path) from None
    if not isinstance(config, dict):
        raise InputError("config must be a mapping", path=path)
    if not config.get("datasets"):
        raise InputError("config needs a non-empty 'datasets' list", path=path)
    from eokit.change.model import build_canet
    from eokit.core.train import check_arguments, check_keys, check_trainer_options

    # A mistyped key would otherwise be ignored silently (or fail deep inside the model build).
    check_keys(config, CONFIG_KEYS, str(path))
    for section in ("model", "train", "trainer"):
        if not isinstance(config.get(section) or {}, dict):
            raise InputError(f"'{section}' must be a mapping", path=path)
    check_arguments(build_canet, {"domains": [], **(config.get("model") or {})},
                    f"{path}: model")
    names = []
    for number, entry in enumerate(config["datasets"], start=1):
        where = f"{path}: datasets[{number}]"
        if not isinstance(entry, dict):
            raise InputError(f"datasets[{number}] must be a mapping", path=path)
        check_keys(entry, DATASET_KEYS, where)
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            raise InputError(f"datasets[{number}] needs a 'name'", path=path)
        if entry.get("source", "sim") != "sim" or ("root" in entry) == ("source" in entry):
            raise InputError(f"datasets[{number}] ({entry['name']}) needs either 'root: FOLDER' "
                             "or 'source: sim'", path=path)
        names.append(entry["name"])
    if len(set(names)) != len(names):
        raise InputError(f"dataset names must be unique, got {names}", path=path)
    check_keys(config.get("train") or {}, TRAIN_RULES, f"{path}: train")
    for key, value in (config.get("train") or {}).items():
        ok, expected = TRAIN_RULES[key]
        if not ok(value):
            raise InputError(f"train.{key} must be {expected}, got {value!r}", path=path)
    check_trainer_options(config.get("trainer") or {}, f"{path}: trainer")
    return config


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


#: ``train`` keys that only ``adapt`` uses.
ADAPT_ONLY_KEYS = {"placement", "init_from"}

#: What each ``train.<key>`` of a change config accepts: (check, description).
TRAIN_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "batch_size": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "crop": (lambda v: v is None or (isinstance(v, int) and v >= 8),
             "an integer >= 8 (pixels) or null"),
    "lr": (lambda v: _number(v) and v > 0, "a number > 0"),
    "weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "dice_weight": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "pos_weight": (lambda v: v is None or v == "auto" or (_number(v) and v > 0),
                   "'auto' or a number > 0"),
    "placement": (lambda v: v in (None, "all", "decoder", "finest"), "all, decoder or finest"),
    "num_workers": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "tune_threshold": (lambda v: isinstance(v, bool), "true or false"),
    "init_from": (lambda v: v is None or isinstance(v, str), "'auto' or a dataset name"),
}


def build_datasets(
    entries: list[dict[str, Any]],
    *,
    domains: list[str],
    stage: str,
    crop: int | None,
    in_channels: int,
    seed: int,
    label_fraction: float = 1.0,
) -> list[Any]:
    """Per-dataset ``ChangeDataset`` objects for ``stage`` (``train``, ``val`` or ``test``).

    ``entries``: the ``datasets`` of a config checked by :func:`load_config`.
    """
    from eokit.change.data import ChangeDataset, find_pairs, simulated_pairs

    out = []
    for entry in entries:
        name = entry["name"]
        domain = domains.index(name)
        if entry.get("source") == "sim":
            count = int(entry.get(f"{stage}_count", entry.get("count", 16)))
            offset = {"train": 0, "val": 1, "test": 2}[stage]
            pairs: list[Any] = simulated_pairs(
                entry.get("sim_domain", name), count=count, size=int(entry.get("size", 64)),
                seed=seed * 10 + offset,
            )
            if entry.get("bands") is not None:  # e.g. [2, 1, 0]: RGB from the 6 simulated bands
                bands = [int(b) for b in entry["bands"]]
                pairs = [{**p, "image_a": p["image_a"][bands], "image_b": p["image_b"][bands]}
                         for p in pairs]
        else:
            root = entry["root"]
            split = entry.get(stage, stage)
            if split is None:
                continue
            pairs = find_pairs(root, split, entry.get("layout", "auto"))
        if stage == "train" and label_fraction < 1.0:
            import numpy as np

            keep = max(1, int(round(len(pairs) * label_fraction)))
            order = np.random.default_rng(seed).permutation(len(pairs))[:keep]
            pairs = [pairs[i] for i in sorted(order)]
        dataset = ChangeDataset(
            pairs,
            domain=domain,
            crop=crop if stage == "train" else None,
            augment=stage == "train",
            label_mode=entry.get("label_mode", "auto"),
            bands=in_channels,
            seed=seed,
        )
        dataset.check_labels()
        out.append(dataset)
    return out


def _loaders(train: list[Any], val: list[Any], *, batch_size: int, seed: int,
             num_workers: int = 0, pin_memory: bool = False) -> tuple[Any, Any]:
    """Grouped training batches and one validation loader per dataset.

    ``num_workers`` > 0 reads and augments pairs in worker processes. Augmentations depend only
    on (seed, epoch, pair), so workers give the same batches as the main process; workers are
    not persistent, so each epoch's workers start from the datasets at that epoch.
    """
    from torch.utils.data import ConcatDataset, DataLoader

    from eokit.change.data import DomainGroupedBatchSampler, collate_pairs
    from eokit.core.errors import InputError

    if int(num_workers) != num_workers or num_workers < 0:
        raise InputError(f"must be an integer >= 0, got {num_workers!r}",
                         parameter="train.num_workers")
    sampler = DomainGroupedBatchSampler([len(d) for d in train], batch_size, seed=seed,
                                        balance=True)
    train_loader: DataLoader[Any] = DataLoader(
        ConcatDataset(train), batch_sampler=sampler, collate_fn=collate_pairs,
        num_workers=int(num_workers), pin_memory=pin_memory)
    val_loaders = [DataLoader(d, batch_size=1, collate_fn=collate_pairs,
                              num_workers=int(num_workers), pin_memory=pin_memory)
                   for d in val]
    return train_loader, val_loaders or None


def _trainer(out_dir: Path, config: dict[str, Any], overrides: dict[str, Any]) -> Any:
    import lightning

    settings: dict[str, Any] = {
        "max_epochs": 10,
        "accelerator": "cpu",
        "devices": 1,
        "log_every_n_steps": 5,
        **config.get("trainer", {}),
        **overrides,
    }
    # Our batch sampler shards by rank itself; Lightning must not wrap it.
    settings["use_distributed_sampler"] = False
    if settings.get("strategy") == "ddp":
        # Each batch holds one dataset, so the other datasets' BN, adapters and heads get no
        # gradient in that step; DDP must be told, or it stops at the second step.
        settings["strategy"] = "ddp_find_unused_parameters_true"
    settings.setdefault("default_root_dir", str(out_dir))
    settings.setdefault("enable_checkpointing", True)
    every = settings.pop("checkpoint_every_n_steps", None)  # eokit's option, not Lightning's
    callbacks: list[Any] = [
        lightning.pytorch.callbacks.ModelCheckpoint(dirpath=out_dir / "checkpoints",
                                                    save_last=True, every_n_train_steps=every)
    ]
    return lightning.Trainer(callbacks=callbacks, **settings)


def _run_training(
    config: dict[str, Any],
    out_dir: Path,
    overrides: dict[str, Any],
    *,
    model: Any,
    mode: str,
    domain: str | None,
    label_fraction: float = 1.0,
    resume_hint: str = "the same command with --resume",
) -> tuple[Any, dict[str, Any]]:
    import lightning

    from eokit.change.data import resume_loader
    from eokit.change.lit import ChangeTask
    from eokit.core.train import (
        fit_interruptible,
        set_aside_checkpoints,
        skipped_batches_resumed,
    )

    seed = int(config.get("seed", 0))
    lightning.seed_everything(seed, verbose=False)
    train_cfg = config.get("train", {})
    entries = config["datasets"]
    names = list(model.domains)
    if mode == "adapt" and domain not in names:
        names.append(domain)  # added to the model below (init_from) or by prepare_adapt
    common = {"domains": names, "in_channels": model.in_channels, "seed": seed}
    crop = train_cfg.get("crop")
    train = build_datasets(entries, stage="train", crop=crop, label_fraction=label_fraction,
                           **common)
    val = build_datasets(entries, stage="val", crop=None, **common)
    val_sets = {int(d.domain): d for d in val}
    for fit_set in train:
        val_set = val_sets.get(int(fit_set.domain))
        if val_set is None:
            continue
        shared = {str(p.a) for p in fit_set.pairs if hasattr(p, "a")} & {
            str(p.a) for p in val_set.pairs if hasattr(p, "a")}
        if shared:
            logger.warning("%s: %d validation pair(s) are also training pairs, so validation "
                           "scores are optimistic (give lists, or 'val: null')",
                           names[int(fit_set.domain)], len(shared))
    pos_weight = _pos_weights(train_cfg.get("pos_weight"), train)
    if mode == "adapt" and domain is not None and train_cfg.get("init_from") is not None:
        _init_from(model, domain, train_cfg["init_from"], train[0])
    task = ChangeTask(
        model,
        mode=mode,
        adapt_domain=domain,
        lr=float(train_cfg.get("lr", 2e-3)),
        weight_decay=float(train_cfg.get("weight_decay", 1e-4)),
        dice_weight=float(train_cfg.get("dice_weight", 1.0)),
        pos_weight=pos_weight,
        placement=train_cfg.get("placement"),
    )
    if not config.get("resume"):
        set_aside_checkpoints(out_dir)
    trainer = _trainer(out_dir, config, overrides)
    train_loader, val_loaders = _loaders(
        train, val, batch_size=int(train_cfg.get("batch_size", 8)), seed=seed,
        num_workers=train_cfg.get("num_workers", 0),
        pin_memory=isinstance(trainer.accelerator, lightning.pytorch.accelerators.CUDAAccelerator))
    ckpt = out_dir / "checkpoints" / "last.ckpt"
    resume = bool(config.get("resume")) and ckpt.exists()
    done = 0
    if resume:
        # The first resumed epoch's iterator exists before any epoch hook runs.
        _, done = resume_loader(train_loader, ckpt)
    if bool(config.get("resume")) and not resume:
        logger.warning("resume: no %s yet; training from the start", ckpt)
    model.train()  # a loaded model comes in eval mode; Lightning keeps the mode it finds
    with skipped_batches_resumed(done > 0):
        fit_interruptible(trainer, task, train_loader, val_loaders,
                          ckpt_path=str(ckpt) if resume else None, weights_only=True,
                          resume_hint=resume_hint)
    if val_loaders and not task.val_metrics:
        # A resumed run whose epochs were all done trains nothing and validates nothing: score
        # the model now rather than report Lightning's two-batch sanity check.
        trainer.validate(task, val_loaders, verbose=False)
    if train_cfg.get("tune_threshold", True):
        _tune_thresholds(model, train, only=domain)
    return task, task.val_metrics


def _pos_weights(setting: Any, train: list[Any]) -> dict[int, float] | float | None:
    """``train.pos_weight``: None (1), a number, or ``auto`` (per dataset from its labels)."""
    from eokit.change.task import positive_weight
    from eokit.core.errors import InputError

    if setting is None:
        return None
    if setting == "auto":
        return {int(d.domain): positive_weight(d) for d in train}
    try:
        return float(setting)
    except (TypeError, ValueError):
        raise InputError(f"use a number or 'auto', got {setting!r}",
                         parameter="train.pos_weight") from None


def _init_from(model: Any, domain: str, setting: Any, train: Any) -> None:
    """``train.init_from``: ``auto`` (closest known dataset on the training labels) or a name."""
    from eokit.change.task import closest_domain

    if domain in model.domains:
        return
    source = closest_domain(model, _plain(train)) if setting == "auto" else setting
    model.add_domain(domain, init_from=source)


def _plain(dataset: Any) -> Any:
    """The same pairs without crops or augmentation (threshold choice, closest dataset)."""
    from eokit.change.data import ChangeDataset

    return ChangeDataset(dataset.pairs, domain=dataset.domain, label_mode=dataset.label_mode,
                         bands=dataset.bands)


def _tune_thresholds(model: Any, train: list[Any], *, only: str | None) -> None:
    """Store each dataset's F1-optimal threshold on its training pairs in ``model.thresholds``."""
    from eokit.change.task import choose_threshold

    for dataset in train:
        name = model.domains[int(dataset.domain)]
        if only is not None and name != only:
            continue
        model.thresholds[name] = choose_threshold(model, _plain(dataset), domain=name,
                                                  batch_size=1)
        logger.info("threshold of %s chosen on its training labels: %.2f", name,
                    model.thresholds[name])


@click.group()
def change() -> None:
    """Change detection across datasets: CANet with per-dataset BN, adapters and ICM."""


@change.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path),
              help="YAML config (see configs/change/).")
@out_option("out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: config out_dir).")
@click.option("--resume", is_flag=True,
              help="Continue from OUT/checkpoints/last.ckpt (same as 'resume: true').")
@click.argument("trainer_args", nargs=-1, type=click.UNPROCESSED)
def fit(config_path: Path, out_dir: Path | None, resume: bool,
        trainer_args: tuple[str, ...]) -> None:
    """Joint training on every dataset of the config; writes model.safetensors."""
    from eokit.change.model import build_canet
    from eokit.change.task import save_model
    from eokit.core.train import parse_trainer_overrides, seed_everything

    config = load_config(config_path)
    overrides = parse_trainer_overrides(trainer_args)
    for key in ADAPT_ONLY_KEYS & set(config.get("train") or {}):
        logger.warning("train.%s applies to 'eokit change adapt' only; fit ignores it", key)
    out = Path(out_dir or config.get("out_dir", "runs/change"))
    out.mkdir(parents=True, exist_ok=True)
    domains = [d["name"] for d in config["datasets"]]
    seed_everything(int(config.get("seed", 0)))  # the config's seed draws the initial weights
    model = build_canet(domains, **config.get("model", {}))
    if resume:
        config["resume"] = True
    hint = f"eokit change fit --config {config_path} -o {out} --resume"
    _, metrics = _run_training(config, out, overrides, model=model, mode="joint", domain=None,
                               resume_hint=hint)
    path = save_model(model, out / "model.safetensors")
    _write_json(out / "val_metrics.json", metrics)
    click.echo(f"model: {path}")
    for name, values in metrics.items():
        click.echo(f"{name}: F1 {values['f1']:.3f}  IoU {values['iou']:.3f}  "
                   f"kappa {values['kappa']:.3f}")


@change.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path),
              help="YAML config whose 'datasets' holds the one new dataset.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Shared model (model.safetensors); default: config 'checkpoint'.")
@click.option("--adapter", "adapters", multiple=True, type=click.Path(path_type=Path),
              help="Adapter file(s) of other datasets to load first (NAME=FILE renames), so "
                   "the new dataset can start from one of them (train.init_from).")
@out_option("out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: config out_dir).")
@click.option("--label-fraction", type=float, default=1.0, show_default=True,
              help="Use this share of the training pairs (limited-label experiments).")
@click.option("--resume", is_flag=True,
              help="Continue from OUT/checkpoints/last.ckpt (same as 'resume: true').")
@click.argument("trainer_args", nargs=-1, type=click.UNPROCESSED)
def adapt(
    config_path: Path,
    checkpoint: Path | None,
    adapters: tuple[Path, ...],
    out_dir: Path | None,
    label_fraction: float,
    resume: bool,
    trainer_args: tuple[str, ...],
) -> None:
    """Add a new dataset to a trained model; train only its adapters, ICM, BN and head."""
    from eokit.change.task import save_domain_adapter
    from eokit.core.errors import InputError
    from eokit.core.train import parse_trainer_overrides

    config = load_config(config_path)
    if len(config["datasets"]) != 1:
        raise InputError("adapt needs exactly one dataset in 'datasets'", path=config_path)
    if not 0.0 < label_fraction <= 1.0:
        raise InputError(f"must be in (0, 1], got {label_fraction}", parameter="label_fraction")
    checkpoint = checkpoint or config.get("checkpoint")
    if checkpoint is None:
        raise InputError("give --checkpoint (the shared model)", parameter="checkpoint")
    overrides = parse_trainer_overrides(trainer_args)
    out = Path(out_dir or config.get("out_dir", "runs/change_adapt"))
    out.mkdir(parents=True, exist_ok=True)
    model = _load(Path(checkpoint), adapters)
    name = config["datasets"][0]["name"]
    if resume:
        config["resume"] = True
    extra = "".join(f" --adapter {a}" for a in adapters)
    hint = (f"eokit change adapt --config {config_path} --checkpoint {checkpoint}{extra} "
            f"-o {out} --resume")
    task, metrics = _run_training(config, out, overrides, model=model, mode="adapt", domain=name,
                                  label_fraction=label_fraction, resume_hint=hint)
    report = task.adapt_report
    click.echo(
        f"trainable parameters for {name}: {report['trainable']:,} of {report['total']:,} "
        f"({report['percent']:.2f} %)"
    )
    path = save_domain_adapter(model, name, out / f"adapter_{name}.safetensors")
    _write_json(out / "adapt.json", {"domain": name, "trainable": report,
                                     "val_metrics": metrics, "checkpoint": str(checkpoint)})
    click.echo(f"adapter: {path} ({path.stat().st_size / 1024:.1f} KiB)")
    for values in metrics.values():
        click.echo(f"{name}: F1 {values['f1']:.3f}  IoU {values['iou']:.3f}  "
                   f"kappa {values['kappa']:.3f}")


def _load(checkpoint: Path, adapters: tuple[Path, ...]) -> Any:
    """Shared model plus any number of adapter files (``FILE`` or ``NAME=FILE``)."""
    from eokit.change.task import load_domain_adapter, load_model

    model = load_model(checkpoint)
    for item in adapters:
        text = str(item)
        name = None
        if "=" in text and not Path(text).exists():
            name, text = text.split("=", 1)
        load_domain_adapter(model, Path(text), name=name or None)
    return model


@change.command()
@click.argument("image_a", type=click.Path(path_type=Path))
@click.argument("image_b", type=click.Path(path_type=Path))
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="Shared model (model.safetensors).")
@click.option("--adapter", "adapters", multiple=True, type=click.Path(path_type=Path),
              help="Adapter file from 'eokit change adapt' (repeat for several; NAME=FILE "
                   "loads it under another dataset name).")
@click.option("--domain", required=True, help="Dataset whose adapters/BN/head to use.")
@click.option("--label", type=click.Path(path_type=Path), default=None,
              help="Optional reference label (adds metrics).")
@click.option("--label-mode", default="auto", show_default=True,
              type=click.Choice(["auto", "0-255", "0-1", "0-1-ignore255"]),
              help="How label values map to change (auto: 0 = no change, any other value = "
                   "change).")
@out_option("out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--threshold", type=_THRESHOLD, default=None,
              help="Change threshold (default: the dataset's, chosen on its training labels, "
                   "else 0.5).")
@click.option("--tile", type=int, default=768, show_default=True,
              help="Inference window in pixels (multiple of the model's stride, 32).")
@click.option("--overlap", type=int, default=320, show_default=True,
              help="Window overlap in pixels (multiple of 32); smaller values show seams.")
@click.option("--batch-size", type=int, default=4, show_default=True,
              help="Windows per forward pass.")
@device_option
def predict(
    image_a: Path,
    image_b: Path,
    checkpoint: Path,
    adapters: tuple[Path, ...],
    domain: str,
    label: Path | None,
    label_mode: str,
    out_dir: Path,
    threshold: float | None,
    tile: int,
    overlap: int,
    batch_size: int,
    device: str,
) -> None:
    """Change probability + binary change COGs (georeferenced like A) and an HTML report."""
    from eokit.change.predict import predict_pair

    model = _load(checkpoint, adapters)
    model.domain_index(domain)  # unknown --domain fails before any work
    threshold = model.threshold_of(domain) if threshold is None else threshold
    result = predict_pair(
        model, image_a, image_b, out_dir, domain=domain, label=label, label_mode=label_mode,
        threshold=threshold, tile=tile, overlap=overlap, batch_size=batch_size, device=device,
        command=_command_line(),
    )
    click.echo(f"probability: {result['probability']}")
    click.echo(f"binary: {result['binary']}")
    if result["metrics"]:
        m = result["metrics"]
        click.echo(f"F1 {m['f1']:.3f}  IoU {m['iou']:.3f}  kappa {m['kappa']:.3f}")
    click.echo(f"report: {result['report']}")


@change.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="Model file (model.safetensors from fit/adapt).")
@click.option("--adapter", "adapters", multiple=True, type=click.Path(path_type=Path),
              help="Adapter file (repeat for several; NAME=FILE renames).")
@click.option("--domain", required=True,
              help="Dataset (domain) head to use; one of the model's datasets.")
@click.option("--split", default="test", show_default=True,
              help="List/split name (LEVIR list/<split>.txt or <split>/ folder).")
@click.option("--layout", default="auto", show_default=True,
              type=click.Choice(["auto", "levir", "split", "whu"]),
              help="Dataset folder layout (auto detects LEVIR-CD/BIT, split folders, WHU-CD).")
@click.option("--label-mode", default="auto", show_default=True,
              type=click.Choice(["auto", "0-255", "0-1", "0-1-ignore255"]),
              help="How label values map to change (auto: 0 = no change, any other value = "
                   "change).")
@click.option("--threshold", type=_THRESHOLD, default=None,
              help="Change threshold (default: the dataset's, chosen on its training labels, "
                   "else 0.5).")
@out_option("out_dir", required=True, type=click.Path(path_type=Path))
@device_option
def evaluate(
    dataset: Path,
    checkpoint: Path,
    adapters: tuple[Path, ...],
    domain: str,
    split: str,
    layout: str,
    label_mode: str,
    threshold: float | None,
    out_dir: Path,
    device: str,
) -> None:
    """Global change metrics of a model on a dataset folder (metrics.json + report.html)."""
    from eokit.change.data import ChangeDataset, find_pairs
    from eokit.change.task import evaluate as evaluate_model
    from eokit.core.report import Report
    from eokit.core.tiling import resolve_device

    model = _load(checkpoint, adapters)
    model.domain_index(domain)
    model.to(resolve_device(device))
    threshold = model.threshold_of(domain) if threshold is None else threshold
    pairs = find_pairs(dataset, split if layout != "whu" else None, layout)
    data = ChangeDataset(pairs, label_mode=label_mode, bands=model.in_channels)
    data.check_labels()
    metrics = evaluate_model(model, data, domain=domain, batch_size=1, threshold=threshold)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"dataset": str(dataset), "split": split, "pairs": len(pairs), "domain": domain,
              "threshold": threshold, **metrics}
    _write_json(out_dir / "metrics.json", record)
    report = Report("Change detection evaluation", command=_command_line())
    report.section("Metrics", f"{len(pairs)} pairs of `{dataset}` (split {split}), dataset "
                   f"**{domain}**; global confusion matrix over all labelled pixels.")
    report.table([record])
    report.provenance(extra={"checkpoint": str(checkpoint), "threshold": threshold})
    report.write(out_dir / "report.html")
    click.echo(f"{domain} on {dataset} ({split}, {len(pairs)} pairs): F1 {metrics['f1']:.3f}  "
               f"IoU {metrics['iou']:.3f}  kappa {metrics['kappa']:.3f}")
    click.echo(f"report: {out_dir / 'report.html'}")


def _write_json(path: Path, payload: Any) -> None:
    from eokit.core.metrics import jsonable
    from eokit.core.raster import atomic_write

    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(jsonable(payload), indent=2) + "\n")
