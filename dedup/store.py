"""Store stage: the DuckDB database, its migrations, and batched writes.

A connection is opened for each read or write and closed right after, except
while a run links its batches (`Store.holding`): then one connection serves
batch after batch (DuckDB keeps its caches and skips a checkpoint per batch),
and is closed whenever a reader is waiting for the file and whenever the run
waits for its workers after holding it a few seconds, so a person can still
query between batches. Each batch is written in one transaction: a crash
leaves the database as it was before that batch.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from dedup.models import (
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
    StoredPage,
)
from dedup.provenance import Member


class StoreError(Exception):
    """A database that cannot be used; the message says what to do."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of the packaged migrations, in order."""
    found = []
    for entry in resources.files("dedup.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


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


# run locks this process holds (see Store.exclusive_run)
_RUN_LOCKS_HELD: set[Path] = set()


# how often a connection waiting for another process's lock tries again
LOCK_POLL_S = 0.02

# DuckDB's memory for a writing connection (its cache of table data above
# all: held across a run's batches, it would otherwise keep up to 80% of the
# machine's memory; beyond this it evicts, and spills a large query to disk)
WRITER_MEMORY_LIMIT = "1GB"

# How much a writing connection's log (WAL) grows before DuckDB folds it into
# the file. A checkpoint rewrites the last row group of each table appended
# to (for a table with an index, `documents` among them, DuckDB appends into
# it): up to 122,880 rows of page text recompressed, whatever was added.
# DuckDB's default (16 MB) checkpointed every ten batches, a third of the
# time of adding 10,000 pages to a million. The log is folded in anyway when
# the connection closes (at the end of a run, and when a reader is let in).
WRITER_CHECKPOINT_THRESHOLD = "256MB"

# Rows per row group of the tables a run appends to (DuckDB's default is
# 122,880): the most rows of a table a checkpoint rewrites (see above), at
# the end of every run and whenever a run lets readers in. Adding 10,000
# pages to a database of 100,000 closed in 0.4 s instead of 1.6 s. The size
# is an option of the writing connection, not of the file: row groups
# written before keep theirs, new rows start a row group of their own once
# the last one holds this many.
ROW_GROUP_ROWS = 16_384

# A run holding its connection across batches closes it when it next waits
# for its workers once it has held it this long (for readers that cannot ask,
# such as DuckDB's own command line: they get in if they try again). Each
# close folds the log into the file and the next batch opens it cold: every
# 5 s, that was 0.4 to 0.6 s of a 30-second ingest (readers that leave a
# note get in at the end of the batch being linked, whatever this is).
HOLD_S = 15.0


class StoredNumbers:
    """Which keys of a table have a stored row, held by a run (the only
    writer: the run lock) as one 64-bit number a key (DuckDB's hash of it, or
    a mix of hashes): the stored ones sorted, read in one query at the start
    (a million in a few hundredths of a second), and those the run stores
    since. Two keys may share a number: that costs a lookup that finds
    nothing, never a stored row missed."""

    def __init__(self, stored: np.ndarray) -> None:
        """`stored`: the numbers of the stored keys, sorted (uint64)."""
        self._stored = stored
        self._added: set[int] = set()
        self._added_in_order: list[np.ndarray] = []  # as added: two keys of one number count twice

    def may_hold(self, numbers: np.ndarray) -> np.ndarray:
        """For each number (uint64), whether a stored key may have it."""
        found = np.zeros(len(numbers), dtype=bool)
        if len(self._stored):
            found = self._stored[np.minimum(np.searchsorted(self._stored, numbers), len(self._stored) - 1)] == numbers
        if self._added:
            found |= np.array([n in self._added for n in numbers.tolist()], dtype=bool)
        return found

    def add(self, numbers: np.ndarray) -> None:
        """Numbers of keys the run has stored (call once their batch is committed)."""
        self._added.update(numbers.tolist())
        self._added_in_order.append(numbers)

    def all(self) -> np.ndarray:
        """The numbers of every stored key, sorted: one per key (DuckDB's hash
        gives two of the million URLs of the synthetic corpus one number)."""
        added = np.sort(np.concatenate([np.empty(0, dtype=np.uint64), *self._added_in_order]))
        return np.sort(np.concatenate([self._stored, added]), kind="stable")  # two sorted runs: a merge


class Store:
    def __init__(self, path: str | Path, lock_wait_s: float = 30.0) -> None:
        self.path = Path(path)
        self.lock_wait_s = lock_wait_s
        self._session: duckdb.DuckDBPyConnection | None = None
        self._holding = False
        self._held: duckdb.DuckDBPyConnection | None = None
        self._held_since = 0.0

    @property
    def _waiting_folder(self) -> Path:
        """Where a process waiting for the file's lock leaves a note (one file per process)."""
        return self.path.with_name(self.path.name + ".waiting")

    @contextmanager
    def session(self) -> Iterator[None]:
        """Share one connection among the calls in this block (a batch's reads and
        its write): opening the file costs about 10 ms and a batch makes a dozen
        calls. The file stays locked for the block, so keep it short: between
        blocks, readers get in. Within `holding`, the connection outlives the
        block unless a reader is waiting."""
        if self._session is not None:
            yield
            return
        if not self._holding:
            with self.connect() as con:
                self._session = con
                try:
                    yield
                finally:
                    self._session = None
            return
        if self._held is None:
            self._held, self._held_since = self._open(read_only=False), time.monotonic()
        self._session = self._held
        try:
            yield
        finally:
            self._session = None
            if self._reader_waiting():
                self.release()

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Keep the connection of one `session` open for the next (a run's
        batches), until a reader is waiting or `let_readers_in` finds it held
        for HOLD_S; closed at the end of the block."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            self.release()

    def let_readers_in(self) -> None:
        """Called while a run waits (for its workers): close the held connection
        if a reader is waiting or it has been held HOLD_S."""
        if self._held is not None and (self._reader_waiting() or time.monotonic() - self._held_since >= HOLD_S):
            self.release()

    def release(self) -> None:
        """Close the connection held across sessions, if any."""
        if self._held is not None:
            held, self._held = self._held, None
            held.close()

    def _reader_waiting(self) -> bool:
        try:
            notes = list(os.scandir(self._waiting_folder))
        except OSError:
            return False
        for note in notes:
            pid = note.name.split("-")[0]
            if pid.isdigit() and _alive(int(pid)):
                return True
            Path(note.path).unlink(missing_ok=True)  # left by a process that died
        return False

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the database, waiting while another process holds its lock (or
        hand out the open connection of the current `session`, or the one
        held across sessions)."""
        if self._session is not None or self._held is not None:
            yield self._session or self._held
            return
        con = self._open(read_only)
        try:
            yield con
        finally:
            con.close()

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if read_only and not self.path.exists():
            raise StoreError(f"no database at {self.path} (run `reposts crawl`, `ingest` or `demo` first, or pass --db)")
        deadline = time.monotonic() + self.lock_wait_s
        # a run's connection caches what it reads: bound it (readers keep DuckDB's default)
        config = {} if read_only else {"memory_limit": WRITER_MEMORY_LIMIT, "checkpoint_threshold": WRITER_CHECKPOINT_THRESHOLD}
        note: Path | None = None
        try:
            while True:
                try:
                    if read_only:
                        return _without_progress_bar(duckdb.connect(str(self.path), read_only=True, config=config))
                    return _without_progress_bar(_open_writer(self.path, config))
                except duckdb.IOException as exc:
                    if "lock" not in str(exc).lower():
                        raise StoreError(f"cannot open {self.path}: {' '.join(str(exc).split())}") from exc
                    if time.monotonic() >= deadline:
                        holder = _lock_holder(str(exc))
                        raise StoreError(
                            f"{self.path} is in use by another process{holder}; waited {self.lock_wait_s:.0f}s. "
                            "Try again when that run has finished."
                        ) from exc
                    if note is None:
                        note = self._leave_waiting_note()
                    time.sleep(LOCK_POLL_S)
                except duckdb.Error as exc:
                    raise StoreError(f"cannot open {self.path}: {' '.join(str(exc).split())}") from exc
        finally:
            if note is not None:
                note.unlink(missing_ok=True)

    def _leave_waiting_note(self) -> Path | None:
        """Tell a run holding the file that this process waits for it."""
        try:
            self._waiting_folder.mkdir(exist_ok=True)
            note = self._waiting_folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
            note.touch()
            return note
        except OSError:  # a folder we may not write to: wait without the note
            return None

    @contextmanager
    def exclusive_run(self, description: str) -> Iterator[None]:
        """Hold the database's run lock for a whole crawl or ingest.

        DuckDB's own lock is held only while a batch is written, so that people
        can query between batches; this lock (a POSIX lock on `<db>.run-lock`:
        owned by the process, so forked workers do not inherit it, and freed by
        the system even when the holder is killed) keeps a second run from
        writing at the same time. The second run stops at once with a message
        that names the first. Re-entrant within a process: the command line
        takes it before starting the flow, and the flow takes it again.
        """
        lock_path = self.path.resolve().with_name(self.path.name + ".run-lock")
        if lock_path in _RUN_LOCKS_HELD:
            yield
            return
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a+", encoding="utf-8") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "another run"
                raise StoreError(f"{self.path} is being written by {holder}; try again when it has finished") from None
            _RUN_LOCKS_HELD.add(lock_path)
            handle.seek(0)
            handle.truncate()
            handle.write(f"{description} (PID {os.getpid()}, since {_now():%Y-%m-%d %H:%M:%S} UTC)")
            handle.flush()
            try:
                yield
            finally:
                _RUN_LOCKS_HELD.discard(lock_path)
                handle.seek(0)
                handle.truncate()
                handle.flush()
                fcntl.lockf(handle, fcntl.LOCK_UN)

    # -- schema ------------------------------------------------------------

    def migrate(self) -> None:
        with self.connect() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)"
            )
            applied = {v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}
            for version, name, sql in migrations():
                if version in applied:
                    continue
                con.execute("BEGIN")
                try:
                    con.execute(sql)
                    con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, _now()])
                    con.execute("COMMIT")
                except Exception:
                    con.execute("ROLLBACK")
                    raise

    def check_signature_params(self, params: dict[str, str]) -> None:
        """Signatures are only comparable with the settings they were made with."""
        with self.connect() as con:
            stored = dict(con.execute("SELECT key, value FROM meta").fetchall())
            if not any(key in stored for key in params):
                con.executemany("INSERT INTO meta VALUES (?, ?)", list(params.items()))
                return
        differing = {k: (stored.get(k), v) for k, v in params.items() if stored.get(k) != v}
        if differing:
            detail = ", ".join(f"{k}: stored {a}, configured {b}" for k, (a, b) in sorted(differing.items()))
            raise StoreError(
                f"{self.path} was fingerprinted with other settings ({detail}); use a new --db or the stored settings"
            )

    def row_counts(self) -> tuple[int, int]:
        """How many rows documents and host_lines hold."""
        with self.connect() as con:
            ((documents, host_lines),) = con.execute(
                "SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM host_lines)"
            ).fetchall()
        return documents, host_lines

    def database_id(self) -> str:
        """This database's own id, made on first use (it names its LSH index in Redis)."""
        with self.connect() as con:
            # fetched to the end (fetchall): a result left open keeps the
            # connection from relational queries in the same session
            rows = con.execute("SELECT value FROM meta WHERE key = 'database.id'").fetchall()
            if rows:
                return rows[0][0]
            value = uuid.uuid4().hex
            con.execute("INSERT INTO meta VALUES ('database.id', ?)", [value])
            return value

    # -- runs --------------------------------------------------------------

    def start_run(self, kind: str, flow_run_id: str | None, params: dict) -> int:
        with self.connect() as con:
            (run_id,) = con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs").fetchone()
            con.execute(
                "INSERT INTO runs (run_id, flow_run_id, kind, started_at, params) VALUES (?, ?, ?, ?, ?)",
                [run_id, flow_run_id, kind, _now(), json.dumps(params, default=str)],
            )
        return run_id

    def finish_run(self, run_id: int, stats: dict) -> None:
        with self.connect() as con:
            con.execute(
                "UPDATE runs SET finished_at = ?, stats = ? WHERE run_id = ?",
                [_now(), json.dumps(stats, default=str), run_id],
            )

    def run_cluster_counts(self, run_id: int) -> dict[str, int]:
        """What a run did to the clusters, each cluster counted once, as they
        stand at its end: `new_clusters` (created by the run), `grown_clusters`
        (stored before it, given pages or merged clusters by it),
        `originals_found` (of those two, the copied ones with an original).
        Summing each batch's counts instead would count a cluster in every
        batch that touched it (a first ingest of the dev corpus: 283 "grew")."""
        with self.connect() as con:
            ((new, grown, with_original),) = con.execute(
                """
                WITH touched AS (
                    SELECT cluster_id, bool_or(kind = 'created') AS created FROM cluster_events
                    WHERE run_id = ? AND kind IN ('created', 'grew', 'merged') GROUP BY cluster_id
                )
                SELECT count(*) FILTER (WHERE t.created),
                       count(*) FILTER (WHERE NOT t.created),
                       count(*) FILTER (WHERE c.original_doc_id IS NOT NULL AND c.size > 1)
                FROM touched t JOIN clusters c USING (cluster_id)
                """,
                [run_id],
            ).fetchall()
        return {"new_clusters": new, "grown_clusters": grown, "originals_found": with_original}

    # -- reads -------------------------------------------------------------

    def known_urls(self) -> set[str]:
        """Every stored URL (a WARC reader skips them: see `stored_urls` for a few)."""
        with self.connect() as con:
            return set(con.sql("SELECT url FROM documents").to_arrow_table().column(0).to_pylist())

    def url_numbers(self) -> np.ndarray:
        """Every stored URL's DuckDB hash, sorted (for a StoredNumbers: 8 bytes
        a page, 0.02 to 0.05 s for a million, where reading the URLs into a
        set of strings takes 0.3 to 0.7 s)."""
        return self._sorted_numbers("SELECT hash(url) AS n FROM documents")

    def stored_urls(self, urls: Iterable[str]) -> set[str]:
        """Those of `urls` the database holds (found through the url column's index)."""
        with self.connect() as con:
            return {url for (url,) in _fetch_by_ids(con, "SELECT url FROM documents WHERE url IN ({ids})", "documents", urls)}

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
                for query, params in _id_queries(con, sql, "documents", doc_ids)
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
            rows = _rows_by_rowid(con, "host_lines", "host, line_key, text, story_doc_ids", [r for (r,) in rowids])
        return [(h, k, t, list(d)) for h, k, t, d in rows]

    def stored_pages(self, doc_ids: set[int]) -> list[StoredPage]:
        """What cleaning these stored pages again needs of them."""
        if not doc_ids:
            return []
        with self.connect() as con:
            rows = _fetch_by_ids(
                con,
                "SELECT doc_id, host, title, text, body, adds_lines FROM documents WHERE doc_id IN ({ids})",
                "documents",
                doc_ids,
            )
        return [StoredPage(d, h or "", t, x or "", b or "", a) for d, h, t, x, b, a in rows]

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
            rows = _fetch_by_ids(
                con,
                "SELECT doc_id, url, host, n_shingles, marks_copy, published_at, run_id, cluster_id, site_name, adds_lines,"
                " hub FROM documents WHERE cluster_id IN ({ids})",
                "documents",
                cluster_ids,
            )
            ids = {r[0] for r in rows}
            marker_rows = _fetch_by_ids(
                con, "SELECT doc_id, text, position, kind FROM markers WHERE doc_id IN ({ids}) AND marks_copy", "markers", ids
            )
            attribution_rows = _fetch_by_ids(
                con,
                "SELECT doc_id, kind, strength, source_name, source_url FROM attributions WHERE doc_id IN ({ids})",
                "attributions",
                ids,
            )
        markers: dict[int, list[str]] = {}
        credits: dict[int, list[str]] = {}
        for doc_id, text, _, kind in sorted(marker_rows, key=lambda r: (r[0], r[2])):
            markers.setdefault(doc_id, []).append(text)
            if kind == "credit":
                credits.setdefault(doc_id, []).append(text)
        attributions: dict[int, list[Attribution]] = {}
        for doc_id, kind, strength, name, url in attribution_rows:
            attributions.setdefault(doc_id, []).append(
                Attribution(kind=kind, strength=strength, source_name=name, source_url=url)
            )
        return [
            Member(
                doc_id=doc_id,
                url=url,
                host=host or "",
                n_shingles=n_shingles,
                marks_copy=marks_copy,
                published_at=published_at,
                first_seen_run=run_id,
                copy_marker_texts=tuple(markers.get(doc_id, ())),
                credit_texts=tuple(credits.get(doc_id, ())),
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
            rows = _fetch_by_ids_concurrently(
                con, f"SELECT doc_id, {column} FROM documents WHERE doc_id IN ({{ids}})", "documents", doc_ids
            )
        return {doc_id: text or "" for doc_id, text in rows}

    def cluster_ids_of(self, doc_ids: set[int]) -> dict[int, int]:
        if not doc_ids:
            return {}
        with self.connect() as con:
            rows = _fetch_by_ids(con, "SELECT doc_id, cluster_id FROM documents WHERE doc_id IN ({ids})", "documents", doc_ids)
        return dict(rows)

    def clusters_before(self, cluster_ids: set[int]) -> dict[int, tuple[int | None, int]]:
        """cluster_id -> (original_doc_id, size) as stored."""
        if not cluster_ids:
            return {}
        with self.connect() as con:
            rows = _fetch_by_ids(
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

    # -- the batch write -----------------------------------------------------

    def write_batch(self, batch: BatchWrite) -> None:
        now = _now()
        with self.connect() as con:
            con.execute("BEGIN")
            try:
                self._insert_pages(con, batch)
                _bulk_insert(
                    con,
                    "fetches",
                    ("run_id", "url", "status", "error", "fetched_at", "bytes", "elapsed_ms", "source"),
                    [
                        [batch.run_id, f.url, f.status, f.error, f.fetched_at, f.n_bytes, f.elapsed_ms, f.source]
                        for f in batch.fetches
                    ],
                )
                # pairs are new: each involves a page of this batch
                _bulk_insert(
                    con,
                    "similar_pairs",
                    ("doc_a", "doc_b", "jaccard", "a_in_b", "b_in_a", "run_id"),
                    [[a, b, s.jaccard, s.a_in_b, s.b_in_a, batch.run_id] for (a, b), s in batch.pairs.items()],
                )
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
                        _fetch_by_ids(
                            con, "SELECT cluster_id, created_run FROM clusters WHERE cluster_id IN ({ids})", "clusters", touched
                        )
                    )
                    con.execute("DELETE FROM reposts WHERE cluster_id IN (SELECT cluster_id FROM touched)")
                    con.execute("DELETE FROM clusters WHERE cluster_id IN (SELECT cluster_id FROM touched)")
                    _bulk_insert(
                        con,
                        "clusters",
                        (
                            "cluster_id",
                            "original_doc_id",
                            "attributed_source",
                            "size",
                            "confidence",
                            "reason",
                            "first_published_at",
                            "created_run",
                            "updated_run",
                        ),  # fmt: skip
                        [
                            [
                                c.cluster_id,
                                c.original_doc_id,
                                c.attributed_source,
                                len(c.members),
                                c.confidence,
                                c.reason,
                                c.first_published_at,
                                created.get(c.cluster_id, batch.run_id),
                                batch.run_id,
                            ]
                            for c in batch.clusters
                        ],
                    )
                _bulk_insert(
                    con,
                    "reposts",
                    ("doc_id", "source_doc_id", "cluster_id", "jaccard", "containment", "evidence"),
                    [[r.doc_id, r.source_doc_id, r.cluster_id, r.jaccard, r.containment, r.evidence] for r in batch.reposts],
                )
                _bulk_insert(
                    con,
                    "cluster_events",
                    ("run_id", "cluster_id", "kind", "detail", "other_cluster_id", "happened_at"),
                    [[batch.run_id, e.cluster_id, e.kind, e.detail, e.other_cluster_id, now] for e in batch.events],
                )
                self._write_cleaned_again(con, batch)
                columns = ("host", "line_key", "text", "story_doc_ids")
                _bulk_insert(con, "host_lines", columns, [list(row) for row in batch.host_lines])
                _bulk_insert(
                    con, "host_lines", columns, [list(row) for row in batch.host_lines_grown], replacing=("host", "line_key")
                )
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise

    @staticmethod
    def _write_cleaned_again(con: duckdb.DuckDBPyConnection, batch: BatchWrite) -> None:
        """Stored pages' new bodies, signatures and markers, and their pairs measured again."""
        if not batch.cleaned_again:
            return
        _bulk_rows = pa.table(  # noqa: F841 - read by name
            {
                "doc_id": [c.doc_id for c in batch.cleaned_again],
                "body": [c.body for c in batch.cleaned_again],
                "n_shingles": [c.signature.n_shingles for c in batch.cleaned_again],
                "minhash": pa.array([c.signature.hashvalues for c in batch.cleaned_again], type=pa.binary()),
                "adds_lines": [c.adds_lines for c in batch.cleaned_again],
            }
        )
        con.execute(
            """UPDATE documents SET body = r.body, n_shingles = r.n_shingles, minhash = r.minhash, adds_lines = r.adds_lines
               FROM _bulk_rows AS r WHERE documents.doc_id = r.doc_id"""
        )
        _bulk_insert(
            con,
            "markers",
            ("doc_id", "kind", "rule", "text", "position", "marks_copy"),
            [_marker_row(c.doc_id, m) for c in batch.cleaned_again for m in c.markers],
        )
        _bulk_insert(
            con,
            "similar_pairs",
            ("doc_a", "doc_b", "jaccard", "a_in_b", "b_in_a", "run_id"),
            [[a, b, s.jaccard, s.a_in_b, s.b_in_a, batch.run_id] for (a, b), s in batch.pairs_again.items()],
            replacing=("doc_a", "doc_b"),
        )

    @staticmethod
    def _insert_pages(con: duckdb.DuckDBPyConnection, batch: BatchWrite) -> None:
        if not batch.pages:
            return
        rows, markers, attributions = [], [], []
        for page in batch.pages:
            article = page.article
            rows.append(
                [
                    page.doc_id,
                    article.url,
                    article.final_url,
                    article.canonical_url,
                    article.og_url,
                    article.host,
                    article.site_name,
                    article.title,
                    article.author,
                    article.published_at,
                    article.fetched_at,
                    article.lang,
                    article.text,
                    page.cleaned.body,
                    page.signature.n_shingles,
                    page.signature.hashvalues,
                    page.cleaned.marks_copy,
                    page.adds_lines,
                    page.hub,
                    page.cluster_id,
                    batch.run_id,
                    article.source,
                ]
            )
            markers.extend(_marker_row(page.doc_id, m) for m in page.cleaned.markers)
            attributions.extend([page.doc_id, a.kind, a.source_name, a.source_url, a.strength] for a in page.cleaned.attributions)
        _bulk_insert(con, "documents", DOCUMENT_COLUMNS, rows)
        _bulk_insert(con, "markers", ("doc_id", "kind", "rule", "text", "position", "marks_copy"), markers)
        _bulk_insert(con, "attributions", ("doc_id", "kind", "source_name", "source_url", "strength"), attributions)


def _bulk_insert(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: tuple[str, ...],
    rows: list[list],
    replacing: tuple[str, ...] = (),
) -> None:
    """Insert many rows in one statement through an Arrow table (executemany
    is row by row and dominated the write time). With `replacing` (the
    table's key columns), stored rows with the same key are deleted first:
    a tenth of the time INSERT OR REPLACE takes on a table of millions.

    DuckDB finds the Arrow table by its variable's name, `_bulk_rows` (a
    replacement scan; no table of ours has that name): 1.9 ms a statement
    of 200 rows against 2.7 ms registering and unregistering it, and a batch
    makes nine or ten."""
    if not rows:
        return
    _bulk_rows = pa.table({name: [row[i] for row in rows] for i, name in enumerate(columns)})  # noqa: F841 - read by name
    if replacing:
        key = ", ".join(replacing)
        con.execute(f"DELETE FROM {table} WHERE ({key}) IN (SELECT ({key}) FROM _bulk_rows)")
    con.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM _bulk_rows")


DOCUMENT_COLUMNS = (
    "doc_id", "url", "final_url", "canonical_url", "og_url", "host", "site_name", "title", "author", "published_at",
    "fetched_at", "lang", "text", "body", "n_shingles", "minhash", "marks_copy", "adds_lines", "hub", "cluster_id",
    "run_id", "source",
)  # fmt: skip


def _marker_row(doc_id: int, marker: Marker) -> list:
    return [doc_id, marker.kind, marker.rule, marker.text, marker.position, marker.marks_copy]


# DuckDB finds rows through an ART index (a primary key, UNIQUE, or CREATE
# INDEX) for `column IN (1, 2, ...)` written out as literals or as one
# parameter each, when fewer rows match than its index_scan_max_count (2048);
# a list parameter or a join with a list scans the whole table instead.
# Planning costs about 20 microseconds a value, so a lookup of many keys that
# are a large share of the table (a young database, a run of many copies of
# the same stories) goes as a list (`IN (SELECT unnest(?))`): in the ingest
# benchmark's tables of 3,000 to 4,500 rows, 870 ids took 4 ms a query
# instead of 15 to 22. At a million pages a batch's keys are a small share,
# and a scan would read every row of the wide columns (page text): index
# lookups.
INDEX_LOOKUP_IDS = 2048
LIST_LOOKUP_MIN_IDS = 100
LIST_LOOKUP_MIN_SHARE = 0.05
# Index lookups of wide rows (bodies) go over this many connections at once:
# a row of a large database that is not in memory is one disk read, and one
# connection reads them one after another. Reading the bodies that adding
# 10,000 pages to a million needs (770 pages, the file not in the page
# cache) took 0.8 to 1.2 s over one connection, 0.30 to 0.33 s over four;
# with the file cached, about the same either way (0.28 s in the run). For
# narrow rows (members, cluster ids) four connections took longer.
CONCURRENT_LOOKUPS = 4
CONCURRENT_LOOKUP_MIN_IDS = 16


def _id_queries(
    con: duckdb.DuckDBPyConnection, sql: str, table: str, ids: Iterable[int] | Iterable[str], per_query: int = INDEX_LOOKUP_IDS
) -> Iterator[tuple[str, list]]:
    """`sql` with its `{ids}` filled in, and its parameters: one query with
    a list, or `per_query` of them a query (at least one). The ids are
    numbers (doc_id, cluster_id: written out, the quickest to plan) or text
    (a URL: one parameter each, so no character needs escaping)."""
    ordered = sorted({i if isinstance(i, str) else int(i) for i in ids})  # numpy integers as Python's
    text = bool(ordered) and isinstance(ordered[0], str)
    if len(ordered) > LIST_LOOKUP_MIN_IDS:
        ((rows,),) = con.execute(f"SELECT count(*) FROM {table}").fetchall()
        if len(ordered) >= LIST_LOOKUP_MIN_SHARE * rows:
            yield sql.format(ids=f"SELECT unnest(?::{'VARCHAR' if text else 'BIGINT'}[])"), [ordered]
            return
    per_query = max(1, min(per_query, INDEX_LOOKUP_IDS))
    for start in range(0, max(1, len(ordered)), per_query):
        chunk = ordered[start : start + per_query]
        if text:
            yield sql.format(ids=",".join("?" * len(chunk))), chunk
        else:
            yield sql.format(ids=",".join(map(str, chunk)) or "NULL"), []


def _fetch_by_ids(con: duckdb.DuckDBPyConnection, sql: str, table: str, ids: Iterable[int] | Iterable[str]) -> list[tuple]:
    """The rows of `sql`, a query of `table`, for all of `ids` (see `_id_queries`)."""
    return [row for query, params in _id_queries(con, sql, table, ids) for row in con.execute(query, params).fetchall()]


def _fetch_by_ids_concurrently(
    con: duckdb.DuckDBPyConnection, sql: str, table: str, ids: Iterable[int] | Iterable[str]
) -> list[tuple]:
    """As `_fetch_by_ids`, the index lookups split over CONCURRENT_LOOKUPS
    connections to the same database, each in a thread of its own (DuckDB
    does not hold the GIL while it reads)."""
    ids = set(ids)
    if len(ids) < CONCURRENT_LOOKUP_MIN_IDS:
        return _fetch_by_ids(con, sql, table, ids)
    queries = list(_id_queries(con, sql, table, ids, per_query=-(-len(ids) // CONCURRENT_LOOKUPS)))
    if len(queries) == 1:  # one scan with a list (see `_id_queries`)
        query, params = queries[0]
        return con.execute(query, params).fetchall()
    ((database,),) = con.execute("SELECT current_database()").fetchall()
    quoted = database.replace('"', '""')
    cursors = [con.cursor() for _ in queries]
    try:
        for cursor in cursors:  # a cursor starts in the in-memory database, not the attached one
            cursor.execute(f'USE "{quoted}"')
        with ThreadPoolExecutor(len(queries)) as pool:
            parts = pool.map(lambda c, q: c.execute(q[0], q[1]).fetchall(), cursors, queries)
            return [row for part in parts for row in part]
    finally:
        for cursor in cursors:
            cursor.close()


def _rows_by_rowid(con: duckdb.DuckDBPyConnection, table: str, columns: str, rowids: list[int]) -> list[tuple]:
    """Some rows of a table, read by row id (a semi join: DuckDB scans the table with the ids as a filter)."""
    if not rowids:
        return []
    return con.execute(
        f"SELECT {columns} FROM {table} t SEMI JOIN (SELECT unnest(?::BIGINT[]) AS wanted) w ON t.rowid = w.wanted",
        [rowids],
    ).fetchall()


def _without_progress_bar(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """The connection, drawing no progress bar: DuckDB draws one on stdout
    under any statement that runs over 2 s (a migration of a large database,
    a long query), terminal or not, and it would land in a command's output."""
    try:
        con.execute("SET enable_progress_bar = false")
    except BaseException:
        con.close()
        raise
    return con


def _open_writer(path: Path, config: dict) -> duckdb.DuckDBPyConnection:
    """A writing connection to the file at `path`: attached (the only way to
    give DuckDB a row group size), as the connection's default database."""
    con = duckdb.connect(":memory:", config=config)
    try:
        quoted = str(path).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS store (ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
        con.execute("USE store")
    except BaseException:
        con.close()
        raise
    return con


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_holder(message: str) -> str:
    """DuckDB names the process holding the lock ("... (PID 1234)"): pass it on."""
    marker = "PID "
    if marker in message:
        pid = message.split(marker, 1)[1].split(")")[0].split()[0]
        return f" (PID {pid})"
    return ""
