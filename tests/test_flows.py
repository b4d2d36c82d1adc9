"""The flows under one Prefect test harness: real HTTP, real WARC files, real DuckDB."""

import base64
import json
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest
from warcio.archiveiterator import ArchiveIterator
from werkzeug import Response

from dedup.batch import Settings, open_store, prepare_pages
from dedup.linker import Linker
from flows.cli import main
from flows.monitor import copy_map_markdown, run_report
from flows.pipeline import crawl_flow, ingest_flow
from tests.helpers import COUNT_ROWS, LOOPBACK, five_pages, serve_story_web, write_warc
from tests.pages import BAKERY_STORY, CANAL_STORY, SEED_DISCLAIMER, article_html, fetched

pytestmark = pytest.mark.usefixtures("prefect_harness")


# DESIGN.md's public SQL interface: tables and the columns users rely on
PUBLIC_COLUMNS = {
    "documents": {"doc_id", "url", "final_url", "canonical_url", "host", "site_name", "title", "author", "published_at",
                  "fetched_at", "lang", "text", "body", "n_shingles", "minhash", "cluster_id", "run_id"},
    "clusters": {"cluster_id", "original_doc_id", "attributed_source", "size", "confidence", "reason", "first_published_at",
                 "created_run", "updated_run"},
    "reposts": {"doc_id", "source_doc_id", "cluster_id", "jaccard", "containment", "evidence"},
    "markers": {"doc_id", "kind", "rule", "text", "position"},
    "attributions": {"doc_id", "kind", "source_name", "source_url", "strength"},
    "fetches": {"run_id", "url", "status", "error", "fetched_at", "bytes", "elapsed_ms", "source"},
    "runs": {"run_id", "flow_run_id", "kind", "started_at", "finished_at", "params", "stats"},
    "repost_pairs": {"copy_url", "copy_host", "source_url", "source_host", "jaccard", "containment", "lag"},
    "host_stats": {"host", "pages", "copies", "originals", "median_lag_hours"},
}  # fmt: skip




def test_crawl_links_the_copy_and_records_every_fetch(httpserver, db_path):
    urls = serve_story_web(httpserver)
    summary = crawl_flow(urls, db=db_path, settings=LOOPBACK)
    assert summary["pages"] == 3 and summary["failed"] == 2
    con = duckdb.connect(db_path, read_only=True)
    fetches = dict(con.execute("SELECT url, coalesce(error, 'ok') FROM fetches").fetchall())
    assert fetches[urls[0]] == "ok" and fetches[urls[3]] == "HTTP 404" and fetches[urls[4]] == "not HTML: application/json"
    clusters = con.execute(
        "SELECT c.size, o.url FROM clusters c LEFT JOIN documents o ON o.doc_id = c.original_doc_id ORDER BY c.size DESC"
    ).fetchall()
    assert clusters[0] == (2, urls[0])
    assert con.execute("SELECT count(*) FROM clusters").fetchone()[0] == 2
    assert con.execute("SELECT flow_run_id IS NOT NULL AND finished_at IS NOT NULL FROM runs").fetchone()[0]
    con.close()
    # a second crawl fetches only what is new
    again = crawl_flow(urls, db=db_path, settings=LOOPBACK)
    assert again["skipped_known"] == 3 and again["pages"] == 0


def test_a_crawl_keeps_what_it_fetched_and_an_ingest_of_it_gives_the_same_pages(httpserver, tmp_path):
    urls = serve_story_web(httpserver)
    crawled, ingested = str(tmp_path / "crawled.duckdb"), str(tmp_path / "ingested.duckdb")
    summary = crawl_flow(urls, db=crawled, settings=LOOPBACK)
    warc = Path(summary["warc"])
    assert warc == tmp_path / "crawled.duckdb.warc" / "run-1.warc.gz"
    with warc.open("rb") as stream:
        records = [(r.rec_type, r.rec_headers.get_header("WARC-Target-URI")) for r in ArchiveIterator(stream)]
    # every answer, the failed ones and robots.txt too, with the request that asked for it
    answered = {url for kind, url in records if kind == "response"}
    assert set(urls) | {httpserver.url_for("/robots.txt")} <= answered
    assert sorted(kind for kind, _ in records) == sorted(["request", "response"] * len(answered))

    assert ingest_flow([str(warc)], db=ingested, settings=LOOPBACK)["pages"] == summary["pages"] == 3

    def pages_and_clusters(db):
        con = duckdb.connect(db, read_only=True)
        pages = con.execute("SELECT url, title, text, body FROM documents ORDER BY url").fetchall()
        clusters = {frozenset(u) for (u,) in con.execute("SELECT list(url) FROM documents GROUP BY cluster_id").fetchall()}
        con.close()
        return pages, clusters

    assert pages_and_clusters(ingested) == pages_and_clusters(crawled)


def test_a_reprocessed_warc_replaces_the_stored_extraction_and_rebuilds(tmp_path):
    story = [(f"https://paper.example/{n}", article_html(f"Story {n}", CANAL_STORY if n < 2 else BAKERY_STORY).encode(), "text/html")
             for n in range(3)]  # fmt: skip
    warc = write_warc(tmp_path / "crawl.warc.gz", story)
    db = str(tmp_path / "kept.duckdb")
    ingest_flow([str(warc)], db=db, settings=LOOPBACK)
    con = duckdb.connect(db)
    before = con.execute("SELECT doc_id, url, text, cluster_id FROM documents ORDER BY doc_id").fetchall()
    # as an older extraction left it: the text cut short, a title lost
    con.execute("UPDATE documents SET text = 'Canal drained', title = NULL WHERE url = 'https://paper.example/0'")
    con.close()
    summary = ingest_flow([str(warc)], db=db, settings=LOOPBACK, reprocess=True)
    assert summary["pages"] == 0 and summary["rebuild"]["pages"] == 3
    con = duckdb.connect(db, read_only=True)
    after = con.execute("SELECT doc_id, url, text, cluster_id FROM documents ORDER BY doc_id").fetchall()
    title = con.execute("SELECT title FROM documents WHERE url = 'https://paper.example/0'").fetchone()[0]
    runs = con.execute("SELECT kind FROM runs ORDER BY run_id").fetchall()
    con.close()
    assert after == before and title == "Story 0"
    assert runs == [("ingest",), ("ingest",), ("rebuild",)]


def test_no_warc_is_kept_when_asked_not_to(httpserver, tmp_path):
    urls = serve_story_web(httpserver)
    summary = crawl_flow(urls[:1], db=str(tmp_path / "plain.duckdb"), settings=LOOPBACK, keep_warc=False)
    assert summary["warc"] is None and not (tmp_path / "plain.duckdb.warc").exists()


def test_a_reader_gets_in_while_a_crawl_waits_on_the_network(httpserver, db_path):
    """The crawl fetches its next batch in the linker's thread: it does not hold
    the database meanwhile, so a query made during a slow fetch is answered."""
    stories = [CANAL_STORY, BAKERY_STORY, CANAL_STORY[:3], BAKERY_STORY[:3]]
    for i, story in enumerate(stories[:3]):
        html = article_html(f"Story {i}", story, site_name="Paper")
        httpserver.expect_request(f"/{i}").respond_with_data(html, content_type="text/html; charset=utf-8")
    answered = []

    def slow_page(request):
        # the crawl waits on this page: read the database from another process
        # until the pages fetched before it are linked (the fetcher runs ahead)
        deadline = time.monotonic() + 60
        while True:
            reader = subprocess.run(
                [sys.executable, "-c", COUNT_ROWS, db_path, "documents", "3"], capture_output=True, text=True, timeout=60
            )
            if reader.returncode != 0 or int(reader.stdout.strip() or 0) >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        answered.append((reader.returncode, reader.stdout.strip(), reader.stderr[-300:]))
        return Response(article_html("Story 3", stories[3], site_name="Paper"), content_type="text/html; charset=utf-8")

    httpserver.expect_request("/3").respond_with_handler(slow_page)
    settings = replace(LOOPBACK, batch_size=1)
    summary = crawl_flow([httpserver.url_for(f"/{i}") for i in range(4)], db=db_path, settings=settings, workers=1)
    assert summary["pages"] == 4
    [(code, pages, error)] = answered
    assert code == 0, error
    assert int(pages) >= 1


def test_the_ssrf_guard_is_on_by_default(httpserver, db_path):
    urls = serve_story_web(httpserver)
    summary = crawl_flow(urls[:1], db=db_path)
    assert summary["pages"] == 0 and summary["failed"] == 1
    con = duckdb.connect(db_path, read_only=True)
    (error,) = con.execute("SELECT error FROM fetches").fetchone()
    con.close()
    assert "SSRF guard" in error


def test_ingest_is_incremental_and_idempotent(tmp_path, db_path):
    copy = article_html("Canal drained", CANAL_STORY, [SEED_DISCLAIMER], site_name="Relay").encode()
    original = article_html("Canal drained", CANAL_STORY, site_name="Canal Courier").encode()
    first = write_warc(tmp_path / "one.warc.gz", [("https://relay.example/canal", copy, "text/html; charset=utf-8")])
    second = write_warc(tmp_path / "two.warc", [("https://canal.example/drain", original, "text/html")], gz=False)
    ingest_flow([str(first)], db=db_path, settings=LOOPBACK)
    # the run saved its LSH index; the next one maps it and links the original to the stored copy through it
    saved = json.loads(Path(db_path + ".lsh", "index.json").read_text())
    assert (saved["indexed_through"], saved["documents"]) == (1, 1)
    ingest_flow([str(first), str(second)], db=db_path, settings=LOOPBACK)
    again = ingest_flow([str(first), str(second)], db=db_path, settings=LOOPBACK)
    assert again["pages"] == 0
    con = duckdb.connect(db_path, read_only=True)
    assert con.execute("SELECT count(*) FROM documents").fetchone()[0] == 2
    size, original_url = con.execute(
        "SELECT c.size, o.url FROM clusters c JOIN documents o ON o.doc_id = c.original_doc_id"
    ).fetchone()
    assert (size, original_url) == (2, "https://canal.example/drain")
    con.close()


def test_an_index_that_cannot_be_saved_is_a_warning_and_the_run_keeps_its_pages(tmp_path, db_path, caplog):
    copy = article_html("Canal drained", CANAL_STORY, [SEED_DISCLAIMER], site_name="Relay").encode()
    warc = write_warc(tmp_path / "one.warc.gz", [("https://relay.example/canal", copy, "text/html; charset=utf-8")])
    Path(db_path + ".lsh").write_text("a file where the index folder would go")
    summary = ingest_flow([str(warc)], db=db_path, settings=LOOPBACK)
    assert summary["pages"] == 1
    assert any("the LSH index was not saved" in r.getMessage() for r in caplog.records)
    con = duckdb.connect(db_path, read_only=True)
    assert con.execute("SELECT count(*) FROM documents").fetchone()[0] == 1
    con.close()


def test_public_sql_interface_has_the_documented_names(tmp_path, db_path):
    page = article_html("Canal drained", CANAL_STORY, site_name="Canal Courier").encode()
    ingest_flow([str(write_warc(tmp_path / "a.warc.gz", [("https://canal.example/a", page, "text/html")]))], db=db_path)
    con = duckdb.connect(db_path, read_only=True)
    for table, expected in PUBLIC_COLUMNS.items():
        columns = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
        assert expected <= columns, f"{table} lacks {expected - columns}"
    assert con.execute("SELECT count(*) FROM documents WHERE cluster_id IS NULL").fetchone()[0] == 0
    con.close()


def test_cli_sql_show_explain_and_errors(tmp_path, db_path, capsys):
    copy = article_html("Canal drained", CANAL_STORY, [SEED_DISCLAIMER], site_name="Relay").encode()
    original = article_html("Canal drained", CANAL_STORY, site_name="Canal Courier").encode()
    warc = write_warc(
        tmp_path / "a.warc.gz",
        [("https://canal.example/drain", original, "text/html"), ("https://relay.example/c", copy, "text/html")],
    )
    # one page per batch: batches are prepared ahead in workers and must all land, in order
    assert main(["ingest", str(warc), "--db", db_path, "--batch-size", "1"]) == 0
    assert "2 new pages stored" in capsys.readouterr().out
    assert main(["--db", db_path, "sql", "SELECT url FROM documents ORDER BY doc_id", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["url", "https://canal.example/drain", "https://relay.example/c"]
    assert main(["--db", db_path, "explain", "https://relay.example/c"]) == 0
    explained = capsys.readouterr().out
    assert "original: https://canal.example/drain" in explained and "en.disclaimer" in explained
    cluster_id = duckdb.connect(db_path, read_only=True).execute("SELECT cluster_id FROM clusters").fetchone()[0]
    assert main(["--db", db_path, "show", str(cluster_id)]) == 0
    assert "ORIGINAL" in capsys.readouterr().out
    # the database is opened read-only for sql; mistakes are one line and exit 2
    assert main(["--db", db_path, "sql", "DELETE FROM documents"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reposts: error:") and len(err.strip().splitlines()) == 1
    assert main(["--db", str(tmp_path / "none.duckdb"), "sql", "SELECT 1"]) == 2
    assert main(["--db", db_path, "ingest", str(tmp_path / "missing.warc")]) == 2
    assert main(["--db", db_path, "show", "999999"]) == 2
    assert duckdb.connect(db_path, read_only=True).execute("SELECT count(*) FROM documents").fetchone()[0] == 2


def test_demo_finds_its_planted_copies(db_path, capsys):
    assert main(["--db", db_path, "demo"]) == 0
    out = capsys.readouterr().out
    assert "clusters with copies:" in out
    # the crawl found every article through the publishers' feeds and the aggregators' sitemaps
    serving = re.search(r"serving (\d+) demo articles", out)
    assert serving and f"{serving.group(1)} article URLs found in feeds and sitemaps" in out
    con = duckdb.connect(db_path, read_only=True)
    rows = con.execute(
        "SELECT o.host, c.size, c.attributed_source FROM clusters c LEFT JOIN documents o ON o.doc_id = c.original_doc_id WHERE c.size > 1 ORDER BY c.cluster_id"
    ).fetchall()
    con.close()
    # four stories with their original on the demo web, one whose original is missing
    assert sorted((h or "-", s) for h, s, _ in rows) == sorted(
        [("127.0.0.21", 3), ("127.0.0.21", 2), ("127.0.0.22", 2), ("127.0.0.23", 2), ("-", 2)]
    )
    assert [a for h, _, a in rows if h is None] == ["River Times"]
    # run again at once on the same database: the same URLs (the same port,
    # though the last run's connections still linger), so nothing is added
    if "(port 8765)" not in out:
        pytest.skip("the demo's port was taken by another program: its URLs change from run to run")
    with duckdb.connect(db_path, read_only=True) as con:
        stored = con.execute("SELECT count(*) FROM documents").fetchone()[0]
    assert main(["--db", db_path, "demo"]) == 0
    assert "(port 8765)" in capsys.readouterr().out
    with duckdb.connect(db_path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM documents").fetchone()[0] == stored


def test_a_host_that_keeps_failing_gets_one_warning_and_the_run_goes_on(httpserver, db_path, caplog):
    urls = serve_story_web(httpserver)[:1] + [f"http://127.0.0.1:9/story-{n}" for n in range(4)]  # port 9: refused
    with caplog.at_level("WARNING"):
        summary = crawl_flow(urls, db=db_path, settings=LOOPBACK)
    warnings = [r.getMessage() for r in caplog.records if "keeps failing" in r.getMessage()]
    assert len(warnings) == 1 and "127.0.0.1:9" in warnings[0]
    assert (summary["pages"], summary["failed"]) == (1, 4)


def test_the_progress_artifact_is_updated_at_most_every_few_seconds_and_at_the_end(monkeypatch):
    from prefect import flow
    from prefect.artifacts import Artifact

    from flows import monitor

    monkeypatch.setattr(monitor, "PROGRESS_EVERY_S", 1.0)

    def shown() -> float:
        return Artifact.get("watched-progress").data

    @flow
    def watched() -> list[float]:
        run = monitor.RunMonitor("watched")
        seen = [shown()]
        run.progress(0.25)  # just created: not shown yet
        seen.append(shown())
        time.sleep(1.05)
        run.progress(0.5)
        seen.append(shown())
        run.progress(0.75)  # shown under a second ago
        seen.append(shown())
        run.progress(0.9, final=True)
        seen.append(shown())
        return seen

    assert watched() == [0.0, 0.0, 50.0, 50.0, 90.0]


def test_a_runs_summary_counts_each_cluster_once_whatever_its_batches(tmp_path, db_path):
    canal = [
        ("https://canal.example/drain", article_html("Canal drained", CANAL_STORY, site_name="Canal Courier")),
        ("https://relay.example/canal", article_html("Canal drained", CANAL_STORY, [SEED_DISCLAIMER], site_name="Relay")),
        ("https://mirror.example/canal", article_html("Canal drained", CANAL_STORY, [SEED_DISCLAIMER], site_name="Mirror")),
    ]
    bakery = [
        ("https://bakery.example/bread", article_html("Bakery bread", BAKERY_STORY, site_name="Bakery Bugle")),
        ("https://relay.example/bread", article_html("Bakery bread", BAKERY_STORY, [SEED_DISCLAIMER], site_name="Relay")),
    ]
    html = "text/html; charset=utf-8"
    first = write_warc(tmp_path / "first.warc.gz", [(u, h.encode(), html) for u, h in canal[:2] + bakery])
    one_page_a_batch = replace(LOOPBACK, batch_size=1)
    # the canal cluster is made in one batch and grows in the next: one new cluster, not one that also "grew"
    summary = ingest_flow([str(first)], db=db_path, settings=one_page_a_batch)
    assert (summary["pages"], summary["new_clusters"], summary["grown_clusters"], summary["originals_found"]) == (4, 2, 0, 2)
    # a stored cluster given a page by a later run grew, once
    second = write_warc(tmp_path / "second.warc.gz", [(u, h.encode(), html) for u, h in canal[2:]])
    summary = ingest_flow([str(second)], db=db_path, settings=one_page_a_batch)
    assert (summary["pages"], summary["new_clusters"], summary["grown_clusters"], summary["originals_found"]) == (1, 0, 1, 1)
    with duckdb.connect(db_path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM clusters WHERE size > 1").fetchone()[0] == 2


def test_the_runs_clusters_table_lists_each_cluster_once_as_it_stands_at_the_end(db_path):
    settings = Settings()
    store = open_store(db_path, settings)
    run_id = store.start_run("ingest", None, {})
    linker = Linker(store, settings)
    # one run, two batches: the story's cluster is made by the first and grows in the second
    linker.link_batch(run_id, prepare_pages([fetched("https://harbor.example/canal", article_html("Canal drained", CANAL_STORY))], settings))
    linker.link_batch(run_id, prepare_pages([fetched("https://relay.example/canal", article_html("Canal drained", CANAL_STORY[:4]))], settings))
    clusters = run_report(store, run_id)["clusters"]
    assert [(c["change"], c["size"], c["original"]) for c in clusters] == [("created", 2, "https://harbor.example/canal")]
    assert clusters[0]["new_urls"] == "https://harbor.example/canal https://relay.example/canal"
    # the run's copy map, as its artifact shows it: the network as a picture, the pairs, the command for the rest
    markdown = copy_map_markdown("ingest", run_id, run_report(store, run_id))
    picture = re.search(r"!\[copy network[^]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert picture and base64.b64decode(picture.group(1)).startswith(b"\x89PNG")
    assert "| relay.example | harbor.example | 1 |" in markdown
    assert f"report --run {run_id} --out run-{run_id}.html" in markdown


def test_an_ingest_of_a_damaged_warc_stores_what_it_holds_and_exits_1(tmp_path, prefect_harness):
    path, starts = five_pages(tmp_path / "cut.warc.gz")
    data = path.read_bytes()
    path.write_bytes(data[: (starts[4] + len(data)) // 2])  # the file ends inside the fifth record
    db = str(tmp_path / "cut.duckdb")
    assert main(["--db", db, "ingest", str(path)]) == 1
    con = duckdb.connect(db, read_only=True)
    try:
        stored = [u for (u,) in con.execute("SELECT url FROM documents ORDER BY doc_id").fetchall()]
        damaged = con.execute("SELECT url, error FROM fetches WHERE error LIKE 'damaged archive%'").fetchall()
    finally:
        con.close()
    assert stored == [f"https://paper.example/{n}" for n in range(4)]
    assert damaged == [("https://paper.example/4", f"damaged archive: cut.warc.gz: the record at byte {starts[4]} is cut short (the file ends)")]
