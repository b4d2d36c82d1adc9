"""Provenance on pages no rule was written for: wire credits, template lines
with slots, aggregators known by behaviour, and layout tables. Every text
here is written for these tests."""

from datetime import datetime

import duckdb

from dedup.batch import Settings, prepare_pages
from dedup.boilerplate import line_key, line_template
from dedup.clean import CleanConfig, rules_for, strip_markers
from dedup.extract import ExtractConfig, extract_article
from dedup.linker import Linker
from dedup.models import Article, Attribution, Member, Similarity
from dedup.provenance import AggregatorHosts, ProvenanceConfig, choose_original
from dedup.store import Store
from flows.pipeline import default_settings
from tests.pages import BAKERY_STORY, CANAL_STORY, MARKET_STORY, article_html, fetched

CONFIG = CleanConfig()
PROVENANCE = ProvenanceConfig()


def cleaned(paragraphs, host="outlet.example"):
    article = Article(
        url=f"https://{host}/a", final_url=f"https://{host}/a", host=host, fetched_at=datetime(2026, 1, 1),
        text="\n".join(paragraphs),
    )  # fmt: skip
    return strip_markers(article, CONFIG)


def test_a_wire_dateline_names_the_agency_and_stays_in_the_body():
    lead = "RIVERTON, March 3 (Reuters) - The harbor authority voted on Tuesday to close the old ferry pier for repairs."
    result = cleaned([lead, *CANAL_STORY[:2]])
    assert result.body.split("\n")[0] == lead
    assert not result.markers and not result.marks_copy
    assert [(a.kind, a.source_name) for a in result.attributions] == [("wire", "Reuters")]


def test_agency_bylines_name_the_agency():
    for byline, agency in [
        ("By Mara Quill, Associated Press", "Associated Press"),
        ("Tobin Hale and Iris Vane, AP Business Writers", "AP"),
        ("By The Associated Press", "Associated Press"),
        ("/ Source: Reuters", "Reuters"),
    ]:
        result = cleaned(["Pier closed", byline, *CANAL_STORY[:2]])
        assert byline in result.body.split("\n"), byline
        assert [(a.kind, a.source_name) for a in result.attributions] == [("wire", agency)], byline


def test_photo_credits_and_prose_that_mention_an_agency_are_not_credits():
    for line in [
        "Mara Quill/Associated Press",
        "Credit: AP Photo/Tobin Hale",
        "On Monday, the harbor master told The Associated Press.",
    ]:
        result = cleaned(["Pier closed", line, *CANAL_STORY[:2]])
        assert line in result.body.split("\n"), line
        assert not result.attributions, line


def test_feed_tails_and_copy_footers_in_other_languages_are_stripped_credits():
    for tail, source in [
        ("O post Ponte fechada para obras apareceu primeiro em Diário da Ribeira.", "Diário da Ribeira"),
        ("La entrada Puente cerrado por obras se publicó primero en Gaceta del Río.", "Gaceta del Río"),
        ("Artikel ini telah tayang di Warta Kali dengan judul \"Jembatan Ditutup\", klik untuk baca: https://wartakali.example/x", "Warta Kali"),
        ("This article was originally published by Harbor Weekly.", "Harbor Weekly"),
    ]:
        result = cleaned([*CANAL_STORY[:3], tail])
        assert tail not in result.body, tail
        assert result.marks_copy and result.attributions[0].source_name == source, tail


def test_a_host_line_filled_in_per_page_has_one_template():
    first = line_template("The post Canal drained for inspection appeared first on Harbor Weekly.", "Canal drained for inspection")
    second = line_template("The post Bakery bakes allotment bread appeared first on Mill Lane News.", "Bakery bakes allotment bread")
    assert first == second
    # a site's title decoration does not hide the title inside the line
    assert line_key("Notice: Canal drained for inspection was taken from Harbor Weekly.", "[Relay] Canal drained for inspection") == (
        line_key("Notice: Bakery bakes allotment bread was taken from Mill Lane News.", "Bakery bakes allotment bread | Relay")
    )
    assert line_template("Copyright 2024 Example Daily. All rights reserved.") == line_template(
        "Copyright 2023 Other Paper. All rights reserved."
    )
    # different wording is a different line
    assert line_template("The post X appeared first on Y, a weekly.") != first


def test_a_slot_that_brings_lowercase_words_keeps_the_lines_key():
    # a source's name with words that are not capitalised, a site written
    # into Chinese or Japanese text, a name with a digit in it
    assert line_key("This piece comes from Frau Ottilie bloggt. Relay Desk takes no responsibility for what it says.") == line_key(
        "This piece comes from The Harbor Weekly. Relay Desk takes no responsibility for what it says."
    )
    assert line_key("（本文转自harbor.example，版权归原作者所有，如有侵权请联系删除）") == line_key(
        "（本文转自mill-lane.example，版权归原作者所有，如有侵权请联系删除）"
    )
    assert line_key("Read the rest on K9 Daily, where it appeared first.") == line_key(
        "Read the rest on Harbor Weekly, where it appeared first."
    )
    # a word written in lowercase elsewhere in the line is not a name
    assert "the content" in line_template("Supplied by The Harbor Weekly; we are not liable for the content.")
    # the fixed wording decides: another sentence is another line
    assert line_key("This piece comes from Harbor Weekly. Relay Desk checked every figure in it twice.") != line_key(
        "This piece comes from Harbor Weekly. Relay Desk takes no responsibility for what it says."
    )


def member(doc_id, host, *, marks_copy=False, adds_lines=False, wire=None, credits=()):
    attributions = tuple(Attribution(kind="wire", strength="strong", source_name=wire) for _ in [wire] if wire)
    return Member(
        doc_id=doc_id, url=f"https://{host}/{doc_id}", host=host, n_shingles=100, marks_copy=marks_copy or bool(credits),
        adds_lines=adds_lines, copy_marker_texts=tuple(credits), credit_texts=tuple(credits), attributions=attributions,
    )  # fmt: skip


def same(a, b):
    return Similarity(0.9, 0.95, 0.95)


def no_aggregators(members):
    return AggregatorHosts({m.host: (1, 0) for m in members}, PROVENANCE)


def test_outlets_carrying_one_agencys_story_have_no_original_in_the_database():
    members = [member(1, "a.example", wire="AP"), member(2, "b.example", wire="Associated Press"), member(3, "c.example")]
    decision = choose_original(members, same, no_aggregators(members), PROVENANCE)
    assert decision.original_doc_id is None and decision.attributed_source in ("AP", "Associated Press")


def test_the_agencys_own_page_is_the_original():
    members = [member(1, "a.example", wire="CNN"), member(2, "www.cnn.com", wire="CNN"), member(3, "b.example", wire="CNN")]
    decision = choose_original(members, same, no_aggregators(members), PROVENANCE)
    assert decision.original_doc_id == 2


def test_an_original_with_its_own_credit_stays_the_original_of_its_marked_copies():
    own = "Source: Harbor Weekly"
    members = [
        member(1, "paper.example", credits=(own,)),
        member(2, "relay.example", credits=(own, "Reposted for information only.")),
        member(3, "mirror.example", adds_lines=True),
    ]
    decision = choose_original(members, same, no_aggregators(members), PROVENANCE)
    assert decision.original_doc_id == 1
    # with the wire sign-off instead, the one unmarked page is still the original
    members = [member(1, "paper.example", wire="Reuters"), member(2, "relay.example", adds_lines=True)]
    assert choose_original(members, same, no_aggregators(members), PROVENANCE).original_doc_id == 1


def test_copies_that_add_lines_on_aggregator_hosts_name_no_original():
    members = [member(1, "relay.example", adds_lines=True), member(2, "mirror.example")]
    counts = {"relay.example": (10, 9), "mirror.example": (10, 8)}
    decision = choose_original(members, same, AggregatorHosts(counts, PROVENANCE), PROVENANCE)
    assert decision.original_doc_id is None


def test_a_host_is_judged_on_its_other_pages():
    """One site with one story of its own and two reposts: its own page is not
    an aggregator's, since its other pages alone are too few to judge."""
    aggregators = AggregatorHosts({"town.example": (3, 2)}, PROVENANCE)
    assert not aggregators.holds(member(1, "town.example"))
    assert AggregatorHosts({"town.example": (5, 4)}, PROVENANCE).holds(member(1, "town.example"))


def test_a_layout_table_is_read_as_paragraphs():
    note = "This story was taken from the Harbor Weekly for readers of this page."
    cells = "".join(f"<p>{p}</p>" for p in [*CANAL_STORY[:3], note])
    html = (
        "<html><head><title>Canal drained</title></head><body><table><tr><td class='content'>"
        f"<h1>Canal drained</h1>{cells}</td><td><b>Related</b></td></tr></table></body></html>"
    )
    article = extract_article(fetched("https://relay.example/1", html), ExtractConfig())
    assert note in article.text.split("\n")


def test_the_rule_free_mode_has_no_rules(monkeypatch):
    assert not rules_for("none").rules
    monkeypatch.setenv("REPOSTS_RULES", "none")
    assert not default_settings().clean.rules.rules
    assert [r.id for r in default_settings("default").clean.rules.rules] == [r.id for r in Settings().clean.rules.rules]


def stored_clusters(db, pages):
    store = Store(db)
    store.migrate()
    settings = Settings()
    store.check_signature_params(settings.fingerprint.params())
    Linker(store, settings).link_batch(store.start_run("test", None, {}), prepare_pages(pages, settings))
    con = duckdb.connect(db, read_only=True)
    try:
        cluster_of = dict(con.execute("SELECT url, cluster_id FROM documents").fetchall())
        originals = {u for (u,) in con.execute("SELECT d.url FROM clusters c JOIN documents d ON d.doc_id = c.original_doc_id").fetchall()}
    finally:
        con.close()
    return cluster_of, originals


def test_a_digest_of_several_stories_joins_one_and_glues_none(db_path):
    digest = [*CANAL_STORY, *BAKERY_STORY, *MARKET_STORY]
    pages = [
        fetched("https://harbor.example/canal", article_html("Canal drained", CANAL_STORY)),
        fetched("https://mill.example/bread", article_html("Bread from the allotments", BAKERY_STORY)),
        fetched("https://relay.example/canal", article_html("Canal drained", CANAL_STORY[:4])),
        fetched("https://today.example/digest", article_html("The day in town", digest)),
    ]
    cluster_of, originals = stored_clusters(db_path, pages)
    # the two stories stay apart, the copy joins its story
    assert cluster_of["https://harbor.example/canal"] != cluster_of["https://mill.example/bread"]
    assert cluster_of["https://relay.example/canal"] == cluster_of["https://harbor.example/canal"]
    # the digest joins one of them, and is nobody's original
    assert cluster_of["https://today.example/digest"] in {cluster_of["https://harbor.example/canal"], cluster_of["https://mill.example/bread"]}
    assert "https://today.example/digest" not in originals
    assert {"https://harbor.example/canal", "https://mill.example/bread"} <= originals
    # a story that comes later does not join through the digest either
    later, _ = stored_clusters(db_path, [fetched("https://market.example/move", article_html("Market moves", MARKET_STORY))])
    assert later["https://market.example/move"] not in {later["https://harbor.example/canal"], later["https://mill.example/bread"]}

