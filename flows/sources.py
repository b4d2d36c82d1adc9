"""Where a crawl's URLs come from: the command line, or a sources file.

A sources file has one source per line: a page URL, `feed URL` (an RSS or
Atom feed, or a page that links to its feeds) or `sitemap URL` (a sitemap, or
a site's home). Blank lines and lines starting with `#` are ignored.
`sources.txt` at the top of the project is the example the scheduled
deployment reads.
"""

from __future__ import annotations

from pathlib import Path

from dedup.discover import Source, parse_source
from dedup.fetch import normalize_urls
from flows.errors import UserError


def read_sources(path: str | Path) -> list[Source]:
    """The sources listed in a sources file (raises UserError if it is missing or a line is wrong)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such sources file: {path}")
    sources = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            sources.append(parse_source(line))
        except ValueError as exc:
            raise UserError(f"{path}, line {number}: {exc}") from exc
    return check_sources(sources)


def sources_of(urls: list[str] | None = None, feeds: list[str] | None = None, sitemaps: list[str] | None = None) -> list[Source]:
    """Sources from URLs given one by one (the command line, a flow's parameters)."""
    given = [Source("page", u) for u in urls or []]
    given += [Source("feed", u) for u in feeds or []]
    given += [Source("sitemap", u) for u in sitemaps or []]
    return check_sources(given)


def check_sources(sources: list[Source]) -> list[Source]:
    """The sources once each, in order, page URLs in courlan's normal form (the
    form they are fetched and stored in); a URL that is not http(s) is a UserError."""
    bad = [s.url for s in sources if not s.url.startswith(("http://", "https://"))]
    if bad:
        raise UserError(f"not an http(s) URL: {bad[0]}")
    checked = []
    for source in sources:
        if source.kind == "page":
            source = Source("page", normalize_urls([source.url])[0])
        checked.append(source)
    return list(dict.fromkeys(checked))


def page_urls(sources: list[Source]) -> list[str]:
    return [s.url for s in sources if s.kind == "page"]
