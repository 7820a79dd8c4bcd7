"""LST throughput on a Landsat-size scene: SC and PIML vs pylandtemp and a numpy copy, same inputs.

Inputs: band-10 DN (uint16), red and NIR reflectance (float32) on a 7000×7000 grid (``--quick``:
1024×1024), written as tiled GeoTIFFs. Each measurement runs in its own process so that peak RSS
is per method:

* ``numpy_copy``: copy of the three input arrays (memory-bandwidth bound, the ceiling);
* ``eokit_sc_memory`` / ``eokit_piml_memory``: DN → radiance → NDVI emissivity → LST on the
  in-memory arrays (``eokit.lst.scene.retrieve_arrays``, cache-sized row chunks);
* ``pylandtemp``: ``pylandtemp.single_window`` (mono-window, Avdan emissivity) on the same arrays;
* ``eokit_sc_files`` / ``eokit_piml_files``: the CLI path, GeoTIFFs in → LST COG out, by window.

Run: python benchmarks/lst_throughput.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, peak_rss_mb, seed_all, write_results  # noqa: E402

METHODS = (
    "numpy_copy",
    "eokit_sc_memory",
    "pylandtemp",
    "eokit_piml_memory",
    "eokit_sc_files",
    "eokit_piml_files",
)


def make_inputs(folder: Path, size: int, seed: int) -> dict[str, Path]:
    """Write DN/red/NIR GeoTIFFs with a plausible structure (smooth fields + pixel noise)."""
    import cv2
    from affine import Affine
    from rasterio.crs import CRS

    from eokit.core.raster import write_raster
    from eokit.core.types import Grid

    rng = np.random.default_rng(seed)
    grid = Grid(CRS.from_epsg(32633), Affine(30.0, 0, 400000.0, 0, -30.0, 5000000.0), size, size)

    def smooth(scale: int) -> np.ndarray:
        small = rng.standard_normal((max(2, size // scale), max(2, size // scale))).astype(
            np.float32
        )
        return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)

    ndvi_field = np.clip(0.35 + 0.25 * smooth(64), -0.2, 0.9)
    red = np.clip(0.08 - 0.05 * ndvi_field + 0.005 * rng.standard_normal((size, size)), 0.01, 0.5)
    nir = np.clip(red * (1 + ndvi_field) / np.clip(1 - ndvi_field, 0.05, None), 0.01, 0.8)
    radiance = 9.0 + 1.2 * smooth(128) - 0.8 * ndvi_field
    dn = np.clip(np.round((radiance - 0.1) / 3.342e-4), 1, 65535).astype(np.uint16)
    paths = {"dn": folder / "B10.tif", "red": folder / "red.tif", "nir": folder / "nir.tif"}
    write_raster(paths["dn"], dn, grid, nodata=0, dtype="uint16", compress="none")
    write_raster(paths["red"], red.astype(np.float32), grid, dtype="float32", compress="none")
    write_raster(paths["nir"], nir.astype(np.float32), grid, dtype="float32", compress="none")
    (folder / "MTL.txt").write_text(
        'SPACECRAFT_ID = "LANDSAT_8"\nRADIANCE_MULT_BAND_10 = 3.3420E-04\n'
        "RADIANCE_ADD_BAND_10 = 0.10000\nK1_CONSTANT_BAND_10 = 774.8853\n"
        "K2_CONSTANT_BAND_10 = 1321.0789\n"
    )
    paths["mtl"] = folder / "MTL.txt"
    return paths


def worker(method: str, folder: Path) -> dict:
    """Run one method in this process; return seconds and peak RSS."""
    import torch

    torch.set_num_threads(2)
    paths = {
        "dn": folder / "B10.tif",
        "red": folder / "red.tif",
        "nir": folder / "nir.tif",
        "mtl": folder / "MTL.txt",
    }
    result: dict = {"method": method}
    if method.endswith("_files"):
        from eokit.lst.model import default_model_path, load_network
        from eokit.lst.scene import RetrievalConfig, retrieve_scene

        kind = method.split("_")[1]
        network = load_network(default_model_path()) if kind == "piml" else None
        config = RetrievalConfig(method=kind, network=network)
        rss_before = peak_rss_mb()
        start = time.perf_counter()
        retrieve_scene(
            paths["dn"],
            folder / f"lst_{kind}.tif",
            config=config,
            mtl=paths["mtl"],
            red=paths["red"],
            nir=paths["nir"],
            water_vapour=2.0,
            progress=False,
        )
        result["seconds"] = time.perf_counter() - start
        result["rss_before_mb"] = rss_before
        result["peak_rss_mb"] = peak_rss_mb()
        return result
    import rasterio

    with rasterio.open(paths["dn"]) as src:
        dn = src.read(1)
    with rasterio.open(paths["red"]) as src:
        red = src.read(1)
    with rasterio.open(paths["nir"]) as src:
        nir = src.read(1)
    result["rss_inputs_mb"] = peak_rss_mb()
    if method.startswith("eokit"):  # imports, model loading and the Planck fit stay untimed
        from eokit.lst.model import default_model_path, load_network
        from eokit.lst.scene import MtlCalibration, RetrievalConfig, retrieve_arrays, retrieve_block

        kind = method.split("_")[1]
        network = load_network(default_model_path()) if kind == "piml" else None
        config = RetrievalConfig(method=kind, network=network)
        retrieve_block(np.full((4, 4), 9.0, np.float32), np.float32(0.97), np.float32(2.0), config)
        calibration = MtlCalibration("LANDSAT_8", 10, 3.342e-4, 0.1, 774.8853, 1321.0789)
    elif method == "pylandtemp":
        try:
            from pylandtemp import single_window
        except ImportError as error:
            return {"method": method, "error": f"pylandtemp not installed: {error}"}
        single_window(dn[:4, :4], red[:4, :4], nir[:4, :4])

    def run() -> Any:
        if method == "numpy_copy":
            return [dn.copy(), red.copy(), nir.copy()]
        if method == "pylandtemp":
            return single_window(
                dn, red, nir, lst_method="mono-window", emissivity_method="avdan", unit="kelvin"
            )
        return retrieve_arrays(
            dn, config=config, calibration=calibration, red=red, nir=nir, water_vapour=2.0
        )

    start = time.perf_counter()
    out = run()
    result["seconds"] = time.perf_counter() - start
    # best of three for the fast in-memory methods: the machine is shared, the minimum is the
    # least disturbed measurement
    if method in ("numpy_copy", "eokit_sc_memory", "pylandtemp"):
        times = [result["seconds"]]
        for _ in range(2):
            start = time.perf_counter()
            out = run()
            times.append(time.perf_counter() - start)
        result["seconds_all"] = times
        result["seconds"] = min(times)
    result["peak_rss_mb"] = peak_rss_mb()
    sample = np.asarray(out[0] if isinstance(out, list) else out)
    result["output_mean"] = float(np.nanmean(sample[:: max(1, sample.shape[0] // 256)]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_args(parser)
    parser.add_argument("--worker", choices=METHODS)
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--make-inputs", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_inputs:
        make_inputs(args.folder, args.make_inputs, args.seed)
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.folder)))
        return
    seed_all(args.seed)
    size = 1024 if args.quick else 7000
    results = {}
    with tempfile.TemporaryDirectory(prefix="lst_throughput_") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        # inputs are written by a child process: a child's peak RSS starts from its parent's
        # resident size at fork, so the parent must stay small for per-method peaks to be honest
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--make-inputs",
                str(size),
                "--folder",
                str(folder),
                "--seed",
                str(args.seed),
            ],
            check=True,
            timeout=3600,
        )
        setup = time.perf_counter() - start
        # full size: the in-memory PIML copy of the windowed path is skipped (same compute,
        # and one 49 Mpx PIML pass already takes minutes on 2 shared cores)
        methods = [m for m in METHODS if args.quick or m != "eokit_piml_memory"]
        for method in methods:
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", method, "--folder", str(folder)],
                capture_output=True,
                text=True,
                timeout=3600,
            )
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                results[method] = {
                    "method": method,
                    "error": proc.stderr.strip().splitlines()[-1]
                    if proc.stderr.strip()
                    else f"exit {proc.returncode}",
                }
            else:
                results[method] = json.loads(lines[-1])
            entry = results[method]
            if "seconds" in entry:
                entry["pixels_per_second"] = size * size / entry["seconds"]
            print(method, json.dumps(entry))
    px = size * size

    def rate(name: str) -> float | None:
        return results.get(name, {}).get("pixels_per_second")

    sc, plt_rate = rate("eokit_sc_memory"), rate("pylandtemp")
    speedup = sc / plt_rate if sc and plt_rate else None
    notes = [
        "Peak RSS is per method process and includes the Python/torch/rasterio imports "
        "(about 300-600 MiB) and, for *_memory and pylandtemp, the three input arrays.",
        "Machine shared with other jobs (2 cores, load often > 8): absolute rates are "
        "pessimistic; all methods ran in the same session one after another.",
        "pylandtemp computes an emissivity-corrected brightness temperature (no atmospheric "
        "correction); eokit SC adds the water-vapour correction, so it does more work per pixel.",
        "*_files includes reading GeoTIFFs window by window and writing a deflate COG "
        "(overviews included).",
    ]
    if not args.quick:
        notes.append(
            "eokit_piml_memory is only measured with --quick; at full size PIML is "
            "timed through the windowed file path (eokit_piml_files)."
        )
    if speedup is None:
        notes.append("pylandtemp could not be run; no speed-up reported.")
    elif speedup < 10:
        notes.append(f"Target of >= 10x pylandtemp for SC NOT met (got {speedup:.1f}x).")
    payload = {
        "quick": args.quick,
        "scene_size_px": [size, size],
        "pixels": px,
        "input_setup_seconds": setup,
        "results": results,
        "targets": {
            "sc_speedup_vs_pylandtemp": {
                "value": speedup,
                "target": 10.0,
                "met": speedup is not None and speedup >= 10,
            }
        },
        "notes": notes,
    }
    json_path, _ = write_results("lst_throughput", payload, figure(results), out_dir=args.out)
    print("->", json_path)


def figure(results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in METHODS if "pixels_per_second" in results.get(m, {})]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    rates = [results[m]["pixels_per_second"] / 1e6 for m in names]
    axes[0].barh(names, rates, color="#4f81bd")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("million pixels per second (log)")
    axes[0].set_title("Throughput")
    axes[1].barh(names, [results[m]["peak_rss_mb"] for m in names], color="#c0504d")
    axes[1].set_xlabel("peak RSS [MiB]")
    axes[1].set_title("Peak memory (per process)")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
