"""Tests for the ``eokit`` command line: lazy help, one-line user errors, kept tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

HELP_SCRIPT = """
import sys
from eokit import cli
try:
    cli.main(["--help"])
except SystemExit as done:
    assert done.code in (0, None), done.code
print("TORCH_IMPORTED=" + str("torch" in sys.modules))
"""

COMMANDS_MODULE = """
import click
from eokit.core.errors import InputError


@click.command()
def user_error():
    raise InputError("is not a GeoTIFF; give a raster file", path="scene.txt")


@click.command()
def crash():
    raise RuntimeError("internal bug")
"""

RUN_SCRIPT = """
import sys
from eokit import cli
cli.COMMANDS["user-error"] = ("fake_commands:user_error", "raises an InputError")
cli.COMMANDS["crash"] = ("fake_commands:crash", "raises a RuntimeError")
cli.main(sys.argv[1:])
"""


def _python(
    script: str, *args: str, extra_path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_help_lists_commands_without_importing_torch() -> None:
    result = _python(HELP_SCRIPT)
    assert result.returncode == 0, result.stderr
    assert "Commands:" in result.stdout
    assert "demo" in result.stdout
    assert "Run every capability" in result.stdout
    assert result.stdout.strip().endswith("TORCH_IMPORTED=False")


def test_user_error_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    (tmp_path / "fake_commands.py").write_text(COMMANDS_MODULE)
    result = _python(RUN_SCRIPT, "user-error", extra_path=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["eokit: error: scene.txt: is not a GeoTIFF; give a raster file"]
    assert "Traceback" not in result.stderr


def test_other_exceptions_keep_their_traceback(tmp_path: Path) -> None:
    (tmp_path / "fake_commands.py").write_text(COMMANDS_MODULE)
    result = _python(RUN_SCRIPT, "crash", extra_path=tmp_path)
    assert result.returncode not in (0, 2)
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: internal bug" in result.stderr


def test_demo_unwritable_output_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    script = "import sys\nfrom eokit import cli\ncli.main(sys.argv[1:])\n"
    result = _python(script, "demo", "--quick", "-o", str(blocker / "demo"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eokit: error: ")
    assert "not-a-folder" in lines[0]


def test_bad_option_values_are_one_line_errors_naming_the_option(tmp_path: Path) -> None:
    script = "import sys\nfrom eokit import cli\ncli.main(sys.argv[1:])\n"
    out = tmp_path / "fc"
    result = _python(script, "timeseries", "forecast", str(tmp_path), "--model", "m.safetensors",
                     "--steps", "0", "--out", str(out))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eokit: error: Invalid value for '--steps'")
    assert "eokit timeseries forecast --help" in lines[0] and not out.exists()
    result = _python(script, "timeseries", "forcast")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'forcast'" in lines[0] and "'forecast'" in lines[0]
    assert lines[0].startswith("eokit: error: ") and "eokit timeseries --help" in lines[0]


def test_threads_default_to_the_usable_cpus_and_follow_the_option(monkeypatch, run_cli):
    import torch

    from eokit import cli as cli_module

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(cli_module.os, "sched_getaffinity", lambda _pid: {3}, raising=False)
        assert cli_module.set_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's setting wins over the default
        assert cli_module.set_threads() == 2
        code, _, err = run_cli(["--threads", "1", "weights", "list"])
        assert code == 0, err
        assert torch.get_num_threads() == 1
        assert run_cli(["--threads", "0", "weights", "list"])[0] == 2
    finally:
        torch.set_num_threads(before)

