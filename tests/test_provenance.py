"""Original selection and repost trees, through the real Linker and a real DuckDB file, and the
clustering steps (assign_pages, decide_clusters) on hand-built members."""

from dataclasses import replace

import duckdb

from dedup.batch import Settings, prepare_pages
from dedup.linker import Linker
from dedup.models import Member, Similarity
from dedup.provenance import AggregatorHosts, ClusterState, assign_pages, decide_clusters
from dedup.store import Store
from tests.pages import BAKERY_STORY, CANAL_STORY, SEED_DISCLAIMER, ZH_DISCLAIMER, article_html, fetched

SETTINGS = Settings()
RELAY_NOTE = (
    "Note: this story was reproduced from the internet for sharing information only. Copyright remains with the original author."
)


def ingest(db: str, pages, run: int | None = None) -> int:
    store = Store(db)
    store.migrate()
    store.check_signature_params(SETTINGS.fingerprint.params())
    run_id = run or store.start_run("test", None, {})
    Linker(store, SETTINGS).link_batch(run_id, prepare_pages(pages, SETTINGS))
    return run_id


def original_page(published="2026-02-01T08:00:00"):
    return fetched(
        "https://canal.example/drain",
        article_html(
            "Canal drained", CANAL_STORY, published=published, site_name="Canal Courier", canonical="https://canal.example/drain"
        ),
    )


def copy_page(host, paragraphs=CANAL_STORY, tail=(SEED_DISCLAIMER,), published=None, canonical=None, n=1):
    return fetched(
        f"https://{host}/news/{n}",
        article_html("Canal drained", paragraphs, list(tail), published=published, site_name=host, canonical=canonical),
    )


def cluster_of(db, url):
    con = duckdb.connect(db, read_only=True)
    try:
        return con.execute(
            """SELECT d.cluster_id, c.original_doc_id, o.url, c.reason, c.attributed_source, c.size
               FROM documents d JOIN clusters c USING (cluster_id) LEFT JOIN documents o ON o.doc_id = c.original_doc_id
               WHERE d.url = ?""",
            [url],
        ).fetchone()
    finally:
        con.close()


def test_a_repost_dated_before_its_source_does_not_become_the_original(db_path):
    ingest(db_path, [copy_page("relay.example", published="2026-01-30T08:00:00"), original_page()])
    _, _, original_url, reason, _, size = cluster_of(db_path, "https://relay.example/news/1")
    assert size == 2 and original_url == "https://canal.example/drain"
    assert "without repost markers" in reason


def test_a_repost_with_no_date_and_an_excerpt_join_the_original(db_path):
    ingest(db_path, [original_page(), copy_page("relay.example"), copy_page("digest.example", paragraphs=CANAL_STORY[:1], n=2)])
    cluster = cluster_of(db_path, "https://digest.example/news/2")
    assert cluster[2] == "https://canal.example/drain" and cluster[5] == 3


def test_a_copy_of_a_copy_points_at_the_copy_whose_disclaimer_it_carries(db_path):
    first = copy_page("relay.example", tail=("Source: Canal Courier", RELAY_NOTE))
    second = copy_page("mirror.example", tail=(RELAY_NOTE, ZH_DISCLAIMER), n=2)
    ingest(db_path, [original_page(), first, second])
    con = duckdb.connect(db_path, read_only=True)
    edges = dict(
        con.execute(
            "SELECT c.url, s.url FROM reposts r JOIN documents c ON c.doc_id = r.doc_id JOIN documents s ON s.doc_id = r.source_doc_id"
        ).fetchall()
    )
    evidence = con.execute(
        "SELECT evidence FROM reposts r JOIN documents d USING (doc_id) WHERE d.url LIKE '%mirror%'"
    ).fetchone()[0]
    con.close()
    assert edges["https://relay.example/news/1"] == "https://canal.example/drain"
    assert edges["https://mirror.example/news/2"] == "https://relay.example/news/1"
    assert "copy of a copy" in evidence


def test_a_cluster_of_copies_names_no_original_but_the_credited_source(db_path):
    ingest(
        db_path,
        [
            copy_page("relay.example", tail=("Source: Canal Courier", SEED_DISCLAIMER)),
            copy_page("mirror.example", tail=(ZH_DISCLAIMER,), n=2),
        ],
    )
    _, original, _, reason, attributed, size = cluster_of(db_path, "https://relay.example/news/1")
    assert size == 2 and original is None
    assert attributed == "Canal Courier"
    assert "not in the database" in reason


def test_an_original_arriving_in_a_later_run_takes_over_and_the_cluster_keeps_its_id(db_path):
    ingest(db_path, [copy_page("relay.example"), copy_page("mirror.example", tail=(ZH_DISCLAIMER,), n=2)])
    cluster_id, original, *_ = cluster_of(db_path, "https://relay.example/news/1")
    assert original is None
    ingest(db_path, [original_page()])
    after = cluster_of(db_path, "https://canal.example/drain")
    assert after[0] == cluster_id and after[2] == "https://canal.example/drain" and after[5] == 3
    con = duckdb.connect(db_path, read_only=True)
    kinds = [
        k for (k,) in con.execute("SELECT kind FROM cluster_events WHERE cluster_id = ? ORDER BY run_id", [cluster_id]).fetchall()
    ]
    con.close()
    assert kinds[0] == "created" and "grew" in kinds and "original_changed" in kinds


def test_an_unrelated_story_from_the_same_aggregator_stays_apart(db_path):
    ingest(db_path, [original_page(), copy_page("relay.example"), copy_page("relay.example", paragraphs=BAKERY_STORY, n=3)])
    assert cluster_of(db_path, "https://relay.example/news/3")[5] == 1
    assert cluster_of(db_path, "https://relay.example/news/1")[5] == 2


def test_cross_domain_canonical_picks_the_original_among_unmarked_pages(db_path):
    # neither page carries a disclaimer; the copy's canonical names the source
    quiet_copy = copy_page("quiet.example", tail=(), canonical="https://canal.example/drain", published="2026-01-01T00:00:00")
    ingest(db_path, [quiet_copy, original_page()])
    _, _, original_url, reason, _, _ = cluster_of(db_path, "https://quiet.example/news/1")
    assert original_url == "https://canal.example/drain"
    assert "canonical" in reason


def test_ingesting_the_same_pages_again_adds_nothing(db_path):
    pages = [original_page(), copy_page("relay.example")]
    ingest(db_path, pages)
    ingest(db_path, pages)
    con = duckdb.connect(db_path, read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT url) FROM documents").fetchone() == (2, 2)
    assert con.execute("SELECT count(*) FROM clusters").fetchone()[0] == 1
    con.close()


def test_settings_are_checked_against_the_stored_signatures(db_path):
    ingest(db_path, [original_page()])
    store = Store(db_path)
    other = replace(SETTINGS.fingerprint, num_perm=64)
    try:
        store.check_signature_params(other.params())
    except Exception as exc:  # noqa: BLE001
        assert "minhash.num_perm: stored 128, configured 64" in str(exc)
    else:
        raise AssertionError("a database fingerprinted with other settings was accepted")


# assign_pages and decide_clusters on hand-built members: no pages, no database


def hand_member(doc_id, host, *, marks_copy=False, n_shingles=100):
    return Member(doc_id=doc_id, url=f"https://{host}/{doc_id}", host=host, n_shingles=n_shingles, marks_copy=marks_copy)


def pair_table(pairs):
    """similarity_of over a table of (a, b) -> Similarity(jaccard, share of a in b, share of b in a)."""

    def similarity_of(a, b):
        if (a, b) in pairs:
            return pairs[(a, b)]
        return pairs.get((b, a), Similarity(0.0, 0.0, 0.0)).flipped()

    return similarity_of


def neighbours_of(pairs):
    found = {}
    for (a, b), s in pairs.items():
        found.setdefault(a, {})[b] = s
        found.setdefault(b, {})[a] = s.flipped()
    return found


def test_new_pages_join_the_stored_cluster_whose_centre_they_match_and_the_decision_says_what_changed():
    provenance = SETTINGS.provenance
    stored = hand_member(1, "paper.example")
    stored.cluster_id = 1
    copy, unrelated = hand_member(2, "relay.example", marks_copy=True), hand_member(3, "other.example")
    members = {m.doc_id: m for m in (stored, copy, unrelated)}
    state = ClusterState(members=members, cluster_members={1: [1]}, previous_original={1: 1}, previous_size={1: 1})
    pairs = {(1, 2): Similarity(0.9, 0.95, 0.95)}
    aggregators = AggregatorHosts({m.host: (1, int(m.marks_copy)) for m in members.values()}, provenance)
    assign_pages(state, [2, 3], neighbours_of(pairs), pair_table(pairs), aggregators, provenance)
    assert (copy.cluster_id, unrelated.cluster_id) == (1, 3)  # the copy joins; the other page founds its own
    assert state.new_clusters == {3}
    clusters, reposts, events = decide_clusters(state, {1, 3}, pair_table(pairs), aggregators, provenance)
    assert {c.cluster_id: c.original_doc_id for c in clusters} == {1: 1, 3: 3}
    assert [(r.doc_id, r.source_doc_id) for r in reposts] == [(2, 1)]
    assert sorted((e.cluster_id, e.kind) for e in events) == [(1, "grew"), (3, "created")]


def test_a_page_that_matches_two_clusters_centres_merges_them_into_the_older_id():
    provenance = SETTINGS.provenance
    first, second = hand_member(1, "paper.example"), hand_member(2, "daily.example")
    first.cluster_id, second.cluster_id = 1, 2
    # a fuller page of the same story, unmarked: it becomes a centre and matches both
    fuller = hand_member(3, "gazette.example", n_shingles=200)
    members = {m.doc_id: m for m in (first, second, fuller)}
    state = ClusterState(members=members, cluster_members={1: [1], 2: [2]}, previous_original={1: 1, 2: 2}, previous_size={1: 1, 2: 1})
    pairs = {(1, 3): Similarity(0.5, 0.95, 0.5), (2, 3): Similarity(0.5, 0.95, 0.5)}
    aggregators = AggregatorHosts({m.host: (1, 0) for m in members.values()}, provenance)
    assign_pages(state, [3], neighbours_of(pairs), pair_table(pairs), aggregators, provenance)
    assert state.merged_into == {2: 1} and {m.cluster_id for m in members.values()} == {1}
    clusters, _, events = decide_clusters(state, {1}, pair_table(pairs), aggregators, provenance)
    assert [(c.cluster_id, sorted(c.members)) for c in clusters] == [(1, [1, 2, 3])]
    assert ("merged", 2) in {(e.kind, e.other_cluster_id) for e in events}
