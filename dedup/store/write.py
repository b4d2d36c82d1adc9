"""The batch write: everything one batch adds or changes, in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime

import duckdb
import pyarrow as pa

from dedup.models import (
    Article,
    Attribution,
    CleanedAgain,
    Cluster,
    ClusterEvent,
    FetchedPage,
    HostLineRow,
    Marker,
    Page,
    Repost,
    Similarity,
)
from dedup.store.connection import utc_now
from dedup.store.ids import fetch_by_ids


@dataclass
class BatchWrite:
    """Everything one batch adds or changes, written in one transaction."""

    run_id: int
    pages: list[Page]
    fetches: list[FetchedPage]
    pairs: dict[tuple[int, int], Similarity]
    clusters: list[Cluster]
    reposts: list[Repost]
    events: list[ClusterEvent]
    moved: dict[int, int]  # stored doc_id -> its new cluster_id (after a merge)
    removed_clusters: list[int]  # clusters merged into others
    host_lines: list[HostLineRow] = field(default_factory=list)  # new
    host_lines_grown: list[HostLineRow] = field(default_factory=list)  # stored, with more stories
    cleaned_again: list[CleanedAgain] = field(default_factory=list)  # stored pages cleaned of later-learned lines
    pairs_again: dict[tuple[int, int], Similarity] = field(default_factory=dict)  # stored pairs measured again
    hubs: list[int] = field(default_factory=list)  # stored pages found to hold several stories
    # stored pages extracted again from their archived HTML (`ingest --reprocess`):
    # their extraction is replaced; `reposts rebuild` then cleans and links them again
    extracted_again: list[Article] = field(default_factory=list)


# The columns each table is written with, in the order of the rows made below
# (one spec a table: the batch's new rows and a re-cleaned page's use the same).
COLUMNS = {
    "documents": (
        "doc_id", "url", "final_url", "canonical_url", "og_url", "host", "site_name", "title", "author",
        "published_at", "fetched_at", "lang", "text", "body", "n_shingles", "minhash", "marks_copy", "adds_lines",
        "hub", "cluster_id", "run_id", "source",
    ),
    "fetches": ("run_id", "url", "status", "error", "fetched_at", "bytes", "elapsed_ms", "source"),
    "similar_pairs": ("doc_a", "doc_b", "jaccard", "a_in_b", "b_in_a", "run_id"),
    "clusters": (
        "cluster_id", "original_doc_id", "attributed_source", "size", "confidence", "reason", "first_published_at",
        "created_run", "updated_run",
    ),
    "reposts": ("doc_id", "source_doc_id", "cluster_id", "jaccard", "containment", "evidence"),
    "cluster_events": ("run_id", "cluster_id", "kind", "detail", "other_cluster_id", "happened_at"),
    "markers": ("doc_id", "kind", "rule", "text", "position", "marks_copy"),
    "attributions": ("doc_id", "kind", "source_name", "source_url", "strength"),
    "host_lines": ("host", "line_key", "text", "story_doc_ids"),
}  # fmt: skip


def _document_row(page: Page, run_id: int) -> list:
    article, cleaned, signature = page.article, page.cleaned, page.signature
    return [
        page.doc_id, article.url, article.final_url, article.canonical_url, article.og_url, article.host,
        article.site_name, article.title, article.author, article.published_at, article.fetched_at, article.lang,
        article.text, cleaned.body, signature.n_shingles, signature.hashvalues, cleaned.marks_copy, page.adds_lines,
        page.hub, page.cluster_id, run_id, article.source,
    ]  # fmt: skip


def _fetch_row(fetch: FetchedPage, run_id: int) -> list:
    return [run_id, fetch.url, fetch.status, fetch.error, fetch.fetched_at, fetch.n_bytes, fetch.elapsed_ms, fetch.source]


def _pair_rows(pairs: dict[tuple[int, int], Similarity], run_id: int) -> list[list]:
    return [[a, b, s.jaccard, s.a_in_b, s.b_in_a, run_id] for (a, b), s in pairs.items()]


def _cluster_row(cluster: Cluster, created_run: int, run_id: int) -> list:
    return [
        cluster.cluster_id, cluster.original_doc_id, cluster.attributed_source, len(cluster.members),
        cluster.confidence, cluster.reason, cluster.first_published_at, created_run, run_id,
    ]  # fmt: skip


def _repost_row(repost: Repost) -> list:
    return [repost.doc_id, repost.source_doc_id, repost.cluster_id, repost.jaccard, repost.containment, repost.evidence]


def _event_row(event: ClusterEvent, run_id: int, happened_at: datetime) -> list:
    return [run_id, event.cluster_id, event.kind, event.detail, event.other_cluster_id, happened_at]


def _marker_row(doc_id: int, marker: Marker) -> list:
    return [doc_id, marker.kind, marker.rule, marker.text, marker.position, marker.marks_copy]


def _attribution_row(doc_id: int, attribution: Attribution) -> list:
    return [doc_id, attribution.kind, attribution.source_name, attribution.source_url, attribution.strength]


class BatchWriting:
    """Writing a batch."""

    def write_batch(self, batch: BatchWrite) -> None:
        now = utc_now()
        run_id = batch.run_id
        with self.connect() as con:
            con.execute("BEGIN")
            try:
                pages = batch.pages
                _bulk_insert(con, "documents", [_document_row(page, run_id) for page in pages])
                _bulk_insert(con, "markers", [_marker_row(p.doc_id, m) for p in pages for m in p.cleaned.markers])
                _bulk_insert(con, "attributions", [_attribution_row(p.doc_id, a) for p in pages for a in p.cleaned.attributions])
                _bulk_insert(con, "fetches", [_fetch_row(f, run_id) for f in batch.fetches])
                # pairs are new: each involves a page of this batch
                _bulk_insert(con, "similar_pairs", _pair_rows(batch.pairs, run_id))
                if batch.hubs:
                    con.execute("UPDATE documents SET hub = true WHERE doc_id = ANY(?::BIGINT[])", [batch.hubs])
                if batch.moved:
                    con.executemany(
                        "UPDATE documents SET cluster_id = ? WHERE doc_id = ?",
                        [[c, d] for d, c in batch.moved.items()],
                    )
                touched = [c.cluster_id for c in batch.clusters] + batch.removed_clusters
                if touched:
                    con.execute("CREATE OR REPLACE TEMP TABLE touched AS SELECT unnest(?::BIGINT[]) AS cluster_id", [touched])
                    created = dict(
                        fetch_by_ids(
                            con, "SELECT cluster_id, created_run FROM clusters WHERE cluster_id IN ({ids})", "clusters", touched
                        )
                    )
                    con.execute("DELETE FROM reposts WHERE cluster_id IN (SELECT cluster_id FROM touched)")
                    con.execute("DELETE FROM clusters WHERE cluster_id IN (SELECT cluster_id FROM touched)")
                    _bulk_insert(
                        con, "clusters", [_cluster_row(c, created.get(c.cluster_id, run_id), run_id) for c in batch.clusters]
                    )
                _bulk_insert(con, "reposts", [_repost_row(r) for r in batch.reposts])
                _bulk_insert(con, "cluster_events", [_event_row(e, run_id, now) for e in batch.events])
                _write_cleaned_again(con, batch)
                _write_extracted_again(con, batch.extracted_again)
                _bulk_insert(con, "host_lines", [list(row) for row in batch.host_lines])
                _bulk_insert(con, "host_lines", [list(row) for row in batch.host_lines_grown], replacing=("host", "line_key"))
                con.execute("COMMIT")
            except BaseException:  # an interrupt (Ctrl-C, SIGTERM) too
                con.execute("ROLLBACK")
                raise


# what extraction gives a page: the documents columns that are Article fields (the url is the key)
_EXTRACTED = tuple(c for c in COLUMNS["documents"] if c != "url" and c in {f.name for f in fields(Article)})


def _write_extracted_again(con: duckdb.DuckDBPyConnection, articles: list[Article]) -> None:
    """Stored pages' extraction replaced by a new one (and the source they declare)."""
    if not articles:
        return
    assignments = ", ".join(f"{column} = ?" for column in _EXTRACTED)
    con.executemany(
        f"UPDATE documents SET {assignments} WHERE url = ?",
        [[getattr(a, column) for column in _EXTRACTED] + [a.url] for a in articles],
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE extracted AS SELECT doc_id, url FROM documents WHERE url IN (SELECT unnest(?::VARCHAR[]))",
        [[a.url for a in articles]],
    )
    con.execute("DELETE FROM attributions WHERE kind = 'declared' AND doc_id IN (SELECT doc_id FROM extracted)")
    declared = [[a.url, a.declared_source_url] for a in articles if a.declared_source_url]
    if declared:
        con.executemany(
            "INSERT INTO attributions SELECT doc_id, 'declared', NULL, ?, 'strong' FROM extracted WHERE url = ?",
            [[source, url] for url, source in declared],
        )


def _write_cleaned_again(con: duckdb.DuckDBPyConnection, batch: BatchWrite) -> None:
    """Stored pages' new bodies, signatures and markers, and their pairs measured again."""
    if not batch.cleaned_again:
        return
    again = batch.cleaned_again
    _bulk_rows = pa.table(  # noqa: F841 - read by name
        {
            "doc_id": [c.doc_id for c in again],
            "body": [c.body for c in again],
            "n_shingles": [c.signature.n_shingles for c in again],
            "minhash": pa.array([c.signature.hashvalues for c in again], type=pa.binary()),
            "adds_lines": [c.adds_lines for c in again],
        }
    )
    con.execute(
        """UPDATE documents SET body = r.body, n_shingles = r.n_shingles, minhash = r.minhash, adds_lines = r.adds_lines
           FROM _bulk_rows AS r WHERE documents.doc_id = r.doc_id"""
    )
    _bulk_insert(con, "markers", [_marker_row(c.doc_id, m) for c in again for m in c.markers])
    _bulk_insert(con, "similar_pairs", _pair_rows(batch.pairs_again, batch.run_id), replacing=("doc_a", "doc_b"))


def _bulk_insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[list], replacing: tuple[str, ...] = ()) -> None:
    """Insert many rows (in the order of `COLUMNS[table]`) in one statement
    through an Arrow table (executemany is row by row and dominated the write
    time). With `replacing` (the table's key columns), stored rows with the
    same key are deleted first: a tenth of the time INSERT OR REPLACE takes on
    a table of millions. DuckDB finds the Arrow table by its variable's name,
    `_bulk_rows` (a replacement scan; no table of ours has that name): see
    docs/internals.md."""
    if not rows:
        return
    columns = COLUMNS[table]
    _bulk_rows = pa.table({name: [row[i] for row in rows] for i, name in enumerate(columns)})  # noqa: F841 - read by name
    if replacing:
        key = ", ".join(replacing)
        con.execute(f"DELETE FROM {table} WHERE ({key}) IN (SELECT ({key}) FROM _bulk_rows)")
    con.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM _bulk_rows")
