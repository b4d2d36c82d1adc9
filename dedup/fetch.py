"""Fetch stage: download pages with trafilatura's downloader.

Every attempt becomes a `FetchedPage`, failed ones too, with a one-line
error. trafilatura logs the reason of a failed download and returns None, so
the reason is captured from its log records for the calling thread.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from configparser import ConfigParser
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

from courlan import UrlStore, normalize_url
from trafilatura.downloads import fetch_response, load_download_buffer
from trafilatura.settings import use_config

from dedup.discover import Discovered, Source, discover_source
from dedup.models import FetchedPage

USER_AGENT = "reposts/0.1 (repost provenance crawler)"


@dataclass(frozen=True)
class FetchConfig:
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
    threads: int = 8
    # article URLs taken from one feed or sitemap source per run
    max_urls_per_source: int = 1000

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"fetch timeout must be positive seconds, got {self.timeout_s}")
        if self.max_bytes <= 0:
            raise ValueError(f"fetch max_bytes must be positive, got {self.max_bytes}")
        if self.host_delay_s < 0 or self.threads < 1 or self.max_urls_per_source < 1:
            raise ValueError("fetch host_delay_s must be >= 0, threads and max_urls_per_source >= 1")

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


def fetch_page(url: str, config: FetchConfig, trafilatura_config: ConfigParser | None = None) -> FetchedPage:
    """Fetch one page; never raises for network faults, records them instead
    (a response that is not an HTML page is recorded as an error too)."""
    return html_or_error(download(url, config, trafilatura_config))


def download(url: str, config: FetchConfig, trafilatura_config: ConfigParser | None = None) -> FetchedPage:
    """Download one URL, whatever its content type (a feed, a sitemap);
    never raises for network faults, records them instead."""
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


class Fetcher:
    """Fetches URLs for one run, politely.

    The order comes from trafilatura's download buffer over a courlan
    UrlStore: each round takes at most one URL per host, and a host is not
    asked again before `host_delay_s`; the URLs of a round are fetched in
    parallel threads. robots.txt is read once per host and run (with the same
    downloader and SSRF guard); a disallowed URL is recorded, not fetched.
    """

    def __init__(self, config: FetchConfig) -> None:
        self.config = config
        self._traf_config = config.trafilatura_config()
        self._url_store = UrlStore(compressed=False, strict=False)
        self._robots: dict[str, RobotFileParser | None] = {}
        self._robots_lock = threading.Lock()

    def fetch(self, urls: list[str]) -> list[FetchedPage]:
        """Fetch these URLs (courlan-normalized, as `normalize_urls` gives them); one page each."""
        pages: dict[str, FetchedPage] = {}
        self._url_store.add_urls(urls)
        with ThreadPoolExecutor(max_workers=self.config.threads) as pool:
            while not self._url_store.done:
                round_urls, self._url_store = load_download_buffer(self._url_store, self.config.host_delay_s)
                for page in pool.map(self._fetch_one, round_urls):
                    pages[page.url] = page
        # a URL the store refused to queue is reported, not dropped
        return [pages.get(url) or _not_fetched(url, "not a fetchable URL") for url in urls]

    def _fetch_one(self, url: str) -> FetchedPage:
        if self.config.respect_robots and not self._allowed(url):
            return _not_fetched(url, ROBOTS_DISALLOWED)
        return fetch_page(url, self.config, self._traf_config)

    def discover(self, sources: list[Source]) -> list[Discovered]:
        """The article URLs of feed and sitemap sources, in the order given.

        A host's sources are read one download at a time, `host_delay_s`
        apart; different hosts in parallel threads. robots.txt applies."""
        by_host: dict[str, list[Source]] = {}
        for source in sources:
            by_host.setdefault(urlsplit(source.url).netloc.lower(), []).append(source)
        found: dict[Source, Discovered] = {}

        def one_host(host_sources: list[Source]) -> None:
            last = [0.0]

            def polite_download(url: str) -> FetchedPage:
                wait = last[0] + self.config.host_delay_s - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                try:
                    if self.config.respect_robots and not self._allowed(url):
                        return _not_fetched(url, ROBOTS_DISALLOWED)
                    return download(url, self.config, self._traf_config)
                finally:
                    last[0] = time.monotonic()

            for source in host_sources:
                found[source] = discover_source(source, polite_download, self.config.max_urls_per_source, self.config.max_bytes)

        with ThreadPoolExecutor(max_workers=self.config.threads) as pool:
            list(pool.map(one_host, by_host.values()))
        return [found[s] for s in sources]

    def _allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        root = f"{parts.scheme}://{parts.netloc}"
        with self._robots_lock:
            if root not in self._robots:
                self._robots[root] = self._read_robots(root)
            parser = self._robots[root]
        return parser is None or parser.can_fetch(self.config.user_agent, url)

    def _read_robots(self, root: str) -> RobotFileParser | None:
        """The host's rules; None (everything allowed) when it has no readable robots.txt."""
        response = fetch_response(f"{root}/robots.txt", decode=False, config=self._traf_config)
        if response is None or response.status != 200 or not response.data:
            return None
        parser = RobotFileParser()
        parser.parse(bytes(response.data).decode("utf-8", errors="replace").splitlines())
        return parser


def normalize_urls(urls: list[str]) -> list[str]:
    """courlan's normal form of each URL (lower-case host, no tracking parameters), once each, in order."""
    return list(dict.fromkeys(normalize_url(u) for u in urls))


def _not_fetched(url: str, reason: str) -> FetchedPage:
    """The record of a URL that was not requested, and why."""
    return FetchedPage(url=url, source="http", fetched_at=datetime.now(UTC).replace(tzinfo=None), error=reason)
