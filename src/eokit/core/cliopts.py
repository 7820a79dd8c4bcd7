"""Command-line options shared by every capability, spelled the same way everywhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: Older spellings of the output option, still accepted but not shown in ``--help``.
OUT_ALIASES: tuple[str, ...] = ("--out-dir", "--output")


class AliasedOption(click.Option):
    """An option whose extra names are accepted but left out of ``--help``."""

    def __init__(self, *args: Any, shown: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shown = shown

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        """The help line with only the shown names."""
        opts, self.opts = self.opts, [o for o in self.opts if o in self.shown]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts


def out_option(dest: str = "out_dir", *, help: str = "Output folder.",  # noqa: A002
               **kwargs: Any) -> Callable[[F], F]:
    """The ``-o/--out`` option (``--out-dir`` and ``--output`` kept as hidden aliases).

    Args:
        dest: Name of the function parameter it fills.
        help: Help text.
        **kwargs: Passed to :func:`click.option` (``type``, ``required``, ``default`` ...).
    """
    return click.option("-o", "--out", *OUT_ALIASES, dest, cls=AliasedOption,
                        shown=("-o", "--out"), help=help, **kwargs)
