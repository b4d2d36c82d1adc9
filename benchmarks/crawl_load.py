"""A crawl under load: many hosts, some of them hung, with the default politeness.

    python benchmarks/crawl_load.py [--hosts 40] [--articles 50] [--hung 5] [--record]

Serves `--hosts` hosts on loopback addresses (127.0.0.10, .11, ...), each
with `--articles` articles; `--hung` of them accept connections and never
answer. Crawls them all with `reposts crawl` (the command line, default
settings: 2 s between two requests to one host, a 60 s deadline per URL, a
host skipped after 3 failures in a row) and reports, from the servers' own
log of when each request arrived:

- the shortest gap between two requests to one host: between the first
  requests of two URLs (what the crawler schedules: at least the host
  delay), and between any two (the downloader's own retries of a hung URL
  included, which may go on in the background after the URL's deadline gave
  it up);
- whether every healthy article was stored;
- the run's wall time against the least that politeness and the deadline
  allow: a healthy host's requests one delay apart (robots.txt, then each
  article), a hung host's three deadlines (robots.txt and two articles) one
  delay apart; the ratio is the measured time over the longest of these.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
from results import record, row

ROOT = Path(__file__).resolve().parents[1]
REPOSTS = Path(sys.executable).with_name("reposts")
HEADER = "| date | commit | hosts (hung) | articles | wall time | least allowed | ratio | shortest gap, scheduled / any | healthy stored |"

WORDS = "harbour council budget river bridge school market railway festival library museum weather farmers station".split()


def article(host: int, n: int) -> bytes:
    """A page of our own words, different for each host and article."""
    words = [WORDS[(host * 7 + n * 3 + i * i) % len(WORDS)] for i in range(400)]
    paragraphs = [" ".join(words[i : i + 50]).capitalize() + f" (item {host}-{n}-{i})." for i in range(0, 400, 50)]
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        f"<!DOCTYPE html><html><head><meta charset=utf-8><title>Report {host}-{n}</title></head>"
        f"<body><article><h1>Report {host}-{n}</h1>{body}</article></body></html>"
    ).encode()


class Hosts:
    """The loopback hosts, and the log of what each was asked and when."""

    def __init__(self, n_hosts: int, n_articles: int, n_hung: int) -> None:
        self.asked: list[tuple[str, float, str]] = []  # (host, time.monotonic(), path)
        self.stop = threading.Event()
        self.servers = []
        for number in range(n_hosts):
            address = f"127.0.0.{10 + number}"
            hung = number < n_hung
            self.servers.append(self._server(address, number, n_articles, hung))
        self.hung = [s for s, h in self.servers if h]
        self.healthy = [s for s, h in self.servers if not h]

    def _server(self, address: str, number: int, n_articles: int, hung: bool):
        hosts = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                hosts.asked.append((address, time.monotonic(), self.path))
                if hung:
                    hosts.stop.wait()
                    return
                if self.path.startswith("/a/") and int(self.path[3:]) < n_articles:
                    body, status = article(number, int(self.path[3:])), 200
                else:
                    body, status = b"not here", 404
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8" if status == 200 else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer((address, 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, hung

    def url(self, server, n: int) -> str:
        host, port = server.server_address[:2]
        return f"http://{host}:{port}/a/{n}"

    def close(self) -> None:
        self.stop.set()
        for server, _ in self.servers:
            server.shutdown()
            server.server_close()


def shortest_gaps(asked: list[tuple[str, float, str]]) -> tuple[float, float]:
    """The shortest gap between two requests to one host: between the first
    requests of two URLs (what the crawler schedules), and between any two
    (the downloader's retries of a hung URL included)."""
    scheduled, any_two = float("inf"), float("inf")
    by_host: dict[str, list[tuple[float, str]]] = {}
    for host, when, path in asked:
        by_host.setdefault(host, []).append((when, path))
    for requests in by_host.values():
        requests.sort()
        seen: set[str] = set()
        firsts = [when for when, path in requests if not (path in seen or seen.add(path))]
        times = [when for when, _ in requests]
        scheduled = min([scheduled, *(b - a for a, b in zip(firsts, firsts[1:], strict=False))])
        any_two = min([any_two, *(b - a for a, b in zip(times, times[1:], strict=False))])
    return scheduled, any_two


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=40)
    parser.add_argument("--articles", type=int, default=50)
    parser.add_argument("--hung", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="write the row into benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    delay, deadline, breaker = 2.0, 60.0, 3  # the defaults of dedup.fetch.FetchConfig
    hosts = Hosts(args.hosts, args.articles, args.hung)
    with tempfile.TemporaryDirectory() as folder:
        sources = Path(folder) / "sources.txt"
        urls = [hosts.url(s, n) for s, _ in hosts.servers for n in range(args.articles)]
        sources.write_text("\n".join(urls) + "\n", encoding="utf-8")
        db = Path(folder) / "load.duckdb"
        env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_HOME": str(Path(folder) / "prefect")}
        started = time.monotonic()
        done = subprocess.run(
            [str(REPOSTS), "--db", str(db), "crawl", "--urls-file", str(sources), "--allow-private-network"],
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.monotonic() - started
        hosts.close()
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        con = duckdb.connect(str(db), read_only=True)
        stored = {u for (u,) in con.execute("SELECT url FROM documents").fetchall()}
        con.close()
    healthy_urls = {hosts.url(s, n) for s in hosts.healthy for n in range(args.articles)}
    healthy_stored = len(healthy_urls & stored)
    least = max(args.articles * delay, breaker * deadline + (breaker - 1) * delay if args.hung else 0.0)
    new_url_gap, any_gap = shortest_gaps(hosts.asked)
    figures = [
        f"{args.hosts} ({args.hung})",
        args.articles,
        f"{wall:.0f} s",
        f"{least:.0f} s",
        f"{wall / least:.2f}",
        f"{new_url_gap:.2f} s / {any_gap:.2f} s",
        f"{healthy_stored} of {len(healthy_urls)}",
    ]
    print(HEADER)
    print(row(*figures))
    if args.record:
        record({HEADER: [row(*figures)]})
    return 0 if healthy_stored == len(healthy_urls) and new_url_gap >= delay else 1


if __name__ == "__main__":
    sys.exit(main())
