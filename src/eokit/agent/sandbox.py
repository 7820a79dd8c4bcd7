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
        if raw.is_absolute():
            candidates = [raw.resolve()]
        else:
            # A relative path is looked up in each root in turn (the output root last), so an
            # output of one call can be named the same way as the input of the next.
            candidates = [(base / raw).resolve() for base in allowed]
            existing = [c for c in candidates if c.exists() and _inside(c, allowed)]
            candidates = existing[:1] or candidates[:1]
        # resolve() has followed every symlink and '..': only the real location counts.
        path = candidates[0]
        if not _inside(path, allowed):
            raise InputError(f"{name}: {value!r} is outside the allowed folders")
        return path

    def readable(self, path: Path) -> bool:
        """Whether a resolved path lies inside an allowed root or the output root."""
        return _inside(path, (*self.roots, self.out_root))


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


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)
