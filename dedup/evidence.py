"""Evidence: what a crawl fetched, kept in a WARC file per run (warcio).

Every answer a crawl gets (an article, a feed, a sitemap, robots.txt, error
pages and non-HTML answers too) is written as a request record and its
response record as soon as it arrives, each pair flushed as whole gzip
members, so a run that is killed leaves a file that reads up to its last
answer. A fetch that got no answer (a timeout, a refused connection) has no
record here; it is a `fetches` row.

What the records hold, and what they cannot:
- the response is the one that answered: a redirected URL is archived under
  the URL it ended at (the downloader follows redirects without showing the
  hops);
- the body is as the downloader read it, decompressed: the response's
  `Content-Encoding` and `Transfer-Encoding` are dropped and its
  `Content-Length` is the body's;
- the request record holds the method, the URL and the User-Agent sent.

`reposts ingest` reads these files like any WARC file, so a crawl can be
processed again when extraction or cleaning improves.
"""

from __future__ import annotations

import threading
from datetime import datetime
from http import HTTPStatus
from io import BytesIO
from pathlib import Path
from urllib.parse import urlsplit

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

# headers that describe the bytes on the wire, not the body kept
_WIRE_HEADERS = frozenset({"content-encoding", "transfer-encoding", "content-length"})


class WarcEvidence:
    """One run's WARC file, written by the fetch threads as answers come."""

    def __init__(self, path: Path, user_agent: str) -> None:
        self.path = path
        self.user_agent = user_agent
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")
        self._writer = WARCWriter(self._file, gzip=True)
        self._lock = threading.Lock()

    def keep(self, url: str, status: int, headers: dict[str, str] | None, body: bytes, fetched_at: datetime) -> None:
        """Write the request and the response that answered it (at `url`, where the redirects ended)."""
        date = fetched_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        kept_headers = [(name, value) for name, value in (headers or {}).items() if name.lower() not in _WIRE_HEADERS]
        kept_headers.append(("Content-Length", str(len(body))))
        response = self._writer.create_warc_record(
            url,
            "response",
            payload=BytesIO(body),
            length=len(body),
            http_headers=StatusAndHeaders(_status_line(status), kept_headers, protocol="HTTP/1.1"),
            warc_headers_dict={"WARC-Date": date},
        )
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = self._writer.create_warc_record(
            url,
            "request",
            http_headers=StatusAndHeaders(
                f"GET {target} HTTP/1.1",
                [("Host", parts.netloc), ("User-Agent", self.user_agent)],
                is_http_request=True,
            ),
            warc_headers_dict={"WARC-Date": date},
        )
        with self._lock:
            if self._file.closed:  # a download given up at its deadline that answered after the run
                return
            self._writer.write_request_response_pair(request, response)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"
