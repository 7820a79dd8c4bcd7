"""``eokit synth``: write simulated scenes as GeoTIFFs a GIS opens."""

from __future__ import annotations

from pathlib import Path

import click

from eokit.core.cliopts import out_option


@click.group(name="synth")
def synth() -> None:
    """Generate simulated scenes (land cover, reflectance, SAR) as georeferenced GeoTIFFs."""


@synth.command(name="scene")
@out_option("out_dir", type=click.Path(path_type=Path),
    required=True,
    help="Output folder (created if missing).",
)
@click.option("--size", type=int, default=512, show_default=True, help="Side length in pixels.")
@click.option("--gsd-m", type=float, default=10.0, show_default=True, help="Pixel size in metres.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--season-doy",
    type=click.IntRange(1, 366),
    default=180,
    show_default=True,
    help="Day of year of the optical image (vegetation phenology).",
)
@click.option("--gain", type=float, default=1.0, show_default=True, help="Radiometric gain.")
@click.option(
    "--offset",
    type=float,
    default=0.0,
    show_default=True,
    help="Radiometric offset (reflectance units).",
)
@click.option(
    "--gamma",
    type=float,
    default=1.0,
    show_default=True,
    help="Radiometric gamma (reflectance ** gamma).",
)
@click.option(
    "--blur", type=float, default=0.0, show_default=True, help="Gaussian blur sigma in pixels."
)
@click.option(
    "--downsample",
    type=int,
    default=1,
    show_default=True,
    help="Detector block size in pixels (output keeps the grid).",
)
@click.option(
    "--noise",
    type=float,
    default=0.005,
    show_default=True,
    help="Sensor noise std (reflectance units).",
)
@click.option(
    "--looks", type=float, default=4.0, show_default=True, help="SAR equivalent number of looks."
)
@click.option("--crs", default="EPSG:32633", show_default=True, help="Projected CRS.")
@click.option(
    "--origin",
    type=(float, float),
    default=(500000.0, 5000000.0),
    show_default=True,
    help="Top-left corner x y in CRS units.",
)
@click.option(
    "--report/--no-report",
    default=True,
    show_default=True,
    help="Also write report.html with a quick-look and class fractions.",
)
def scene_command(
    out_dir: Path,
    size: int,
    gsd_m: float,
    seed: int,
    season_doy: int,
    gain: float,
    offset: float,
    gamma: float,
    blur: float,
    downsample: int,
    noise: float,
    looks: float,
    crs: str,
    origin: tuple[float, float],
    report: bool,
) -> None:
    """Write reflectance.tif, landcover.tif, sar_vv_db.tif and classes.json to OUT_DIR."""
    from eokit.core.synth.scene import SensorDomain, generate_scene, write_scene

    domain = SensorDomain(
        gain=gain,
        offset=offset,
        gamma=gamma,
        blur_sigma=blur,
        downsample=downsample,
        noise_std=noise,
    )
    scene = generate_scene(
        size,
        seed=seed,
        gsd_m=gsd_m,
        season_doy=season_doy,
        domain=domain,
        crs=crs,
        origin=origin,
        looks=looks,
    )
    paths = write_scene(scene, out_dir)
    if report:
        paths["report"] = _write_report(scene, out_dir, paths)
    for name, path in paths.items():
        click.echo(f"{name:12s} {path}")


@synth.command(name="objects")
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
            help="Output folder (created if missing).")
@click.option("--size", type=click.IntRange(32, 2048), default=256, show_default=True,
              help="Side length in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--expressions", "n_expressions", type=click.IntRange(min=0), default=4,
              show_default=True, help="Referring expressions to write (each names one object).")
@click.option("--mix", type=click.Choice(["mixed", "attribute", "relation"]), default="mixed",
              show_default=True, help="Expression style.")
def objects_command(out_dir: Path, size: int, seed: int, n_expressions: int, mix: str) -> None:
    """Write image.tif (COG), objects.geojson and expressions.json of an object scene."""
    from eokit.core.synth.objects import ObjectDomain, generate_object_scene, write_object_scene

    scene = generate_object_scene(size, seed=seed, domain=ObjectDomain(expression_mix=mix),
                                  n_expressions=n_expressions)
    for name, path in write_object_scene(scene, out_dir).items():
        click.echo(f"{name:12s} {path}")
    for expression in scene.expressions:
        click.echo(f"expression   {expression.text!r} ({expression.kind})")


@synth.command(name="vocab")
@out_option("out_dir", type=click.Path(path_type=Path), required=True,
            help="Output folder (created if missing); scene i goes to OUT_DIR/scene_<i>.")
@click.option("--count", type=click.IntRange(1, 10000), default=1, show_default=True,
              help="Number of scenes (seeds SEED, SEED+1, ...).")
@click.option("--size", type=click.IntRange(16, 8192), default=256, show_default=True,
              help="Side length in pixels.")
@click.option("--gsd-m", type=float, default=1.0, show_default=True, help="Pixel size in metres.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the first scene.")
@click.option("--classes", default=None,
              help="Comma-separated class names to draw (default: the whole vocabulary).")
def vocab_command(out_dir: Path, count: int, size: int, gsd_m: float, seed: int,
                  classes: str | None) -> None:
    """Write image.tif, label.tif and classes.json of open-vocabulary scenes to OUT_DIR."""
    from eokit.core.synth.vocab import generate_vocab_scene, write_vocab_scene

    names = None if classes is None else classes.split(",")
    for i in range(count):
        scene = generate_vocab_scene(size, seed=seed + i, classes=names, gsd_m=gsd_m)
        for name, path in write_vocab_scene(scene, Path(out_dir) / f"scene_{i:04d}").items():
            click.echo(f"{name:12s} {path}")


def _write_report(scene: object, out_dir: Path, paths: dict[str, Path]) -> Path:
    from dataclasses import asdict

    from eokit.core.report import Report
    from eokit.core.synth.scene import Scene, quicklook_figure

    assert isinstance(scene, Scene)
    report = Report("Simulated scene")
    report.section("Scene", f"{scene.grid.describe()}, day of year {scene.season_doy}.")
    report.figure(quicklook_figure(scene), caption="RGB quick-look, land cover and SAR VV (dB).")
    report.table(
        [
            {"class": name, "fraction": round(value, 4)}
            for name, value in scene.class_fractions().items()
        ],
        caption="Class fractions",
    )
    report.provenance(
        seed=scene.seed,
        config={
            "season_doy": scene.season_doy,
            "looks": scene.looks,
            "domain": asdict(scene.domain),
        },
        extra={name: str(path) for name, path in paths.items()},
    )
    return report.write(Path(out_dir) / "report.html")
