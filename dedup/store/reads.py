"""What the linker and provenance read: the run's start-up scans, signatures,
host lines, cluster members, bodies and pairs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from dedup.models import (
    Article,
    Attribution,
    HostLineRow,
    Member,
    Similarity,
    StoredPage,
)
from dedup.store.connection import StoreError
from dedup.store.ids import fetch_by_ids, fetch_by_ids_concurrently, id_queries, rows_by_rowid


class Reads:
    """The reads of a run (each through `connect`: the session's connection when there is one)."""

    def url_numbers(self) -> np.ndarray:
        """Every stored URL's DuckDB hash, sorted (for a StoredNumbers: 8 bytes
        a page, 0.02 to 0.05 s for a million, where reading the URLs into a
        set of strings takes 0.3 to 0.7 s)."""
        return self._sorted_numbers("SELECT hash(url) AS n FROM documents")

    def stored_urls(self, urls: Iterable[str]) -> set[str]:
        """Those of `urls` the database holds (found through the url column's index)."""
        with self.connect() as con:
            return {url for (url,) in fetch_by_ids(con, "SELECT url FROM documents WHERE url IN ({ids})", "documents", urls)}

    @property
    def index_folder(self) -> Path:
        """Where the in-memory LSH index is saved between runs (next to the database file)."""
        return self.path.with_name(self.path.name + ".lsh")

    @property
    def snapshot_folder(self) -> Path:
        """Where what a run reads first is saved for the next run (next to the database file)."""
        return self.path.with_name(self.path.name + ".snapshot")

    @property
    def shingles_folder(self) -> Path:
        """Where the latest pages' shingle sets are saved between runs (next to the database file)."""
        return self.path.with_name(self.path.name + ".shingles")

    def stored_through(self, doc_id: int) -> tuple[int, str | None]:
        """How many stored pages have a doc_id up to `doc_id`, and the run
        that stored page `doc_id` (its number and start; None when no page
        has that doc_id): what the LSH tables and shingle sets a run saves are
        checked against, and what a run saves of what is stored
        (dedup/snapshot.py). A database put back from a copy and added to again
        gives its new pages the doc_ids of pages it lost, and its runs the
        numbers of runs it lost, but not their starts."""
        with self.connect() as con:
            ((count, run),) = con.execute(
                """SELECT (SELECT count(*) FROM documents WHERE doc_id <= $doc_id),
                          (SELECT r.run_id || ' ' || CAST(r.started_at AS VARCHAR)
                           FROM documents d JOIN runs r USING (run_id) WHERE d.doc_id = $doc_id)""",
                {"doc_id": doc_id},
            ).fetchall()
        return count, run

    def signature_chunks(
        self, dtype: np.dtype, num_perm: int, rows: int = 100_000, after_doc_id: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The stored signatures (those with a doc_id above `after_doc_id`), in
        bulk: (doc_ids, hash values matrix) per chunk of `rows` documents, read
        through Arrow without a Python object per row. Read them all before
        the next call on this store."""
        with self.connect() as con:
            # the reader streams: the caller reads every chunk before querying the store again
            query = con.sql(f"SELECT doc_id, minhash FROM documents WHERE doc_id > {int(after_doc_id)} ORDER BY doc_id")
            for batch in query.to_arrow_reader(batch_size=rows):
                yield batch.column(0).to_numpy(), self._signature_matrix(batch.column(1), dtype, num_perm)

    def shingle_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored page's (doc_id, n_shingles), as two arrays (through Arrow:
        two narrow columns, a few milliseconds for a million pages)."""
        with self.connect() as con:
            table = con.sql("SELECT doc_id, n_shingles FROM documents").to_arrow_table()
        return table.column(0).to_numpy(), table.column(1).to_numpy()

    def signatures_of(self, doc_ids: set[int], dtype: np.dtype, num_perm: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Some stored pages' (doc_ids, hash values matrix, numbers of shingles), through Arrow."""
        if not doc_ids:
            return np.empty(0, dtype=np.int64), np.empty((0, num_perm), dtype=dtype), np.empty(0, dtype=np.int64)
        with self.connect() as con:
            sql = "SELECT doc_id, minhash, n_shingles FROM documents WHERE doc_id IN ({ids})"
            table = pa.concat_tables(
                con.sql(query, params=params or None).to_arrow_table()
                for query, params in id_queries(con, sql, "documents", doc_ids)
            )
        minhash = table.column(1).combine_chunks() if table.num_rows else pa.array([], type=pa.binary())
        return table.column(0).to_numpy(), self._signature_matrix(minhash, dtype, num_perm), table.column(2).to_numpy()

    def _signature_matrix(self, blobs: pa.Array, dtype: np.dtype, num_perm: int) -> np.ndarray:
        """A column of signature BLOBs as one matrix, without a copy per row."""
        width = np.dtype(dtype).itemsize * num_perm
        if not len(blobs):
            return np.empty((0, num_perm), dtype=dtype)
        offsets = np.frombuffer(blobs.buffers()[1], dtype=np.int32)[blobs.offset : blobs.offset + len(blobs) + 1]
        if not np.all(np.diff(offsets) == width):
            raise StoreError(f"{self.path}: stored signatures are not {num_perm} values of {np.dtype(dtype).name}")
        data = np.frombuffer(blobs.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        return data.view(dtype).reshape(len(blobs), num_perm)

    def host_lines(self, keys: set[tuple[str, int]]) -> list[HostLineRow]:
        """Stored (host, line_key, text, story_doc_ids) rows for these keys."""
        return [row for row in self.host_lines_of({k for _, k in keys}) if (row[0], row[1]) in keys]

    def host_lines_of(self, line_keys: set[int]) -> list[HostLineRow]:
        """Stored (host, line_key, text, story_doc_ids) rows with these line keys, of any host."""
        if not line_keys:
            return []
        with self.connect() as con:
            # the rows found on the key column alone, then read whole
            rowids = con.execute("SELECT rowid FROM host_lines WHERE line_key = ANY(?::BIGINT[])", [sorted(line_keys)]).fetchall()
            rows = rows_by_rowid(con, "host_lines", "host, line_key, text, story_doc_ids", [r for (r,) in rowids])
        return [(h, k, t, list(d)) for h, k, t, d in rows]

    def stored_pages(self, doc_ids: set[int]) -> list[StoredPage]:
        """What cleaning these stored pages again needs of them."""
        if not doc_ids:
            return []
        with self.connect() as con:
            rows = fetch_by_ids(
                con,
                "SELECT doc_id, host, title, text, body, adds_lines FROM documents WHERE doc_id IN ({ids})",
                "documents",
                doc_ids,
            )
        return [StoredPage(d, h or "", t, x or "", b or "", a) for d, h, t, x, b, a in rows]

    def stored_articles(self, after_doc_id: int, limit: int) -> list[tuple[int, Article]]:
        """The next `limit` stored pages after `after_doc_id`, in doc_id order,
        as extraction gave them (for `reposts rebuild`)."""
        with self.connect() as con:
            rows = con.execute(
                """SELECT d.doc_id, d.url, d.final_url, d.host, d.fetched_at, d.text, d.title, d.author, d.site_name,
                          d.published_at, d.lang, d.canonical_url, d.og_url, d.source,
                          (SELECT any_value(a.source_url) FROM attributions a WHERE a.doc_id = d.doc_id AND a.kind = 'declared')
                   FROM documents d WHERE d.doc_id > ? ORDER BY d.doc_id LIMIT ?""",
                [after_doc_id, limit],
            ).fetchall()
        return [
            (
                doc_id,
                Article(
                    url=url, final_url=final_url or url, host=host or "", fetched_at=fetched_at, text=text or "", title=title,
                    author=author, site_name=site_name, published_at=published_at, lang=lang, canonical_url=canonical_url,
                    og_url=og_url, declared_source_url=declared, source=source or "",
                ),
            )  # fmt: skip
            for doc_id, url, final_url, host, fetched_at, text, title, author, site_name, published_at, lang, canonical_url,
            og_url, source, declared in rows
        ]

    def host_line_numbers(self) -> np.ndarray:
        """Every host_lines row's (host, line_key) as one number, sorted: see `StoredLineKeys`."""
        return self._sorted_numbers("SELECT xor(hash(host), line_key::UBIGINT) AS n FROM host_lines")

    def furniture_keys(self, min_stories: int) -> set[int]:
        """The line_key of every host line carried by `min_stories` pages of different stories or more."""
        with self.connect() as con:
            keys = con.execute(
                "SELECT DISTINCT line_key FROM host_lines WHERE len(story_doc_ids) >= ?", [min_stories]
            ).fetchnumpy()["line_key"]
        return set(np.asarray(keys, dtype=np.int64).tolist())

    def _sorted_numbers(self, sql: str) -> np.ndarray:
        """The column `n` of `sql`, sorted uint64: a StoredNumbers' stored keys."""
        with self.connect() as con:
            numbers = con.sql(sql).fetchnumpy()["n"]
        return np.sort(np.asarray(numbers, dtype=np.uint64))

    def text_hashes(self, texts: set[str]) -> dict[str, int]:
        """DuckDB's hash of each of these strings (hosts, URLs: as
        `host_line_numbers` and `url_numbers` make them)."""
        if not texts:
            return {}
        with self.connect() as con:
            rows = con.execute("SELECT t, hash(t) FROM unnest(?::VARCHAR[]) AS u(t)", [sorted(texts)]).fetchall()
        return dict(rows)

    def host_page_counts(self) -> dict[str | None, tuple[int, int]]:
        """host -> (stored pages, those that are copies by their markers or by
        what their host adds to them: `Page.adds_lines`)."""
        with self.connect() as con:
            rows = con.execute(
                "SELECT host, count(*), count(*) FILTER (marks_copy OR adds_lines) FROM documents GROUP BY host"
            ).fetchall()
        return {host: (pages, copies) for host, pages, copies in rows}

    def members(self, cluster_ids: set[int]) -> list[Member]:
        """The stored pages of these clusters, with what provenance needs (not
        their bodies: see `bodies`)."""
        if not cluster_ids:
            return []
        with self.connect() as con:
            rows = fetch_by_ids(
                con,
                "SELECT doc_id, url, host, n_shingles, marks_copy, published_at, run_id, cluster_id, site_name, adds_lines,"
                " hub FROM documents WHERE cluster_id IN ({ids})",
                "documents",
                cluster_ids,
            )
            ids = {r[0] for r in rows}
            marker_rows = fetch_by_ids(
                con, "SELECT doc_id, text, position, kind FROM markers WHERE doc_id IN ({ids}) AND marks_copy", "markers", ids
            )
            attribution_rows = fetch_by_ids(
                con,
                "SELECT doc_id, kind, strength, source_name, source_url FROM attributions WHERE doc_id IN ({ids})",
                "attributions",
                ids,
            )
        markers: dict[int, list[tuple[str, str]]] = {}
        for doc_id, text, _, kind in sorted(marker_rows, key=lambda r: (r[0], r[2])):
            markers.setdefault(doc_id, []).append((text, kind))
        attributions: dict[int, list[Attribution]] = {}
        for doc_id, kind, strength, name, url in attribution_rows:
            attributions.setdefault(doc_id, []).append(
                Attribution(kind=kind, strength=strength, source_name=name, source_url=url)
            )
        return [
            Member.with_markers(
                markers.get(doc_id, ()),
                doc_id=doc_id,
                url=url,
                host=host or "",
                n_shingles=n_shingles,
                marks_copy=marks_copy,
                published_at=published_at,
                first_seen_run=run_id,
                attributions=tuple(attributions.get(doc_id, ())),
                cluster_id=cluster_id,
                site_name=site_name,
                adds_lines=adds_lines,
                hub=hub,
            )
            for doc_id, url, host, n_shingles, marks_copy, published_at, run_id, cluster_id, site_name, adds_lines, hub in rows
        ]

    def bodies(self, doc_ids: set[int]) -> dict[int, str]:
        """Some stored pages' bodies, by doc_id."""
        return self._texts(doc_ids, "body")

    def texts(self, doc_ids: set[int]) -> dict[int, str]:
        """Some stored pages' text as extracted (markers included), by doc_id."""
        return self._texts(doc_ids, "text")

    def _texts(self, doc_ids: set[int], column: str) -> dict[int, str]:
        if not doc_ids:
            return {}
        with self.connect() as con:
            rows = fetch_by_ids_concurrently(
                con, f"SELECT doc_id, {column} FROM documents WHERE doc_id IN ({{ids}})", "documents", doc_ids
            )
        return {doc_id: text or "" for doc_id, text in rows}

    def cluster_ids_of(self, doc_ids: set[int]) -> dict[int, int]:
        if not doc_ids:
            return {}
        with self.connect() as con:
            rows = fetch_by_ids(con, "SELECT doc_id, cluster_id FROM documents WHERE doc_id IN ({ids})", "documents", doc_ids)
        return dict(rows)

    def clusters_before(self, cluster_ids: set[int]) -> dict[int, tuple[int | None, int]]:
        """cluster_id -> (original_doc_id, size) as stored."""
        if not cluster_ids:
            return {}
        with self.connect() as con:
            rows = fetch_by_ids(
                con, "SELECT cluster_id, original_doc_id, size FROM clusters WHERE cluster_id IN ({ids})", "clusters", cluster_ids
            )
        return {c: (o, s) for c, o, s in rows}

    def pairs_among(self, doc_ids: set[int]) -> dict[tuple[int, int], Similarity]:
        if not doc_ids:
            return {}
        with self.connect() as con:
            con.execute("CREATE OR REPLACE TEMP TABLE among AS SELECT unnest(?::BIGINT[]) AS doc_id", [sorted(doc_ids)])
            rows = con.execute(
                """SELECT doc_a, doc_b, jaccard, a_in_b, b_in_a FROM similar_pairs
                   WHERE doc_a IN (SELECT doc_id FROM among) AND doc_b IN (SELECT doc_id FROM among)"""
            ).fetchall()
        return {(a, b): Similarity(j, ab, ba) for a, b, j, ab, ba in rows}
