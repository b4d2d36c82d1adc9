"""The copy map (`reposts report`): its numbers are what SQL gives, and the
file it writes fetches nothing."""

import re
from datetime import datetime

import duckdb
import pytest

from dedup.store import Store
from flows.cli import main
from flows.copymap import Filters, read_copy_map, render_html
from flows.errors import UserError
from tests.helpers import stored_pages
from tests.pages import BAKERY_STORY, CANAL_STORY, SEED_DISCLAIMER, article_html, fetched


def page(host, story, title, published, tail=()):
    return fetched(f"https://{host}/{title.split()[0].lower()}", article_html(title, story, list(tail), published=published, site_name=host))


@pytest.fixture
def copied_web(db_path):
    """Two stories: the canal's on its paper, copied by a relay 2 h later and a mirror 4 h later;
    the bakery's on its paper, copied by the relay 30 min later."""
    stored_pages(
        db_path,
        [
            page("canal.example", CANAL_STORY, "Canal drained", "2026-02-01T08:00:00"),
            page("relay.example", CANAL_STORY, "Canal drained", "2026-02-01T10:00:00", [SEED_DISCLAIMER]),
            page("mirror.example", CANAL_STORY, "Canal drained", "2026-02-01T12:00:00", [SEED_DISCLAIMER]),
            page("bakery.example", BAKERY_STORY, "Bakery bread", "2026-02-02T07:00:00"),
            page("relay.example", BAKERY_STORY, "Bakery bread", "2026-02-02T07:30:00", [SEED_DISCLAIMER]),
        ],
    )
    return db_path


def copy_map(db, filters=None):
    with Store(db).connect(read_only=True) as con:
        return read_copy_map(con, filters or Filters())


def sql(db, query, params=()):
    con = duckdb.connect(db, read_only=True)
    try:
        return con.execute(query, list(params)).fetchall()
    finally:
        con.close()


def test_the_pictures_numbers_are_what_sql_gives(copied_web):
    found = copy_map(copied_web)
    pairs = sql(
        copied_web,
        """SELECT copy_host, source_host, count(*), median(epoch(lag)) / 3600.0 FROM repost_pairs
           WHERE copy_host <> source_host GROUP BY ALL ORDER BY 3 DESC, 1, 2""",
    )
    assert [(p.copier, p.source, p.copies, p.median_lag_hours) for p in found.pairs] == pairs
    assert {p.copier for p in found.pairs} == {"relay.example", "mirror.example"}
    hosts = {row[0]: row[1:] for row in sql(copied_web, "SELECT host, pages, copies, originals, aggregator_score FROM host_stats")}
    assert {h.host: (h.pages, h.copies, h.originals, h.aggregator_score) for h in found.hosts} == {h: hosts[h] for h in hosts}
    sizes = dict(sql(copied_web, "SELECT cluster_id, size FROM clusters WHERE size > 1"))
    assert {s.cluster_id: s.size for s in found.stories} == sizes
    canal = next(s for s in found.stories if s.title == "Canal drained")
    assert [(p.host, p.original, p.lag_hours) for p in canal.pages] == [
        ("canal.example", True, None),
        ("relay.example", False, 2.0),
        ("mirror.example", False, 4.0),
    ]
    assert [r[3] for r in found.runs] == [5]  # pages stored by the run


def test_the_report_is_one_file_that_fetches_nothing(copied_web, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["--db", copied_web, "report", "--out", str(out)]) == 0
    page_text = out.read_text(encoding="utf-8")
    assert page_text.count("<svg") == 3  # the network and the two stories' timelines
    # nothing to fetch: no source, link, stylesheet or import that leaves the file
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page_text, re.I)
    assert not re.search(r"url\(\s*[\"']?\s*(https?:)?//|@import|<script|<link|<iframe|<img", page_text, re.I)
    assert "relay.example" in page_text and "Canal drained" in page_text
    assert capsys.readouterr().out.strip() == f"report: {out.resolve()}"


def test_an_empty_database_and_a_single_cluster_make_a_report(tmp_path, copied_web):
    empty = str(tmp_path / "empty.duckdb")
    Store(empty).migrate()
    nothing = copy_map(empty)
    assert nothing.pairs == [] and nothing.stories == [] and nothing.hosts == []
    assert "No copies between two hosts here." in render_html(nothing, "empty.duckdb")

    [(bakery,)] = sql(copied_web, "SELECT cluster_id FROM documents WHERE host = 'bakery.example'")
    one = copy_map(copied_web, Filters(cluster=bakery))
    assert [(p.copier, p.source, p.copies) for p in one.pairs] == [("relay.example", "bakery.example", 1)]
    assert [s.cluster_id for s in one.stories] == [bakery]
    assert render_html(one, "web.duckdb").count("<svg") == 2


def test_filters_by_host_and_time(copied_web):
    mirror = copy_map(copied_web, Filters(host="mirror.example"))
    assert [(p.copier, p.source) for p in mirror.pairs] == [("mirror.example", "canal.example")]
    later = copy_map(copied_web, Filters(since=datetime(2026, 2, 2)))
    assert [(p.copier, p.source) for p in later.pairs] == [("relay.example", "bakery.example")]


def test_a_filter_that_matches_nothing_says_so_in_one_line(copied_web, tmp_path, capsys):
    with pytest.raises(UserError, match="no pages of host nowhere.example"):
        copy_map(copied_web, Filters(host="nowhere.example"))
    assert main(["--db", copied_web, "report", "--host", "nowhere.example", "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "reposts: error: no pages of host nowhere.example in the database"
    assert not (tmp_path / "r.html").exists()
