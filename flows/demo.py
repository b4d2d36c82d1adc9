"""`reposts demo`: serve the bundled demo web on loopback and crawl it.

Each demo site gets its own loopback address (127.0.0.21, ...) so that hosts
differ as they do on the web. The crawl starts as a scheduled one does: from
the publishers' home pages, which link to their RSS feeds, and the
aggregators' sitemaps. It turns trafilatura's SSRF guard off explicitly,
because these addresses are loopback; user crawls keep it on.
"""

from __future__ import annotations

import html
import threading
import tomllib
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SITES_FILE = Path(__file__).parent / "demo_sites" / "sites.toml"
# The same port on every run keeps the demo's URLs stable, so running the demo
# again on the same database adds nothing; a busy port falls back to a free one.
PREFERRED_PORT = 8765


@dataclass(frozen=True)
class DemoPage:
    address: str
    path: str
    body: bytes
    content_type: str


def _publisher_page(site: dict, story: dict, url: str) -> str:
    paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in story["paragraphs"])
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(story["title"])} | {site["name"]}</title>'
        f'<link rel="canonical" href="{url}"><meta property="og:url" content="{url}">'
        f'<meta property="og:site_name" content="{site["name"]}">'
        f'<meta property="article:published_time" content="{story["published"]}"></head><body>'
        f'<header><a href="/">{site["name"]}</a><nav><a href="/local">Local</a> <a href="/port">Port</a></nav></header>'
        f'<main><article><h1>{html.escape(story["title"])}</h1><p class="byline">By the {site["name"]} newsroom</p>'
        f"{paragraphs}</article></main><footer><p>{site['name']} - independent local news since 1921</p></footer></body></html>"
    )


def _aggregator_page(site: dict, title: str, paragraphs: list[str], tail: list[str], published: str, url: str) -> str:
    charset = site.get("charset", "utf-8")
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    notes = "".join(f'<p class="note">{html.escape(t)}</p>' for t in tail)
    return (
        f'<!DOCTYPE html><html><head><meta charset="{charset}"><title>{html.escape(title)} - {site["name"]}</title>'
        f'<link rel="canonical" href="{url}"><meta property="og:site_name" content="{site["name"]}">'
        f'<meta property="article:published_time" content="{published}"></head><body>'
        f'<div class="top">{site["name"]} | Latest | Markets | Tech</div><div class="post"><h2>{html.escape(title)}</h2>'
        f'<div class="meta">Post At: {published.replace("T", " ")}</div>{body}{notes}</div>'
        f'<div class="side">Hot today: shipping, weather, markets</div></body></html>'
    )


def _home_page(site: dict) -> str:
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(site["name"])}</title>'
        f'<link rel="alternate" type="application/rss+xml" title="{html.escape(site["name"])}" href="/rss.xml"></head>'
        f"<body><h1>{html.escape(site['name'])}</h1></body></html>"
    )


def _rss(site: dict, root: str, articles: list[str]) -> str:
    items = "".join(f"<item><title>{html.escape(u)}</title><link>{html.escape(u)}</link></item>" for u in articles)
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>{html.escape(site['name'])}</title><link>{root}/</link>{items}</channel></rss>"
    )


def _sitemap(articles: list[str]) -> str:
    locs = "".join(f"<url><loc>{html.escape(u)}</loc></url>" for u in articles)
    return f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</urlset>'


@dataclass(frozen=True)
class DemoSources:
    """Where the demo crawl starts: the publishers' homes (feeds) and the aggregators' sitemaps."""

    feeds: list[str]
    sitemaps: list[str]
    articles: list[str]


def build_demo_web(port: int) -> tuple[dict[tuple[str, str], DemoPage], DemoSources]:
    """All demo pages by (address, path), and the sources to crawl."""
    data = tomllib.loads(SITES_FILE.read_text(encoding="utf-8"))
    sites = {s["key"]: s for s in data["site"]}
    stories = {s["key"]: s for s in data["story"]}
    pages: dict[tuple[str, str], DemoPage] = {}
    urls: list[str] = []
    copy_texts: dict[tuple[str, str], tuple[list[str], list[str]]] = {}

    def add(site: dict, path: str, text: str) -> str:
        url = f"http://{site['address']}:{port}{path}"
        charset = site.get("charset", "utf-8")
        pages[(site["address"], path)] = DemoPage(site["address"], path, text.encode(charset), f"text/html; charset={charset}")
        urls.append(url)
        return url

    for story in stories.values():
        site = sites.get(story["site"])
        if site is None:  # a story whose original is not on the demo web
            continue
        path = f"/{story['published'][:4]}/{story['key']}.html"
        url = f"http://{site['address']}:{port}{path}"
        if story.get("own"):
            add(
                site,
                path,
                _aggregator_page(site, story["title"], story["paragraphs"], [site["disclaimer"]], story["published"], url),
            )
        else:
            add(site, path, _publisher_page(site, story, url))
    for number, copy in enumerate(data["copy"], start=1):
        story, site = stories[copy["story"]], sites[copy["site"]]
        paragraphs = list(story["paragraphs"])
        tail: list[str] = []
        if copy.get("via"):
            paragraphs, tail = copy_texts[(copy["story"], copy["via"])]
            paragraphs, tail = list(paragraphs), list(tail)
        if copy["mode"] == "cut":
            paragraphs = paragraphs[: max(2, len(paragraphs) // 2)]
        elif copy["mode"] == "excerpt":
            paragraphs = paragraphs[:2]
        if copy.get("credit"):
            tail.append(copy["credit"])
        tail.append(site["disclaimer"])
        copy_texts[(copy["story"], copy["site"])] = (paragraphs, tail)
        path = f"/news/{copy['story']}-{number}.html"
        url = f"http://{site['address']}:{port}{path}"
        add(site, path, _aggregator_page(site, story["title"], paragraphs, tail, copy["published"], url))
    feeds, sitemaps = [], []
    for site in sites.values():
        root = f"http://{site['address']}:{port}"
        articles = [u for u in urls if u.startswith(root + "/")]
        if site["kind"] == "publisher":
            pages[(site["address"], "/")] = DemoPage(site["address"], "/", _home_page(site).encode(), "text/html; charset=utf-8")
            rss = _rss(site, root, articles).encode()
            pages[(site["address"], "/rss.xml")] = DemoPage(site["address"], "/rss.xml", rss, "application/rss+xml")
            feeds.append(f"{root}/")
        else:
            sitemap = _sitemap(articles).encode()
            pages[(site["address"], "/sitemap.xml")] = DemoPage(site["address"], "/sitemap.xml", sitemap, "application/xml")
            sitemaps.append(f"{root}/")
    return pages, DemoSources(feeds, sitemaps, urls)


class DemoWeb:
    """The demo sites served on their loopback addresses, one port for all."""

    def __init__(self) -> None:
        import socket

        probe = socket.socket()
        # as the servers bind (http.server sets it): the last run's connections
        # may linger on the port (TIME_WAIT), and the port is free for them
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.21", PREFERRED_PORT))
        except OSError:
            probe.bind(("127.0.0.21", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.pages, self.sources = build_demo_web(self.port)
        self._servers: list[ThreadingHTTPServer] = []

    def __enter__(self) -> DemoWeb:
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                page = pages.get((self.server.server_address[0], self.path))
                if page is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", page.content_type)
                self.send_header("Content-Length", str(len(page.body)))
                self.end_headers()
                self.wfile.write(page.body)

            def log_message(self, *args) -> None:
                pass

        for address in sorted({a for a, _ in pages}):
            server = ThreadingHTTPServer((address, self.port), Handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self._servers.append(server)
        return self

    def __exit__(self, *exc) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()


def run_demo(db: str, settings=None) -> int:
    from dedup.batch import Settings
    from flows.cli import Progress, _print_rows, _print_summary, run_query, write_report
    from flows.pipeline import crawl_flow

    settings = settings or Settings()
    # our own sites on loopback: no need to wait 2 s between two pages of one site
    settings = replace(settings, fetch=replace(settings.fetch, host_delay_s=0.1))
    with DemoWeb() as web:
        sources = web.sources
        print(
            f"serving {len(sources.articles)} demo articles on {len({a for a, _ in web.pages})} loopback sites "
            f"(port {web.port}); crawling {len(sources.feeds)} feeds and {len(sources.sitemaps)} sitemaps"
        )
        progress = Progress(len(sources.articles), "crawl")
        try:
            # the demo web is on loopback: the SSRF guard is off for this crawl only
            summary = crawl_flow(
                feeds=sources.feeds,
                sitemaps=sources.sitemaps,
                db=db,
                settings=settings,
                allow_private_network=True,
                progress=progress,
            )
        finally:
            progress.close()
    _print_summary(summary, db)
    columns, rows = run_query(
        db,
        """SELECT c.cluster_id, c.size, coalesce(o.url, 'not in database') AS original,
                  coalesce(c.attributed_source, '') AS credited, round(c.confidence, 2) AS confidence
           FROM clusters c LEFT JOIN documents o ON o.doc_id = c.original_doc_id
           WHERE c.size > 1 ORDER BY c.cluster_id""",
    )
    print("\nclusters with copies:")
    _print_rows(columns, rows, "table", max_width=70)
    report = write_report(db, str(Path(db).with_name("report.html")))
    print(f"\nthe copy map, as pictures (open it in a browser): {report}")
    print(
        "\nnext, try:\n"
        f'  reposts --db {db} sql "SELECT copy_host, source_host, round(jaccard, 2) AS jaccard, evidence FROM repost_pairs"\n'
        f"  reposts --db {db} show {rows[0][0] if rows else 1}"
    )
    return 0
