"""Shared test fixtures: tiny GeoTIFFs written with rasterio directly (independent of eokit I/O).

Also a headless-Chromium runner for the tests that check how HTML reports render.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

UTM_CRS = "EPSG:32633"
ORIGIN = (500000.0, 5000000.0)
CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, share the CPUs between the workers instead of oversubscribing them."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(max(1, (cpus or 1) // max(1, int(workers))))


def write_test_geotiff(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = UTM_CRS,
    pixel_size: float = 10.0,
    origin: tuple[float, float] = ORIGIN,
    nodata: float | None = None,
    **profile: Any,
) -> Path:
    """Write (C, H, W) or (H, W) ``data`` as a GeoTIFF with rasterio (no eokit code involved)."""
    import rasterio
    from rasterio.transform import from_origin

    array = data[None] if data.ndim == 2 else data
    options: dict[str, Any] = {
        "driver": "GTiff",
        "width": array.shape[2],
        "height": array.shape[1],
        "count": array.shape[0],
        "dtype": array.dtype.name,
        "crs": crs,
        "transform": from_origin(origin[0], origin[1], pixel_size, pixel_size),
        "nodata": nodata,
    }
    options.update(profile)
    with rasterio.open(path, "w", **options) as dst:
        dst.write(array)
    return path


@pytest.fixture(name="write_test_geotiff")
def _write_test_geotiff_fixture() -> Callable[..., Path]:
    """:func:`write_test_geotiff` as a fixture, for tests that choose their own paths."""
    return write_test_geotiff


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], tuple[int, str, str]]:
    """``run_cli(argv)``: run ``eokit <argv>`` in this process; (exit code, stdout, stderr)."""
    from eokit.cli import main

    def run(argv: list[str]) -> tuple[int, str, str]:
        code = 0
        try:
            main(argv)
        except SystemExit as stop:
            code = int(stop.code or 0)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def make_geotiff(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_geotiff(data, name="x.tif", **kwargs)`` writes a GeoTIFF under tmp_path."""

    def factory(data: np.ndarray, name: str = "image.tif", **kwargs: Any) -> Path:
        return write_test_geotiff(tmp_path / name, data, **kwargs)

    return factory


@pytest.fixture
def rng() -> np.random.Generator:
    """Seeded random generator."""
    return np.random.default_rng(0)


def measure_in_chromium(
    page: Path,
    check_script: str,
    work_dir: Path,
    *,
    width: int = 1280,
    hide_scrollbars: bool = False,
) -> dict[str, Any]:
    """Open ``page`` in headless Chromium with ``check_script`` added before ``</body>``.

    The script reports by setting ``document.title`` to ``"RESULT" + JSON``; that JSON is
    returned. The checked copy of the page and the browser profile are kept in ``work_dir``.
    """
    checked = work_dir / f"{page.stem}-check{width}.html"
    document = page.read_text(encoding="utf-8")
    checked.write_text(document.replace("</body>", check_script + "</body>"), encoding="utf-8")
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        *(["--hide-scrollbars"] if hide_scrollbars else []),
        f"--user-data-dir={work_dir / f'chromium-{width}'}",
        f"--window-size={width},900",
        "--virtual-time-budget=5000",
        "--dump-dom",
        checked.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    match = re.search(r"<title>RESULT(.*?)</title>", result.stdout)
    assert match, f"no result from chromium: {result.stderr[-2000:]}"
    measured: dict[str, Any] = json.loads(html.unescape(match.group(1)))
    return measured


@pytest.fixture(scope="session")
def chromium() -> Callable[..., dict[str, Any]]:
    """:func:`measure_in_chromium`; skips the test where headless Chromium is not installed.

    Session-scoped so that the skip comes before any costlier fixture of the test is built.
    """
    if CHROMIUM is None:
        pytest.skip("headless chromium not installed")
    return measure_in_chromium
