"""The crawler against a web of faults (tests/fault_server.py, on loopback):
each fault is recorded with a clear reason, retried only when that can help,
and never stops the run."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from dedup.batch import Settings, prepare_pages
from dedup.fetch import DEADLINE, HOST_NOT_ANSWERING, ROBOTS_DISALLOWED, RUN_STOPPED, FetchConfig, Fetcher
from flows.pipeline import crawl_flow
from tests.fault_server import MAX_BYTES, FaultServer

# loopback needs the SSRF guard off; small timeout, cap and retry budget keep the suite quick
PROJECT = Path(__file__).resolve().parents[1]
CONFIG = FetchConfig(ssrf_protection=False, timeout_s=1, max_bytes=MAX_BYTES, max_redirects=2, host_delay_s=0)
SETTINGS = Settings(fetch=CONFIG)

# path -> (reason recorded, or None when the page is stored; requests the server saw)
FAULTS = {
    "/slow": ("timed out waiting for the server", 3),
    "/reset": ("connection reset by the server", 3),
    "/not-found": ("HTTP 404", 1),  # not retried
    "/gone": ("HTTP 410", 1),  # not retried
    "/busy-once": (None, 2),  # 429 with Retry-After: 1, then the page
    "/unavailable-once": (None, 2),  # 503, then the page
    "/unavailable": ("HTTP 503 after retries", 3),
    "/loop": ("too many redirects (or a redirect loop)", 3),
    "/hop/2": (None, 1),  # two redirects: within the budget
    "/hop/9": ("too many redirects (or a redirect loop)", 1),
    "/report.pdf": ("not HTML: application/pdf", 1),
    "/photo.png": ("not HTML: image/png", 1),
    "/data.json": ("not HTML: application/json", 1),
    "/huge": ("body over the size cap (after decompression)", 1),
    "/bomb": ("body over the size cap (after decompression)", 1),  # small gzip, huge once inflated
    "/latin1-said-utf8": (None, 1),  # the declared charset does not fit: the bytes decide
    "/no-charset": (None, 1),
    "/empty": ("empty body", 1),
    "/script-only": ("no article text", 1),
    "/menu-only": ("no article text", 1),
    "/private/page": (ROBOTS_DISALLOWED, 0),  # robots.txt: recorded, not fetched
}


@pytest.fixture(scope="module")
def faults():
    with FaultServer() as server:
        yield server


def outcome(page, settings=SETTINGS):
    """(error, body) after fetch and the CPU stages."""
    if page.error:
        return page.error, None
    batch = prepare_pages([page], settings)
    if not batch.prepared:
        return batch.fetches[0].error, None
    return None, batch.prepared[0].cleaned.body


@pytest.mark.parametrize("path", list(FAULTS))
def test_each_fault_is_recorded_with_its_reason(faults, path):
    reason, requests = FAULTS[path]
    before = faults.hits[path]
    [page] = Fetcher(CONFIG).fetch([faults.url(path)])
    error, body = outcome(page)
    if reason is None:
        assert error is None and body
    else:
        assert error is not None and error.startswith(reason), error
        assert "\n" not in error and len(error) < 200
    assert faults.hits[path] - before == requests


def test_retry_after_is_honoured(faults):
    started = time.monotonic()
    [page] = Fetcher(CONFIG).fetch([faults.url("/busy-once?fresh=1")])
    assert page.status == 200 and time.monotonic() - started >= 1.0


def test_wrong_and_missing_charsets_come_out_readable(faults):
    for path in ("/latin1-said-utf8", "/no-charset"):
        [page] = Fetcher(CONFIG).fetch([faults.url(path)])
        body = outcome(page)[1]
        assert "café" in body and "\ufffd" not in body, path


def test_connection_refused_is_recorded():
    [page] = Fetcher(CONFIG).fetch(["http://127.0.0.1:9/closed"])
    assert page.error == "connection refused"


def test_one_host_waits_between_requests_and_robots_is_read_once(faults):
    polite = FetchConfig(ssrf_protection=False, timeout_s=1, host_delay_s=0.5)
    robots_before = faults.hits["/robots.txt"]
    started = time.monotonic()
    pages = Fetcher(polite).fetch([faults.url(f"/hop/0?n={n}") for n in range(3)])
    assert [p.status for p in pages] == [200, 200, 200]
    assert time.monotonic() - started >= 1.0  # three requests to one host: two waits
    assert faults.hits["/robots.txt"] - robots_before == 1


def test_a_crawl_through_every_fault_records_each_and_keeps_the_good_pages(faults, db_path, prefect_harness):
    urls = [faults.url(p) for p in FAULTS] + [faults.url("/article")]
    summary = crawl_flow(urls, db=db_path, settings=SETTINGS)
    con = duckdb.connect(db_path, read_only=True)
    recorded = dict(con.execute("SELECT url, error FROM fetches").fetchall())
    stored = {u for (u,) in con.execute("SELECT url FROM documents").fetchall()}
    con.close()
    assert set(recorded) == set(urls)
    for path, (reason, _) in FAULTS.items():
        error = recorded[faults.url(path)]
        assert (error is None) == (reason is None) and (reason is None or error.startswith(reason)), (path, error)
    assert faults.url("/article") in stored and faults.url("/busy-once") in stored
    assert summary["failed"] == sum(1 for reason, _ in FAULTS.values() if reason)


# a hung server against a short deadline: each attempt could wait 5 s, the URL gets 1.5 s in all
HURRIED = FetchConfig(ssrf_protection=False, timeout_s=5, deadline_s=1.5, host_delay_s=0)


def test_a_url_gets_its_deadline_in_all_and_no_more(faults):
    started = time.monotonic()
    [page] = Fetcher(HURRIED).fetch([faults.url("/hang?deadline=1")])
    took = time.monotonic() - started
    assert page.error == f"{DEADLINE} (1.5 s)" and page.html is None
    assert 1.5 <= took < 3.0, took


def test_a_host_that_stops_answering_is_skipped_and_the_other_hosts_go_on(faults):
    with FaultServer() as healthy:
        hung = [faults.url(f"/hang?breaker={n}") for n in range(6)]
        articles = [healthy.url(f"/article?breaker={n}") for n in range(4)]
        started = time.monotonic()
        pages = Fetcher(HURRIED).fetch(hung + articles)
        took = time.monotonic() - started
    errors = [p.error for p in pages]
    assert errors[:3] == [f"{DEADLINE} (1.5 s)"] * 3  # three in a row trip the breaker
    assert errors[3:6] == [HOST_NOT_ANSWERING] * 3  # not asked: recorded, for the next run
    assert errors[6:] == [None] * 4 and all(p.status == 200 for p in pages[6:])
    assert took < 3 * 1.5 + 2.0, took
    # the healthy host was served while the hung one held its thread
    assert max(t for t, path in healthy.asked) - started < 1.5


def test_robots_crawl_delay_spaces_a_hosts_requests():
    with FaultServer(crawl_delay=1) as slow_host:  # whole seconds: what Python's robots.txt parser reads
        polite = FetchConfig(ssrf_protection=False, timeout_s=1, host_delay_s=0.1)
        pages = Fetcher(polite).fetch([slow_host.url(f"/article?n={n}") for n in range(3)])
        times = [t for t, _ in slow_host.asked]  # robots.txt, then the three pages
    assert [p.status for p in pages] == [200, 200, 200]
    assert [path for _, path in slow_host.asked][0] == "/robots.txt"
    assert all(later - earlier >= 1.0 for earlier, later in zip(times, times[1:], strict=False)), times


def test_a_stopped_fetcher_gives_up_at_once_and_records_what_it_did_not_fetch(faults):
    fetcher = Fetcher(FetchConfig(ssrf_protection=False, timeout_s=20, deadline_s=60, host_delay_s=0))
    threading.Timer(0.5, fetcher.stop).start()
    started = time.monotonic()
    pages = fetcher.fetch([faults.url("/hang?stop=1"), faults.url("/article?stop=1")])
    assert time.monotonic() - started < 2.0
    assert [p.error for p in pages] == [RUN_STOPPED, RUN_STOPPED]


# a run's process: a handler on the root logger to the terminal (Prefect's console handler in a run)
QUIET_OR_NOT = """
import logging, sys
from dedup.fetch import FetchConfig, Fetcher
from flows.cli import quiet_libraries
logging.basicConfig(level=logging.WARNING)
quiet_libraries(verbose=sys.argv[1] == "verbose")
[page] = Fetcher(FetchConfig(ssrf_protection=False, timeout_s=1)).fetch(["http://127.0.0.1:9/closed"])
print(page.error)
"""


def test_the_libraries_log_lines_stay_off_the_terminal_unless_verbose():
    def run(mode):
        done = subprocess.run([sys.executable, "-c", QUIET_OR_NOT, mode], capture_output=True, text=True, cwd=PROJECT)
        return done.stdout.strip(), done.stderr

    error, terminal = run("quiet")
    assert error == "connection refused" and terminal == ""  # recorded, and nothing else said
    error, terminal = run("verbose")
    assert error == "connection refused" and "download error" in terminal
