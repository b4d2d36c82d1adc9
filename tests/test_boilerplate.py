"""Learned host boilerplate: a site's own furniture is learned from its pages, story text is not."""

import duckdb

from dedup.batch import Settings, prepare_pages
from dedup.boilerplate import StoredLineKeys
from dedup.fingerprint import fingerprint
from dedup.linker import Linker
from dedup.store import Store, migrations
from tests.pages import BAKERY_STORY, CANAL_STORY, MARKET_STORY, article_html, fetched

SETTINGS = Settings()
QUILL_NOTE = "Quillpost gathers stories from around the web every morning. We wrote none of them; follow the links for more."
LIBRARY_STORY = [
    "The town library will open on Sunday afternoons from March, after volunteers from the reading circle offered to staff the front desk so that the paid librarians keep their weekends.",
    "The trial runs until the end of June. If more than eighty visitors come on an average Sunday, the council will pay for the extra heating and make the opening hours permanent.",
    "The children's corner will host a story hour at three, read by pupils of the grammar school, and the café on the ground floor has agreed to open at the same time.",
]


def ingest(db, pages, run_name="test"):
    store = Store(db)
    store.migrate()
    store.check_signature_params(SETTINGS.fingerprint.params())
    run_id = store.start_run(run_name, None, {})
    Linker(store, SETTINGS).link_batch(run_id, prepare_pages(pages, SETTINGS))


def quill_page(n, title, story, tail=(QUILL_NOTE,)):
    return fetched(f"https://quillpost.example/p/{n}", article_html(title, story, list(tail), site_name="Quillpost"))


def bodies(db):
    con = duckdb.connect(db, read_only=True)
    try:
        return dict(con.execute("SELECT url, body FROM documents").fetchall())
    finally:
        con.close()


def learned_markers(db):
    con = duckdb.connect(db, read_only=True)
    try:
        return con.execute(
            "SELECT d.url, m.kind, m.text FROM markers m JOIN documents d USING (doc_id) WHERE m.rule = 'learned' ORDER BY d.url"
        ).fetchall()
    finally:
        con.close()


def test_a_new_aggregators_own_note_is_learned_from_three_stories_and_stripped(db_path):
    stories = [("Canal drained", CANAL_STORY), ("Bread from the allotments", BAKERY_STORY), ("Market moves", MARKET_STORY)]
    ingest(db_path, [quill_page(n, title, story) for n, (title, story) in enumerate(stories)])
    assert all(QUILL_NOTE not in body for body in bodies(db_path).values())
    assert [(kind, text) for _, kind, text in learned_markers(db_path)] == [("boilerplate", QUILL_NOTE)] * 3
    # learned in one run, applied in the next
    ingest(db_path, [quill_page(9, "Library on Sundays", LIBRARY_STORY)], run_name="later")
    later = bodies(db_path)["https://quillpost.example/p/9"]
    assert QUILL_NOTE not in later and LIBRARY_STORY[0] in later


def test_two_stories_are_not_enough_to_call_a_line_furniture(db_path):
    ingest(db_path, [quill_page(1, "Canal drained", CANAL_STORY), quill_page(2, "Market moves", MARKET_STORY)])
    assert all(QUILL_NOTE in body for body in bodies(db_path).values())
    assert learned_markers(db_path) == []


def test_one_story_reposted_under_several_titles_keeps_its_own_paragraphs(db_path):
    titles = ["Canal drained", "Basin to be emptied", "Engineers inspect the lock gates", "Boats must leave the basin"]
    ingest(db_path, [quill_page(n, title, CANAL_STORY, tail=()) for n, title in enumerate(titles)])
    for body in bodies(db_path).values():
        assert CANAL_STORY[0] in body and CANAL_STORY[-1] in body
    assert learned_markers(db_path) == []


def host_line_rows(db, text):
    con = duckdb.connect(db, read_only=True)
    try:
        return con.execute("SELECT story_doc_ids FROM host_lines WHERE text = ?", [text]).fetchall()
    finally:
        con.close()


def test_a_note_seen_one_story_per_run_is_learned_across_runs(db_path):
    stories = [("Canal drained", CANAL_STORY), ("Bread from the allotments", BAKERY_STORY), ("Market moves", MARKET_STORY)]
    for n, (title, story) in enumerate(stories[:2], start=1):
        ingest(db_path, [quill_page(n, title, story)], run_name=f"run {n}")
    # the stored line grew from one story to two: its row was replaced, not doubled
    assert host_line_rows(db_path, QUILL_NOTE) == [([1, 2],)]
    assert all(QUILL_NOTE in body for body in bodies(db_path).values())
    ingest(db_path, [quill_page(3, *stories[2])], run_name="run 3")
    assert host_line_rows(db_path, QUILL_NOTE) == [([1, 2, 3],)]
    assert QUILL_NOTE not in bodies(db_path)["https://quillpost.example/p/3"]


def test_pages_stored_before_their_hosts_line_was_learned_are_cleaned_again(db_path):
    stories = [("Canal drained", CANAL_STORY), ("Bread from the allotments", BAKERY_STORY), ("Market moves", MARKET_STORY)]
    ingest(db_path, [quill_page(n, title, story) for n, (title, story) in enumerate(stories[:2], start=1)], "run 1")
    first = bodies(db_path)
    assert all(QUILL_NOTE in body for body in first.values())
    ingest(db_path, [quill_page(3, *stories[2])], run_name="run 2")
    later = bodies(db_path)
    for url, body in first.items():
        assert later[url] == body.replace("\n" + QUILL_NOTE, "")
    assert [url for url, _, _ in learned_markers(db_path)] == [f"https://quillpost.example/p/{n}" for n in (1, 2, 3)]
    con = duckdb.connect(db_path, read_only=True)
    try:
        stored = con.execute("SELECT body, n_shingles, minhash FROM documents ORDER BY doc_id").fetchall()
        events = con.execute(
            "SELECT e.kind, e.detail FROM cluster_events e JOIN runs r USING (run_id) WHERE r.kind = 'run 2' ORDER BY e.cluster_id"
        ).fetchall()
    finally:
        con.close()
    # the stored signature is the new body's
    for body, n_shingles, minhash in stored:
        signature = fingerprint(body, SETTINGS.fingerprint)
        assert (n_shingles, minhash) == (signature.n_shingles, signature.hashvalues)
    assert [kind for kind, _ in events].count("cleaned_again") == 2


def test_a_hosts_line_is_stored_once_however_often_and_whenever_it_is_seen(db_path):
    # host_lines has no key (migration 003): the linker keeps each (host, line_key) to one row
    ingest(db_path, [quill_page(1, "Canal drained", CANAL_STORY), quill_page(2, "Bread from the allotments", BAKERY_STORY)])
    ingest(db_path, [quill_page(3, "Market moves", MARKET_STORY), quill_page(4, "Canal drained again", CANAL_STORY)], "run 2")
    ingest(db_path, [quill_page(5, "Library on Sundays", LIBRARY_STORY)], run_name="run 3")
    con = duckdb.connect(db_path, read_only=True)
    try:
        lines = con.execute("SELECT count(*) FROM host_lines").fetchone()[0]
        repeated = con.execute("SELECT host, line_key FROM host_lines GROUP BY ALL HAVING count(*) > 1").fetchall()
    finally:
        con.close()
    assert lines > 1 and repeated == []
    assert host_line_rows(db_path, QUILL_NOTE) == [([1, 2, 3],)]


def test_migration_003_keeps_the_lines_a_database_had_learned(db_path, migrated_to):
    con = migrated_to(2)
    con.execute("INSERT INTO host_lines VALUES ('quillpost.example', 7, ?, [1, 2]), ('other.example', 7, 'x', [3])", [QUILL_NOTE])
    con.close()
    Store(db_path).migrate()
    con = duckdb.connect(db_path, read_only=True)
    try:
        rows = con.execute("SELECT host, line_key, text, story_doc_ids FROM host_lines ORDER BY host").fetchall()
        keys = con.execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'host_lines' AND constraint_type = 'PRIMARY KEY'"
        ).fetchone()[0]
        versions = con.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    finally:
        con.close()
    assert keys == 0
    assert rows == [("other.example", 7, "x", [3]), ("quillpost.example", 7, QUILL_NOTE, [1, 2])]
    assert [v for (v,) in versions] == [v for v, _, _ in migrations()]


def test_a_line_stored_by_one_batch_is_found_by_the_next_batch_of_the_same_run(db_path):
    store = Store(db_path)
    store.migrate()
    store.check_signature_params(SETTINGS.fingerprint.params())
    run_id = store.start_run("test", None, {})
    linker = Linker(store, SETTINGS)
    stories = [("Canal drained", CANAL_STORY), ("Bread from the allotments", BAKERY_STORY), ("Market moves", MARKET_STORY)]
    for n, (title, story) in enumerate(stories, start=1):
        linker.link_batch(run_id, prepare_pages([quill_page(n, title, story)], SETTINGS))
    assert host_line_rows(db_path, QUILL_NOTE) == [([1, 2, 3],)]
    assert QUILL_NOTE not in bodies(db_path)["https://quillpost.example/p/3"]


def test_stored_line_keys_answer_for_the_stored_pairs_and_what_the_run_added(db_path):
    store = Store(db_path)
    store.migrate()
    con = duckdb.connect(db_path)
    con.execute(
        "INSERT INTO host_lines VALUES ('a.example', 3, 'x', [1]), ('a.example', 8, 'y', [1]), ('b.example', 20, 'z', [2])"
    )
    con.close()
    keys = StoredLineKeys(store.host_line_numbers())
    asked = {("a.example", 8), ("a.example", 20), ("b.example", 8), ("b.example", 20), ("c.example", 3)}
    hashes = store.text_hashes({host for host, _ in asked})
    assert keys.held(asked, hashes) == {("a.example", 8), ("b.example", 20)}
    keys.add([("b.example", 8, "text", [1]), ("c.example", 4, "text", [2])], hashes)
    assert keys.held(asked, hashes) == {("a.example", 8), ("b.example", 20), ("b.example", 8)}


def carrying_page(host, title, story, carried):
    return fetched(f"https://{host}/copy", article_html(title, story, [carried]))


def test_a_line_learned_on_one_host_is_stripped_where_a_copier_carried_it(db_path):
    stories = [("Canal drained", CANAL_STORY), ("Bread from the allotments", BAKERY_STORY), ("Market moves", MARKET_STORY)]
    pages = [quill_page(n, title, story) for n, (title, story) in enumerate(stories)]
    # a page of another host that scraped a Quillpost page, note and all
    ingest(db_path, [*pages, carrying_page("relay.example", "Library on Sundays", LIBRARY_STORY, QUILL_NOTE)])
    relay = bodies(db_path)["https://relay.example/copy"]
    assert QUILL_NOTE not in relay and LIBRARY_STORY[0] in relay
    # and in a later run, from what is stored
    ingest(db_path, [carrying_page("mirror.example", "Canal drained", CANAL_STORY, QUILL_NOTE)], run_name="later")
    assert QUILL_NOTE not in bodies(db_path)["https://mirror.example/copy"]
    con = duckdb.connect(db_path, read_only=True)
    try:
        carried = con.execute(
            "SELECT d.host, m.rule FROM markers m JOIN documents d USING (doc_id) WHERE m.rule = 'learned-carried' ORDER BY 1"
        ).fetchall()
        # a carried line is not what the copier adds
        adds = con.execute("SELECT count(*) FROM documents WHERE host <> 'quillpost.example' AND adds_lines").fetchone()[0]
    finally:
        con.close()
    assert carried == [("mirror.example", "learned-carried"), ("relay.example", "learned-carried")]
    assert adds == 0
