"""Runs every ```bash block of README.md and docs/*.md so the documented commands cannot drift."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK_TIMEOUT_S = 300
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]*)\)\s*-->\s*$")


@dataclass
class Block:
    """One ```bash fence of a Markdown file."""

    line: int
    code: str
    skip_reason: str | None

    @property
    def first_line(self) -> str:
        return next((ln for ln in self.code.splitlines() if ln.strip()), "").strip()


def doc_files() -> list[Path]:
    """README.md and every docs/*.md, sorted so test ids are stable."""
    return [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if p.exists()]


def bash_blocks(path: Path) -> list[Block]:
    """The ```bash (or ```sh) fences of a file, with any skip marker on the line before."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for m in FENCE.finditer(text):
        if m.group(1).strip().lower() not in {"bash", "sh", "shell"}:
            continue
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        line = text.count("\n", 0, m.start()) + 1
        blocks.append(Block(line, m.group(2), skip.group("reason") if skip else None))
    return blocks


def test_block_parser_sees_fences_and_skip_markers(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "intro\n```text\nnot run\n```\n<!-- docs-test: skip (needs network) -->\n"
        "```bash\npip install x\n```\n\n```bash\necho hi\necho there\n```\n```python\nx=1\n```\n"
    )
    blocks = bash_blocks(doc)
    assert [b.first_line for b in blocks] == ["pip install x", "echo hi"]
    assert [b.skip_reason for b in blocks] == ["needs network", None]
    assert blocks[1].line == 10


@pytest.mark.slow
@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_commands_run(doc: Path, tmp_path: Path) -> None:
    blocks = bash_blocks(doc)
    if not blocks:
        pytest.skip(f"{doc.name} has no bash block")
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    env = {**os.environ, "EOKIT_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    skipped = []
    rel = doc.relative_to(ROOT)
    for block in blocks:
        if block.skip_reason is not None:
            skipped.append(f"line {block.line} `{block.first_line}`: {block.skip_reason}")
            continue
        try:
            proc = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block.code],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout or ""
            out = (out.decode(errors="replace") if isinstance(out, bytes) else out)[-3000:]
            pytest.fail(
                f"{rel}:{block.line} `{block.first_line}` timed out after "
                f"{BLOCK_TIMEOUT_S} s\n{out}"
            )
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-3000:]
            pytest.fail(f"{rel}:{block.line} `{block.first_line}` exited {proc.returncode}\n{tail}")
    if skipped:
        pytest.skip(
            f"{rel}: ran {len(blocks) - len(skipped)} block(s), skipped " + "; ".join(skipped)
        )
