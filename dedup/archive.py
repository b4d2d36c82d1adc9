"""Archive stage: read HTTP responses from WARC files (.warc, .warc.gz).

Each response record becomes a `FetchedPage` with source "warc:<name>", the
same value a live fetch produces, so everything after this stage is shared.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container, Iterator
from datetime import datetime
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed
from warcio.statusandheaders import StatusAndHeadersParser, StatusAndHeadersParserException

from dedup.fetch import html_or_error
from dedup.models import FetchedPage

# warcio warns on stderr for every target URI with a space in it and then
# percent-encodes it; the encoded URL is what we store, the warning is noise.
logging.getLogger("warcio.recordloader").setLevel(logging.ERROR)
logging.getLogger("warcio").setLevel(logging.ERROR)


class ArchiveError(Exception):
    """A WARC file that cannot be read at all."""


def _parse_warc_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError:
        return None


def read_warc(
    path: str | Path, skip_urls: Container[str] = frozenset(), on_offset: Callable[[int], None] | None = None
) -> Iterator[FetchedPage]:
    """Yield the response records of a WARC file as fetched pages.

    Records whose URL is in `skip_urls` are passed over without reading their
    payload (an ingest that resumes after a crash skips what it stored).
    Raises ArchiveError when the file is missing or is not a WARC file; a
    record cut short at the end of a file ends the iteration with an error page.
    `on_offset` is told how many bytes of the file have been read, once per
    record (for progress reports).
    """
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"no such WARC file: {path}")
    source = f"warc:{path.name}"
    with path.open("rb") as stream:
        try:
            records = ArchiveIterator(stream, check_digests=False)
            for record in records:
                if on_offset:
                    on_offset(stream.tell())
                if record.rec_type != "response":
                    continue
                url = record.rec_headers.get_header("WARC-Target-URI") or ""
                if url in skip_urls:
                    continue
                yield _page_from_record(record, url, source)
        except ArchiveLoadFailed as exc:
            raise ArchiveError(f"{path.name} is not a readable WARC file: {' '.join(str(exc).split())[:200]}") from exc
        except (EOFError, OSError, ValueError) as exc:
            raise ArchiveError(f"{path.name} is damaged: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from exc


def _page_from_record(record, url: str, source: str) -> FetchedPage:
    fetched_at = _parse_warc_date(record.rec_headers.get_header("WARC-Date")) or datetime(1970, 1, 1)
    http_headers = record.http_headers
    stream = record.content_stream() if http_headers is not None else record.raw_stream
    if http_headers is None:
        # warcio parses the HTTP head only for http(s) target URIs; archives
        # also hold responses under other identifiers, so parse it here.
        try:
            http_headers = StatusAndHeadersParser(["HTTP/1.0", "HTTP/1.1"], verify=False).parse(stream)
        except (StatusAndHeadersParserException, EOFError) as exc:
            return FetchedPage(url=url, source=source, fetched_at=fetched_at, error=f"unparseable HTTP response: {exc}")
    status_text = http_headers.get_statuscode() or ""
    status = int(status_text) if status_text.isdigit() else None
    content_type = http_headers.get_header("Content-Type")
    body = stream.read()
    page = FetchedPage(
        url=url,
        source=source,
        fetched_at=fetched_at,
        final_url=url,
        status=status,
        content_type=content_type,
        html=body,
        elapsed_ms=0,
    )
    return html_or_error(page)
