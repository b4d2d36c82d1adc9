"""Rows for benchmarks/RESULTS.md: each benchmark's `--record` writes its own,
newest first, under its table's header, with the date and the commit measured."""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def commit() -> str:
    """The commit measured, "+" when the checkout has uncommitted changes."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout
    return (head or "-") + ("+" if dirty.strip() else "")


def row(*cells: object) -> str:
    """A table row that starts with today's date and the commit."""
    return "| " + " | ".join([date.today().isoformat(), commit(), *(str(c) for c in cells)]) + " |"


def record(rows_by_header: dict[str, list[str]]) -> None:
    """Put the rows under their table's header (and its |---| line) in RESULTS.md."""
    lines = RESULTS.read_text(encoding="utf-8").splitlines()
    for header, rows in rows_by_header.items():
        at = lines.index(header) + 2
        lines[at:at] = rows
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"recorded in {RESULTS.relative_to(ROOT)}")
