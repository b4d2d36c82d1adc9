"""Looking rows up by id, and the numbers a run holds for "is it stored"."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import duckdb
import numpy as np


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


# DuckDB finds rows through an ART index for `column IN (1, 2, ...)` written
# out as literals when fewer rows match than its index_scan_max_count (2048);
# a list parameter scans the whole column. Planning costs about 20 us a
# literal, so many keys that are a large share of the table (a young
# database) go as one list instead (docs/internals.md, "Id lookups").
INDEX_LOOKUP_IDS = 2048
LIST_LOOKUP_MIN_IDS = 100
LIST_LOOKUP_MIN_SHARE = 0.05
# Index lookups of wide rows (bodies) go over this many connections at once:
# a row not in memory is one disk read, and one connection reads them one
# after another. For narrow rows (members, cluster ids) four took longer.
CONCURRENT_LOOKUPS = 4
CONCURRENT_LOOKUP_MIN_IDS = 16


def id_queries(
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


def fetch_by_ids(con: duckdb.DuckDBPyConnection, sql: str, table: str, ids: Iterable[int] | Iterable[str]) -> list[tuple]:
    """The rows of `sql`, a query of `table`, for all of `ids` (see `id_queries`)."""
    return [row for query, params in id_queries(con, sql, table, ids) for row in con.execute(query, params).fetchall()]


def fetch_by_ids_concurrently(
    con: duckdb.DuckDBPyConnection, sql: str, table: str, ids: Iterable[int] | Iterable[str]
) -> list[tuple]:
    """As `fetch_by_ids`, the index lookups split over CONCURRENT_LOOKUPS
    connections to the same database, each in a thread of its own (DuckDB
    does not hold the GIL while it reads)."""
    ids = set(ids)
    if len(ids) < CONCURRENT_LOOKUP_MIN_IDS:
        return fetch_by_ids(con, sql, table, ids)
    queries = list(id_queries(con, sql, table, ids, per_query=-(-len(ids) // CONCURRENT_LOOKUPS)))
    if len(queries) == 1:  # one scan with a list (see `id_queries`)
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


def rows_by_rowid(con: duckdb.DuckDBPyConnection, table: str, columns: str, rowids: list[int]) -> list[tuple]:
    """Some rows of a table, read by row id (a semi join: DuckDB scans the table with the ids as a filter)."""
    if not rowids:
        return []
    return con.execute(
        f"SELECT {columns} FROM {table} t SEMI JOIN (SELECT unnest(?::BIGINT[]) AS wanted) w ON t.rowid = w.wanted",
        [rowids],
    ).fetchall()
