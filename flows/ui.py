"""`make ui`: a local Prefect server with its UI, the deployments, and a worker.

    python -m flows.ui [--port 4200] [--home .prefect]

Starts `prefect server start` on loopback (state in `--home`), creates the
process work pool `reposts`, registers the deployments of `prefect.yaml`,
starts a worker on the pool and prints the UI's address; Ctrl-C stops all
three. The test of the scheduled crawl uses the same `LocalPrefect`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from flows.local_api import answers_health

PROJECT = Path(__file__).resolve().parents[1]
WORK_POOL = "reposts"


class LocalPrefect:
    """A Prefect server, the project's deployments and a process worker, on loopback."""

    def __init__(self, home: Path, port: int = 4200, project: Path = PROJECT, log_dir: Path | None = None) -> None:
        self.home, self.port, self.project = Path(home), port, project
        self.log_dir = Path(log_dir or self.home)
        self.api_url = f"http://127.0.0.1:{port}/api"
        self.ui_url = f"http://127.0.0.1:{port}"
        self._processes: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        """The environment every Prefect command of this setup runs with."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_API_URL=self.api_url,
            # the UI calls this address; without it a UI on another port calls 4200
            PREFECT_UI_API_URL=self.api_url,
            PREFECT_SERVER_API_HOST="127.0.0.1",
            PREFECT_SERVER_API_PORT=str(self.port),
            # no telemetry: there is no internet here, and users did not ask for it
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",  # the client's (SDK) analytics
            PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
            PREFECT_WORKER_QUERY_SECONDS="2",
        )
        return env

    def _prefect(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).with_name("prefect")), *args]

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(self._prefect(*args), cwd=self.project, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self._processes.append(process)
        return process

    def start_server(self, timeout_s: float = 90.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        server = self._start("server", "server", "start", "--host", "127.0.0.1", "--port", str(self.port))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"the Prefect server stopped at start-up; see {self.log_dir / 'server.log'}")
            if answers_health(self.api_url):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the Prefect server did not answer within {timeout_s:.0f} s; see {self.log_dir / 'server.log'}")

    def deploy(self) -> None:
        """Create the work pool (if missing) and register every deployment in prefect.yaml."""
        run = {"cwd": self.project, "env": self.env, "capture_output": True, "text": True}
        pool = subprocess.run(self._prefect("work-pool", "create", WORK_POOL, "--type", "process"), **run)
        if pool.returncode != 0 and "already exists" not in pool.stdout + pool.stderr:
            raise RuntimeError(f"could not create the work pool: {(pool.stdout + pool.stderr).strip()[-500:]}")
        deployed = subprocess.run(self._prefect("--no-prompt", "deploy", "--all"), **run)
        if deployed.returncode != 0:
            raise RuntimeError(f"prefect deploy failed: {(deployed.stdout + deployed.stderr).strip()[-800:]}")

    def start_worker(self) -> None:
        self._start("worker", "worker", "start", "--pool", WORK_POOL, "--type", "process")

    def stop(self) -> None:
        for process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self._processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()

    def __enter__(self) -> LocalPrefect:
        try:
            self.start_server()
            self.deploy()
            self.start_worker()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--home", default=str(PROJECT / ".prefect"), help="PREFECT_HOME for the server (default ./.prefect)")
    args = parser.parse_args(argv)
    local = LocalPrefect(Path(args.home), args.port)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # a terminated `make ui` takes its server and worker along
    print(f"starting the Prefect server on {local.ui_url} (state and logs in {local.home}) ...", flush=True)
    try:
        with local:
            print(
                f"\nPrefect UI: {local.ui_url}\n"
                f"deployments crawl/crawl (hourly, sources.txt) and ingest/ingest registered; a worker serves pool '{WORK_POOL}'.\n"
                f"run the crawl now:  PREFECT_API_URL={local.api_url} {Path(sys.executable).with_name('prefect')} "
                "deployment run crawl/crawl\n"
                "Ctrl-C stops the server and the worker.",
                flush=True,
            )
            while all(p.poll() is None for p in local._processes):
                time.sleep(1)
            print("a Prefect process stopped; see the logs in", local.log_dir, file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"make ui: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
