"""The temporary Prefect API of a local command-line run, started first thing.

With no API configured, Prefect starts its own temporary server when the
first flow is called: a subprocess serving `prefect.server`'s app. It does
so late, and dearly: to reach the class that starts the subprocess, the
calling process imports Prefect's whole server package (4.5 CPU-seconds on
a 2-core machine, as much as the subprocess then spends importing it again),
and only then does the subprocess begin to start. `TemporaryAPI` starts the
same server (Prefect's app, under uvicorn, in a subprocess with Prefect's
switches for a temporary server) before the command reads its input, so the
server's start-up overlaps the command's own imports and its workers'
extraction, and the command's process never imports the server package.

A run whose Prefect settings name an API (PREFECT_API_URL, a profile, the
test harness) uses that API; the temporary server is then stopped unused.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# A line of a traceback that names the exception (`sqlite3.OperationalError: ...`).
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit): ")
# How long a run's last logs and events may take to reach the server.
_DRAIN_S = 5.0
# How often the health endpoint is asked while the server starts.
_POLL_S = 0.05
# Ports taken by another program between our probe and the server's bind: tries.
_START_TRIES = 3
# How long a server may take to answer when its database does not exist yet:
# it creates it and runs every migration first (25 s on a 2-core machine,
# past Prefect's default start-up timeout of 20 s, which is then the floor).
_FIRST_START_S = 120.0

# Prefect's own switches for its temporary server (no UI, only the services
# a temporary server runs: prefect.server.api.server, 3.9), and no block
# registration at start-up. Registering is memoized, but checking the memo
# imports every installed Prefect collection (prefect-dask, so Dask's
# `distributed`) to hash their block types: 1.2 of the server's 6 CPU-s of
# start-up here. A run records flow and task runs, and needs no block types;
# a full server (`make ui`, `prefect server start`) registers them.
_SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
    "PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false",
    "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
}


# The server's process (arguments: the run's PID, the port). Linux
# terminates it when the run that started it dies (killed with -9 included);
# elsewhere, or if the run is already gone, it is left to its own exit. The
# app is made with Python's garbage collector off, and what that made is
# frozen out of the collector's sight: importing Prefect's server makes
# hundreds of thousands of objects, none of them garbage, and the collector
# went over them 800 times, 0.8 of the server's 4 CPU-s in an ingest (0.08
# now). uvicorn serves that app object, as `uvicorn --factory
# prefect.server.api.server:create_app` (what Prefect runs) serves the one
# the factory returns: asked again, the factory returns the same app from
# its cache, after 0.13 CPU-s of settings hashing and logging set-up.
_LAUNCH = """
import ctypes, gc, os, signal, sys
parent, port = int(sys.argv[1]), int(sys.argv[2])
if sys.platform.startswith("linux"):
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != parent:
    sys.exit(0)
gc.disable()
from prefect.server.api.server import create_app
app = create_app()
gc.freeze()
gc.enable()
import uvicorn
uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", lifespan="on")
"""


def free_port() -> int:
    """A port on loopback that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers_health(api_url: str) -> bool:
    """Whether the Prefect API at `api_url` answers its health check now."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _send_what_prefect_queued() -> None:
    """Let Prefect send the logs and events it still holds (an interrupted
    run's crash report among them) while the server is there to take them.
    Prefect, stopping its own temporary server at exit, drains them first too."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        service.drain_all(timeout=_DRAIN_S, at_exit=False)


class TemporaryAPIError(RuntimeError):
    """The temporary server did not start; the message says why, in one line."""


class TemporaryAPI:
    """Prefect's temporary API server, as Prefect itself would start it for one run."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self._log = None  # the server's output, for the reason it stopped
        self._first_start = False  # no Prefect database in PREFECT_HOME when it was started

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @classmethod
    def start(cls) -> TemporaryAPI:
        """Start the server now, unless the environment names an API already,
        or this process has imported Prefect (whose settings may name one, as
        the test harness's do; with none, Prefect starts its own server). A
        profile that names an API is found in `serving`, once Prefect is
        imported: the server is then stopped unused."""
        api = cls()
        if not os.environ.get("PREFECT_API_URL") and "prefect" not in sys.modules:
            api._spawn()
        return api

    def _spawn(self) -> None:
        self.port = free_port()
        # Prefect's own database, where it is by default (one configured
        # elsewhere is only allowed the longer wait for nothing)
        home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
        self._first_start = self._first_start or not (home / "prefect.db").exists()
        if self._log is None:
            self._log = tempfile.TemporaryFile()
        self._log.seek(0)
        self._log.truncate()
        env = {**os.environ, **_SERVER_ENV}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, str(os.getpid()), str(self.port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            # on Linux, where it dies with the run anyway, not in the run's
            # process group: Ctrl-C interrupts the run, which still needs the
            # server to record how its flow run ended (elsewhere, killing the
            # run's process group is what takes the server along)
            start_new_session=sys.platform.startswith("linux"),
        )

    def _wait_healthy(self, timeout_s: float) -> None:
        if self._first_start:
            timeout_s = max(timeout_s, _FIRST_START_S)
        deadline = time.monotonic() + timeout_s
        tries = 1
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if tries >= _START_TRIES or not self._port_was_taken():
                    raise TemporaryAPIError(f"Prefect's temporary API server stopped at start-up: {self._last_error()}")
                tries += 1
                self._spawn()
                continue
            if answers_health(self.url):
                return
            time.sleep(_POLL_S)
        self.stop()
        raise TemporaryAPIError(
            f"Prefect's temporary API server did not answer within {timeout_s:.0f} s "
            "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS gives it longer)"
        )

    def _output(self) -> str:
        """What the server has written so far."""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def _port_was_taken(self) -> bool:
        """Another program took the port between our probe and the server's bind."""
        return "address already in use" in self._output().lower()

    def _last_error(self) -> str:
        """The server's last exception, in one line (else its last line, else its exit status)."""
        lines = [line.strip() for line in self._output().splitlines() if line.strip()]
        raised = [line for line in lines if _RAISED.match(line)]
        return (raised or lines or [f"exit status {self.process.returncode}"])[-1][:300]

    @contextmanager
    def serving(self) -> Iterator[str | None]:
        """Within this block, Prefect runs flows against the temporary server
        (yields its URL), or against the API its settings name (yields None)."""
        from prefect.settings import (
            PREFECT_API_URL,
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
            get_current_settings,
            temporary_settings,
        )

        settings = get_current_settings()
        if settings.api.url or not settings.server.ephemeral.enabled or self.process is None:
            self.stop()
            yield None
            return
        try:
            self._wait_healthy(settings.server.ephemeral.startup_timeout_seconds)
            # No flow-run heartbeats: they let a server notice a run that died,
            # and this server dies with its run. Prefect's heartbeat thread
            # sleeps in steps of a second and is joined when the flow ends, so
            # every run sat idle for up to a second at its end, both cores free.
            with temporary_settings(updates={PREFECT_API_URL: self.url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
                try:
                    yield self.url
                finally:
                    _send_what_prefect_queued()
        finally:
            self.stop()

    def __enter__(self) -> TemporaryAPI:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
