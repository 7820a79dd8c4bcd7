"""The ``eokit`` command: one lazily loaded subcommand group per capability, plus ``demo``.

Heavy libraries (torch, rasterio) are imported only when a subcommand runs, so
``eokit --help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from eokit import __version__

#: Subcommand name -> "module:attribute" of its click command. Only modules that exist are shown.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("eokit.demo:demo_command", "Run every capability on simulated scenes; report."),
    "synth": ("eokit.core.synth.cli:synth", "Generate simulated scenes (GeoTIFF)."),
    "change": ("eokit.change.cli:change", "Change detection with per-dataset adapters (CANet)."),
    "curation": ("eokit.curation.cli:curation", "SAR self-supervised pretraining with curation."),
    "timeseries": ("eokit.timeseries.cli:timeseries", "Pixel time-series model and canopy maps."),
    "lst": ("eokit.lst.cli:lst", "Land-surface temperature retrieval."),
    "noisy": ("eokit.noisy.cli:noisy", "Segmentation with spatially correlated label noise."),
    "urban": ("eokit.urban.cli:urban", "Urban density-gradient metrics."),
    "openvocab": ("eokit.openvocab.cli:openvocab", "Open-vocabulary segmentation."),
    "grounding": ("eokit.grounding.cli:grounding", "Detection and visual grounding."),
    "agent": ("eokit.agent.cli:agent", "Tool server exposing eokit to LLM agents."),
    "weights": ("eokit.core.weights_cli:weights", "Pretrained weights catalogue: list, verify."),
    "predict": ("eokit.core.predict_cli:predict",
                "Run your own TorchScript/ONNX model over GeoTIFFs of any size."),
}


#: ``--device`` of every inference command (checked by ``eokit.core.tiling.resolve_device``).
device_option = click.option(
    "--device", default="cpu", show_default=True,
    help="Inference device: cpu, cuda, cuda:N, mps or auto (first GPU if any).")


def _available(name: str) -> bool:
    """Whether a subcommand's module is installed, judged from files alone.

    ``importlib.util.find_spec`` would import the capability package (and with it numpy,
    scipy ...), which ``eokit --help`` must not pay for.
    """
    import eokit

    parts = COMMANDS[name][0].split(":")[0].split(".")[1:]
    for root in eokit.__path__:
        base = Path(root).joinpath(*parts)
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return True
    return False


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Installed subcommands, in table order."""
        return [name for name in COMMANDS if _available(name)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import and return one subcommand."""
        if cmd_name not in COMMANDS or not _available(cmd_name):
            return None
        module_name, attribute = COMMANDS[cmd_name][0].split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}.{attribute} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List subcommands without importing them."""
        # Short help from the table, so that --help imports nothing heavy.
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="eokit")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (default: the CPUs this process may use).")
def cli(verbose: int, threads: int | None) -> None:
    """eokit: Earth-observation analysis on real GeoTIFFs, on a laptop or a cluster."""
    set_threads(threads)
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose == 0:
        logging.getLogger("eokit").setLevel(logging.INFO)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's or a SLURM task's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def set_threads(threads: int | None = None) -> int:
    """Cap torch's intra-op threads to ``threads`` or the usable CPUs (not the machine's cores).

    torch sizes its pool from the machine's core count; beside other busy processes, or in a
    container granted a few CPUs, that oversubscription made training steps 20x slower.
    ``OMP_NUM_THREADS`` set by the user wins when ``threads`` is not given.
    """
    count = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or usable_cpus()
    os.environ["OMP_NUM_THREADS"] = str(count)  # for torch imported later and worker processes
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(count)
    return count


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    from eokit.core.errors import EokitError, Interrupted

    try:
        return cli.main(args=argv, prog_name="eokit", standalone_mode=False)
    except Interrupted as stop:
        click.echo(f"eokit: interrupted: {stop}", err=True)
        sys.exit(stop.exit_code)
    except EokitError as error:
        click.echo(f"eokit: error: {error}", err=True)
        sys.exit(2)
    except OSError as error:  # unwritable or full output folder, a file where a folder goes...
        logging.getLogger("eokit").debug("file system error", exc_info=True)
        where = f"{error.filename}: " if error.filename else ""
        reason = error.strerror or str(error)
        click.echo(f"eokit: error: {where}{reason} (check the path, its permissions and free "
                   "space)", err=True)
        sys.exit(2)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("eokit: aborted", err=True)
        sys.exit(130)
    except click.UsageError as error:  # bad option or argument: one line, like every user error
        where = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
        click.echo(f"eokit: error: {error.format_message()}{where}", err=True)
        sys.exit(error.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)


if __name__ == "__main__":
    main()
