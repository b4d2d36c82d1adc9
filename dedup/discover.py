"""Discovery stage: the article URLs that RSS/Atom feeds and sitemaps list.

A source is a page URL, a feed, or a sitemap. A feed source may be the feed
itself or a page that links to its feeds (`<link rel="alternate">`); a
sitemap source may be the sitemap (or sitemap index, gzipped or not) or a
site's home, whose sitemaps come from robots.txt or `/sitemap.xml`.

Feed documents are parsed with trafilatura's feed reader, sitemaps with lxml;
the links found are kept when they are on the source's own host, crawlable
and not navigation pages (courlan's filters), in courlan's normal form. The
documents themselves are downloaded by the caller (the `Fetcher`, so robots.txt,
the SSRF guard and politeness apply to them as to articles).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from courlan import is_navigation_page, is_not_crawlable, normalize_url
from lxml import etree
from trafilatura.feeds import FeedParameters, determine_feed, find_links, is_potential_feed
from trafilatura.sitemaps import extract_robots_sitemaps

from dedup.models import FetchedPage

SOURCE_KINDS = ("page", "feed", "sitemap")

# sitemaps an index may point to, and feeds a page may link to, read per source
MAX_SITEMAPS = 20
MAX_FEEDS = 3

_SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


@dataclass(frozen=True)
class Source:
    kind: str  # page, feed or sitemap
    url: str

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"unknown source kind {self.kind!r} (one of {', '.join(SOURCE_KINDS)})")


def parse_source(line: str) -> Source:
    """`URL` (a page), `feed URL` or `sitemap URL`, as a sources file lists them."""
    parts = line.split()
    if len(parts) == 2 and parts[0].lower() in ("feed", "sitemap"):
        return Source(parts[0].lower(), parts[1])
    if len(parts) == 1:
        return Source("page", parts[0])
    raise ValueError(f"a source is `URL`, `feed URL` or `sitemap URL`, got: {line.strip()}")


@dataclass
class Discovered:
    """What one feed or sitemap source gave: article URLs, or why none."""

    source: Source
    urls: list[str] = field(default_factory=list)
    error: str | None = None


Download = Callable[[str], FetchedPage]


def discover_source(source: Source, download: Download, max_urls: int, max_bytes: int) -> Discovered:
    """The article URLs a feed or sitemap source lists (at most `max_urls`).

    `download` fetches one URL and returns its record (never raises)."""
    if source.kind == "feed":
        found = _discover_feed(source, download, max_bytes)
    elif source.kind == "sitemap":
        found = _discover_sitemap(source, download, max_bytes)
    else:
        raise ValueError(f"a {source.kind} source has nothing to discover")
    if found.error is None:
        found.urls = article_urls(found.urls, source.url, max_urls)
        if not found.urls:
            found.error = f"{source.kind}: no article URLs on the source's host"
    return found


def article_urls(links: list[str], source_url: str, max_urls: int) -> list[str]:
    """The links that are articles of the source's host: absolute, http(s),
    crawlable, not navigation (tags, categories, page 2), normalized, once each."""
    host = _bare_host(source_url)
    kept: dict[str, None] = {}
    for link in links:
        absolute = urljoin(source_url, link.strip())
        parts = urlsplit(absolute)
        if parts.scheme not in ("http", "https") or _bare_host(absolute) != host or parts.path in ("", "/"):
            continue
        if is_not_crawlable(absolute) or is_navigation_page(absolute):
            continue
        kept[normalize_url(absolute)] = None
        if len(kept) >= max_urls:
            break
    return list(kept)


def _bare_host(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower()
    return host.removeprefix("www.")


def _discover_feed(source: Source, download: Download, max_bytes: int) -> Discovered:
    found = Discovered(source)
    first = download(source.url)
    text, error = _text_of(first, max_bytes)
    if error:
        found.error = f"feed: {error}"
        return found
    params = _feed_params(source.url)
    links = feed_links(text, params)
    if links is not None:
        found.urls = links
        return found
    # a page: read the feeds it links to
    feeds = determine_feed(text, params)[:MAX_FEEDS]
    if not feeds:
        found.error = "feed: not a feed, and the page links to none"
        return found
    for feed_url in feeds:
        text, error = _text_of(download(feed_url), max_bytes)
        links = feed_links(text, params) if not error else None
        found.urls.extend(links or [])
    return found


def feed_links(text: str, params: FeedParameters) -> list[str] | None:
    """The item links of an RSS, Atom or JSON feed; None if `text` is not a feed."""
    text = text.strip()
    if not (is_potential_feed(text) or text.startswith("{")):
        return None
    return find_links(text, params)


def _feed_params(url: str) -> FeedParameters:
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    return FeedParameters(base, parts.hostname or "", url)


def _discover_sitemap(source: Source, download: Download, max_bytes: int) -> Discovered:
    found = Discovered(source)
    parts = urlsplit(source.url)
    root = f"{parts.scheme}://{parts.netloc}"
    if parts.path in ("", "/"):
        robots, _ = _text_of(download(f"{root}/robots.txt"), max_bytes)
        queue = extract_robots_sitemaps(robots, root) if robots else []
        queue = queue or [f"{root}/sitemap.xml"]
    else:
        queue = [source.url]
    seen: set[str] = set()
    errors: list[str] = []
    while queue and len(seen) < MAX_SITEMAPS:
        url = queue.pop(0)
        if url in seen:
            continue
        seen.add(url)
        text, error = _text_of(download(url), max_bytes)
        if error:
            errors.append(error)
            continue
        pages, nested = sitemap_links(text)
        if pages is None:
            errors.append("not a sitemap")
            continue
        found.urls.extend(pages)
        nested = [urljoin(url, n) for n in nested]
        queue.extend(n for n in nested if _bare_host(n) == _bare_host(source.url))
    if not found.urls and errors:
        found.error = f"sitemap: {errors[0]}"
    return found


def sitemap_links(text: str) -> tuple[list[str] | None, list[str]]:
    """(page URLs, nested sitemap URLs) of a sitemap or sitemap index; a plain
    text sitemap is one URL per line. Pages is None when `text` is neither."""
    stripped = text.lstrip()
    if stripped.startswith("<"):
        parser = etree.XMLParser(resolve_entities=False, no_network=True, recover=True, huge_tree=False)
        try:
            root = etree.fromstring(stripped.encode("utf-8"), parser)
        except etree.XMLSyntaxError:
            return None, []
        if root is None or etree.QName(root).localname not in ("urlset", "sitemapindex"):
            return None, []
        locs = [
            (loc.text or "").strip()
            for loc in root.iter("loc", f"{{{_SITEMAP_NS}}}loc")
            if len(loc) == 0 and (loc.text or "").strip()
        ]
        if etree.QName(root).localname == "sitemapindex":
            return [], locs
        return locs, []
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and all(line.startswith(("http://", "https://")) for line in lines):
        return lines, []
    return None, []


def _text_of(page: FetchedPage, max_bytes: int) -> tuple[str, str | None]:
    """The decoded body of a feed, sitemap or robots.txt download, or a one-line error."""
    if page.error:
        return "", page.error
    if page.status not in (None, 200):
        return "", f"HTTP {page.status}"
    body = page.html or b""
    if body[:2] == b"\x1f\x8b":  # a .xml.gz file served as is
        try:
            body = zlib.decompressobj(wbits=31).decompress(body, max_bytes)
        except zlib.error:
            return "", "not a readable gzip file"
    if not body.strip():
        return "", "empty body"
    return body.decode("utf-8", errors="replace"), None
