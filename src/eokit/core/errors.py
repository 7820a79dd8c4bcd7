"""Exception hierarchy: user-facing errors carry a one-line message naming the culprit."""

from __future__ import annotations

from pathlib import Path


class EokitError(Exception):
    """Base class for errors the CLI reports as one line (exit code 2)."""


class InputError(EokitError):
    """A user input (file, parameter, value) is wrong; the message names it and says what to do.

    Args:
        message: What is wrong and what to do about it.
        path: The offending file, if any; it is prefixed to the message.
        parameter: The offending parameter name, if any; it is prefixed to the message.
    """

    def __init__(
        self, message: str, *, path: str | Path | None = None, parameter: str | None = None
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.parameter = parameter
        prefix = ""
        if path is not None:
            prefix = f"{path}: "
        elif parameter is not None:
            prefix = f"{parameter}: "
        super().__init__(prefix + " ".join(message.split()))


class DataError(EokitError):
    """Data are readable but unusable (all nodata, no valid samples, empty dataset...)."""


class ConfigError(EokitError):
    """A configuration file or combination of options is inconsistent."""


class Interrupted(EokitError):
    """A long run was stopped by Ctrl-C or SIGTERM; the message says where it can resume from.

    Args:
        message: What was stopped, the checkpoint kept and the command that resumes.
        exit_code: 130 after Ctrl-C (SIGINT), 143 after SIGTERM, as shells report them.
    """

    def __init__(self, message: str, *, exit_code: int = 130) -> None:
        self.exit_code = exit_code
        super().__init__(" ".join(message.split()))
