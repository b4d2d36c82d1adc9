"""`reposts rebuild`: every stored page linked again from its stored text,
ids and history kept, and the same clusters as a fresh ingest with the
settings it was rebuilt with."""

from dataclasses import replace

import duckdb
import pytest

from dedup.batch import Settings
from dedup.clean import CleanConfig, rules_for
from dedup.models import ClusterEvent
from dedup.rebuild import kept_cluster_ids, rebuild_events
from dedup.store import Store, StoreError
from flows.cli import main
from flows.rebuild import rebuild
from tests.helpers import stored_pages
from tests.pages import SEED_DISCLAIMER, article_html, fetched, generated_story


def stories(first: int, n: int) -> list:
    """n stories, each on its paper and copied by a relay with the seed disclaimer."""
    pages = []
    for i in range(first, first + n):
        story = generated_story(i)
        pages.append(fetched(f"https://paper{i % 3}.example/{i}", article_html(f"Story {i}", story, site_name=f"Paper {i % 3}")))
        pages.append(fetched(f"https://relay.example/{i}", article_html(f"Story {i}", story, [SEED_DISCLAIMER], site_name="Relay")))
    return pages


def state(db: str) -> dict:
    con = duckdb.connect(db, read_only=True)
    try:
        return {
            "pages": con.execute("SELECT doc_id, url, run_id, cluster_id FROM documents ORDER BY doc_id").fetchall(),
            "clusters": {
                frozenset(urls)
                for (urls,) in con.execute("SELECT list(url) FROM documents GROUP BY cluster_id").fetchall()
            },
            "originals": con.execute(
                "SELECT c.cluster_id, o.url FROM clusters c LEFT JOIN documents o ON o.doc_id = c.original_doc_id ORDER BY 1"
            ).fetchall(),
            "runs": con.execute("SELECT run_id, kind FROM runs ORDER BY run_id").fetchall(),
            "events": con.execute("SELECT run_id, cluster_id, kind FROM cluster_events ORDER BY ALL").fetchall(),
            "markers": con.execute("SELECT count(*) FROM markers").fetchone()[0],
        }
    finally:
        con.close()


@pytest.fixture
def two_runs(db_path):
    stored_pages(db_path, stories(0, 4))
    stored_pages(db_path, stories(4, 3))
    return db_path


def test_a_rebuild_with_the_same_settings_changes_nothing_but_adds_its_run(two_runs):
    before = state(two_runs)
    summary = rebuild(two_runs, Settings())
    after = state(two_runs)
    assert after["pages"] == before["pages"]  # ids, runs and clusters of every page
    assert after["clusters"] == before["clusters"] and after["originals"] == before["originals"]
    assert after["runs"] == [*before["runs"], (3, "rebuild")]
    assert after["events"] == before["events"]  # the history, and no change to add to it
    assert summary["clusters_kept"] == summary["clusters"] == 7 and summary["pages"] == 14
    kept = Store(summary["kept_as"])
    assert kept.row_counts()[0] == 14  # the database as it was, beside it


def test_a_rebuild_with_other_fingerprint_settings_gives_a_fresh_ingests_clusters(two_runs, tmp_path):
    other = replace(Settings(), fingerprint=replace(Settings().fingerprint, word_ngram=3))
    with pytest.raises(StoreError, match="reposts rebuild"):
        Store(two_runs).check_signature_params(other.fingerprint.params())
    before = state(two_runs)
    rebuild(two_runs, other)
    fresh = str(tmp_path / "fresh.duckdb")
    stored_pages(fresh, stories(0, 4), other)
    stored_pages(fresh, stories(4, 3), other)
    after = state(two_runs)
    assert [(d, u, r) for d, u, r, _ in after["pages"]] == [(d, u, r) for d, u, r, _ in before["pages"]]
    assert after["clusters"] == state(fresh)["clusters"]
    Store(two_runs).check_signature_params(other.fingerprint.params())  # now made with these
    with pytest.raises(StoreError):
        Store(two_runs).check_signature_params(Settings().fingerprint.params())


def test_a_rebuild_with_the_rules_on_strips_what_an_ingest_without_them_kept(db_path, capsys):
    no_rules = replace(Settings(), clean=CleanConfig(rules=rules_for("none", ())))
    stored_pages(db_path, stories(0, 2), no_rules)
    assert state(db_path)["markers"] == 0
    assert main(["--db", db_path, "rebuild"]) == 0
    assert state(db_path)["markers"] == 2  # the relay's disclaimer on each copy
    out = capsys.readouterr().out
    assert "4 pages linked again" in out and "before-rebuild" in out


def test_the_cluster_with_most_of_an_old_clusters_pages_keeps_its_id():
    old = {1: 10, 2: 10, 3: 10, 4: 20, 5: 20, 6: 30}
    # 10 split (1, 2 stay together, 3 leaves), 20 and 30 merged into one
    new = {1: 1, 2: 1, 3: 2, 4: 3, 5: 3, 6: 3, 7: 4}
    assert kept_cluster_ids(old, new) == {1: 10, 3: 20, 2: 31, 4: 32}
    final = {doc: {1: 10, 3: 20, 2: 31, 4: 32}[c] for doc, c in new.items()}
    events = rebuild_events(old, final, {10: 1, 20: 4, 30: 6}, {10: 1, 20: 5, 31: 3, 32: 7})
    assert events == [
        ClusterEvent(10, "rebuilt", "rebuild: 0 page(s) joined, 1 left"),
        ClusterEvent(20, "rebuilt", "rebuild: 1 page(s) joined, 0 left"),
        ClusterEvent(20, "original_changed", "rebuild: 4 -> 5"),
        ClusterEvent(31, "created", "rebuild: 1 page(s)"),
        ClusterEvent(32, "created", "rebuild: 1 page(s)"),
        ClusterEvent(20, "merged", "rebuild: cluster 30 merged in", other_cluster_id=30),
    ]
