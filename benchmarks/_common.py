"""Shared benchmark helpers: argument parsing, seeding, peak RSS, environment info, result files.

Every benchmark writes ``benchmarks/results/<name>.json`` (numbers + environment + notes) and
``benchmarks/results/<name>.png`` (one figure) through :func:`write_results`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

_VERSIONED = (
    "eokit",
    "numpy",
    "torch",
    "rasterio",
    "lightning",
    "torchgeo",
    "scikit-learn",
    "peft",
    "timm",
)


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """Standard benchmark arguments: ``--quick``, ``--out DIR`` and ``--seed``.

    Args:
        description: Shown in ``--help``.
        argv: Arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Namespace with ``quick`` (bool), ``out`` (Path) and ``seed`` (int).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small smoke run (seconds)")
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help=f"results folder (default {RESULTS_DIR})"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser.parse_args(argv)


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--quick``, ``--out`` and ``--seed`` to a benchmark's own parser."""
    parser.add_argument("--quick", action="store_true", help="small smoke run (seconds)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser


def seed_all(seed: int) -> None:
    """Seed python, numpy and (if already imported or importable) torch."""
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux ru_maxrss is KiB)."""
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":  # bytes there
        return usage / 2**20
    return usage / 1024.0


def current_rss_mb() -> float:
    """Current resident set size in MiB (psutil if present, else /proc)."""
    try:
        import psutil

        return float(psutil.Process().memory_info().rss) / 2**20
    except ImportError:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _git(*args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None


def _git_commit() -> str | None:
    out = _git("rev-parse", "--short", "HEAD")
    return (out.stdout.strip() or None) if out is not None else None


def _git_code_changed() -> bool | None:
    """Whether the code (src/, benchmarks/*.py, configs/) differs from HEAD: the result was then
    produced by that commit plus the uncommitted change, which lands with the result."""
    out = _git("status", "--porcelain", "--untracked-files=no", "--", "../src", "../configs",
               ".")
    if out is None or out.returncode != 0:
        return None
    changed = [line[3:] for line in out.stdout.splitlines()]
    return any(not path.startswith("benchmarks/results/") for path in changed)


def environment() -> dict[str, Any]:
    """Machine and package versions, recorded with every result."""
    versions: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "packages": versions,
        "git_commit": _git_commit(),
        "code_changed_since_commit": _git_code_changed(),
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        env["torch_threads"] = torch.get_num_threads()
    return env


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_results(
    name: str, payload: dict[str, Any], fig: Any, *, out_dir: Path | None = None
) -> tuple[Path, Path | None]:
    """Write ``<out_dir>/<name>.json`` (payload + environment) and ``<name>.png`` (the figure).

    Args:
        name: Benchmark name (file stem), e.g. ``"core_tiling"``.
        payload: JSON-serialisable results; an ``"environment"`` key is added if absent.
        fig: A matplotlib Figure (saved at 120 dpi and closed) or None.
        out_dir: Results folder (default ``benchmarks/results``; ``benchmarks/results/quick``
            for ``--quick`` runs, so a smoke run never replaces the committed full results).

    Returns:
        (json_path, png_path or None).
    """
    out_dir = Path(out_dir) if out_dir is not None else RESULTS_DIR
    if out_dir.resolve() == RESULTS_DIR.resolve() and _is_quick(payload):
        out_dir = RESULTS_DIR / "quick"
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, **payload}
    record.setdefault("environment", environment())
    json_path = out_dir / f"{name}.json"
    text = json.dumps(record, indent=2, default=_jsonable) + "\n"
    _atomic_write_bytes(json_path, text.encode())
    png_path: Path | None = None
    if fig is not None:
        import io

        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        png_path = out_dir / f"{name}.png"
        _atomic_write_bytes(png_path, buffer.getvalue())
    return json_path, png_path


def _is_quick(payload: dict[str, Any]) -> bool:
    """Whether a result comes from a ``--quick`` run (payload flag or command line)."""
    flags = [payload.get("quick"), (payload.get("scale") or {}).get("quick")
             if isinstance(payload.get("scale"), dict) else None,
             (payload.get("config") or {}).get("quick")
             if isinstance(payload.get("config"), dict) else None]
    return any(flag is True for flag in flags) or "--quick" in sys.argv[1:]


def _jsonable(value: Any) -> Any:
    """Fallback JSON encoder for numpy scalars/arrays and paths."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


class Timer:
    """Context manager measuring wall time in seconds (``.seconds``)."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
