"""Fetch stage: download pages with trafilatura's downloader.

Every attempt becomes a `FetchedPage`, failed ones too, with a one-line
error. trafilatura logs the reason of a failed download and returns None, so
the reason is captured from its log records for the calling thread.
"""

from __future__ import annotations

import heapq
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from configparser import ConfigParser
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from queue import Empty, SimpleQueue
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

from courlan import normalize_url
from trafilatura.downloads import fetch_response
from trafilatura.settings import use_config

from dedup.discover import Discovered, Source, discover_source
from dedup.evidence import WarcEvidence
from dedup.models import FetchedPage

USER_AGENT = "reposts/0.1 (repost provenance crawler)"


@dataclass(frozen=True)
class FetchConfig:
    # A URL's time in all, retries included; past it the URL is recorded as
    # timed out and the run goes on. Each attempt waits up to `timeout_s`
    # for the server, so at most one retry of a timeout fits.
    deadline_s: float = 60.0
    timeout_s: int = 30
    max_bytes: int = 20_000_000
    max_redirects: int = 5
    # trafilatura's guard against fetching loopback, private and link-local
    # addresses. On by default; tests and the demo serve on loopback and turn
    # it off explicitly, as an intranet user would.
    ssrf_protection: bool = True
    user_agent: str = USER_AGENT
    # politeness: robots.txt is obeyed, and one host gets one request at a
    # time with this many seconds between them; many hosts go in parallel
    respect_robots: bool = True
    host_delay_s: float = 2.0
    # the longest robots.txt `Crawl-delay` honoured (a longer one is cut to this)
    max_host_delay_s: float = 30.0
    # a host that fails to answer this many times in a row is skipped for the run
    breaker_after: int = 3
    threads: int = 8
    # article URLs taken from one feed or sitemap source per run
    max_urls_per_source: int = 1000

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"fetch timeout must be positive seconds, got {self.timeout_s}")
        if self.max_bytes <= 0:
            raise ValueError(f"fetch max_bytes must be positive, got {self.max_bytes}")
        if self.deadline_s <= 0:
            raise ValueError(f"fetch deadline must be positive seconds, got {self.deadline_s}")
        if self.host_delay_s < 0 or self.max_host_delay_s < 0:
            raise ValueError("fetch host_delay_s and max_host_delay_s must be >= 0")
        if self.threads < 1 or self.max_urls_per_source < 1 or self.breaker_after < 1:
            raise ValueError("fetch threads, max_urls_per_source and breaker_after must be >= 1")

    def trafilatura_config(self) -> ConfigParser:
        config = use_config()
        default = config["DEFAULT"]
        default["DOWNLOAD_TIMEOUT"] = str(self.timeout_s)
        default["MAX_FILE_SIZE"] = str(self.max_bytes)
        default["MAX_REDIRECTS"] = str(self.max_redirects)
        default["SSRF_PROTECTION"] = "on" if self.ssrf_protection else "off"
        # never retry a failed TLS handshake without certificate checks
        default["INSECURE_SSL_FALLBACK"] = "off"
        default["USER_AGENTS"] = self.user_agent
        return config


class _ThreadErrors(logging.Handler):
    """Collects trafilatura's download error messages for one thread."""

    def __init__(self, thread_id: int) -> None:
        super().__init__(level=logging.WARNING)
        self.thread_id = thread_id
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread_id:
            self.messages.append(record.getMessage())


@contextmanager
def _captured_download_errors() -> Iterator[_ThreadErrors]:
    logger = logging.getLogger("trafilatura.downloads")
    handler = _ThreadErrors(threading.get_ident())
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


# urllib3's long messages, and the plain reason a user reads instead
_PLAIN_REASONS = (
    ("Read timed out", "timed out waiting for the server"),
    ("timed out", "timed out"),
    ("Connection refused", "connection refused"),
    ("Connection reset", "connection reset by the server"),
    ("RemoteDisconnected", "the server closed the connection without answering"),
    ("too many redirects", "too many redirects (or a redirect loop)"),
    ("exceeds MAX_FILE_SIZE", "body over the size cap (after decompression)"),
    ("non-public address", "blocked: a loopback, private or link-local address (SSRF guard)"),
    ("Name or service not known", "unknown host name"),
    ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not valid"),
)


def _one_line(message: str, url: str) -> str:
    message = " ".join(message.replace(url, "").replace("download error:", "").split()).strip(" :")
    for marker, reason in _PLAIN_REASONS:
        if marker in message:
            return reason
    status = re.search(r"too many (\d{3}) error responses", message)
    if status:
        return f"HTTP {status.group(1)} after retries"
    return message[:300] or "download failed"


def download(
    url: str, config: FetchConfig, trafilatura_config: ConfigParser | None = None, evidence: WarcEvidence | None = None
) -> FetchedPage:
    """Download one URL, whatever its content type (a feed, a sitemap);
    never raises for network faults, records them instead. An answer is
    written to `evidence` as it came."""
    started = time.perf_counter()
    fetched_at = datetime.now(UTC).replace(tzinfo=None)
    traf_config = trafilatura_config or config.trafilatura_config()
    with _captured_download_errors() as errors:
        try:
            response = fetch_response(url, decode=False, config=traf_config)
        except Exception as exc:  # a malformed URL raises from urllib3
            response = None
            errors.messages.append(f"{type(exc).__name__}: {exc}")
    elapsed_ms = int((time.perf_counter() - started) * 1000)
    if response is None:
        reason = errors.messages[-1] if errors.messages else "no response"
        return FetchedPage(url=url, source="http", fetched_at=fetched_at, error=_one_line(reason, url), elapsed_ms=elapsed_ms)
    headers = response.headers or {}
    content_type = headers.get("content-type") or headers.get("Content-Type")
    if evidence is not None:
        evidence.keep(response.url or url, response.status, response.headers, bytes(response.data or b""), fetched_at)
    return FetchedPage(
        url=url,
        source="http",
        fetched_at=fetched_at,
        final_url=response.url or url,
        status=response.status,
        content_type=content_type,
        html=bytes(response.data) if response.data else None,
        elapsed_ms=elapsed_ms,
    )


def html_or_error(page: FetchedPage) -> FetchedPage:
    """Turn a response that is not an HTML page into a recorded error."""
    if page.error:
        return page
    if page.status is not None and page.status != 200:
        return replace(page, html=None, error=f"HTTP {page.status}")
    if not page.html:
        return replace(page, html=None, error="empty body")
    if page.content_type and not _is_html_type(page.content_type):
        return replace(page, html=None, error=f"not HTML: {page.content_type.split(';')[0].strip()}")
    return page


def _is_html_type(content_type: str) -> bool:
    mime = content_type.split(";")[0].strip().lower()
    return mime in ("text/html", "application/xhtml+xml", "text/plain", "") or mime.endswith("+html")


ROBOTS_DISALLOWED = "skipped: disallowed by robots.txt"
HOST_NOT_ANSWERING = "skipped: host not answering"
RUN_STOPPED = "skipped: the run was stopped"
DEADLINE = "timed out: no whole answer within the deadline"

# the faults of a host that does not answer: what trips its breaker
_NOT_ANSWERING = ("timed out", "connection reset", "connection refused", "the server closed the connection")


class HostTurns:
    """The one politeness mechanism, for articles, feeds, sitemaps and
    robots.txt alike: a host gets one request at a time, and the next one no
    sooner than its delay after the last ended. The delay is `host_delay_s`,
    or the host's robots.txt `Crawl-delay` when that is longer (up to
    `max_host_delay_s`)."""

    def __init__(self, config: FetchConfig, stop: threading.Event) -> None:
        self.config, self._stop = config, stop
        self._next: dict[str, float] = {}
        self._delay: dict[str, float] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def ask_for_delay(self, host: str, seconds: float) -> None:
        """The host asks for this many seconds between requests (robots.txt)."""
        with self._lock:
            self._delay[host] = max(self.config.host_delay_s, min(seconds, self.config.max_host_delay_s))

    def ready_at(self, host: str) -> float:
        """When the host may be asked next (time.monotonic)."""
        return self._next.get(host, 0.0)

    @contextmanager
    def turn(self, host: str) -> Iterator[bool]:
        """Wait for the host's turn and hold it for one request; gives False
        (at once) when the run is stopped meanwhile."""
        with self._lock:
            lock = self._locks.setdefault(host, threading.Lock())
        with lock:
            wait = self.ready_at(host) - time.monotonic()
            if self._stop.is_set() or (wait > 0 and self._stop.wait(wait)):
                yield False
                return
            try:
                yield True
            finally:
                self._next[host] = time.monotonic() + self._delay.get(host, self.config.host_delay_s)


class HostBreaker:
    """A host that failed to answer `after` times in a row is not asked again
    this run (its URLs are recorded as skipped, and tried by the next run)."""

    def __init__(self, after: int) -> None:
        self.after = after
        self._in_a_row: dict[str, int] = {}

    def is_open(self, host: str) -> bool:
        return self._in_a_row.get(host, 0) >= self.after

    def record(self, host: str, page: FetchedPage) -> None:
        not_answering = page.error is not None and page.error.startswith(_NOT_ANSWERING)
        self._in_a_row[host] = self._in_a_row.get(host, 0) + 1 if not_answering else 0


class Fetcher:
    """Fetches URLs for one run, politely and within deadlines.

    Every request (an article, a feed, a sitemap, robots.txt) waits for its
    host's turn (`HostTurns`); hosts are served by `threads` threads at once,
    the host whose turn comes first next. A URL gets `deadline_s` in all,
    retries included: past it, it is recorded as timed out and the run goes
    on. A host that stops answering (`breaker_after` timeouts, resets or
    refusals in a row) is skipped for the rest of the run. robots.txt is read
    once per host and run; a disallowed URL is recorded, not fetched. `stop`
    ends the work at once: the URLs not fetched are recorded as skipped.
    Every answer is written to `evidence`, when given, as it comes.
    """

    def __init__(self, config: FetchConfig, evidence: WarcEvidence | None = None) -> None:
        self.config = config
        self.evidence = evidence
        self._traf_config = config.trafilatura_config()
        self._stopped = threading.Event()
        self._turns = HostTurns(config, self._stopped)
        self._breaker = HostBreaker(config.breaker_after)
        self._robots: dict[str, RobotFileParser | None] = {}

    def stop(self) -> None:
        """Stop fetching: waits end, requests in flight are abandoned."""
        self._stopped.set()

    def fetch(self, urls: list[str]) -> list[FetchedPage]:
        """Fetch these URLs (courlan-normalized, as `normalize_urls` gives them); one page each, in order."""
        pages = {page.url: page for page in self.fetch_as_answered(urls)}
        return [pages.get(url) or _not_fetched(url, RUN_STOPPED) for url in urls]

    def fetch_as_answered(self, urls: list[str]) -> Iterator[FetchedPage]:
        """Fetch these URLs, giving each one's page as soon as it is done
        (in no set order): a slow host holds back only its own pages. Closing
        the iterator early stops the work."""
        by_host: dict[str, deque[str]] = {}
        done: SimpleQueue[FetchedPage | None] = SimpleQueue()
        for url in urls:
            host = _host(url)
            if host is None:
                done.put(_not_fetched(url, "not a fetchable URL"))
            else:
                by_host.setdefault(host, deque()).append(url)
        waiting = [(self._turns.ready_at(host), n, host) for n, host in enumerate(by_host)]
        heapq.heapify(waiting)
        busy = [0]
        changed = threading.Condition()

        def work() -> None:
            try:
                while True:
                    with changed:
                        while not waiting and busy[0] and not self._stopped.is_set():
                            changed.wait(0.5)
                        if not waiting or self._stopped.is_set():
                            changed.notify_all()
                            return
                        _, n, host = heapq.heappop(waiting)
                        busy[0] += 1
                    queue = by_host[host]
                    try:
                        url = queue.popleft()
                        done.put(html_or_error(self._polite_download(url, host)))
                        if self._breaker.is_open(host):
                            for skipped in queue:
                                done.put(_not_fetched(skipped, HOST_NOT_ANSWERING))
                            queue.clear()
                    finally:
                        with changed:
                            busy[0] -= 1
                            if queue:
                                heapq.heappush(waiting, (self._turns.ready_at(host), n, host))
                            changed.notify_all()
            finally:
                done.put(None)  # this thread is done

        threads = [threading.Thread(target=work, name=f"fetch-{i}", daemon=True) for i in range(min(self.config.threads, len(by_host)))]
        for thread in threads:
            thread.start()
        running = len(threads)
        try:
            while running or not done.empty():
                try:
                    page = done.get(timeout=0.5)  # a timeout: a signal to this thread (Ctrl-C) is not held up
                except Empty:
                    continue
                if page is None:
                    running -= 1
                else:
                    yield page
        finally:
            if running:  # stopped early: by the caller, a signal or an error
                self.stop()

    def discover(self, sources: list[Source]) -> list[Discovered]:
        """The article URLs of feed and sitemap sources, in the order given
        (a host's sources one after another, hosts in parallel)."""
        by_host: dict[str, list[Source]] = {}
        for source in sources:
            by_host.setdefault(_host(source.url) or "", []).append(source)
        hosts = deque(by_host.items())
        found: dict[Source, Discovered] = {}
        lock = threading.Lock()

        def work() -> None:
            while not self._stopped.is_set():
                with lock:
                    if not hosts:
                        return
                    host, host_sources = hosts.popleft()
                for source in host_sources:
                    download = partial(self._polite_download, host=host)
                    found[source] = discover_source(source, download, self.config.max_urls_per_source, self.config.max_bytes)

        self._run_threads(work, min(self.config.threads, len(by_host)))
        return [found.get(s) or Discovered(s, error=RUN_STOPPED) for s in sources]

    def _run_threads(self, work: Callable[[], None], n: int) -> None:
        """Run `work` in `n` daemon threads and wait for them. A signal to the
        waiting thread (Ctrl-C) stops the others' work; they are not waited for."""
        threads = [threading.Thread(target=work, name=f"fetch-{i}", daemon=True) for i in range(n)]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.5)
        except BaseException:
            self.stop()
            raise

    def _polite_download(self, url: str, host: str) -> FetchedPage:
        """One URL in its host's turn, within the deadline; never raises."""
        if self._breaker.is_open(host):
            return _not_fetched(url, HOST_NOT_ANSWERING)
        if self.config.respect_robots and not self._allowed(url, host):
            return _not_fetched(url, ROBOTS_DISALLOWED)
        with self._turns.turn(host) as ours:
            if not ours:
                return _not_fetched(url, RUN_STOPPED)
            page = self._within_deadline(url)
        self._breaker.record(host, page)
        return page

    def _within_deadline(self, url: str) -> FetchedPage:
        """Download in a thread of its own, given up at the deadline or when
        the run stops. A download given up may go on in the background until
        trafilatura's own retries end; nothing waits for it."""
        answer: list[FetchedPage] = []
        done = threading.Event()

        def download_one() -> None:
            try:
                answer.append(download(url, self.config, self._traf_config, self.evidence))
            finally:
                done.set()

        fetched_at = datetime.now(UTC).replace(tzinfo=None)
        started = time.monotonic()
        threading.Thread(target=download_one, name="download", daemon=True).start()
        deadline = started + self.config.deadline_s
        while not done.wait(min(0.25, max(0.0, deadline - time.monotonic()))):
            if self._stopped.is_set():
                return _not_fetched(url, RUN_STOPPED)
            if time.monotonic() >= deadline:
                elapsed_ms = int((time.monotonic() - started) * 1000)
                error = f"{DEADLINE} ({self.config.deadline_s:g} s)"
                return FetchedPage(url=url, source="http", fetched_at=fetched_at, error=error, elapsed_ms=elapsed_ms)
        return answer[0] if answer else FetchedPage(url=url, source="http", fetched_at=fetched_at, error="download failed")

    def _allowed(self, url: str, host: str) -> bool:
        if host not in self._robots:
            self._robots[host] = self._read_robots(url, host)
        parser = self._robots[host]
        return parser is None or parser.can_fetch(self.config.user_agent, url)

    def _read_robots(self, url: str, host: str) -> RobotFileParser | None:
        """The host's rules, in the host's turn like any request; None
        (everything allowed) when it has no readable robots.txt. A
        `Crawl-delay` there sets the host's delay."""
        parts = urlsplit(url)
        with self._turns.turn(host) as ours:
            if not ours:
                return None
            page = self._within_deadline(f"{parts.scheme}://{parts.netloc}/robots.txt")
            self._breaker.record(host, page)
            if page.error or page.status != 200 or not page.html:
                return None
            parser = RobotFileParser()
            parser.parse(page.html.decode("utf-8", errors="replace").splitlines())
            delay = parser.crawl_delay(self.config.user_agent)
            if delay:  # set within the turn: it spaces the next request already
                self._turns.ask_for_delay(host, float(delay))
            return parser


def _host(url: str) -> str | None:
    """The host a URL is asked of (scheme and authority), or None for a URL that cannot be fetched."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return f"{parts.scheme}://{parts.netloc.lower()}"


def normalize_urls(urls: list[str]) -> list[str]:
    """courlan's normal form of each URL (lower-case host, no tracking parameters), once each, in order."""
    return list(dict.fromkeys(normalize_url(u) for u in urls))


def _not_fetched(url: str, reason: str) -> FetchedPage:
    """The record of a URL that was not requested, and why."""
    return FetchedPage(url=url, source="http", fetched_at=datetime.now(UTC).replace(tzinfo=None), error=reason)
