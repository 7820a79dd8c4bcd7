"""Describe a capability's operations as typed tools, so that an agent server can expose them.

A capability lists its operations in ``eokit.<capability>.tools.TOOLS`` as :class:`ToolSpec`
entries. Each wraps a plain Python function whose signature carries everything a JSON schema
needs: the type of every parameter, ``typing.Literal`` for enumerations, and the markers below in
``typing.Annotated`` for paths (which the server confines to its allowed folders), numeric ranges
and units. The function's Google-style docstring gives the tool and parameter descriptions. A tool
returns a JSON-able dict: output file paths and a compact summary (CRS, extent, metrics, class
areas), never arrays.

Core knows no capability: the agent finds the ``tools`` modules by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["InputPath", "OutputPath", "Range", "ToolSpec", "Unit"]


@dataclass(frozen=True)
class InputPath:
    """Marks a ``str`` parameter as a file or folder the tool reads.

    Attributes:
        kind: ``"file"``, ``"dir"`` or ``"any"``: what must exist at the path.
    """

    kind: Literal["file", "dir", "any"] = "file"


@dataclass(frozen=True)
class OutputPath:
    """Marks a ``str`` parameter as a file or folder the tool writes (confined to the output root).

    Attributes:
        kind: ``"file"`` or ``"dir"``.
    """

    kind: Literal["file", "dir"] = "file"


@dataclass(frozen=True)
class Range:
    """Inclusive numeric bounds of a parameter (``None``: unbounded on that side).

    Attributes:
        minimum: Smallest allowed value.
        maximum: Largest allowed value.
        exclusive_minimum: Whether ``minimum`` itself is excluded.
        exclusive_maximum: Whether ``maximum`` itself is excluded.
    """

    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False


@dataclass(frozen=True)
class Unit:
    """The physical unit of a numeric parameter (``"m"``, ``"K"``, ``"km"``, ``"days"`` ...)."""

    symbol: str


@dataclass(frozen=True)
class ToolSpec:
    """One operation offered to an agent.

    Attributes:
        name: Tool name, ``<capability>_<operation>`` (``change_predict``), unique over eokit.
        function: The typed Python function that does the work and returns a JSON-able dict.
        effect: ``"read"`` (reads only), ``"write"`` (writes files under the output root) or
            ``"long"`` (writes, and may take minutes: run as a cancellable job with progress).
        summary: One line for tool listings; default: the first line of the function's docstring.
    """

    name: str
    function: Callable[..., dict[str, Any]]
    effect: Literal["read", "write", "long"] = "read"
    summary: str = ""

    @property
    def description(self) -> str:
        """The tool's one-line description."""
        if self.summary:
            return self.summary
        doc = (self.function.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else self.name
