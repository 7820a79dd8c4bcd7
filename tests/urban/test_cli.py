"""CLI: analyze on a JPEG pair and on GeoTIFFs, batch, and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio

from eokit.core.raster import write_raster
from eokit.core.types import Grid


def _analyze_jpeg_pair(
    run_cli: Callable[[list[str]], tuple[int, str, str]], paths: dict[str, Path], out: Path
) -> tuple[int, str, str]:
    """``eokit urban analyze`` on a city's JPEG pair at 10 m pixels (paper mode)."""
    return run_cli(
        [
            "urban",
            "analyze",
            "--optical",
            str(paths["optical_jpg"]),
            "--sar",
            str(paths["sar_jpg"]),
            "--pixel-size-m",
            "10",
            "-o",
            str(out),
        ],
    )


def test_analyze_jpeg_pair_writes_all_outputs(mono_city, tmp_path, run_cli) -> None:  # type: ignore[no-untyped-def]
    _, paths = mono_city
    out = tmp_path / "out"
    code, stdout, err = _analyze_jpeg_pair(run_cli, paths, out)
    assert code == 0, err
    assert "alpha" in stdout and "LD" in stdout
    for name in (
        "metrics.json",
        "profile.csv",
        "classes.tif",
        "centres.geojson",
        "report.html",
        "profile.png",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "paper" and metrics["pixel_size_m"] == 10
    assert metrics["alpha_per_km"] < 0
    with open(out / "profile.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == metrics["n_bins"] and float(rows[1]["distance_km"]) == pytest.approx(0.01)
    with rasterio.open(out / "classes.tif") as src:
        classes = src.read(1)
    assert set(np.unique(classes)) <= {1, 2, 3, 4} and (classes == 4).any()
    geojson = json.loads((out / "centres.geojson").read_text())
    assert len(geojson["features"]) >= 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_analyze_geotiffs_in_geo_mode(mono_city, tmp_path, run_cli) -> None:  # type: ignore[no-untyped-def]
    city, paths = mono_city
    out = tmp_path / "geo"
    code, stdout, err = run_cli(
        [
            "urban",
            "analyze",
            "--optical",
            str(paths["optical_tif"]),
            "--sar",
            str(paths["sar_tif"]),
            "--mode",
            "geo",
            "--chunk",
            "192",
            "-o",
            str(out),
        ],
    )
    assert code == 0, err
    assert "Clark alpha" in stdout and "monocentric" in stdout
    with rasterio.open(out / "classes.tif") as src:
        assert src.crs == city.grid.crs and src.transform == city.grid.transform
    feature = json.loads((out / "centres.geojson").read_text())["features"][0]
    lon, lat = feature["geometry"]["coordinates"]
    assert 14 < lon < 16 and 52 < lat < 53  # UTM 33N near 15 E, 52.3 N


def test_batch_runs_cities_in_parallel(mono_city, poly_city, tmp_path, run_cli) -> None:  # type: ignore[no-untyped-def]
    cities = tmp_path / "cities.csv"
    cities.write_text(
        "name,optical,sar,pixel_size_m\n"
        f"mono,{mono_city[1]['optical_jpg']},{mono_city[1]['sar_jpg']},10\n"
        f"poly,{poly_city[1]['optical_jpg']},{poly_city[1]['sar_jpg']},10\n"
    )
    out = tmp_path / "batch"
    code, stdout, err = run_cli(
        ["urban", "batch", str(cities), "-o", str(out), "--workers", "2"]
    )
    assert code == 0, err
    assert "mono:" in stdout and "poly:" in stdout
    table = list(csv.DictReader(open(out / "comparison.csv")))
    assert [r["city"] for r in table] == ["mono", "poly"]
    assert [r["structure"] for r in table] == ["monocentric", "polycentric"]
    assert (out / "report.html").is_file() and (out / "mono" / "metrics.json").is_file()


def _rgb(tmp_path: Path, name: str, shape: tuple[int, int], bands: int = 3) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (*shape, bands), dtype=np.uint8)
    path = tmp_path / name
    cv2.imwrite(str(path), image if bands == 3 else image[..., 0])
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("size", "is 40x30 px but the optical image"),
        ("single_band", "the optical input must be an RGB"),
        ("no_pixel_size", "pixel_size_m: is required in paper mode"),
        ("missing", "optical.jpg"),
        ("no_urban", "no urban pixels found"),
        ("geo_negative_pixel_size", "pixel_size_m: must be a positive number, got -5.0"),
        ("geo_chunk_0", "Invalid value for '--chunk'"),
    ],
)
def test_bad_input_gives_one_line_errors(case: str, expected: str, tmp_path, run_cli) -> None:  # type: ignore[no-untyped-def]
    optical = _rgb(tmp_path, "optical.jpg", (48, 64))
    sar = _rgb(tmp_path, "sar.jpg", (48, 64), bands=1)
    args = ["--pixel-size-m", "10"]
    if case == "size":
        sar = _rgb(tmp_path, "sar_small.jpg", (30, 40), bands=1)
    elif case == "single_band":
        optical = _rgb(tmp_path, "grey.png", (48, 64), bands=1)
    elif case == "no_pixel_size":
        args = []
    elif case == "missing":
        optical.unlink()
    elif case.startswith("geo_"):  # refused before the (non-georeferenced) files are read
        args = ["--mode", "geo", *(["--pixel-size-m", "-5"] if "pixel" in case
                                   else ["--chunk", "0"])]
    elif case == "no_urban":
        import cv2

        cv2.imwrite(
            str(optical),
            np.full((96, 96, 3), 60, np.uint8)
            + np.random.default_rng(1).integers(0, 3, (96, 96, 3), dtype=np.uint8),
        )
        cv2.imwrite(str(sar), np.full((96, 96), 90, np.uint8))
    out = tmp_path / "out"
    code, _, err = run_cli(
        ["urban", "analyze", "--optical", str(optical), "--sar", str(sar), "-o", str(out), *args],
    )
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("eokit: error")]
    assert len(lines) == 1 and expected in lines[0], err
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_geo_mode_rejects_plain_images(tmp_path, run_cli) -> None:  # type: ignore[no-untyped-def]
    optical = _rgb(tmp_path, "optical.jpg", (48, 64))
    path = tmp_path / "sar.tif"
    write_raster(path, np.zeros((1, 48, 64), np.float32), Grid.plain(64, 48, 10.0))
    code, _, err = run_cli(
        [
            "urban",
            "analyze",
            "--optical",
            str(optical),
            "--sar",
            str(path),
            "--mode",
            "geo",
            "-o",
            str(tmp_path / "o"),
        ],
    )
    assert code == 2 and "has no CRS" in err


def test_fit_fallback_is_reported_in_metrics(mono_city, tmp_path, monkeypatch, run_cli) -> None:  # type: ignore[no-untyped-def]
    from eokit.urban import segment

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(segment, "curve_fit", fail)
    _, paths = mono_city
    out = tmp_path / "fallback"
    code, stdout, err = _analyze_jpeg_pair(run_cli, paths, out)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["thresholds"]["class_fit"]["method"] == "otsu_fallback"
    assert any("did not converge" in note for note in metrics["notes"])
    assert "note: class thresholds" in stdout
