"""Failed assumptions are flagged, unmatched geo inputs refused, outputs name their frame."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio

from eokit.core.errors import InputError
from eokit.core.raster import read_raster, write_raster
from eokit.core.synth.city import generate_city
from eokit.urban.centres import CentreCluster
from eokit.urban.geo import GeoConfig, analyze_geo
from eokit.urban.model import analyze_paper, significant, structure_call
from eokit.urban.plots import profile_caption


def _shifted_sar(paths: dict[str, Path], out: Path, *, dx_m: float = 0.0, nan: bool = False
                 ) -> Path:
    sar = read_raster(paths["sar_tif"])
    grid = sar.grid
    if dx_m:
        from dataclasses import replace

        t = grid.transform
        grid = replace(grid, transform=type(t)(t.a, t.b, t.c + dx_m, t.d, t.e, t.f))
    data = np.full_like(sar.data, np.nan, np.float32) if nan else sar.data.astype(np.float32)
    return write_raster(out, data, grid)


def test_geo_mode_refuses_a_sar_image_that_does_not_overlap(mono_city, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, paths = mono_city
    sar = _shifted_sar(paths, tmp_path / "sar_far.tif", dx_m=10_000.0)
    with pytest.raises(InputError, match="does not overlap the optical image") as info:
        analyze_geo(paths["optical_tif"], sar, config=GeoConfig(chunk=192, n_boot=10))
    assert "sar_far.tif" in str(info.value)


def test_partial_overlap_is_logged(mono_city, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    from eokit.urban.geo import check_overlap

    _, paths = mono_city
    sar = _shifted_sar(paths, tmp_path / "sar_shifted.tif", dx_m=960.0)  # a quarter of 3840 m
    optical_grid = read_raster(paths["optical_tif"]).grid
    with caplog.at_level(logging.WARNING, logger="eokit.urban.geo"):
        share = check_overlap(optical_grid, read_raster(sar).grid, sar)
    assert share == pytest.approx(0.75, abs=0.01)
    assert any("covers 75 %" in r.getMessage() for r in caplog.records)


def test_all_nan_sar_is_blamed_on_the_sar_file(mono_city, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, paths = mono_city
    sar = _shifted_sar(paths, tmp_path / "sar_nan.tif", nan=True)
    with pytest.raises(InputError, match="no valid pixel") as info:
        analyze_geo(paths["optical_tif"], sar, config=GeoConfig(chunk=192, n_boot=10))
    assert "sar_nan.tif" in str(info.value) and "optical" not in str(info.value).split(":")[0]


@pytest.fixture(scope="module")
def poly_paper():  # type: ignore[no-untyped-def]
    city = generate_city(384, kind="poly", alpha_per_km=1.5, seed=0)
    return analyze_paper(city.optical, city.sar, pixel_size_m=city.pixel_size_m)


def test_wrong_sign_and_negative_ld_are_flagged(poly_paper, caplog) -> None:  # type: ignore[no-untyped-def]
    # the published procedure on this simulated city: trend through minima rises, LD < 0
    m = poly_paper.metrics()
    assert m["alpha_per_km"] > 0 and m["ld_km"] < 0
    assert m["assumptions_hold"] is False
    assert any(w.startswith("wrong sign") for w in m["warnings"])
    assert any(w.startswith("negative LD") for w in m["warnings"])
    assert sum(n.startswith("assumption failed: ") for n in m["notes"]) == len(m["warnings"])


def test_warnings_are_logged(caplog) -> None:  # type: ignore[no-untyped-def]
    city = generate_city(384, kind="poly", alpha_per_km=1.5, seed=0)
    with caplog.at_level(logging.WARNING, logger="eokit.urban.model"):
        result = analyze_paper(city.optical, city.sar, pixel_size_m=city.pixel_size_m)
    logged = [r.getMessage() for r in caplog.records if r.name == "eokit.urban.model"]
    assert logged == result.warnings and logged


def test_steep_uniform_region_is_flagged(poly_paper) -> None:  # type: ignore[no-untyped-def]
    m = poly_paper.metrics()
    steep_uniform = [r for r in m["regions"] if r["kind"] == "uniform" and r["steep"]]
    assert steep_uniform and all(r["gradient_per_km"] < 0 for r in steep_uniform)
    assert sum("'uniform' by the published rule" in w for w in m["warnings"]) == len(steep_uniform)


def test_metrics_are_rounded_to_meaningful_digits(poly_paper) -> None:  # type: ignore[no-untyped-def]
    m = poly_paper.metrics()
    for value in (m["alpha_per_km"], m["ld_km"]):
        assert len(re.sub(r"[-.]|e.*", "", repr(value)).lstrip("0")) <= 3
    assert all(round(r["end_km"], 2) == r["end_km"] for r in m["regions"])
    assert m["thresholds"]["urban"] == round(m["thresholds"]["urban"], 3)
    assert {"alpha_per_km", "clark.alpha_per_km"} <= set(m["alpha_definitions"])
    assert significant(0.0123456) == 0.0123 and significant(-1234.5) == -1230


def test_one_dominant_core_with_a_small_separated_one_is_monocentric(poly_paper) -> None:  # type: ignore[no-untyped-def]
    big, small = CentreCluster(1, 2127, 600, 1100), CentreCluster(2, 767, 500, 1200)
    s = structure_call([big, small], poly_paper.trend, poly_paper.profile, 5.0)
    assert s["call"] == "monocentric" and s["n_centres"] == 2 and "sub-centre" in s["explanation"]
    twin = CentreCluster(3, 1500, 100, 100)
    assert structure_call([big, twin], poly_paper.trend, poly_paper.profile, 5.0)["call"] == (
        "polycentric"
    )


def test_a_fragmented_downtown_is_one_compact_centre(poly_paper) -> None:  # type: ignore[no-untyped-def]
    from eokit.urban.centres import centre_clusters, compact_centres

    # one 60 x 60 px downtown whose threshold mask is cut into 16 pieces by 1-px streets
    fused = np.full((200, 200), 0.6, np.float32)
    fused[70:130, 70:130] = 1.4
    fused[70:130, 84::15][:, :3] = 0.6
    fused[84::15, 70:130][:3] = 0.6
    urban = np.zeros_like(fused, bool)
    urban[40:160, 40:160] = True
    centres = (fused > 1.0) & urban
    _, raw = centre_clusters(centres)
    assert len(raw) == 16  # the published mask: 16 equal "centres"
    _, cores = compact_centres(fused, urban, 1.0, centres, pixel_size_m=10.0)
    assert len(cores) == 1
    call = structure_call(cores, poly_paper.trend, poly_paper.profile, 10.0)
    assert call["call"] == "monocentric"


def test_profile_caption_describes_ld_as_drawn(poly_paper, mono_city) -> None:  # type: ignore[no-untyped-def]
    assert "negative" in profile_caption(poly_paper) and "not drawn" in profile_caption(poly_paper)
    city, _ = mono_city
    mono = analyze_paper(city.optical, city.sar, pixel_size_m=city.pixel_size_m)
    caption = profile_caption(mono)
    assert "LD" in caption and ("dashed line" in caption or "beyond" in caption)


def test_paper_outputs_state_their_frame_and_classes(mono_city, tmp_path, run_cli) -> None:  # type: ignore[no-untyped-def]
    _, paths = mono_city
    out = tmp_path / "out"
    code, stdout, err = run_cli(["urban", "analyze", "--optical", str(paths["optical_jpg"]),
                                 "--sar", str(paths["sar_jpg"]), "--pixel-size-m", "10",
                                 "-o", str(out)])
    assert code == 0, err
    geojson = json.loads((out / "centres.geojson").read_text())
    assert "no CRS" in geojson["coordinate_frame"] and "metres" in geojson["coordinate_frame"]
    with rasterio.open(out / "classes.tif") as src:
        assert src.colormap(1)[3][:3] == (215, 48, 39)
    assert "<Category>centre</Category>" in (out / "classes.tif.aux.xml").read_text()
    assert "local metres" in (out / "report.html").read_text()
    # printed with 3 significant digits, not 17
    line = next(x for x in stdout.splitlines() if x.startswith("profile alpha"))
    assert not re.search(r"\d\.\d{5,}", line), line
    assert ".urban-" not in err  # the staging folder is never named in the log
