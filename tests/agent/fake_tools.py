"""Small tools for the server tests (importable by a job's spawned process)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from eokit.core.errors import InputError
from eokit.core.tools import InputPath, OutputPath, Range, ToolSpec

log = logging.getLogger("eokit.fake")


def count_bytes(path: Annotated[str, InputPath()]) -> dict[str, Any]:
    """Count the bytes of a file.

    Args:
        path: File to read.
    """
    return {"bytes": Path(path).stat().st_size}


def write_text(
    out: Annotated[str, OutputPath()],
    text: str = "hello",
    repeat: Annotated[int, Range(1, 1000)] = 1,
    delay_s: Annotated[float, Range(0, 30)] = 0.0,
    mode: Literal["plain", "upper"] = "plain",
) -> dict[str, Any]:
    """Write a text file, slowly if asked.

    Args:
        out: Output text file.
        text: Text to write.
        repeat: How many times.
        delay_s: Seconds to wait between the first and the last byte.
        mode: Case.
    """
    body = (text.upper() if mode == "upper" else text) * repeat
    with open(out, "w") as handle:
        handle.write(body[: len(body) // 2])
        handle.flush()
        time.sleep(delay_s)
        handle.write(body[len(body) // 2:])
    return {"out": out, "chars": len(body)}


def fail(kind: Literal["input", "bug"] = "input") -> dict[str, Any]:
    """Fail on purpose.

    Args:
        kind: An eokit input error or an unexpected exception.
    """
    if kind == "input":
        raise InputError("must be positive", parameter="size")
    raise ValueError("boom\nsecond line that must not be shown")


def long_job(
    out_dir: Annotated[str, OutputPath("dir")],
    steps: Annotated[int, Range(1, 100)] = 4,
    step_s: Annotated[float, Range(0, 10)] = 0.2,
) -> dict[str, Any]:
    """Write one file per step, logging progress.

    Args:
        out_dir: Output folder.
        steps: Steps.
        step_s: Seconds per step.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for step in range(steps):
        (out / f"part_{step}.txt").write_text(str(step))
        log.info("step %d of %d", step + 1, steps)
        time.sleep(step_s)
    (out / "done.txt").write_text("complete")
    return {"out_dir": out_dir, "steps": steps}


TOOLS = [
    ToolSpec("fake_count", count_bytes),
    ToolSpec("fake_write", write_text, effect="write"),
    ToolSpec("fake_fail", fail),
    ToolSpec("fake_long", long_job, effect="long"),
]
