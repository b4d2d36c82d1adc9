"""The archive stage: WARC records read as fetched pages, and what a damaged file still gives."""

import gzip

import pytest

from dedup.archive import DAMAGED, ArchiveError, read_warc
from tests.helpers import five_pages, write_warc
from tests.pages import CANAL_STORY, article_html


def test_warc_reader_reads_http_and_non_http_target_uris(tmp_path):
    text = article_html("Canal", CANAL_STORY).encode()
    path = write_warc(
        tmp_path / "a.warc.gz", [("https://canal.example/a", text, "text/html"), ("urn:test:canal-b", text, "text/html")]
    )
    pages = list(read_warc(path))
    assert [p.url for p in pages] == ["https://canal.example/a", "urn:test:canal-b"]
    assert all(p.ok and p.status == 200 and p.html == text for p in pages)
    assert pages[0].source == "warc:a.warc.gz"


def test_warc_reader_records_non_html_and_rejects_non_warc_files(tmp_path):
    path = write_warc(tmp_path / "b.warc", [("https://x.example/doc.pdf", b"%PDF-1.4", "application/pdf")], gz=False)
    (page,) = read_warc(path)
    assert page.error == "not HTML: application/pdf"
    garbage = tmp_path / "c.warc.gz"
    garbage.write_bytes(gzip.compress(b"this is not a warc file at all\n" * 10))
    with pytest.raises(ArchiveError, match="c.warc.gz"):
        list(read_warc(garbage))
    with pytest.raises(ArchiveError, match="no such WARC file"):
        list(read_warc(tmp_path / "missing.warc"))






def damage_of(pages):
    return [(p.url, p.error) for p in pages if p.error and p.error.startswith(DAMAGED)]


@pytest.mark.parametrize("gz", [True, False])
def test_a_warc_cut_inside_a_record_gives_the_pages_before_and_names_the_damage(tmp_path, gz):
    path, starts = five_pages(tmp_path / ("cut.warc.gz" if gz else "cut.warc"), gz=gz)
    data = path.read_bytes()
    path.write_bytes(data[: starts[3] + (starts[4] - starts[3]) // 2])  # the file ends inside the fourth record
    pages = list(read_warc(path))
    assert [p.url for p in pages if p.ok] == [f"https://paper.example/{n}" for n in range(3)]
    [(url, error)] = damage_of(pages)
    assert url == "https://paper.example/3" and f"{path.name}: the record at byte {starts[3]} is cut short" in error


def test_bytes_that_are_not_a_record_are_named_and_the_records_after_them_read(tmp_path):
    path, starts = five_pages(tmp_path / "garbage.warc.gz")
    data = path.read_bytes()
    garbage = b"not a record " * 40
    path.write_bytes(data[: starts[2]] + garbage + data[starts[2] :])
    pages = list(read_warc(path))
    assert [p.url for p in pages if p.ok] == [f"https://paper.example/{n}" for n in range(5)]
    [(url, error)] = damage_of(pages)
    assert url == "warc:garbage.warc.gz"
    assert f"after the one at byte {starts[1]}, up to byte {starts[2] + len(garbage)}" in error


@pytest.mark.parametrize("gz", [True, False])
def test_a_warc_cut_between_or_at_the_start_of_a_record_says_so(tmp_path, gz):
    path, starts = five_pages(tmp_path / ("end.warc.gz" if gz else "end.warc"), gz=gz)
    path.write_bytes(path.read_bytes()[: starts[4] + 20])  # the file ends 20 bytes into the fifth record
    pages = list(read_warc(path))
    assert [p.url for p in pages if p.ok] == [f"https://paper.example/{n}" for n in range(4)]
    [(_, error)] = damage_of(pages)
    assert "cut short" in error and path.name in error


def test_a_gzip_member_cut_short_in_the_middle_loses_its_record_only(tmp_path):
    path, starts = five_pages(tmp_path / "member.warc.gz")
    data = path.read_bytes()
    middle = (starts[2] + starts[3]) // 2
    path.write_bytes(data[:middle] + data[middle + 40 :])  # bytes missing inside the third record's member
    pages = list(read_warc(path))
    assert [p.url for p in pages if p.ok] == [f"https://paper.example/{n}" for n in (0, 1, 3, 4)]
    assert len(damage_of(pages)) == 1
