"""Stage tests without Prefect: extract, fingerprint, link, and what a run keeps for the next."""

import json
import math
import shutil
from datetime import datetime

import duckdb
import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH
from lxml import etree
from lxml.html import HtmlElement
from trafilatura import bare_extraction
from trafilatura.utils import load_html

from dedup.batch import Settings, open_store, prepare_pages
from dedup.extract import ExtractConfig, ExtractionError, extract_article, parse_html, trafilatura_options
from dedup.fingerprint import (
    FingerprintConfig,
    datasketch_minhash,
    fingerprint,
    fingerprints,
    lean_minhash,
    shingle_hash,
    shingle_hashes,
    shingle_sets,
    shingle_strings,
)
from dedup.link import (
    CandidateIndex,
    Candidates,
    LinkConfig,
    _BandTable,
    is_near_duplicate,
    plausible_duplicates,
    similarity,
)
from dedup.linker import Linker
from dedup.models import Page
from dedup.provenance import AggregatorHosts
from dedup.recent import RecentShingleSets
from dedup.store import Store
from tests.helpers import answers, linked_rows
from tests.pages import BAKERY_STORY, CANAL_STORY, MARKET_STORY, SEED_DISCLAIMER, article_html, fetched

FP = FingerprintConfig()
LINK = LinkConfig()


def test_gb18030_from_the_http_header_comes_out_as_chinese():
    text = article_html("运河将排水检修", ["运河管理处宣布九月份将排干旧运河的水，以便工程师检查闸门和砖墙。" * 4], charset=None)
    page = fetched("https://zh.example/a", text, content_type="text/html; charset=gb18030", encoding="gb18030")
    article = extract_article(page, ExtractConfig(min_text_chars=20))
    assert "运河管理处宣布" in article.text


def test_meta_charset_is_honoured_when_the_header_has_none():
    text = article_html("运河将排水检修", ["运河管理处宣布九月份将排干旧运河的水，以便工程师检查闸门和砖墙。" * 4], charset="gbk")
    page = fetched("https://zh.example/a", text, content_type="text/html", encoding="gb18030")
    assert "闸门" in extract_article(page, ExtractConfig(min_text_chars=20)).text


def test_extract_reads_metadata_and_link_evidence():
    text = article_html(
        "Canal basin to be drained", CANAL_STORY, canonical="https://canal.example/drain", og_url="https://canal.example/drain",
        published="2026-02-03T08:15:00", site_name="Canal Courier",
        extra_head='<meta name="original-source" content="https://canal.example/drain">',
    )  # fmt: skip
    article = extract_article(fetched("https://copy.example/x", text), ExtractConfig())
    assert article.host == "copy.example"
    assert article.canonical_url == "https://canal.example/drain" and article.declared_source_url == "https://canal.example/drain"
    assert article.published_at == datetime(2026, 2, 3, 8, 15)
    assert article.site_name == "Canal Courier"
    assert CANAL_STORY[0] in article.text


_STORY_PAGE = article_html(
    "Canal basin to be drained",
    CANAL_STORY,
    ["<form><label>Email</label><input name='email'><select><option>daily</option></select></form>"],
    published="2026-03-02T08:00:00",
)


@pytest.mark.parametrize(
    "page",
    [
        _STORY_PAGE,
        # an XML declaration with an encoding: lxml parses such a string from its bytes only
        '<?xml version="1.0" encoding="utf-8"?>\n' + _STORY_PAGE,
        # a self-closing <html/> in the first lines, which trafilatura repairs
        "<html lang='en'/>\n" + _STORY_PAGE.split("<html>", 1)[1],
        # no html tag or doctype at all: a fragment, dubious unless it parses into several parts
        "".join(f"<p>{p}</p>" for p in BAKERY_STORY),
        "just a line of text, no markup",
        "",
    ],
    ids=["story", "xml-declaration", "self-closing-html", "fragment", "plain-text", "empty"],
)
def test_pages_parse_as_trafilatura_parses_them_and_extract_the_same(page):
    ours, theirs = parse_html(page), load_html(page)
    assert (ours is None) == (theirs is None)
    if ours is None:
        return
    assert all(isinstance(element, HtmlElement) for element in ours.iter(tag="*"))
    options = trafilatura_options(ExtractConfig())
    mine = bare_extraction(ours, url="https://news.example/canal", **options)
    trafilatura_own = bare_extraction(theirs, url="https://news.example/canal", **options)
    assert (mine is None) == (trafilatura_own is None)
    if mine is not None:
        assert _comparable(mine) == _comparable(trafilatura_own)


def _comparable(document) -> dict:
    """An extraction's fields, its trees (body, comments) as their markup."""
    return {k: etree.tostring(v) if isinstance(v, etree._Element) else v for k, v in document.as_dict().items()}


def _first_by_xpath(tree, xpath: str):
    """The first non-empty value an XPath search of the whole document finds."""
    return next((str(v).strip() for v in tree.xpath(xpath) if str(v).strip()), None)


_BASED_ON = '{"@context": "https://schema.org", "@graph": [{"@type": "NewsArticle", "isBasedOn": {"@id": "https://canal.example/drain"}}]}'


@pytest.mark.parametrize(
    "extra_head, body_tail, expected",
    [
        # the first non-empty value of each, wherever it stands in the document
        (
            '<link rel="canonical" href=" "><link rel="canonical" href="/drain"><link rel="canonical" href="/later">'
            '<meta name="original-source" content="">',
            '<meta property="og:url" content="https://canal.example/og">',
            ("https://copy.example/drain", "https://canal.example/og", None, None),
        ),
        # a source named in JSON-LD, a language from http-equiv only
        (
            f'<script type="application/ld+json">{_BASED_ON}</script><meta http-equiv="content-language" content="de-AT">',
            "",
            (None, None, "https://canal.example/drain", "de"),
        ),
        # the meta tag outranks JSON-LD; a script of another type is not read
        (
            '<meta name="original-source" content="https://first.example/a">'
            f'<script type="application/json">{_BASED_ON}</script>',
            "",
            (None, None, "https://first.example/a", None),
        ),
    ],
    ids=["first-non-empty", "json-ld-and-http-equiv", "meta-before-json-ld"],
)
def test_link_metadata_is_what_xpath_searches_of_the_document_find(extra_head, body_tail, expected):
    html = article_html("Canal basin to be drained", CANAL_STORY, extra_head=extra_head).replace("</body>", body_tail + "</body>")
    article = extract_article(fetched("https://copy.example/x", html), ExtractConfig())
    assert (article.canonical_url, article.og_url, article.declared_source_url, article.lang) == expected
    tree = parse_html(html)
    assert article.og_url == _first_by_xpath(tree, '//meta[@property="og:url"]/@content')
    assert article.lang == (
        (
            _first_by_xpath(tree, "/html/@lang") or _first_by_xpath(tree, '//meta[@http-equiv="content-language"]/@content') or ""
        ).split("-")[0]
        or None
    )


def test_a_page_without_article_text_is_an_extraction_error():
    page = fetched("https://empty.example/", "<html><body><script>var x=1;</script></body></html>")
    with pytest.raises(ExtractionError, match="no article text"):
        extract_article(page, ExtractConfig())


def test_shingles_ignore_case_quotes_and_punctuation():
    a = shingle_hashes('The "old" canal, drained at last!', FP)
    b = shingle_hashes("the \u201cold\u201d Canal drained at last", FP)
    assert np.array_equal(a, b) and len(a) == 2
    assert shingle_strings("the \u201cold\u201d Canal drained at last", FP) == [
        "the old canal drained at",
        "old canal drained at last",
    ]


def test_chinese_text_is_shingled_by_characters():
    assert shingle_strings("运河管理处宣布", FP) == ["运 河 管 理", "河 管 理 处", "管 理 处 宣", "理 处 宣 布"]
    assert len(shingle_hashes("运河管理处宣布", FP)) == 4
    # mostly English with a Chinese name in it: still word shingles
    assert shingle_strings("the mayor of 南京 opened the new canal lock", FP)[0] == "the mayor of 南 京"


def test_shingle_set_is_the_distinct_hashes_sorted():
    text = "the lock opens at noon and the lock opens at noon again"
    hashes = shingle_hashes(text, FP)
    assert np.all(hashes[1:] > hashes[:-1])
    assert len(hashes) == len(set(shingle_strings(text, FP))) == 7  # 8 shingles, one twice
    assert len(shingle_hashes("", FP)) == 0


def test_texts_shingled_together_get_the_sets_of_their_own_shingle_strings():
    texts = [
        " ".join(CANAL_STORY),
        "",
        "short one",
        "!!! ...",
        "运河管理处宣布九月份将排干旧运河的水",
        "运河",
        BAKERY_STORY[0],
        "the mayor of 南京 opened the new canal lock",
    ]
    # enough of them to be tokenized in several groups, each text at several places in a group
    texts = [t for i in range(60) for t in [*texts[i % len(texts) :], *texts[: i % len(texts)]]]
    sets = shingle_sets(texts, FP)
    assert len(sets) == len(texts)
    for text, found in zip(texts, sets, strict=True):
        expected = sorted({shingle_hash(s.encode("utf-8")) for s in shingle_strings(text, FP)})
        assert found.tolist() == expected, text


@pytest.mark.parametrize("scheme", ["affine32", "affine64"])
def test_batched_signatures_equal_datasketch_with_the_same_hash_function(scheme):
    config = FingerprintConfig(scheme=scheme)
    texts = [
        " ".join(CANAL_STORY),
        BAKERY_STORY[0],
        "short one",
        " ".join(MARKET_STORY) * 3,
        "运河管理处宣布九月份将排干旧运河的水",
    ]
    # many texts, so that the batch spans several numpy blocks
    texts = texts + [f"{t} variant {i}" for i in range(400) for t in texts[:1]]
    for text, signature in zip(texts, fingerprints(texts, config), strict=True):
        reference = datasketch_minhash(shingle_strings(text, config), config)
        assert np.array_equal(np.frombuffer(signature.hashvalues, dtype=config.dtype), reference.hashvalues)
        assert len(signature.shingles) == len(set(shingle_strings(text, config)))


def test_an_empty_text_has_datasketch_empty_signature():
    [signature] = fingerprints([""], FP)
    empty = MinHash(num_perm=FP.num_perm, seed=FP.seed, scheme=FP.scheme)
    assert len(signature.shingles) == 0 and np.array_equal(np.frombuffer(signature.hashvalues, dtype=FP.dtype), empty.hashvalues)


def test_stored_signature_rebuilds_with_its_scheme():
    signature = fingerprint(" ".join(CANAL_STORY), FP)
    direct = datasketch_minhash(shingle_strings(" ".join(CANAL_STORY), FP), FP)
    rebuilt = lean_minhash(signature.hashvalues, FP)
    assert rebuilt.scheme == "affine32"
    assert np.array_equal(rebuilt.hashvalues, direct.hashvalues)
    assert rebuilt.jaccard(direct) == 1.0
    with pytest.raises(ValueError, match="num_perm"):
        lean_minhash(signature.hashvalues, FingerprintConfig(num_perm=64))


def test_excerpt_is_linked_by_containment_and_unrelated_story_is_not():
    full = shingle_hashes(" ".join(CANAL_STORY), FP)
    excerpt = shingle_hashes(CANAL_STORY[0], FP)
    other = shingle_hashes(" ".join(BAKERY_STORY + MARKET_STORY), FP)
    sim = similarity(excerpt, full)
    assert sim.a_in_b == 1.0 and sim.jaccard < LINK.min_jaccard
    assert is_near_duplicate(sim, len(excerpt), len(full), LINK)
    assert not is_near_duplicate(similarity(full, other), len(full), len(other), LINK)


def matrix(signatures, config=FP):
    return np.stack([np.frombuffer(s.hashvalues, dtype=config.dtype) for s in signatures])


def test_candidate_index_finds_a_near_copy_and_not_an_unrelated_page():
    index = CandidateIndex(LINK, FP)
    index.add_many([1, 2], matrix(fingerprints([" ".join(CANAL_STORY), " ".join(BAKERY_STORY)], FP)))
    found = index.candidates_many(matrix([fingerprint(" ".join(CANAL_STORY[:-1]) + " The end.", FP)])).of(0)
    assert 1 in found
    assert 2 not in found


@pytest.mark.parametrize("rows", [1, 3])
def test_candidate_index_answers_as_minhashlsh_with_the_same_bands(rows):
    link = LinkConfig(lsh_bands=40, lsh_rows=rows)
    rng = np.random.default_rng(3)
    # 600 signatures over a small value range, so that bands collide often
    values = rng.integers(0, 6 if rows == 1 else 3, size=(600, FP.num_perm)).astype(FP.dtype)
    lsh = MinHashLSH(num_perm=FP.num_perm, params=(link.lsh_bands, link.lsh_rows))
    for doc_id, row in enumerate(values):
        lsh.insert(doc_id, LeanMinHash(seed=FP.seed, hashvalues=row, scheme=FP.scheme))
    index = CandidateIndex(link, FP)
    # stored signatures in bulk, then batches of new ones (merged into larger tables as they come)
    index.load([(np.arange(0, 200), values[:200]), (np.arange(200, 300), values[200:300])])
    for start in range(300, 600, 50):
        index.add_many(list(range(start, start + 50)), values[start : start + 50])
    assert len(index) == 600
    queries = rng.integers(0, 6 if rows == 1 else 3, size=(40, FP.num_perm)).astype(FP.dtype)
    candidates = index.candidates_many(queries)
    for number, query in enumerate(queries):
        found = candidates.of(number)
        assert set(found) == set(lsh.query(LeanMinHash(seed=FP.seed, hashvalues=query, scheme=FP.scheme)))
        # with each candidate, the number of bands whose values it shares with the query
        used = link.lsh_bands * rows
        for doc_id, bands in found.items():
            agree = (values[doc_id, :used] == query[:used]).reshape(link.lsh_bands, rows).all(axis=1)
            assert bands == int(agree.sum())




def stored(doc_id: int) -> tuple[int, str | None]:
    """Store.stored_through of a database that holds every doc_id from 1, all stored by one run."""
    return doc_id, "1 run"


def test_a_saved_index_answers_as_the_one_it_was_saved_from(tmp_path):
    rng = np.random.default_rng(5)
    values = rng.integers(0, 6, size=(700, FP.num_perm)).astype(FP.dtype)
    first = CandidateIndex(LINK, FP, tmp_path / "lsh", stamp={"database_id": "a"})
    first.load([(np.arange(1, 401), values[:400])])
    for start in range(401, 601, 50):
        first.add_many(list(range(start, start + 50)), values[start - 1 : start + 49])
    first.save(stored)
    # the next run maps the saved tables, then adds what was stored after them
    second = CandidateIndex(LINK, FP, tmp_path / "lsh", stamp={"database_id": "a"})
    assert second.resume(stored) == 600
    second.load([(np.arange(601, 701), values[600:])])
    first.add_many(list(range(601, 701)), values[600:])
    queries = rng.integers(0, 6, size=(30, FP.num_perm)).astype(FP.dtype)
    assert answers(second, queries) == answers(first, queries)
    assert len(second) == 700
    # saving again writes only the new tables and drops the files no table uses
    second.save(stored)
    third = CandidateIndex(LINK, FP, tmp_path / "lsh", stamp={"database_id": "a"})
    assert third.resume(stored) == 700
    assert answers(third, queries) == answers(first, queries)
    named = json.loads((tmp_path / "lsh" / "index.json").read_text())["tables"]
    assert {p.name.split(".")[0] for p in (tmp_path / "lsh").glob("*.npy")} == set(named)


def test_a_saved_index_is_not_used_for_another_database_or_one_that_lost_pages(tmp_path):
    values = np.random.default_rng(6).integers(0, 6, size=(100, FP.num_perm)).astype(FP.dtype)
    saved = CandidateIndex(LINK, FP, tmp_path / "lsh", stamp={"database_id": "a"})
    saved.load([(np.arange(1, 101), values)])
    saved.save(stored)
    assert CandidateIndex(LINK, FP, tmp_path / "lsh", stamp={"database_id": "b"}).resume(stored) == 0
    other_bands = LinkConfig(lsh_bands=64)
    assert CandidateIndex(other_bands, FP, tmp_path / "lsh", stamp={"database_id": "a"}).resume(stored) == 0
    # the database holds 99 of the 100 pages the index names (restored from an older copy, say)
    assert CandidateIndex(LINK, FP, tmp_path / "lsh", stamp={"database_id": "a"}).resume(lambda d: (d - 1, "1 run")) == 0
    # it holds 100, the last of them stored by another run (an older copy, added to again)
    assert CandidateIndex(LINK, FP, tmp_path / "lsh", stamp={"database_id": "a"}).resume(lambda d: (d, "1 another run")) == 0
    (tmp_path / "lsh" / "index.json").write_text("{not json")
    assert CandidateIndex(LINK, FP, tmp_path / "lsh", stamp={"database_id": "a"}).resume(stored) == 0


def test_a_chance_agreement_is_not_verified_but_an_excerpt_sharing_one_value_is():
    def plausible(bands, n_a, n_b):
        return bool(plausible_duplicates(np.array([bands]), np.array([n_a]), np.array([n_b]), LINK)[0])

    # pages of like size: a near-duplicate agrees on a third of the bands or more
    assert not plausible(1, 300, 320)
    assert not plausible(5, 300, 320)
    assert plausible(40, 300, 320)
    # an excerpt of 40 shingles from a page of 900: half of it in the page is a Jaccard of 0.02
    assert plausible(1, 40, 900)
    # too short for containment to count: only a copy's Jaccard would do
    assert not plausible(1, 20, 900)


def test_the_binomial_tail_matches_its_definition():
    rng = np.random.default_rng(9)
    bands = rng.integers(0, 30, size=400)
    n_a, n_b = rng.integers(5, 2000, size=400), rng.integers(5, 2000, size=400)
    expected = []
    for m, a, b in zip(bands.tolist(), n_a.tolist(), n_b.tolist(), strict=True):
        small, large = min(a, b), max(a, b)
        least = LINK.min_jaccard
        if small >= LINK.min_shingles_for_containment:
            shared = LINK.min_containment * small
            least = min(least, shared / (small + large - shared))
        tail = sum(math.comb(LINK.lsh_bands, k) * least**k * (1 - least) ** (LINK.lsh_bands - k) for k in range(m + 1))
        expected.append(m >= LINK.lsh_bands * least or tail >= LINK.candidate_miss_rate)
    assert plausible_duplicates(bands, n_a, n_b, LINK).tolist() == expected


def test_the_linker_verifies_a_stored_candidate_only_if_its_signature_agrees_enough(tmp_path):
    """A page sharing one band with a stored page of like size by chance is not
    read back; a copy is, and is linked."""
    settings = Settings()
    store = open_store(str(tmp_path / "c.duckdb"), settings)
    run_id = store.start_run("ingest", None, {})
    linker = Linker(store, settings)
    original = fetched("https://paper.example/canal", article_html("Canal", CANAL_STORY))
    bakery = fetched("https://paper.example/bakery", article_html("Bakery", BAKERY_STORY))
    linker.link_batch(run_id, prepare_pages([original, bakery], settings))
    copy = prepare_pages([fetched("https://relay.example/canal", article_html("Canal", CANAL_STORY))], settings)
    bakery_id = 2
    page = Page(doc_id=3, cleaned=copy.prepared[0].cleaned, signature=copy.prepared[0].signature)
    linker.known.note_sizes([page])
    found = linker._candidates([page])
    assert found.of(0)[1] > 50 and found.of(0)[3] == LINK.lsh_bands  # the original, and the page itself
    # with the bakery page sharing one band by chance
    chance = Candidates(
        query=np.zeros(3, dtype=np.int64), doc_id=np.array([1, bakery_id, 3]), bands=np.array([found.of(0)[1], 1, LINK.lsh_bands])
    )
    assert linker._plausible([page], chance) == {3: {1}}


def test_similarity_on_hash_arrays_equals_set_arithmetic():
    rng = np.random.default_rng(7)
    for _ in range(50):
        universe = rng.integers(0, 2**63, size=300, dtype=np.uint64)
        a = np.unique(rng.choice(universe, size=rng.integers(1, 200)))
        b = np.unique(rng.choice(universe, size=rng.integers(1, 200)))
        sa, sb = set(a.tolist()), set(b.tolist())
        sim = similarity(a, b)
        common = len(sa & sb)
        assert sim.jaccard == common / len(sa | sb)
        assert sim.a_in_b == common / len(sa) and sim.b_in_a == common / len(sb)


@pytest.mark.parametrize("n", [1, 5, 3000])
def test_a_table_found_through_its_directory_finds_every_shared_key(n):
    rng = np.random.default_rng(11)
    doc_ids = np.arange(1, n + 1) * 3
    # few distinct keys in half the table (runs of entries far longer than a
    # directory slot), and keys that differ only in their last bits
    keys = rng.integers(0, 2**32, size=(n, 8), dtype=np.uint64)
    keys[: n // 2] = rng.integers(0, 40, size=(n // 2, 8))
    keys[n // 2 : n // 2 + 20] = (keys[n // 2 : n // 2 + 20] & ~np.uint64(0xFF)) | np.uint64(7)
    keys = keys.astype(np.uint32)
    table = _BandTable.of_keys(doc_ids, keys)
    queries = np.concatenate(
        [
            np.tile(np.arange(0, 45, dtype=np.uint32)[:, None], (1, 8)),
            rng.integers(0, 2**32, size=(20, 8), dtype=np.uint64).astype(np.uint32),
            keys[-30:],
            keys[n // 2 : n // 2 + 20] ^ np.uint32(1),  # the same slot, another key
            np.full((1, 8), 2**32 - 1, dtype=np.uint32),
        ]
    )
    query, found = table.hits(queries)
    expected = sorted(
        (q, int(doc_ids[row]))
        for q in range(len(queries))
        for band in range(8)
        for row in np.flatnonzero(keys[:, band] == queries[q, band])
    )
    assert sorted(zip(query.tolist(), found.tolist(), strict=True)) == expected
    assert len(expected) >= 8 * min(n, 30)  # at least the rows queried with their own keys


def test_saved_tables_of_another_layout_are_not_used(tmp_path):
    rng = np.random.default_rng(4)
    values = rng.integers(0, 2**32, size=(300, FP.num_perm), dtype=np.uint64).astype(FP.dtype)
    saved = CandidateIndex(LINK, FP, tmp_path / "lsh", stamp={"database_id": "a"})
    saved.load([(np.arange(1, 301), values)])
    saved.save(stored)
    manifest = tmp_path / "lsh" / "index.json"
    older = json.loads(manifest.read_text())
    older["stamp"].pop("table_format")  # as runs before the directories saved it
    manifest.write_text(json.dumps(older))
    assert CandidateIndex(LINK, FP, tmp_path / "lsh", stamp={"database_id": "a"}).resume(stored) == 0


def noting_body_reads(store) -> list[set[int]]:
    """The doc_ids of each read of stored bodies from now on (the real read, noted)."""
    bodies_read: list[set[int]] = []
    read_bodies = store.bodies

    def bodies(doc_ids):
        bodies_read.append(set(doc_ids))
        return read_bodies(doc_ids)

    store.bodies = bodies
    return bodies_read




def test_a_pair_no_batch_measured_is_measured_from_stored_bodies(tmp_path):
    """An original and two digests that carry it whole with other stories, then
    a page of those other stories: it links to both digests but shares
    nothing with the original, so telling that a digest holds two stories (a
    hub, through which no page joins a cluster) needs a similarity no batch
    measured. A linker that starts after the first batch (shingles of no
    stored page in hand) reads the original's stored body for it, and stores
    what one linker that saw every page stores."""
    settings = Settings()
    canal = fetched("https://paper.example/canal", article_html("Canal", CANAL_STORY, published="2026-01-02T08:00:00"))
    weekly = fetched(
        "https://digest.example/week",
        article_html("Week", CANAL_STORY + BAKERY_STORY, [SEED_DISCLAIMER], published="2026-01-03T08:00:00"),
    )
    monthly = fetched(
        "https://digest.example/month",
        article_html("Month", CANAL_STORY + BAKERY_STORY + MARKET_STORY, [SEED_DISCLAIMER], published="2026-01-04T08:00:00"),
    )
    bakery = fetched(
        "https://relay.example/bakery", article_html("Bakery", BAKERY_STORY + MARKET_STORY[:1], published="2026-01-05T08:00:00")
    )

    def stored(db, linker_per_batch: bool) -> tuple[list[tuple], list[set[int]]]:
        store = open_store(str(db), settings)
        bodies_read = noting_body_reads(store)
        run_id = store.start_run("ingest", None, {})
        linker = Linker(store, settings)
        for batch in ([canal, weekly, monthly], [bakery]):
            if linker_per_batch:
                linker = Linker(store, settings)
            linker.link_batch(run_id, prepare_pages(batch, settings))
        return linked_rows(store), bodies_read

    fresh, read_fresh = stored(tmp_path / "fresh.duckdb", linker_per_batch=True)
    warm, read_warm = stored(tmp_path / "warm.duckdb", linker_per_batch=False)
    assert fresh == warm
    assert not any(read_warm)  # every page's shingles were at hand
    canal_id, bakery_id = 1, 4
    assert {canal_id} in read_fresh  # the original's body, read for a pair no batch measured
    clusters = {url: (cluster_id, original) for url, cluster_id, original, *_ in fresh}
    assert clusters["https://paper.example/canal"] == (canal_id, canal_id)
    assert clusters["https://relay.example/bakery"][0] != canal_id  # not joined through the digests
    assert bakery_id not in set().union(*read_fresh)  # a page of the batch is never read back


def test_the_linker_keeps_each_hosts_page_counts_as_the_database_has_them(tmp_path):
    """Aggregators (hosts of mostly marked copies) are decided from counts the
    linker reads once and keeps up to date, not from a query per batch."""
    settings = Settings()
    store = open_store(str(tmp_path / "h.duckdb"), settings)
    run_id = store.start_run("ingest", None, {})
    linker = Linker(store, settings)
    relay = [
        fetched(f"https://relay.example/{n}", article_html(title, story, [SEED_DISCLAIMER]))
        for n, (title, story) in enumerate([("Canal", CANAL_STORY), ("Bakery", BAKERY_STORY), ("Market", MARKET_STORY)])
    ]
    linker.link_batch(
        run_id, prepare_pages(relay[:2] + [fetched("https://paper.example/canal", article_html("Canal", CANAL_STORY))], settings)
    )
    linker.link_batch(run_id, prepare_pages(relay[2:], settings))
    assert linker.known.host_pages == store.host_page_counts() == {"relay.example": (3, 3), "paper.example": (1, 0)}
    assert AggregatorHosts(linker.known.host_pages, settings.provenance).hosts() == {"relay.example"}
    # a later run starts from the stored counts
    assert Linker(store, settings).known.host_pages == linker.known.host_pages


def test_saved_shingle_sets_come_back_as_saved_and_keep_only_the_latest(tmp_path):
    rng = np.random.default_rng(8)
    sets = {d: np.unique(rng.integers(0, 2**63, size=int(rng.integers(1, 60)), dtype=np.uint64)) for d in range(1, 301)}
    stamp = {"database_id": "a"}

    def reopened(budget=10_000, stamp=stamp, stored_through=stored):
        recent = RecentShingleSets(tmp_path / "sets", stamp, budget)
        recent.open(stored_through)
        return recent

    first = reopened()
    for doc_id in range(1, 101):
        first.add(doc_id, sets[doc_id])
    first.save(stored)
    # three smaller runs: each one's segment stays apart from the larger one before it
    for start in (101, 121, 141):
        run = reopened()
        for doc_id in range(start, start + 20):
            run.add(doc_id, sets[doc_id])
        run.save(stored)
    found = reopened().get(range(0, 302))
    assert found.keys() == set(range(1, 161))
    assert all(np.array_equal(found[d], sets[d]) for d in found)
    manifest = json.loads((tmp_path / "sets" / "segments.json").read_text())
    # each small run's segment took in the one before it (not larger); the large first one stays apart
    assert [(s["first"], s["last"]) for s in manifest["segments"]] == [(1, 100), (101, 160)]
    assert {p.name.split(".")[0] for p in (tmp_path / "sets").glob("*.npy")} == {s["name"] for s in manifest["segments"]}
    # a run past the budget: the oldest segments go once the newer ones hold it
    budget = sum(len(sets[d]) for d in range(161, 301))
    last = reopened(budget=budget)
    for doc_id in range(161, 301):
        last.add(doc_id, sets[doc_id])
    last.save(stored)
    assert reopened(budget=budget).get(range(0, 302)).keys() == set(range(161, 301))
    # not for another database, nor for one that no longer holds every page a segment names
    assert reopened(stamp={"database_id": "b"}).get(range(0, 302)) == {}
    assert reopened(budget=0).get(range(0, 302)) == {}  # a budget of 0 keeps none, and uses none
    assert reopened(stored_through=lambda d: (d - (d > 200), "1 run")).get(range(0, 302)) == {}  # a page is gone
    assert reopened(stored_through=lambda d: (d, "1 another run")).get(range(0, 302)) == {}  # its last page is another's
    (tmp_path / "sets" / "segments.json").write_text("[not a manifest")
    assert reopened().get(range(0, 302)) == {}


def test_a_later_run_verifies_copies_of_recent_pages_from_their_saved_shingle_sets(tmp_path):
    """The run that stored the original saved its shingle set; the next run's
    copy is verified against it without reading the original's body, and the
    result is the one a run reading the body stores. A saved set that is not
    the stored page's (another size) is passed over for the body."""
    settings = Settings()
    canal = fetched("https://paper.example/canal", article_html("Canal", CANAL_STORY, published="2026-01-02T08:00:00"))
    bakery = fetched("https://paper.example/bakery", article_html("Bakery", BAKERY_STORY))
    copy = fetched("https://relay.example/canal", article_html("Canal", CANAL_STORY[:-1], [SEED_DISCLAIMER]))

    def second_run(db, before_second_run=lambda store: None) -> tuple[list[tuple], list[set[int]]]:
        store = open_store(str(db), settings)
        first = Linker(store, settings)
        first.link_batch(store.start_run("ingest", None, {}), prepare_pages([canal, bakery], settings))
        assert first.save_for_next_run() == []
        before_second_run(store)
        bodies_read = noting_body_reads(store)
        Linker(store, settings).link_batch(store.start_run("ingest", None, {}), prepare_pages([copy], settings))
        return linked_rows(store), bodies_read

    def forget_saved_sets(store):
        shutil.rmtree(store.shingles_folder)

    def save_wrong_set(store):
        shutil.rmtree(store.shingles_folder)
        wrong = RecentShingleSets(
            store.shingles_folder, {"database_id": store.database_id(), **settings.fingerprint.params()}, 10_000
        )
        wrong.add(1, np.arange(3, dtype=np.uint64))  # doc 1 is the canal story, of more shingles than 3
        wrong.save(store.stored_through)

    saved, read_saved = second_run(tmp_path / "saved.duckdb")
    from_bodies, read_from_bodies = second_run(tmp_path / "bodies.duckdb", forget_saved_sets)
    wrong, read_wrong = second_run(tmp_path / "wrong.duckdb", save_wrong_set)
    canal_id = 1
    assert not any(read_saved)
    assert {canal_id} in read_from_bodies and {canal_id} in read_wrong
    assert saved == from_bodies == wrong
    clusters = {url: (cluster_id, original, source) for url, cluster_id, original, source, *_ in saved}
    assert clusters["https://relay.example/canal"] == (canal_id, canal_id, canal_id)


def noting_key_reads(store) -> list[str]:
    """The scans of what is stored that a Linker's start makes from now on (the real scans, noted)."""
    reads: list[str] = []

    def noting(name):
        read = getattr(store, name)

        def noted():
            reads.append(name)
            return read()

        return noted

    for name in ("url_numbers", "shingle_counts", "host_line_numbers"):
        setattr(store, name, noting(name))
    return reads


def assert_holds_what_is_stored(linker, store):
    """The linker's view of what is stored is the database's (read again here)."""
    doc_ids, n_shingles = Store.shingle_counts(store)
    sizes = np.full(int(doc_ids.max(initial=0)) + 1, -1, dtype=np.int64)
    sizes[doc_ids] = n_shingles
    known = linker.known
    assert np.array_equal(known.sizes[: known.next_id], sizes)
    assert np.array_equal(known._urls.all(), Store.url_numbers(store))
    assert np.array_equal(known._lines.all(), Store.host_line_numbers(store))


def test_a_run_starts_from_what_the_last_run_saved_only_while_the_database_is_as_it_left_it(tmp_path):
    """A run saves what it holds of what is stored (URL and host line numbers,
    page sizes); the next run starts from it instead of scanning the tables,
    unless another batch was stored after it (the database put back from a
    copy, then a run that died before saving), rows were added by hand, or a
    saved file does not hold what was saved. Each start holds exactly what the
    database holds, and no page is stored twice."""
    settings = Settings()
    store = open_store(str(tmp_path / "keys.duckdb"), settings)
    note = "Riverside Notes collects the town's stories each morning. Tell us what we missed."
    stories = [("Canal drained", CANAL_STORY), ("Bread from the allotments", BAKERY_STORY), ("Market moves", MARKET_STORY)]

    def page(n, title, story):
        return fetched(f"https://notes.example/{n}", article_html(title, story, [note], site_name="Riverside Notes"))

    def run(pages, save=True):
        linker = Linker(store, settings)
        assert_holds_what_is_stored(linker, store)
        linker.link_batch(store.start_run("ingest", None, {}), prepare_pages(pages, settings))
        if save:
            assert linker.save_for_next_run() == []

    reads = noting_key_reads(store)
    run([page(1, *stories[0]), page(2, *stories[1])])
    assert reads == ["shingle_counts", "url_numbers", "host_line_numbers"]  # nothing saved yet
    reads.clear()
    run([page(3, *stories[2]), page(4, "Canal drained again", CANAL_STORY)])
    assert reads == []
    with store.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM host_lines").fetchone()[0] > 0
    # the database put back from a copy, and a run that stored as many pages
    # as the saved keys count, other ones, and died: the next run reads the tables
    shutil.copy(store.path, tmp_path / "copy.duckdb")
    run([page(5, "Library notes", CANAL_STORY[:2] + MARKET_STORY[:1])])
    shutil.copy(tmp_path / "copy.duckdb", store.path)
    run([page(6, "Bakery again", BAKERY_STORY)], save=False)
    reads.clear()
    run([page(5, "Library notes", CANAL_STORY[:2] + MARKET_STORY[:1]), page(6, "Bakery again", BAKERY_STORY)])
    assert reads == ["shingle_counts", "url_numbers", "host_line_numbers"]
    reads.clear()
    # a page added by hand: read again, and the page is not stored a second time
    with store.connect() as con:
        con.execute(
            "INSERT INTO documents SELECT * REPLACE ((SELECT max(doc_id) + 1 FROM documents) AS doc_id, "
            "'https://notes.example/7' AS url) FROM documents WHERE doc_id = 1"
        )
    run([page(7, "Market again", MARKET_STORY)])
    assert reads == ["shingle_counts", "url_numbers", "host_line_numbers"]
    reads.clear()
    # a host line added by hand: only the host lines are read again
    with store.connect() as con:
        con.execute("INSERT INTO host_lines VALUES ('notes.example', 12345, 'By hand.', [1])")
    run([page(9, "Market in June", MARKET_STORY[1:])])
    assert reads == ["host_line_numbers"]
    reads.clear()
    # a saved file that does not hold what its manifest says (a machine that crashed before writing it out)
    (urls_file,) = store.snapshot_folder.glob("*.url_numbers.npy")
    urls_file.write_bytes(urls_file.read_bytes()[:-8] + bytes(8))
    run([page(8, "Canal once more", CANAL_STORY[1:])])
    assert reads == ["shingle_counts", "url_numbers", "host_line_numbers"]
    with store.connect(read_only=True) as con:
        urls = [url for (url,) in con.execute("SELECT url FROM documents").fetchall()]
    assert sorted(urls) == sorted(f"https://notes.example/{n}" for n in range(1, 10))


def test_a_database_put_back_from_a_copy_uses_none_of_the_saved_tables_and_sets_of_pages_it_lost(tmp_path):
    """The LSH tables and the shingle sets a run saves name pages by doc_id.
    Put back from an older copy, a database gives the next page it stores the
    doc_id of a page it lost; if that run dies before saving, the saved tables
    and sets still count as many pages as the database holds. The page that
    stored them is no longer there, so they are not used: a copy of the new
    page is linked to it as in a database that never lost a page."""
    settings = Settings()
    store = open_store(str(tmp_path / "restored.duckdb"), settings)
    canal = fetched("https://paper.example/canal", article_html("Canal", CANAL_STORY))
    bakery = fetched("https://paper.example/bakery", article_html("Bakery", BAKERY_STORY))
    market = fetched("https://paper.example/market", article_html("Market", MARKET_STORY))
    market_copy = fetched("https://relay.example/market", article_html("Market", MARKET_STORY, [SEED_DISCLAIMER]))

    def run(pages, save=True) -> Linker:
        linker = Linker(store, settings)
        linker.link_batch(store.start_run("ingest", None, {}), prepare_pages(pages, settings))
        if save:
            assert linker.save_for_next_run() == []
        return linker

    run([canal])
    shutil.copy(store.path, tmp_path / "copy.duckdb")
    run([bakery])  # doc 2, in the saved tables and sets
    shutil.copy(tmp_path / "copy.duckdb", store.path)
    run([market], save=False)  # doc 2 again, another page, and the run dies before saving
    last = run([market_copy])
    assert last.known.recent.get([2]) == {}  # the bakery page's set is not taken for doc 2's
    rows = {url: (cluster_id, original, source) for url, cluster_id, original, source, *_ in linked_rows(store)}
    market_id = 2
    assert rows["https://relay.example/market"] == (rows["https://paper.example/market"][0], market_id, market_id)


def test_migration_004_takes_the_last_batch_id_out_of_meta_and_keeps_the_rest(db_path, migrated_to):
    con = migrated_to(3)
    con.execute("INSERT INTO meta VALUES ('database.id', 'older'), ('last_batch.id', 'a1b2')")  # as older versions wrote it
    con.close()
    Store(db_path).migrate()
    with duckdb.connect(db_path, read_only=True) as con:
        assert con.execute("SELECT key, value FROM meta").fetchall() == [("database.id", "older")]


def test_prepared_pages_come_back_without_their_html_and_their_sizes_are_stored(tmp_path):
    settings = Settings()
    pages = [
        fetched("https://paper.example/canal", article_html("Canal", CANAL_STORY)),
        fetched("https://paper.example/empty", "<html><body><p>Nothing here.</p></body></html>"),
    ]
    batch = prepare_pages(pages, settings)
    assert [f.html for f in batch.fetches] == [None, None]
    assert [f.n_bytes for f in batch.fetches] == [len(p.html) for p in pages]
    assert batch.fetches[1].error.startswith("no article text")
    store = open_store(str(tmp_path / "b.duckdb"), settings)
    Linker(store, settings).link_batch(store.start_run("ingest", None, {}), batch)
    with store.connect(read_only=True) as con:
        stored = con.execute("SELECT url, bytes FROM fetches ORDER BY url").fetchall()
    assert stored == sorted((p.url, len(p.html)) for p in pages)
