"""The store's id lookups, stored numbers, row groups and connections."""

import math
import subprocess
import sys

import duckdb
import numpy as np
import pytest

from dedup.batch import Settings, open_store, prepare_pages
from dedup.fingerprint import (
    FingerprintConfig,
)
from dedup.link import (
    LinkConfig,
)
from dedup.linker import Linker
from dedup.store import Store
from tests.pages import BAKERY_STORY, CANAL_STORY, article_html, fetched

FP = FingerprintConfig()
LINK = LinkConfig()


@pytest.mark.parametrize(("n_ids", "as_list"), [(0, False), (1, False), (101, False), (3000, False), (6000, True)])
def test_id_lookups_find_the_same_rows_with_literals_and_with_a_list(tmp_path, n_ids, as_list):
    """Ids that are many and a large share of the table go as one list
    parameter, others as literals (2,048 a query): either way the rows are
    exactly those of the ids asked for, and the same when the lookups are
    split over several connections (to the file, or to it attached as a
    run's writing connection attaches it)."""

    from dedup.store.connection import _open_writer
    from dedup.store.ids import fetch_by_ids, fetch_by_ids_concurrently, id_queries

    path = tmp_path / "ids.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE pages (doc_id BIGINT PRIMARY KEY, word VARCHAR)")
    con.execute("INSERT INTO pages SELECT i, 'w' || i FROM range(1, 100_001) r(i)")
    wanted = set(range(7, 7 + 3 * n_ids, 3)) | ({200_000} if n_ids else set())  # one id the table lacks
    sql = "SELECT doc_id, word FROM pages WHERE doc_id IN ({ids})"
    queries = list(id_queries(con, sql, "pages", wanted))
    assert [bool(params) for _, params in queries] == ([True] if as_list else [False] * max(1, math.ceil(len(wanted) / 2048)))
    expected = [(i, f"w{i}") for i in sorted(wanted) if i <= 100_000]
    assert sorted(fetch_by_ids(con, sql, "pages", wanted)) == expected
    assert sorted(fetch_by_ids_concurrently(con, sql, "pages", wanted)) == expected
    con.close()
    attached = _open_writer(path, {})
    try:
        assert sorted(fetch_by_ids_concurrently(attached, sql, "pages", wanted)) == expected
    finally:
        attached.close()


def test_a_stores_lookups_answer_the_same_as_a_list_and_as_literals(tmp_path, monkeypatch):
    """The Store's lookups, over one connection, for ids that go as a list
    (many, a large share of the table) and as literals (the share rule off)."""
    from dedup.store import ids as ids_module

    store = Store(tmp_path / "ids.duckdb")
    store.migrate()
    values = np.arange(300 * 4, dtype=np.uint32).reshape(300, 4)
    with store.connect() as con:
        con.executemany(
            "INSERT INTO documents (doc_id, url, body, n_shingles, minhash, marks_copy, cluster_id, run_id)"
            " VALUES (?, ?, ?, ?, ?, false, ?, 1)",
            [[d, f"https://a.example/{d}", f"body {d}", d + 1, values[d - 1].tobytes(), d % 7] for d in range(1, 301)],
        )
    wanted = set(range(2, 302, 2))  # 150 ids, half the table; 302 is not stored

    def lookups():
        with store.session():
            doc_ids, matrix, sizes = store.signatures_of(wanted, np.uint32, 4)
            return (
                (doc_ids.tolist(), matrix.tolist(), sizes.tolist()),
                store.bodies(wanted),
                store.cluster_ids_of(wanted),
                sorted(m.doc_id for m in store.members({0, 1, 3, 5})),
            )

    as_list = lookups()
    monkeypatch.setattr(ids_module, "LIST_LOOKUP_MIN_IDS", 10**9)
    as_literals = lookups()
    assert as_list == as_literals
    (doc_ids, matrix, sizes), bodies, clusters, members = as_list
    assert doc_ids == list(range(2, 301, 2)) and matrix == [values[d - 1].tolist() for d in doc_ids]
    assert sizes == [d + 1 for d in doc_ids] and bodies == {d: f"body {d}" for d in doc_ids}
    assert clusters == {d: d % 7 for d in doc_ids} and members == [d for d in range(1, 301) if d % 7 in (0, 1, 3, 5)]


def test_the_store_finds_which_urls_it_holds_whatever_their_characters(tmp_path, monkeypatch):
    """Each URL is a parameter (quotes, question marks and non-ASCII need no
    escaping), in as many queries as the index lookup's limit asks, or all in
    one list (many URLs, a large share of the table)."""
    from dedup.store import ids as ids_module

    store = Store(tmp_path / "urls.duckdb")
    store.migrate()
    held = ["https://a.example/it's?q=1&r=2", "https://b.example/café/?", "https://c.example/plain"]
    held += [f"https://d.example/{n}" for n in range(20)]
    with store.connect() as con:
        con.executemany(
            "INSERT INTO documents (doc_id, url, n_shingles, minhash, marks_copy, cluster_id, run_id) VALUES (?, ?, 1, '', false, 1, 1)",
            [[n + 1, url] for n, url in enumerate(held)],
        )
    asked = held[::2] + ["https://a.example/its?q=1&r=2", "https://b.example/cafe/?", "'", "?"]
    assert store.stored_urls(asked) == set(held[::2])
    monkeypatch.setattr(ids_module, "INDEX_LOOKUP_IDS", 3)
    assert store.stored_urls(asked) == set(held[::2])
    monkeypatch.setattr(ids_module, "LIST_LOOKUP_MIN_IDS", 0)
    assert store.stored_urls(asked) == set(held[::2])
    assert store.stored_urls([]) == set()


def test_a_url_in_two_batches_of_a_run_is_stored_once(tmp_path):
    settings = Settings()
    store = open_store(str(tmp_path / "twice.duckdb"), settings)
    run_id = store.start_run("ingest", None, {})
    page = fetched("https://canal.example/drain", article_html("Canal drained", CANAL_STORY))
    other = fetched("https://bakery.example/bread", article_html("Bakery", BAKERY_STORY))
    linker = Linker(store, settings)
    first = linker.link_batch(run_id, prepare_pages([page], settings))
    second = linker.link_batch(run_id, prepare_pages([other, page, other], settings))
    assert (first.pages, second.pages) == (1, 1)
    with store.connect() as con:
        assert con.execute("SELECT count(*), count(DISTINCT url) FROM documents").fetchone() == (2, 2)


def test_stored_numbers_count_each_key_once_and_keys_that_share_a_number_twice():
    """What a run saves for the next (dedup/snapshot.py) is checked against
    the tables' row counts: two keys of one number (DuckDB's hash gave two
    of the synthetic corpus's million URLs one) are two numbers."""
    from dedup.store import StoredNumbers

    numbers = StoredNumbers(np.array([5, 9], dtype=np.uint64))
    numbers.add(np.array([7, 9], dtype=np.uint64))
    numbers.add(np.array([7], dtype=np.uint64))
    assert numbers.all().tolist() == [5, 7, 7, 9, 9]
    assert numbers.may_hold(np.array([7, 8, 9], dtype=np.uint64)).tolist() == [True, False, True]


def test_a_new_url_whose_number_a_stored_url_has_is_still_stored(tmp_path):
    """Two URLs may share a number (a hash): the linker then looks the URL up,
    and stores the page if the database does not hold it."""
    from dedup.store import StoredNumbers

    settings = Settings()
    store = open_store(str(tmp_path / "shared-number.duckdb"), settings)
    run_id = store.start_run("ingest", None, {})
    page = fetched("https://canal.example/drain", article_html("Canal drained", CANAL_STORY))
    linker = Linker(store, settings)
    number = store.text_hashes({page.url})[page.url]
    linker.known._urls = StoredNumbers(np.array([number], dtype=np.uint64))  # as if a stored URL had its number
    assert linker.link_batch(run_id, prepare_pages([page], settings)).pages == 1
    assert linker.link_batch(run_id, prepare_pages([page], settings)).pages == 0


def test_writer_starts_new_row_groups_past_the_bound(tmp_path, monkeypatch):
    """Rows appended by the run's connection go to row groups of at most
    ROW_GROUP_ROWS rows (a checkpoint rewrites the last one whole)."""

    from dedup import store as store_module
    from dedup.store import connection as connection_module

    monkeypatch.setattr(connection_module, "ROW_GROUP_ROWS", 2048)
    store = store_module.Store(tmp_path / "rg.duckdb")
    store.migrate()
    for start in range(0, 6000, 200):
        with store.connect() as con:
            con.execute(
                "INSERT INTO fetches (run_id, url, fetched_at) SELECT 1, 'u' || i, now() FROM range(?, ?) r(i)",
                [start, start + 200],
            )
    with duckdb.connect(str(tmp_path / "rg.duckdb"), read_only=True) as con:
        groups = con.execute(
            "SELECT row_group_id, max(count) FROM pragma_storage_info('fetches') WHERE column_name = 'url' GROUP BY 1"
        ).fetchall()
    assert sum(n for _, n in groups) == 6000
    assert len(groups) >= 3 and max(n for _, n in groups) <= 2048


def test_no_connection_of_the_store_draws_a_progress_bar(tmp_path):
    # DuckDB prints one on stdout under any statement over 2 s, into a command's
    # output; asked in a process of its own (under pytest DuckDB draws none anyway)
    db = tmp_path / "quiet.duckdb"
    open_store(str(db), Settings())
    script = (
        "import sys\n"
        "from dedup.store import Store\n"
        "for read_only in (False, True):\n"
        "    with Store(sys.argv[1]).connect(read_only=read_only) as con:\n"
        "        print(con.execute(\"SELECT current_setting('enable_progress_bar')\").fetchone()[0])\n"
    )
    shown = subprocess.run([sys.executable, "-c", script, str(db)], capture_output=True, text=True, check=True)
    assert shown.stdout.split() == ["False", "False"]
