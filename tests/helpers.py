"""Helpers the test modules share: WARC files made in the test, the story
web a crawl test serves, and readers of what a run stored."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from dedup.batch import Settings
from tests.pages import BAKERY_STORY, CANAL_STORY, SEED_DISCLAIMER, article_html, generated_story


def write_warc(path, records, gz=True):
    """Write (uri, html bytes, content type) responses to a WARC file."""
    raw = io.BytesIO()
    writer = WARCWriter(raw, gzip=gz)
    for uri, body, content_type in records:
        headers = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(uri, "response", payload=io.BytesIO(body), http_headers=headers))
    path.write_bytes(raw.getvalue())
    return path


def record_offsets(path):
    """(offset, URL) of each record of a WARC file."""
    with path.open("rb") as stream:
        records = ArchiveIterator(stream)
        for record in records:
            record.content_stream().read()
            yield records.get_record_offset(), record.rec_headers.get_header("WARC-Target-URI")


def five_pages(path, gz=True):
    """A WARC file of five pages, and the offset where each record starts."""
    records = [(f"https://paper.example/{n}", article_html(f"Story {n}", generated_story(n)).encode(), "text/html") for n in range(5)]
    write_warc(path, records, gz=gz)
    starts = [record_offset for record_offset, _ in record_offsets(path)]
    return path, starts


N_STORIES = 40  # an original and a copy each: 80 pages


def story_warc(path: Path) -> Path:
    records = []
    for i in range(N_STORIES):
        story = generated_story(i)
        original = article_html(f"Story {i}", story, site_name=f"Paper {i % 4}")
        copy = article_html(f"Story {i}", story, [SEED_DISCLAIMER], site_name="Relay")
        records.append((f"https://paper{i % 4}.example/{i}", original.encode(), "text/html"))
        records.append((f"https://relay.example/copy/{i}", copy.encode(), "text/html"))
    return write_warc(path, records)


# a reader in another process, reading as `reposts sql` does: arguments are
# the database, a table and how long to wait for the lock; prints its row count
COUNT_ROWS = """
import sys
from dedup.store import Store
db, table, wait_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
with Store(db, lock_wait_s=wait_s).connect(read_only=True) as con:
    print(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0], flush=True)
"""


# the test server is on loopback: these crawls opt out of the SSRF guard explicitly
LOOPBACK = replace(Settings(), fetch=replace(Settings().fetch, ssrf_protection=False, timeout_s=5, host_delay_s=0))


def serve_story_web(httpserver):
    original = article_html("Canal drained", CANAL_STORY, published="2026-02-01T08:00:00", site_name="Canal Courier")
    copy = article_html("Canal drained", CANAL_STORY, [SEED_DISCLAIMER], site_name="Relay")
    other = article_html("Bakery bread", BAKERY_STORY, [SEED_DISCLAIMER], site_name="Relay")
    httpserver.expect_request("/original").respond_with_data(original, content_type="text/html; charset=utf-8")
    httpserver.expect_request("/copy").respond_with_data(copy, content_type="text/html; charset=utf-8")
    httpserver.expect_request("/other").respond_with_data(other, content_type="text/html; charset=utf-8")
    httpserver.expect_request("/gone").respond_with_data("gone", status=404)
    httpserver.expect_request("/data.json").respond_with_data('{"a": 1}', content_type="application/json")
    return [httpserver.url_for(p) for p in ("/original", "/copy", "/other", "/gone", "/data.json")]


def answers(index, queries) -> list[dict[int, int]]:
    """Each query's candidates and the bands they share."""
    candidates = index.candidates_many(queries)
    return [candidates.of(n) for n in range(len(queries))]


def linked_rows(store) -> list[tuple]:
    """Each page's cluster, its original and the page's repost row, by URL."""
    with store.connect(read_only=True) as con:
        return con.execute(
            """SELECT d.url, d.cluster_id, c.original_doc_id, r.source_doc_id, r.jaccard, r.containment
               FROM documents d JOIN clusters c USING (cluster_id) LEFT JOIN reposts r USING (doc_id) ORDER BY d.url"""
        ).fetchall()


def stored_pages(db: str, pages, settings: Settings | None = None) -> int:
    """Link and store these fetched pages as one batch of a new run, without Prefect; the run's id."""
    from dedup.batch import prepare_pages
    from dedup.linker import Linker
    from dedup.store import Store

    settings = settings or Settings()
    store = Store(db)
    store.migrate()
    store.check_signature_params(settings.fingerprint.params())
    run_id = store.start_run("test", None, {})
    Linker(store, settings).link_batch(run_id, prepare_pages(pages, settings))
    store.finish_run(run_id, {"run_id": run_id})
    return run_id
