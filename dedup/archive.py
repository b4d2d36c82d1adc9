"""Archive stage: read HTTP responses from WARC files (.warc, .warc.gz).

Each response record becomes a `FetchedPage` with source "warc:<name>", the
same value a live fetch produces, so everything after this stage is shared.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
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


DAMAGED = "damaged archive"

# where a record can start: a gzip member, or an uncompressed WARC header
_RECORD_STARTS = (b"\x1f\x8b\x08", b"WARC/1.")


def read_warc(
    path: str | Path, on_offset: Callable[[int], None] | None = None
) -> Iterator[FetchedPage]:
    """Yield the response records of a WARC file as fetched pages.

    Raises ArchiveError when the file is missing or is not a WARC file.

    A damaged file gives what it holds: a record cut short (the file, or a
    gzip member, ends inside it) and bytes that are not a record each give
    an error page (`DAMAGED`: the file, the byte offset and the damage; the
    URL of a cut record, else `warc:<name>`), and the records
    before and after them are read as usual (from the next place a record
    starts).

    `on_offset` is told how many bytes of the file have been read, once per
    record (for progress reports).
    """
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"no such WARC file: {path}")
    source = f"warc:{path.name}"
    size = path.stat().st_size
    with path.open("rb") as stream:
        start, end, read_any = 0, 0, False
        while start is not None:
            stream.seek(start)
            records = ArchiveIterator(stream, check_digests=False)
            record_offset = 0
            try:
                for record in records:
                    record_offset = start + records.offset  # where this record starts (get_record_offset would read it)
                    is_warc = record.format.startswith("warc")  # a WARC record, not bytes read as one
                    read_any = read_any or is_warc
                    if on_offset:
                        on_offset(stream.tell())
                    url = record.rec_headers.get_header("WARC-Target-URI") or ""
                    if is_warc and not record.rec_headers.get_header("WARC-Record-ID"):
                        # a header every record has, missing: the file ends inside this record's header
                        yield _damage(path, url or None, f"the record at byte {record_offset} is cut short (in its header)")
                        start = _next_record_start(stream, record_offset + 1)
                        break
                    page = None
                    if record.rec_type == "response":
                        page = _page_from_record(record, url, source)
                        record.raw_stream.read()  # what the record's length says is left, if any
                        if record.raw_stream.limit:  # the bytes ran out first
                            start = _next_record_start(stream, record_offset + 1)
                            where = "the file ends" if start is None else f"the next record starts at byte {start}"
                            yield _damage(path, url, f"the record at byte {record_offset} is cut short ({where})")
                            break
                    records.read_to_end()  # what the iterator does before the next record anyway
                    end = start + records.offset
                    if page is not None:
                        yield page
                else:
                    start = None
                    if _holds_more_than_blank_lines(stream, end):  # a record cut short before it could be read
                        yield _damage(path, None, f"the {size - end} bytes from byte {end} are not a whole record (cut short)")
            except (ArchiveLoadFailed, zlib.error, EOFError, OSError, ValueError) as exc:
                if not read_any:
                    what = "is not a readable WARC file" if isinstance(exc, ArchiveLoadFailed) else "is damaged"
                    raise ArchiveError(f"{path.name} {what}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from exc
                start = _next_record_start(stream, record_offset + 1)
                where = f"up to byte {start}" if start is not None else "to the end of the file"
                yield _damage(path, None, f"no record can be read after the one at byte {record_offset}, {where}")


def _holds_more_than_blank_lines(stream, offset: int) -> bool:
    stream.seek(offset)
    return bool(stream.read(1 << 16).strip())


def _damage(path: Path, url: str | None, what: str) -> FetchedPage:
    """The error page of a damaged place in a WARC file (`url`: the damaged record's, if known)."""
    return FetchedPage(
        url=url or f"warc:{path.name}",
        source=f"warc:{path.name}",
        fetched_at=datetime.now(UTC).replace(tzinfo=None),
        error=f"{DAMAGED}: {path.name}: {what}",
    )


def _next_record_start(stream, after: int, chunk: int = 1 << 20) -> int | None:
    """The offset of the next place at or after `after` where a record can
    start and does (a gzip member or a WARC header that reads as a record)."""
    overlap = max(len(magic) for magic in _RECORD_STARTS) - 1
    base = after
    while True:
        stream.seek(base)
        data = stream.read(chunk)
        if not data:
            return None
        position = 0
        while True:
            found = [i for i in (data.find(magic, position) for magic in _RECORD_STARTS) if i >= 0]
            if not found:
                break
            position = min(found)
            if _reads_as_record(stream, base + position):
                return base + position
            position += 1
        if len(data) < chunk:
            return None
        base += len(data) - overlap


def _reads_as_record(stream, offset: int) -> bool:
    stream.seek(offset)
    try:
        next(iter(ArchiveIterator(stream, check_digests=False)))
        return True
    except (ArchiveLoadFailed, zlib.error, EOFError, OSError, ValueError, StopIteration):
        return False


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
