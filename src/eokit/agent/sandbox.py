"""Confine the paths a tool call names to the server's allowed folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eokit.core.errors import InputError


@dataclass(frozen=True)
class Sandbox:
    """Allowed input roots and the one output root.

    Attributes:
        roots: Folders a tool may read from (resolved).
        out_root: Folder a tool may write under (resolved); also readable.
    """

    roots: tuple[Path, ...]
    out_root: Path

    @classmethod
    def create(cls, roots: list[str | Path], out_root: str | Path) -> Sandbox:
        """Build a sandbox, resolving every root (symlinks followed once, here)."""
        out = Path(out_root).expanduser().resolve()
        out.mkdir(parents=True, exist_ok=True)
        return cls(tuple(Path(r).expanduser().resolve(strict=True) for r in roots), out)

    def _confine(self, name: str, value: str, allowed: tuple[Path, ...]) -> Path:
        raw = Path(value).expanduser()
        base = allowed[0]
        # Resolve relative paths against the first root, then follow every symlink and '..'.
        path = (raw if raw.is_absolute() else base / raw).resolve()
        if not any(path == r or path.is_relative_to(r) for r in allowed):
            raise InputError(f"{name}: {value!r} is outside the allowed folders")
        return path

    def input_path(self, name: str, value: str, kind: str = "file") -> Path:
        """Resolve a path the tool reads; it must exist and be of the right kind."""
        path = self._confine(name, value, (*self.roots, self.out_root))
        if not path.exists():
            raise InputError(f"{name}: {value!r} does not exist")
        if kind == "file" and not path.is_file():
            raise InputError(f"{name}: {value!r} is not a file")
        if kind == "dir" and not path.is_dir():
            raise InputError(f"{name}: {value!r} is not a folder")
        return path

    def output_path(self, name: str, value: str, overwrite: bool = False) -> Path:
        """Resolve a path the tool writes; only under the output root, no silent overwrite."""
        raw = Path(value)
        path = (raw if raw.is_absolute() else self.out_root / raw).resolve()
        if not (path == self.out_root or path.is_relative_to(self.out_root)):
            raise InputError(f"{name}: {value!r} is outside the output folder")
        if path == self.out_root:
            raise InputError(f"{name}: give a file or folder inside the output folder")
        if path.exists() and not overwrite:
            raise InputError(f"{name}: {value!r} exists (pass overwrite: true to replace it)")
        return path
