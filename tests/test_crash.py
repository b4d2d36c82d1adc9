"""Crash safety and concurrent runs, with real processes: kill -9 during an
ingest, run it again, and the database matches an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from dedup.store import Store, StoreError
from flows.cli import main
from flows.errors import UserError
from tests.fault_server import FaultServer
from tests.helpers import COUNT_ROWS, N_STORIES, story_warc

REPOSTS = str(Path(sys.executable).with_name("reposts"))




def stored(db: str) -> tuple[int, int, set[frozenset[str]]]:
    """Pages, distinct URLs, and the clusters as sets of URLs."""
    con = duckdb.connect(db, read_only=True)
    try:
        pages, distinct = con.execute("SELECT count(*), count(DISTINCT url) FROM documents").fetchone()
        rows = con.execute("SELECT list(url) FROM documents GROUP BY cluster_id").fetchall()
    finally:
        con.close()
    return pages, distinct, {frozenset(urls) for (urls,) in rows}


def pages_so_far(db: str) -> int:
    """Read as `reposts sql` does: the run lets a waiting reader in between batches."""
    try:
        with Store(db, lock_wait_s=2).connect(read_only=True) as con:
            return con.execute("SELECT count(*) FROM documents").fetchone()[0]
    except (StoreError, duckdb.Error):  # not created yet
        return 0


def ingest_command(db: str, warc: Path) -> list[str]:
    return [REPOSTS, "--db", db, "ingest", str(warc), "--batch-size", "4", "--workers", "1"]


def test_an_ingest_killed_mid_run_is_finished_by_the_next_run_as_if_never_killed(tmp_path):
    warc = story_warc(tmp_path / "stories.warc.gz")
    uninterrupted, killed = str(tmp_path / "uninterrupted.duckdb"), str(tmp_path / "killed.duckdb")
    first = subprocess.run(ingest_command(uninterrupted, warc), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]

    # its own process group: the kill takes the run and what it started (workers,
    # Prefect's temporary server), as a machine or container going down would
    process = subprocess.Popen(
        ingest_command(killed, warc), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while pages_so_far(killed) < 8 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    interrupted_at = stored(killed)[0]
    assert 8 <= interrupted_at < 2 * N_STORIES, "the run was not stopped mid-way"

    rerun = subprocess.run(ingest_command(killed, warc), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert stored(killed) == stored(uninterrupted)
    pages, distinct, clusters = stored(killed)
    assert pages == distinct == 2 * N_STORIES and len(clusters) == N_STORIES


HOLD_LOCK = """
import sys, time
from dedup.store import Store
with Store(sys.argv[1]).exclusive_run("a crawl of 12 URL(s)"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_run_on_the_same_database_stops_and_names_the_first(tmp_path, capsys):
    db = str(tmp_path / "busy.duckdb")
    warc = story_warc(tmp_path / "stories.warc.gz")
    first = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, db], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "held"
        assert main(["--db", db, "ingest", str(warc)]) == 2
    finally:
        first.kill()
        first.wait()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"is being written by a crawl of 12 URL(s) (PID {first.pid}" in err
    # the lock is free once the first run is gone, even killed
    assert main(["--db", db, "ingest", str(warc)]) == 0
    assert stored(db)[0] == 2 * N_STORIES


def test_a_person_can_query_while_an_ingest_writes(tmp_path):
    """`reposts sql` opens the database read-only between the run's batches
    (waiting briefly for a batch being written) instead of failing."""
    from flows.cli import run_query

    db, warc = str(tmp_path / "busy.duckdb"), story_warc(tmp_path / "stories.warc.gz")
    process = subprocess.Popen(ingest_command(db, warc), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    counts = []
    try:
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            if Path(db).exists():
                started = time.monotonic()
                try:
                    _, rows = run_query(db, "SELECT count(*) FROM documents")
                except UserError:
                    if counts:  # only before the run has made its tables
                        raise
                    continue
                counts.append((rows[0][0], time.monotonic() - started))
    finally:
        process.wait(timeout=120)
    assert process.returncode == 0
    mid_run = [n for n, _ in counts if 0 < n < 2 * N_STORIES]
    assert mid_run, f"no query answered while the run was writing: {counts}"
    assert [n for n, _ in counts] == sorted(n for n, _ in counts)
    assert max(waited for _, waited in counts) < 5




def test_a_run_holding_its_connection_lets_a_waiting_reader_in_at_its_next_batch(tmp_path):
    """Within `holding`, the connection outlives each batch's session; a reader
    that finds the file locked leaves a note, and the run closes the
    connection when its next session ends (or when it next waits)."""
    db = tmp_path / "held.duckdb"
    store = Store(db)
    store.migrate()
    with store.holding():
        store.start_run("ingest", None, {})
        with store.session():
            pass
        assert store._held is not None, "the connection should outlive the session"
        reader = subprocess.Popen([sys.executable, "-c", COUNT_ROWS, str(db), "runs", "30"], stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not any((tmp_path / "held.duckdb.waiting").glob("*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert reader.poll() is None, "the reader got in while the run held the file"
        with store.session():
            store.start_run("ingest", None, {})
        out, _ = reader.communicate(timeout=30)
        assert reader.returncode == 0 and out.strip() == "2"
        # the run opens it again for its next batch
        with store.session():
            assert store.stored_through(10) == (0, None)
    assert store._held is None


def _left_in_group(pgid: int) -> list[str]:
    """The processes still in a process group, given a few seconds to go."""
    deadline = time.monotonic() + 5
    while True:
        left = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _run_rows(db: str) -> list[tuple]:
    con = duckdb.connect(db, read_only=True)
    try:
        return con.execute("SELECT run_id, finished_at IS NOT NULL, stats->>'interrupted' FROM runs ORDER BY run_id").fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_crawl_waiting_on_a_silent_host_stops_within_seconds_when_asked(tmp_path, stop):
    """SIGTERM (Prefect's Cancel, systemd, Kubernetes) goes to the run's
    process; Ctrl-C to the terminal's whole process group."""
    db = str(tmp_path / "stopped.duckdb")
    with FaultServer() as server:
        command = [REPOSTS, "--db", db, "crawl", "--allow-private-network", "--host-delay", "0"]
        process = subprocess.Popen(
            [*command, server.url("/article"), server.url("/hang?stop=1")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while not server.hits["/hang"] and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.hits["/hang"], "the crawl never reached the silent host"
        time.sleep(0.5)
        asked = time.monotonic()
        (os.killpg if stop == signal.SIGINT else os.kill)(process.pid, stop)
        _, err = process.communicate(timeout=60)
        took = time.monotonic() - asked
    assert took < 10, took
    assert process.returncode == 128 + stop, err[-2000:]
    assert f"stopped by {stop.name}" in err.splitlines()[-1]
    assert _run_rows(db) == [(1, True, stop.name)]
    assert _left_in_group(process.pid) == []


def test_an_ingest_stopped_mid_run_keeps_its_whole_batches_and_is_finished_by_the_next_run(tmp_path):
    warc = story_warc(tmp_path / "stories.warc.gz")
    db = str(tmp_path / "stopped.duckdb")
    process = subprocess.Popen(
        ingest_command(db, warc), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while pages_so_far(db) < 8 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    asked = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert time.monotonic() - asked < 10
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert _run_rows(db) == [(1, True, "SIGTERM")]
    pages, _, _ = stored(db)
    assert 8 <= pages < 2 * N_STORIES, "stopped mid-way, with what was committed before it"
    assert _left_in_group(process.pid) == []

    rerun = subprocess.run(ingest_command(db, warc), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    pages, distinct, clusters = stored(db)
    assert pages == distinct == 2 * N_STORIES and len(clusters) == N_STORIES
