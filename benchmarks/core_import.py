"""Start-up cost: ``import eokit`` and ``eokit --help`` wall times (median of N fresh processes).

Also checks that ``import eokit`` loads neither torch nor rasterio (lazy sub-packages), and, as a
reference, times ``import torch`` on the same machine in the same run.

    python benchmarks/core_import.py           # 7 runs each
    python benchmarks/core_import.py --quick   # 3 runs each
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, parse_args, write_results  # noqa: E402

NAME = "core_import"
TARGET_HELP_S = 1.0

HEAVY = ("torch", "rasterio", "lightning", "matplotlib", "numpy", "scipy", "sklearn", "timm")


def time_command(command: list[str], runs: int) -> dict[str, Any]:
    """Median / min / max wall time of ``command`` over ``runs`` fresh processes (+1 warm-up)."""
    subprocess.run(command, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return {
        "command": " ".join(command),
        "runs": runs,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "all_s": times,
    }


def modules_after_import() -> dict[str, bool]:
    probe = (
        "import sys, json, eokit; "
        f"print(json.dumps({{m: m in sys.modules for m in {list(HEAVY)!r}}}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def modules_after_help() -> dict[str, Any]:
    """Heavy modules and eokit sub-packages that ``eokit --help`` imports (one in-process run)."""
    probe = (
        "import sys, json\n"
        "from eokit import cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = {{m: m in sys.modules for m in {list(HEAVY)!r}}}\n"
        "packages = sorted({'.'.join(m.split('.')[:2]) for m in sys.modules "
        "if m.startswith('eokit.')})\n"
        "sys.stderr.write(json.dumps({'heavy': heavy, 'eokit_packages': packages}) + '\\n')\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stderr.strip().splitlines()[-1])


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    runs = 3 if args.quick else 7
    cli = shutil.which("eokit")
    help_command = [cli, "--help"] if cli else [sys.executable, "-m", "eokit.cli", "--help"]
    results = {
        "python_startup": time_command([sys.executable, "-c", "pass"], runs),
        "import_eokit": time_command([sys.executable, "-c", "import eokit"], runs),
        "eokit_help": time_command(help_command, runs),
        "import_torch_reference": time_command([sys.executable, "-c", "import torch"], runs),
    }
    loaded = modules_after_import()
    help_imports = modules_after_help()
    help_s = results["eokit_help"]["median_s"]
    notes = []
    if loaded.get("torch"):
        notes.append("import eokit loads torch: lazy imports are broken")
    if help_s > TARGET_HELP_S:
        heavy = [m for m, present in help_imports["heavy"].items() if present]
        notes.append(
            f"eokit --help takes {help_s:.2f} s (target about {TARGET_HELP_S} s): it imports "
            f"{', '.join(heavy) or 'no heavy library'} through "
            f"{', '.join(help_imports['eokit_packages'])}"
        )
    load = os.getloadavg()[0]
    notes.append(
        f"medians of fresh processes; 1-minute load average {load:.1f} on {os.cpu_count()} cores"
    )
    payload = {
        "description": "wall time of fresh processes: python -c 'import eokit', eokit --help",
        "quick": args.quick,
        "targets": {"eokit_help_median_s": f"<= ~{TARGET_HELP_S}", "torch_loaded": False},
        "results": results,
        "import_eokit_minus_python_s": results["import_eokit"]["median_s"]
        - results["python_startup"]["median_s"],
        "heavy_modules_loaded_by_import_eokit": loaded,
        "torch_loaded_by_import_eokit": bool(loaded.get("torch")),
        "imported_by_eokit_help": help_imports,
        "notes": notes,
        "environment": environment(),
    }
    json_path, png_path = write_results(NAME, payload, make_figure(results), out_dir=args.out)
    for key, value in results.items():
        print(f"{key}: median {value['median_s'] * 1000:.0f} ms")
    print(f"torch loaded by import eokit: {bool(loaded.get('torch'))}")
    print(f"wrote {json_path} and {png_path}")


def make_figure(results: dict[str, dict[str, Any]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {
        "python_startup": "python -c pass",
        "import_eokit": "import eokit",
        "eokit_help": "eokit --help",
        "import_torch_reference": "import torch\n(reference)",
    }
    keys = list(labels)
    medians = [results[k]["median_s"] * 1000 for k in keys]
    lows = [m - results[k]["min_s"] * 1000 for m, k in zip(medians, keys, strict=True)]
    highs = [results[k]["max_s"] * 1000 - m for m, k in zip(medians, keys, strict=True)]
    colors = ["#bdbdbd", "#2b7bba", "#2b7bba", "#e08214"]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.bar(range(len(keys)), medians, yerr=[lows, highs], color=colors, capsize=4)
    for i, value in enumerate(medians):
        ax.text(i, value, f"{value:.0f} ms", ha="center", va="bottom", fontsize=9)
    ax.axhline(TARGET_HELP_S * 1000, color="k", ls="--", lw=0.8, label="1 s target (--help)")
    ax.set_xticks(range(len(keys)), [labels[k] for k in keys])
    ax.set_yscale("log")
    ax.set_ylabel("wall time (ms, log), median, min-max")
    ax.set_title("start-up time of fresh processes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
