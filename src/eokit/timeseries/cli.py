"""``eokit timeseries``: simulate, pretrain, finetune, predict and forecast pixel time series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from eokit.cli import device_option
from eokit.core.cliopts import AliasedOption, out_option

_LAYOUT = click.Choice(["auto", "geotiff", "eopatch", "presto"])
_TRAINER_HELP = "Extra Lightning options as --trainer.KEY VALUE (e.g. --trainer.accelerator gpu)."


def _reader_options(features: str | None, valid_mask: str | None,
                    invalid_mask: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if features:
        options["features"] = [f.strip() for f in features.split(",") if f.strip()]
    if valid_mask is not None:
        options["valid_mask"] = None if valid_mask.lower() == "none" else valid_mask
    if invalid_mask:
        options["invalid_mask"] = invalid_mask
    return options


def _eopatch_options(func: Any) -> Any:
    func = click.option("--invalid-mask", default=None,
                        help="EOPatch mask that is True where invalid (e.g. mask/CLM).")(func)
    func = click.option("--valid-mask", default=None,
                        help="EOPatch mask True where valid (default mask/IS_VALID; 'none').")(func)
    func = click.option("--features", default=None,
                        help="EOPatch time-series features, comma separated (default data/NDVI).")(
        func)
    return click.option("--layout", type=_LAYOUT, default="auto", show_default=True,
                        help="Input layout.")(func)


def _read(path: Path, layout: str, options: dict[str, Any]) -> Any:
    from eokit.timeseries.data import detect_layout, read_series

    kind = detect_layout(path) if layout == "auto" else layout
    return read_series(path, layout=kind, **(options if kind == "eopatch" else {}))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def timeseries() -> None:
    """Pixel time-series foundation model (EarthPT recipe) and cheap canopy fine-tuning."""


@timeseries.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--size", default=64, show_default=True, help="Scene size in pixels.")
@click.option("--years", default=3, show_default=True, help="Years of observations.")
@click.option("--seed", default=0, show_default=True, help="Random seed.")
def simulate(out_dir: Path, size: int, years: int, seed: int) -> None:
    """Write a simulated GeoTIFF stack with canopy truth to OUT_DIR."""
    from eokit.core.synth.pixel_series import generate_pixel_series, write_pixel_series

    scene = generate_pixel_series(size, seed=seed, years=years)
    paths = write_pixel_series(scene, out_dir)
    click.echo(f"{len(scene.dates)} dates, {size}x{size} px, {len(scene.events)} events -> "
               f"{paths['stack']} (truth: canopy_last.tif, events.json)")


@timeseries.command(context_settings={"ignore_unknown_options": True,
                                      "allow_extra_args": True})
@click.argument("input_path", type=click.Path(path_type=Path))
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
              help="Run folder (backbone.safetensors, checkpoints, report).")
@_eopatch_options
@click.option("--model-size", "--size", "model_size", cls=AliasedOption, shown=("--model-size",),
              default="small", show_default=True,
              type=click.Choice(["tiny", "small", "base", "large"]),
              help="Model size (--size is an older spelling).")
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True,
              help="Pretraining epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Series windows per batch.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3,
              show_default=True, help="Learning rate (AdamW).")
@click.option("--max-pixels", type=click.IntRange(min=2), default=None,
              help="Random subset of pixels.")
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Random temporal crops and dropped dates per batch (keeps the model from "
                   "using a token's position as the pretraining scene's calendar).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML with model (class_path/init_args), pretrain and trainer sections.")
@click.option("--seed", default=0, show_default=True, help="Seed of weights and sampling.")
@click.option("--resume", is_flag=True,
              help="Continue from OUT/checkpoints/last.ckpt (same input and settings).")
@click.pass_context
def pretrain(ctx: click.Context, input_path: Path, out_dir: Path, layout: str,
             features: str | None, valid_mask: str | None, invalid_mask: str | None,
             model_size: str, epochs: int, batch_size: int, lr: float, max_pixels: int | None,
             augment: bool, config_path: Path | None, seed: int, resume: bool) -> None:
    """Pretrain a backbone by next-token prediction on INPUT_PATH's unlabelled series.

    Writes OUT/backbone.safetensors (weights, config, band scaling, compute account).
    """
    from eokit.core.train import (
        check_keys,
        check_trainer_options,
        instantiate,
        load_yaml_config,
        parse_trainer_overrides,
    )
    from eokit.timeseries.model import SeriesModelConfig, save_model
    from eokit.timeseries.task import pretrain as run_pretrain

    overrides = parse_trainer_overrides(ctx.args)
    spec = None if config_path is None else load_yaml_config(config_path)
    if spec is not None:  # checked before the data are read
        check_keys(spec, ("model", "pretrain", "trainer"), str(config_path))
        check_keys(spec.get("pretrain") or {}, ("epochs", "batch_size", "lr", "augment"),
                   f"{config_path}: pretrain")
        check_trainer_options(spec.get("trainer") or {}, f"{config_path}: trainer")
    data = _read(input_path, layout, _reader_options(features, valid_mask, invalid_mask))
    config = None
    if spec is not None:
        if "model" in spec:
            config = instantiate(spec["model"], expected=SeriesModelConfig,
                                 in_bands=data.n_bands, band_names=list(data.band_names))
        settings = spec.get("pretrain") or {}

        def from_config(name: str, value: Any) -> Any:
            # Options typed on the command line win over the config file.
            explicit = ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
            return value if explicit or name not in settings else type(value)(settings[name])

        epochs = from_config("epochs", epochs)
        batch_size = from_config("batch_size", batch_size)
        lr = from_config("lr", lr)
        augment = from_config("augment", augment)
        overrides = {**(spec.get("trainer") or {}), **overrides}
    backbone, account = run_pretrain(data, out_dir, size=model_size, config=config,
                                     epochs=epochs, batch_size=batch_size, lr=lr,
                                     max_pixels=max_pixels, augment=augment, seed=seed,
                                     trainer_overrides=overrides, resume=resume)
    path = save_model(backbone, out_dir / "backbone.safetensors",
                      extra={"compute": {"pretraining": account.as_dict()},
                             "source": str(input_path), "seed": str(seed)})
    click.echo(f"pretraining: {account.pixels} pixels, {account.tokens:,} tokens, "
               f"{account.flops:.3g} FLOPs, {account.seconds:.0f} s -> {path}")


@timeseries.command(context_settings={"ignore_unknown_options": True,
                                      "allow_extra_args": True})
@click.argument("input_path", type=click.Path(path_type=Path))
@click.option("--backbone", "backbone_path", type=click.Path(path_type=Path), required=True,
              help="Pretrained backbone (backbone.safetensors from pretrain).")
@click.option("--labels", default=None,
              help="Label GeoTIFF (class ids, 255 = unlabelled); EOPatch: a timeless feature "
                   "such as mask_timeless/LULC; Presto: omit (target.npy).")
@click.option("--classes", default="none,forest", show_default=True,
              help="Class names, comma separated, in class-id order.")
@click.option("--label-map", default=None, help="Remap label values, e.g. '2:1,0:255,*:0'.")
@click.option("--task", type=click.Choice(["classification", "regression"]),
              default="classification", show_default=True,
              help="classification (class per pixel and date) or regression (a value per "
                   "sample).")
@click.option("--label-fraction", type=float, default=None,
              help="Training pixels as a fraction of ALL input pixels, drawn at random (seeded) "
                   "among the labelled ones. Default: 0.03 for classification of a raster "
                   "(a dense map from a few labels); 1, i.e. every labelled training sample, "
                   "for regression and for Presto-format samples.")
@click.option("--mode", type=click.Choice(["head", "lora", "full"]), default="head",
              show_default=True,
              help="head: frozen backbone; lora: low-rank backbone updates; full: every weight.")
@click.option("--backbone-lr-scale", default=1.0, show_default=True,
              help="Backbone learning rate as a fraction of the head's (lora/full).")
@click.option("--loss", type=click.Choice(["mse", "huber"]), default="mse", show_default=True,
              help="Regression loss (on standardised targets).")
@click.option("--memory", type=float, default=None,
              help="Per-date features average about the last N valid dates (dynamic maps); "
                   "default: all dates so far.")
@click.option("--pooling", type=click.Choice(["mean", "stats"]), default="mean",
              show_default=True,
              help="Prefix pooling: [h_t, summary] or also running mean/max/min.")
@click.option("--input-lags", default=12, show_default=True,
              help="Lagged scaled input observations given to the head (0: none).")
@click.option("--lag-days", default=30.0, show_default=True, help="Spacing of the input lags.")
@click.option("--residuals", is_flag=True,
              help="Also give the head the backbone's forecast residuals (unexpected "
                   "observations such as clear-cuts).")
@click.option("--val-fraction", default=0.2, show_default=True,
              help="Labelled pixels held out (whole 16 px blocks for rasters) for early "
                   "stopping; 0 trains for --epochs.")
@click.option("--epochs", type=click.IntRange(min=1), default=60, show_default=True,
              help="Fine-tuning epochs.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-3,
              show_default=True, help="AdamW learning rate of the head.")
@click.option("--patience", type=click.IntRange(min=1), default=10, show_default=True,
              help="Validation epochs without improvement before early stopping.")
@click.option("--ensemble", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train N heads (seeds SEED..SEED+N-1, same labelled pixels) on the frozen "
                   "backbone and average their probabilities or values (--mode head).")
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
              help="Run folder (model.safetensors, report).")
@_eopatch_options
@click.option("--seed", default=0, show_default=True,
              help="Seed of the labelled-pixel draw, validation split, initialisation and "
                   "batch order.")
@click.pass_context
def finetune(ctx: click.Context, input_path: Path, backbone_path: Path, labels: str | None,
             classes: str, label_map: str | None, task: str, label_fraction: float, mode: str,
             backbone_lr_scale: float, loss: str, memory: float | None, pooling: str,
             input_lags: int, lag_days: float, residuals: bool, val_fraction: float,
             epochs: int, lr: float, patience: int, ensemble: int, out_dir: Path,
             layout: str,
             features: str | None, valid_mask: str | None, invalid_mask: str | None,
             seed: int) -> None:
    """Fine-tune a pretrained backbone on a few labelled pixels (frozen backbone + MLP head).

    Writes OUT/model.safetensors with the compute account of pretraining and fine-tuning.
    """
    import numpy as np

    from eokit.core.errors import InputError
    from eokit.core.train import parse_trainer_overrides
    from eokit.timeseries.data import (
        apply_label_map,
        check_labels,
        check_two_classes,
        parse_label_map,
        read_label_raster,
    )
    from eokit.timeseries.model import PixelSeriesTransformer, load_model, save_model
    from eokit.timeseries.task import check_class_names, compute_summary
    from eokit.timeseries.task import finetune as run_finetune

    overrides = parse_trainer_overrides(ctx.args)
    if label_fraction is not None and not 0 < label_fraction <= 1:
        raise InputError(f"must be in (0, 1], got {label_fraction}", parameter="label_fraction")
    if ensemble > 1 and mode != "head":
        raise InputError(f"averages heads on one frozen backbone: use --mode head, not {mode}",
                         parameter="ensemble")
    class_names = [c.strip() for c in classes.split(",")]
    if task == "classification":
        check_class_names(class_names)
    backbone, meta = load_model(backbone_path)
    if not isinstance(backbone, PixelSeriesTransformer):
        raise InputError("is a fine-tuned model, give the pretrained backbone",
                         path=backbone_path)
    options = _reader_options(features, valid_mask, invalid_mask)
    if labels and layout in ("auto", "eopatch") and not Path(labels).suffix:
        options["labels"] = labels
    data = _read(input_path, layout, options)
    mapping = parse_label_map(label_map)
    if task == "regression":
        if data.targets is None:
            raise InputError("no regression targets in the input", parameter="labels")
        targets = data.targets.astype(np.float32)
        pool = np.nonzero(np.isfinite(targets) & data.has_observation)[0]
        if "is_test" in data.extra:
            pool = pool[np.asarray(data.extra["is_test"])[pool] == 0]
    else:
        if labels and Path(labels).suffix.lower() in (".tif", ".tiff"):
            if data.grid is None:
                raise InputError("label rasters need a raster input", parameter="labels")
            raw = read_label_raster(labels, data.grid, [str(i) for i in range(256)])
        elif data.targets is not None:
            raw = np.asarray(data.targets)
            if raw.ndim == 2:
                raw = raw[:, -1]
        else:
            raise InputError("give --labels", parameter="labels")
        targets = apply_label_map(raw, mapping)
        label_source: str | Path = Path(labels) if labels else "labels"
        check_labels(targets, class_names, source=label_source)
        pool = np.nonzero((targets != 255) & data.has_observation)[0]
        check_two_classes(targets[pool], class_names, source=label_source,
                          hint="among the pixels with a valid observation")
    if pool.size == 0:
        raise InputError("no labelled pixel with a valid observation", parameter="labels")
    if label_fraction is None:
        label_fraction = default_label_fraction(task, data)
    rng = np.random.default_rng(seed)
    n_train = max(1, int(round(label_fraction * len(data))))
    chosen = np.sort(rng.choice(pool, min(n_train, pool.size), replace=False))
    if task == "classification":
        check_two_classes(targets[chosen], class_names, source="label_fraction",
                          hint=f"in the {chosen.size} pixels drawn (raise --label-fraction)")
    subset = data.subset(chosen)
    groups = None
    if data.shape is not None:
        width = data.shape[1]
        groups = (chosen // width) // 16 * 100_000 + (chosen % width) // 16
    elif "latlon" in data.extra:
        # Samples at one site share their coordinates: validate on whole sites.
        latlon = np.round(np.asarray(data.extra["latlon"])[chosen], 3)
        groups = np.unique(latlon, axis=0, return_inverse=True)[1].reshape(-1)
    model, account = None, None
    for member in range(ensemble):
        # Head-only fine-tuning leaves the backbone bit-identical, so members share it.
        trained, spent = run_finetune(
            backbone, subset, targets[chosen],
            out_dir if ensemble == 1 else out_dir / f"member_{member}", task=task,
            class_names=class_names if task == "classification" else None, mode=mode,
            backbone_lr_scale=backbone_lr_scale, loss=loss, memory=memory, pooling=pooling,
            input_lags=input_lags, lag_days=lag_days, residuals=residuals,
            val_fraction=val_fraction, val_groups=groups, epochs=epochs, lr=lr,
            patience=patience, seed=seed + member, trainer_overrides=overrides)
        if model is None or account is None:
            model, account = trained, spent
        else:
            model.add_member(trained)
            account.add(spent.tokens, spent.flops)
            account.seconds += spent.seconds
    assert model is not None and account is not None
    pre = (meta.get("compute") or {}).get("pretraining")
    summary = compute_summary(pre, account)
    path = save_model(model, out_dir / "model.safetensors",
                      extra={"compute": summary, "labelled_pixels": str(len(chosen)),
                             "backbone": str(backbone_path)})
    ratio = summary.get("flops_ratio")
    click.echo(f"fine-tuning ({mode}{f', {ensemble} heads' if ensemble > 1 else ''}): "
               f"{len(chosen)} labelled pixels "
               f"({100 * len(chosen) / len(data):.2f} % of {len(data)}), {account.tokens:,} "
               f"tokens, {account.flops:.3g} FLOPs"
               + (f" = {100 * ratio:.2f} % of pretraining" if ratio is not None else "")
               + f" -> {path}")


_dtype_option = click.option(
    "--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
    help="Backbone compute dtype (bfloat16: faster on CPUs with bf16 units; ~1e-4 cosine error).")


@timeseries.command()
@click.argument("input_path", type=click.Path(path_type=Path))
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True,
              help="Fine-tuned model (model.safetensors from finetune).")
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
              help="Output folder (probability and change COGs, report).")
@click.option("--dates", default=None,
              help="Dates to map: comma-separated ISO dates (each mapped at the nearest "
                   "acquisition, which names the output file), 'all' or 'last' (default 4 "
                   "dates).")
@click.option("--date-tolerance-days", type=click.FloatRange(min=0), default=16.0,
              show_default=True,
              help="Refuse a --dates value with no acquisition within this many days.")
@click.option("--multiband", is_flag=True, help="One COG with dates x classes bands.")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Label GeoTIFF (class ids), or for an EOPatch a timeless feature such as "
                   "mask_timeless/LULC, for ROC/PR curves against the latest mapped date.")
@click.option("--label-map", default=None, help="Remap label values, e.g. '2:1,*:0'.")
@click.option("--forest-classes", default=None,
              help="Classes counted as forest for the change maps (default: forest-like names).")
@click.option("--rows-per-block", type=click.IntRange(min=1), default=64, show_default=True,
              help="Image rows read and predicted at a time (bounds memory).")
@click.option("--refine-dates/--no-refine-dates", default=True, show_default=True,
              help="Also write stops_forest_refined.tif: each loss of forest dated by the "
                   "backbone's forecast residual (one more forward pass).")
@click.option("--spatial-window", default=1, show_default=True,
              help="Average the probability maps over N x N pixel neighbourhoods (odd N; "
                   "1 = per pixel). Change maps stay per pixel.")
@_dtype_option
@device_option
@_eopatch_options
def predict(input_path: Path, model_path: Path, out_dir: Path, dates: str | None,
            date_tolerance_days: float, multiband: bool, labels: Path | None, label_map: str | None,
            forest_classes: str | None, rows_per_block: int, refine_dates: bool,
            spatial_window: int, dtype: str,
            device: str, layout: str, features: str | None, valid_mask: str | None,
            invalid_mask: str | None) -> None:
    """Map class probabilities at several dates, first/last forest dates, and write a report."""
    from eokit.core.errors import InputError
    from eokit.core.tiling import resolve_device
    from eokit.timeseries.data import SeriesReader, parse_label_map
    from eokit.timeseries.model import FineTunedSeriesModel, load_model
    from eokit.timeseries.predict import (
        match_dates,
        predict_report,
        read_map_labels,
        write_maps,
    )

    model, meta = load_model(model_path)
    if not isinstance(model, FineTunedSeriesModel):
        raise InputError("is a backbone; predict needs a fine-tuned model", path=model_path)
    model.backbone.set_compute_dtype(dtype)
    model.to(resolve_device(device))
    from eokit.timeseries.data import detect_layout

    if (detect_layout(input_path) if layout == "auto" else layout) == "presto":
        _predict_samples(model, input_path, out_dir)
        return
    reader = SeriesReader(input_path, layout=layout,
                          **_reader_options(features, valid_mask, invalid_mask))
    if dates is not None and dates not in ("all", "last"):
        # Checked before anything is read or written; each request is said where it lands.
        for match in match_dates(reader.dates, dates, tolerance_days=date_tolerance_days):
            click.echo(f"dates: {match.describe()}")
    truth = None if labels is None else read_map_labels(
        labels, reader, model.class_names, label_map=parse_label_map(label_map))
    forest = [c.strip() for c in forest_classes.split(",")] if forest_classes else None
    caveat = refinement_caveat(meta) if refine_dates else None
    if caveat:
        click.echo(f"warning: {caveat}", err=True)
    result = write_maps(model, reader, out_dir, dates=dates, multiband=multiband,
                        forest_classes=forest, rows_per_block=rows_per_block,
                        refine_dates=refine_dates, spatial_window=spatial_window,
                        keep_preview=reader.grid.width * reader.grid.height <= 4_000_000,
                        date_tolerance_days=date_tolerance_days)
    report = predict_report(model, meta, reader, result, truth=truth,
                            labels_name=Path(labels).name if labels else "labels",
                            command="eokit timeseries predict")
    path = report.write(Path(out_dir) / "report.html")
    if result.unobserved_pixels:
        click.echo(f"{result.unobserved_pixels} pixels have no valid observation (nodata)")
    for name, file in result.files.items():
        click.echo(f"{name}: {file}")
    click.echo(f"report: {path}")


@timeseries.command()
@click.argument("input_path", type=click.Path(path_type=Path))
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True,
              help="Backbone or fine-tuned model (its backbone forecasts).")
@click.option("--steps", type=click.IntRange(min=1), default=6, show_default=True,
              help="Future dates to forecast.")
@click.option("--step-days", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Days between future dates (default: median revisit).")
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
              help="Output folder (forecast and departure GeoTIFFs).")
@_dtype_option
@device_option
@_eopatch_options
def forecast(input_path: Path, model_path: Path, steps: int, step_days: float | None,
             out_dir: Path, dtype: str, device: str, layout: str, features: str | None,
             valid_mask: str | None, invalid_mask: str | None) -> None:
    """Forecast future observations of every pixel (COG per future date, CSV, plot)."""
    from eokit.core.tiling import resolve_device
    from eokit.timeseries.model import FineTunedSeriesModel, load_model
    from eokit.timeseries.predict import write_forecast

    model, _ = load_model(model_path)
    backbone = model.backbone if isinstance(model, FineTunedSeriesModel) else model
    backbone.set_compute_dtype(dtype)
    backbone.to(resolve_device(device))
    data = _read(input_path, layout, _reader_options(features, valid_mask, invalid_mask))
    files = write_forecast(backbone, data, out_dir, steps, step_days=step_days)
    for name, file in files.items():
        click.echo(f"{name}: {file}")


#: Default share of a raster's pixels labelled for classification (a dense map from few labels).
DENSE_LABEL_FRACTION = 0.03


def default_label_fraction(task: str, data: Any) -> float:
    """``--label-fraction`` when not given: 0.03 to classify a raster, else every sample.

    Regression targets and Presto-format samples (no raster grid) are a labelled data set in
    their own right; drawing 3 % of them (34 of 777 training samples on fuel moisture) would
    leave the head nearly nothing to learn from.
    """
    if task == "classification" and data.shape is not None:
        return DENSE_LABEL_FRACTION
    return 1.0


def refinement_caveat(meta: dict[str, Any]) -> str | None:
    """Why refined dates may mislead for this fine-tuned model, or None (frozen backbone).

    The refinement reads the backbone's forecasting head, which full or LoRA fine-tuning does
    not train along with the backbone it changes.
    """
    phase = str(((meta.get("compute") or {}).get("finetuning") or {}).get("phase", ""))
    if not phase or "(head)" in phase:
        return None
    return (f"the backbone was changed in fine-tuning ({phase}) but its forecasting head was not: "
            "dates in stops_forest_refined.tif may be off (--no-refine-dates skips them)")


def _predict_samples(model: Any, input_path: Path, out_dir: Path) -> None:
    """Per-sample predictions (non-raster layouts) to CSV; test-split metrics when known."""
    import numpy as np

    from eokit.core.metrics import regression_metrics
    from eokit.core.raster import write_csv
    from eokit.timeseries.data import read_presto_npy
    from eokit.timeseries.task import predict_series

    data = read_presto_npy(input_path)
    output = predict_series(model, data)[:, -1]
    rows = []
    for i in range(len(data)):
        row: dict[str, Any] = {"sample": i}
        if model.task == "classification":
            row.update({name: float(output[i, k]) for k, name in enumerate(model.class_names)})
        else:
            row["prediction"] = float(output[i])
        if data.targets is not None:
            row["target"] = float(data.targets[i])
        if "is_test" in data.extra:
            row["is_test"] = int(data.extra["is_test"][i])
        rows.append(row)
    path = write_csv(Path(out_dir) / "predictions.csv", rows)
    click.echo(f"predictions: {path}")
    if model.task == "regression" and data.targets is not None:
        test = np.asarray(data.extra.get("is_test", np.ones(len(data))), dtype=bool)
        scores = regression_metrics(output[test], data.targets[test])
        click.echo("test split: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()
                                             if k != "n") + f" (n={scores['n']})")
