"""Where a crawl's URLs come from: the command line, or a sources file.

A sources file has one URL per line; blank lines and lines starting with `#`
are ignored. `sources.txt` at the top of the project is the example the
scheduled deployment reads.
"""

from __future__ import annotations

from pathlib import Path

from dedup.fetch import normalize_urls
from flows.errors import UserError


def read_sources(path: str | Path) -> list[str]:
    """The URLs listed in a sources file (raises UserError if it is missing)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such sources file: {path}")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def check_urls(urls: list[str]) -> list[str]:
    """The URLs in courlan's normal form (the form they are fetched and stored
    in), once each, in order; a line that is not an http(s) URL is a UserError."""
    bad = [u for u in urls if not u.startswith(("http://", "https://"))]
    if bad:
        raise UserError(f"not an http(s) URL: {bad[0]}")
    return normalize_urls(urls)
