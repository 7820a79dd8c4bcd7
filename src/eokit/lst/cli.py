"""``eokit lst``: retrieve land-surface temperature, simulate samples/scenes, train retrievals."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from eokit.core.cliopts import out_option
from eokit.core.errors import InputError

logger = logging.getLogger(__name__)


def _number_or_path(value: str | None, name: str) -> float | Path | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        path = Path(value)
        if not path.exists():
            raise InputError("neither a number nor an existing raster", parameter=name) from None
        return path


@click.group(name="lst")
def lst() -> None:
    """Land-surface temperature from a single thermal band (Landsat 8/9 TIRS band 10)."""


@lst.command()
@click.option(
    "--thermal",
    type=click.Path(path_type=Path),
    required=True,
    help="Band-10 raster: Level-1 DN (with --mtl) or TOA radiance W m-2 sr-1 um-1.",
)
@click.option("--mtl", type=click.Path(path_type=Path), help="Landsat MTL file (DN rescaling).")
@click.option("--emissivity", help="Emissivity raster or one value in (0, 1].")
@click.option("--red", type=click.Path(path_type=Path), help="Red reflectance (NDVI emissivity).")
@click.option("--nir", type=click.Path(path_type=Path), help="NIR reflectance (NDVI emissivity).")
@click.option(
    "--water-vapour",
    "water_vapour",
    default="2.0",
    show_default=True,
    help="Column water vapour g cm-2: one value or a raster.",
)
@click.option(
    "--method",
    type=click.Choice(["piml", "sc", "rte", "mono"]),
    default="piml",
    show_default=True,
    help="Retrieval method.",
)
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    help="Trained network for piml (default: the bundled L8 B10 model).",
)
@click.option("--tau", type=float, help="Atmospheric transmittance (method rte).")
@click.option("--up", type=float, help="Upwelling path radiance (method rte).")
@click.option("--down", type=float, help="Downwelling sky radiance (method rte).")
@click.option("--air-temperature", type=float, help="Near-surface air temperature K (mono).")
@click.option("--band", default="L8_B10", show_default=True, help="L8_B10, L8_B11, L9_B10, L9_B11.")
@click.option("--block", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Block size (pixels).")
@out_option("output", type=click.Path(path_type=Path),
    required=True,
    help="Output LST GeoTIFF (COG, K).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path),
    help="HTML report (default: next to the output).",
)
def retrieve(
    thermal: Path,
    mtl: Path | None,
    emissivity: str | None,
    red: Path | None,
    nir: Path | None,
    water_vapour: str,
    method: str,
    model: Path | None,
    tau: float | None,
    up: float | None,
    down: float | None,
    air_temperature: float | None,
    band: str,
    block: int,
    output: Path,
    report_path: Path | None,
) -> None:
    """Retrieve LST from a thermal band; write a COG and an HTML report."""
    from eokit.core.report import Report
    from eokit.lst.planck import get_band
    from eokit.lst.report import add_lst_section
    from eokit.lst.scene import RetrievalConfig, retrieve_scene

    band_obj = get_band(band)
    atmosphere = None
    if method == "rte":
        if None in (tau, up, down):
            raise InputError("method rte needs --tau, --up and --down", parameter="method")
        atmosphere = (float(tau), float(up), float(down))  # type: ignore[arg-type]
        if not 0 < atmosphere[0] <= 1:
            raise InputError("must lie in (0, 1]", parameter="tau")
    network = None
    if method == "piml":
        from eokit.lst.model import default_model_path, load_network

        network = load_network(model if model is not None else default_model_path())
    config = RetrievalConfig(
        method=method,
        band=band_obj,
        atmosphere=atmosphere,
        air_temperature_k=air_temperature,
        network=network,
    )
    eps = _number_or_path(emissivity, "--emissivity")
    water = _number_or_path(water_vapour, "--water-vapour")
    assert water is not None
    result = retrieve_scene(
        thermal,
        output,
        config=config,
        mtl=mtl,
        emissivity=eps,
        red=red,
        nir=nir,
        water_vapour=water,
        block=block,
    )
    out = result.path
    report = Report("Land-surface temperature", command="eokit lst retrieve")
    stats = add_lst_section(
        report,
        out,
        title="LST map",
        method=method,
        text=f"Method **{method}**, band {band_obj.name}, water vapour {water_vapour} g cm⁻².",
        plausibility=result.as_dict(),
    )
    files = {
        "thermal": thermal,
        "mtl": mtl,
        "red": red,
        "nir": nir,
        "emissivity": eps if isinstance(eps, Path) else None,
        "water_vapour": water if isinstance(water, Path) else None,
    }
    report.provenance(
        inputs={k: v for k, v in files.items() if v is not None},
        config={
            "method": method,
            "band": band,
            "block": block,
            "emissivity": emissivity,
            "water_vapour": water_vapour,
            "model": str(model) if model else None,
        },
    )
    html = report.write(report_path or output.with_suffix(".html"))
    masked = (
        f"; {result.implausible_masked} implausible pixel(s) outside 180-380 K masked"
        if result.implausible_masked
        else ""
    )
    click.echo(
        f"LST: {out} (mean {stats.get('mean_k', float('nan')):.2f} K{masked}); report: {html}"
    )


@lst.command()
@click.option(
    "--profiles",
    type=click.Path(path_type=Path),
    help="TIGR .dsf or (p,T,q) table; 'tigr2000' uses the cached TIGR-2000 set.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tigr", "table"]),
    default="tigr",
    show_default=True,
    help="Profile file format.",
)
@click.option(
    "--atmosphere",
    multiple=True,
    help="Built-in standard atmosphere(s) instead of a file (tropical, us76, ...).",
)
@click.option("--per-profile", type=click.IntRange(min=1), default=20,
              show_default=True, help="Samples simulated per atmospheric profile.")
@click.option("--all-sky", is_flag=True, help="Keep profiles failing the RH < 90 % clear-sky test.")
@click.option("--noise-k", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="NEdT added to BT.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@out_option("output", type=click.Path(path_type=Path), required=True, help="Output CSV of samples."
)
def simulate(
    profiles: Path | None,
    fmt: str,
    atmosphere: tuple[str, ...],
    per_profile: int,
    all_sky: bool,
    noise_k: float,
    seed: int,
    output: Path,
) -> None:
    """Simulate TOA samples (Ts, ε, angle × profiles) with the band RT model; write a CSV."""
    import numpy as np

    from eokit.core.raster import write_csv
    from eokit.lst.data import generate_samples
    from eokit.lst.profiles import (
        concatenate,
        load_tigr2000,
        read_level_table,
        read_tigr,
        standard_atmosphere,
    )

    if profiles is None and not atmosphere:
        raise InputError("give --profiles FILE or at least one --atmosphere", parameter="profiles")
    batches = [standard_atmosphere(name) for name in atmosphere]
    if profiles is not None:
        if str(profiles) == "tigr2000":  # the cached (downloaded on first use) TIGR-2000 set
            batch = load_tigr2000(clear_sky=not all_sky)
        else:
            batch = read_tigr(profiles) if fmt == "tigr" else read_level_table(profiles)
            if not all_sky:
                batch = batch.subset(batch.clear_sky_mask())
        batches.append(batch)
    levels = {b.levels for b in batches}
    if len(levels) > 1:
        raise InputError(
            "standard atmospheres (43 levels) cannot be mixed with this profile file",
            parameter="atmosphere",
        )
    merged = concatenate(batches) if len(batches) > 1 else batches[0]
    samples = generate_samples(
        merged, per_profile=per_profile, seed=seed, bt_noise_k=noise_k, progress=True
    )
    columns = list(samples.arrays)
    table = np.stack([samples.arrays[c] for c in columns], axis=1)
    rows = [
        {"profile": int(p), **{c: float(v) for c, v in zip(columns, row, strict=True)}}
        for p, row in zip(samples.profile_index, table, strict=True)
    ]
    write_csv(output, rows)
    click.echo(f"{len(rows)} samples from {len(merged)} profiles -> {output}")


@lst.command()
@out_option("out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--size", type=int, default=512, show_default=True, help="Side length in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--atmosphere",
    default="midlat_summer",
    show_default=True,
    help="Standard atmosphere for the scene's τ, L↑, L↓.",
)
@click.option("--spacecraft", type=click.Choice(["LANDSAT_8", "LANDSAT_9"]), default="LANDSAT_8",
              help="Landsat 8 or 9 (sets the band-10 response and MTL constants).")
def scene(out_dir: Path, size: int, seed: int, atmosphere: str, spacecraft: str) -> None:
    """Write a simulated Landsat-like thermal scene (B10 DN, red, NIR, MTL, truth)."""
    from eokit.lst.demo import simulate_scene

    paths = simulate_scene(
        out_dir, size=size, seed=seed, atmosphere=atmosphere, spacecraft=spacecraft
    )
    click.echo("\n".join(f"{k}: {v}" for k, v in paths.items()))


def _train_settings(path: Path | None) -> dict[str, Any]:
    """Training settings from a configs/lst YAML (model/task init_args, trainer.max_epochs)."""
    settings: dict[str, Any] = {
        "kind": "piml",
        "epochs": 40,
        "hidden": 64,
        "layers": 3,
        "rte_weight": 0.5,
        "atm_weight": 0.1,
        "lr": 3e-3,
    }
    if path is None:
        return settings
    from eokit.core.errors import ConfigError
    from eokit.core.train import check_keys, load_yaml_config

    config = load_yaml_config(path)
    model = config.get("model", {})
    class_path = str(model.get("class_path", "eokit.lst.model.PhysicsInformedLST"))
    kinds = {"PhysicsInformedLST": "piml", "MLPLST": "mlp"}
    if class_path.rsplit(".", 1)[-1] not in kinds:
        raise ConfigError(
            f"{path}: model.class_path must be eokit.lst.model.PhysicsInformedLST "
            f"or eokit.lst.model.MLPLST, got {class_path}"
        )
    settings["kind"] = kinds[class_path.rsplit(".", 1)[-1]]
    for source in (model.get("init_args", {}), config.get("task", {}).get("init_args", {})):
        check_keys(source or {}, settings, str(path), what="setting")
        settings.update(source or {})
    settings["epochs"] = int(config.get("trainer", {}).get("max_epochs", settings["epochs"]))
    return settings


@lst.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option(
    "--samples",
    type=click.Path(path_type=Path),
    required=True,
    help="CSV written by 'eokit lst simulate'.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="YAML config (configs/lst/*.yaml): model, task weights, epochs.",
)
@click.option("--kind", type=click.Choice(["piml", "mlp"]), help="Model (default piml).")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs (default 40).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of weights and data order.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/last.ckpt.")
@out_option("out_dir", type=click.Path(path_type=Path), required=True)
@click.pass_context
def train(
    ctx: click.Context,
    samples: Path,
    config_path: Path | None,
    kind: str | None,
    epochs: int | None,
    seed: int,
    resume: bool,
    out_dir: Path,
) -> None:
    """Train a retrieval network on simulated samples (split by profile).

    Extra --trainer.* arguments go to Lightning.
    """
    import numpy as np

    from eokit.core.train import parse_trainer_overrides
    from eokit.lst.baselines import SingleChannel
    from eokit.lst.data import read_samples_csv, split_profiles
    from eokit.lst.task import predict, train_retrieval

    overrides = parse_trainer_overrides(ctx.args)
    settings = _train_settings(config_path)
    kind = kind or settings["kind"]
    epochs = epochs or settings["epochs"]
    data = read_samples_csv(samples)
    profile_ids = data.profile_index
    unique, inverse = np.unique(profile_ids, return_inverse=True)
    split = split_profiles(len(unique), seed=seed)[inverse]
    if not all((split == k).any() for k in (0, 1, 2)):
        raise InputError(f"{len(unique)} atmosphere profile(s); training splits by profile into "
                         "train/validation/test and needs samples from at least 3 (simulate "
                         "with more --atmosphere or --profiles)", path=samples)
    train_set, val_set = data.subset(split == 0), data.subset(split == 1)
    a = train_set.arrays
    prior = SingleChannel.fit(a["water_vapour"], a["tau"], a["up"], a["down"]).coefficients
    network = train_retrieval(
        train_set,
        val_set,
        out_dir,
        kind=kind,
        epochs=epochs,
        seed=seed,
        prior=prior,
        resume=resume,
        hidden=settings["hidden"],
        layers=settings["layers"],
        rte_weight=settings["rte_weight"],
        atm_weight=settings["atm_weight"],
        lr=settings["lr"],
        trainer_overrides=overrides,
    )
    test = data.subset(split == 2)
    if len(test):
        error = predict(network, test.features()) - test.arrays["surface_temperature"]
        click.echo(
            f"test RMSE {float((error**2).mean() ** 0.5):.3f} K on {len(test)} samples "
            f"(held-out profiles)"
        )
    click.echo(f"weights: {out_dir / (kind + '.safetensors')}")
