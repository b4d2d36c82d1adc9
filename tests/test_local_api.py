"""The temporary Prefect API of command-line runs (flows/local_api.py), with
real processes: the `reposts` command starts Prefect's server itself, runs
its flow against it, and the server goes when the run is killed."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from tests.helpers import story_warc

PROJECT = Path(__file__).resolve().parents[1]

# a command-line ingest in a fresh process, then what it imported
INGEST_AND_REPORT = """
import json, subprocess, sys
spawned = []  # at each process started: which of the stages' modules were imported by then?
STAGES = ("dedup.batch", "dedup.ahead", "dedup.linker", "dedup.store", "dedup.archive", "dedup.clean", "duckdb", "trafilatura")
popen = subprocess.Popen.__init__
def noting(self, *args, **kwargs):
    spawned.append([m for m in STAGES if m in sys.modules])
    popen(self, *args, **kwargs)
subprocess.Popen.__init__ = noting
from flows.cli import main
code = main(["--db", sys.argv[1], "ingest", sys.argv[2]])
print(json.dumps({
    "code": code,
    "server_package_imported": "prefect.server.api.server" in sys.modules,
    "imported_before_the_server_started": spawned[0],
}))
"""

# a temporary API, healthy, then the process waits to be killed
SERVE_AND_WAIT = """
import time
from flows.local_api import TemporaryAPI
api = TemporaryAPI.start()
with api.serving() as url:
    print(api.process.pid, url, flush=True)
    time.sleep(120)
"""


def _clean_env() -> dict[str, str]:
    """The test run's environment without an API to use (the test harness
    sets one only inside this process), with Prefect's home kept temporary."""
    return {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited, whoever reaps it


def test_a_command_line_run_serves_its_flow_from_a_server_it_started_without_importing_prefects_server(tmp_path):
    db = str(tmp_path / "cli.duckdb")
    warc = story_warc(tmp_path / "stories.warc.gz")
    # a first run on this machine: Prefect's home holds no database yet. The
    # server makes it before it answers, which takes longer than the start-up
    # timeout (1 s here; Prefect's default of 20 s was not enough on 2 cores)
    home = tmp_path / "prefect-home"
    done = subprocess.run(
        [sys.executable, "-c", INGEST_AND_REPORT, db, str(warc)],
        cwd=PROJECT,
        env={**_clean_env(), "PREFECT_HOME": str(home), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # the server starts first, and its start-up overlaps the stages' imports
    # (2 s here; the 0.3 s of the modules that define the errors a user can cause among them)
    assert report == {"code": 0, "server_package_imported": False, "imported_before_the_server_started": []}
    con = duckdb.connect(db, read_only=True)
    try:
        flow_run_id, pages = con.execute("SELECT flow_run_id, (SELECT count(*) FROM documents) FROM runs").fetchone()
    finally:
        con.close()
    assert flow_run_id, "the flow ran without a Prefect API"
    assert pages == 80
    # the server took the run's last events before it stopped: its database
    # (in PREFECT_HOME, where `make ui` would show it) has the run and every task run finished
    prefect_db = sqlite3.connect(home / "prefect.db")
    try:
        flow_state = prefect_db.execute("SELECT state_type FROM flow_run WHERE id = ?", (flow_run_id,)).fetchone()
        task_states = prefect_db.execute(
            "SELECT state_type, count(*) FROM task_run WHERE flow_run_id = ? GROUP BY 1", (flow_run_id,)
        ).fetchall()
        events = dict(prefect_db.execute("SELECT event, count(*) FROM events GROUP BY 1").fetchall())
    finally:
        prefect_db.close()
    assert flow_state == ("COMPLETED",)
    assert dict(task_states) == {"COMPLETED": 1}  # one batch of 80 pages: one link task
    assert events["prefect.flow-run.Completed"] == 1
    # a server that dies with its run has no use for heartbeats (they cost the
    # run's end a wait of up to a second for Prefect's heartbeat thread)
    assert "prefect.flow-run.heartbeat" not in events


# what the settings of a Prefect server started with the temporary server's environment say
READ_SERVER_SETTINGS = """
import json
from prefect.settings import Settings
server = Settings().server
print(json.dumps([server.ui.enabled, server.register_blocks_on_start, server.memoize_block_auto_registration]))
"""


def test_the_temporary_servers_switches_are_settings_prefect_reads():
    # an environment variable Prefect does not know is ignored without a word:
    # a renamed setting would bring back the start-up cost it switches off
    from flows.local_api import _SERVER_ENV

    done = subprocess.run(
        [sys.executable, "-c", READ_SERVER_SETTINGS],
        cwd=PROJECT,
        env={**_clean_env(), **_SERVER_ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [False, False, False]


def test_the_temporary_server_goes_when_the_run_that_started_it_is_killed():
    run = subprocess.Popen(
        [sys.executable, "-c", SERVE_AND_WAIT],
        cwd=PROJECT,
        env=_clean_env(),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        server_pid, url = run.stdout.readline().split()
        server_pid = int(server_pid)
        assert url.startswith("http://127.0.0.1:") and _alive(server_pid)
        os.kill(run.pid, signal.SIGKILL)  # the run alone, not its process group
        run.wait(timeout=10)
        deadline = time.monotonic() + 20
        while _alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(server_pid), "the temporary server outlived its run"
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        try:
            os.killpg(run.pid, signal.SIGKILL)  # whatever is left of the group
        except ProcessLookupError:
            pass


def test_a_temporary_server_that_cannot_start_is_one_line_and_leaves_the_database_alone(tmp_path):
    db = str(tmp_path / "kept.duckdb")
    warc = story_warc(tmp_path / "stories.warc.gz")
    env = {**_clean_env(), "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path}/missing/prefect.db"}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("reposts")), "--db", db, "ingest", str(warc)],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "reposts: error: Prefect's temporary API server stopped at start-up: "
        "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) unable to open database file"
    ]
    con = duckdb.connect(db, read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM documents").fetchone() == (0,)
    finally:
        con.close()


# the command line's garbage collection, in a fresh process: off while it imports, then on
IMPORTS_DONE = """
import gc, json
from flows.cli import _imports_done
on_before = gc.isenabled()
_imports_done()  # as a test calling main() has it: on, and nothing frozen
unchanged = gc.isenabled() and gc.get_freeze_count() == 0
gc.disable()  # as run() starts a command
import flows.pipeline
_imports_done()
print(json.dumps([on_before, unchanged, gc.isenabled(), gc.get_freeze_count() > 100_000]))
"""


def test_the_command_line_collects_garbage_once_its_imports_are_done():
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS_DONE], cwd=PROJECT, env=_clean_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # the imports are frozen out of the collector's full collections, and it runs from then on
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [True, True, True, True]
