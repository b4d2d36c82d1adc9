"""Feeds and sitemaps as crawl sources, and new-only crawling (`--refresh`)."""

import gzip

import duckdb
import pytest
from trafilatura.feeds import FeedParameters

from dedup.discover import Source, article_urls, feed_links, parse_source, sitemap_links
from dedup.fetch import Fetcher
from flows.cli import main
from flows.errors import UserError
from flows.pipeline import crawl_flow
from flows.sources import read_sources
from tests.helpers import LOOPBACK
from tests.pages import BAKERY_STORY, CANAL_STORY, MARKET_STORY, SEED_DISCLAIMER, article_html

HTML = "text/html; charset=utf-8"

RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Canal Courier</title><link>{root}/</link>
<item><title>Canal drained</title><link>{root}/news/canal-drained.html</link></item>
<item><title>Bread</title><link>{root}/news/bakery-bread.html?utm_source=rss</link></item>
<item><title>Elsewhere</title><link>https://elsewhere.example/news/story.html</link></item>
<item><title>Tag page</title><link>{root}/tag/canals/</link></item>
</channel></rss>"""

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Relay</title>
<link rel="self" href="{root}/atom.xml"/>
<entry><title>Canal</title><link href="{root}/news/canal-drained.html"/></entry>
<entry><title>Market</title><link href="{root}/news/market-day.html"/></entry>
</feed>"""

SITEMAP_INDEX = """<?xml version="1.0" encoding="UTF-8"?>
<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
<sitemap><loc>{root}/sitemap-news.xml.gz</loc></sitemap>
</sitemapindex>"""

URLSET = """<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
<url><loc>{root}/news/market-day.html</loc></url>
<url><loc>{root}/news/canal-copy.html</loc></url>
</urlset>"""


def test_a_sources_line_is_a_page_a_feed_or_a_sitemap(tmp_path):
    assert parse_source("https://a.example/x") == Source("page", "https://a.example/x")
    assert parse_source("feed  https://a.example/rss") == Source("feed", "https://a.example/rss")
    assert parse_source("Sitemap https://a.example/") == Source("sitemap", "https://a.example/")
    path = tmp_path / "sources.txt"
    path.write_text("# watched\nhttps://A.example/x?utm_source=mail\n\nfeed https://a.example/rss\nrss https://b\n")
    with pytest.raises(UserError, match="line 5"):
        read_sources(path)
    path.write_text("https://A.example/x?utm_source=mail\nfeed https://a.example/rss\n")
    assert read_sources(path) == [Source("page", "https://a.example/x"), Source("feed", "https://a.example/rss")]


def test_only_the_articles_of_the_source_host_are_kept():
    links = [
        "/news/one.html",
        "https://www.paper.example/news/two.html?utm_source=rss",
        "https://other.example/news/three.html",
        "https://paper.example/tag/economy/",
        "https://paper.example/login",
        "https://paper.example/",
        "mailto:desk@paper.example",
        "/news/one.html",
    ]
    kept = article_urls(links, "https://paper.example/feed.xml", max_urls=10)
    assert kept == ["https://paper.example/news/one.html", "https://www.paper.example/news/two.html"]
    assert article_urls(links, "https://paper.example/feed.xml", max_urls=1) == ["https://paper.example/news/one.html"]


def test_feed_and_sitemap_documents_are_read():
    params = FeedParameters("https://p.example", "p.example", "https://p.example/rss")
    assert "https://p.example/news/canal-drained.html" in feed_links(RSS.format(root="https://p.example"), params)
    assert feed_links(ATOM.format(root="https://p.example"), params) == [
        "https://p.example/news/canal-drained.html",
        "https://p.example/news/market-day.html",
    ]
    assert feed_links("<html><body>a page</body></html>", params) is None
    pages, nested = sitemap_links(SITEMAP_INDEX.format(root="https://p.example"))
    assert pages == [] and nested == ["https://p.example/sitemap-news.xml.gz"]
    pages, nested = sitemap_links(URLSET.format(root="https://p.example"))
    assert len(pages) == 2 and nested == []
    assert sitemap_links("https://p.example/a\nhttps://p.example/b\n") == (["https://p.example/a", "https://p.example/b"], [])
    assert sitemap_links("<html><body>not a sitemap</body></html>")[0] is None


def serve_feed_site(httpserver):
    root = httpserver.url_for("").rstrip("/")
    canal = article_html("Canal drained", CANAL_STORY, published="2026-02-01T08:00:00", site_name="Canal Courier")
    copy = article_html("Canal drained", CANAL_STORY, [SEED_DISCLAIMER], site_name="Relay")
    httpserver.expect_request("/").respond_with_data(
        '<html><head><link rel="alternate" type="application/rss+xml" href="/rss.xml"></head><body>home</body></html>',
        content_type=HTML,
    )
    httpserver.expect_request("/rss.xml").respond_with_data(RSS.format(root=root), content_type="application/rss+xml")
    httpserver.expect_request("/atom.xml").respond_with_data(ATOM.format(root=root), content_type="application/atom+xml")
    httpserver.expect_request("/robots.txt").respond_with_data(f"User-agent: *\nAllow: /\nSitemap: {root}/sitemap-index.xml\n")
    httpserver.expect_request("/sitemap-index.xml").respond_with_data(
        SITEMAP_INDEX.format(root=root), content_type="application/xml"
    )
    httpserver.expect_request("/sitemap-news.xml.gz").respond_with_data(
        gzip.compress(URLSET.format(root=root).encode()), content_type="application/gzip"
    )
    httpserver.expect_request("/news/canal-drained.html").respond_with_data(canal, content_type=HTML)
    httpserver.expect_request("/news/canal-copy.html").respond_with_data(copy, content_type=HTML)
    httpserver.expect_request("/news/bakery-bread.html").respond_with_data(
        article_html("Bread", BAKERY_STORY, site_name="Canal Courier"), content_type=HTML
    )
    httpserver.expect_request("/news/market-day.html").respond_with_data(
        article_html("Market day", MARKET_STORY, site_name="Canal Courier"), content_type=HTML
    )
    return root


def test_the_fetcher_finds_articles_through_feeds_and_sitemaps(httpserver):
    root = serve_feed_site(httpserver)
    found = Fetcher(LOOPBACK.fetch).discover(
        [
            Source("feed", f"{root}/"),
            Source("feed", f"{root}/atom.xml"),
            Source("sitemap", f"{root}/"),
            Source("feed", f"{root}/none.xml"),
        ]
    )
    assert found[0].urls == [f"{root}/news/canal-drained.html", f"{root}/news/bakery-bread.html"]  # via the home's <link>
    assert found[1].urls == [f"{root}/news/canal-drained.html", f"{root}/news/market-day.html"]
    assert found[2].urls == [f"{root}/news/market-day.html", f"{root}/news/canal-copy.html"]  # robots -> index -> .xml.gz
    assert found[3].urls == [] and found[3].error == "feed: HTTP 404"


def test_robots_txt_applies_to_feeds(httpserver):
    root = httpserver.url_for("").rstrip("/")
    httpserver.expect_request("/robots.txt").respond_with_data("User-agent: *\nDisallow: /private/\n")
    found = Fetcher(LOOPBACK.fetch).discover([Source("feed", f"{root}/private/rss.xml")])
    assert found[0].error == "feed: skipped: disallowed by robots.txt"
    assert all(r.path != "/private/rss.xml" for r, _ in httpserver.log)


@pytest.mark.usefixtures("prefect_harness")
def test_a_crawl_from_feeds_and_sitemaps_fetches_only_what_is_new(httpserver, db_path):
    root = serve_feed_site(httpserver)
    feeds, sitemaps = [f"{root}/rss.xml", f"{root}/missing-feed.xml"], [f"{root}/"]
    first = crawl_flow(feeds=feeds, sitemaps=sitemaps, db=db_path, settings=LOOPBACK)
    assert first["discovered"] == 4 and first["pages"] == 4
    con = duckdb.connect(db_path, read_only=True)
    stored = {u for (u,) in con.execute("SELECT url FROM documents").fetchall()}
    assert stored == {f"{root}/news/{n}.html" for n in ("canal-drained", "bakery-bread", "market-day", "canal-copy")}
    (size,) = con.execute(
        "SELECT size FROM clusters JOIN documents USING (cluster_id) WHERE url LIKE '%canal-copy.html'"
    ).fetchone()
    assert size == 2
    failed = con.execute("SELECT url, source, error FROM fetches WHERE error IS NOT NULL").fetchall()
    assert failed == [(f"{root}/missing-feed.xml", "feed", "feed: HTTP 404")]
    con.close()

    article_requests = sum(1 for r, _ in httpserver.log if r.path.startswith("/news/"))
    again = crawl_flow(feeds=feeds, sitemaps=sitemaps, db=db_path, settings=LOOPBACK)
    assert again["pages"] == 0 and again["skipped_known"] == 4 and again["refetched_known"] == 0
    assert sum(1 for r, _ in httpserver.log if r.path.startswith("/news/")) == article_requests

    refreshed = crawl_flow(feeds=feeds[:1], db=db_path, settings=LOOPBACK, refresh=True)
    assert refreshed["pages"] == 0 and refreshed["refetched_known"] == 2
    con = duckdb.connect(db_path, read_only=True)
    assert con.execute("SELECT count(*) FROM documents").fetchone()[0] == 4
    rows = con.execute("SELECT url, status FROM fetches WHERE run_id = ?", [refreshed["run_id"]]).fetchall()
    assert sorted(rows) == [(f"{root}/news/bakery-bread.html", 200), (f"{root}/news/canal-drained.html", 200)]
    con.close()


@pytest.mark.usefixtures("prefect_harness")
def test_the_command_line_takes_feeds_and_refresh(httpserver, db_path, capsys):
    root = serve_feed_site(httpserver)
    argv = ["--db", db_path, "crawl", "--feed", f"{root}/atom.xml", "--allow-private-network", "--host-delay", "0"]
    assert main(argv) == 0
    assert "2 article URLs found in feeds and sitemaps" in capsys.readouterr().out
    assert main(argv + ["--refresh"]) == 0
    con = duckdb.connect(db_path, read_only=True)
    assert con.execute("SELECT count(*) FROM documents").fetchone()[0] == 2
    assert con.execute("SELECT count(*) FROM fetches WHERE run_id = 2").fetchone()[0] == 2
    con.close()
