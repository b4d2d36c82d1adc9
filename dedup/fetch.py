"""Fetch stage: download pages with trafilatura's downloader.

Every attempt becomes a `FetchedPage`, failed ones too, with a one-line
error. trafilatura logs the reason of a failed download and returns None, so
the reason is captured from its log records for the calling thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from configparser import ConfigParser
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from trafilatura.downloads import fetch_response
from trafilatura.settings import use_config

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

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"fetch timeout must be positive seconds, got {self.timeout_s}")
        if self.max_bytes <= 0:
            raise ValueError(f"fetch max_bytes must be positive, got {self.max_bytes}")

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


def _one_line(message: str, url: str) -> str:
    message = message.replace(url, "").replace("download error:", "").strip(" :")
    return " ".join(message.split())[:300] or "download failed"


def fetch_page(url: str, config: FetchConfig, trafilatura_config: ConfigParser | None = None) -> FetchedPage:
    """Fetch one URL; never raises for network faults, records them instead."""
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
    page = FetchedPage(
        url=url,
        source="http",
        fetched_at=fetched_at,
        final_url=response.url or url,
        status=response.status,
        content_type=content_type,
        html=bytes(response.data) if response.data else None,
        elapsed_ms=elapsed_ms,
    )
    return html_or_error(page)


def html_or_error(page: FetchedPage) -> FetchedPage:
    """Turn a response that is not an HTML page into a recorded error."""
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
