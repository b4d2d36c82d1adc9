import re
from datetime import datetime
from pathlib import Path

import pytest

from dedup.clean import CleanConfig, RuleError, fold, load_rules, required_literals, strip_markers
from dedup.models import Article
from tests.pages import CANAL_STORY, SEED_DISCLAIMER, ZH_DISCLAIMER


def article(paragraphs, host="copies.example", canonical=None, og_url=None) -> Article:
    return Article(
        url=f"https://{host}/a", final_url=f"https://{host}/a", host=host, fetched_at=datetime(2026, 1, 1),
        text="\n".join(paragraphs), canonical_url=canonical, og_url=og_url,
    )  # fmt: skip


CONFIG = CleanConfig()

DISCLAIMERS = [
    "本文轉載自網路，版權歸原作者所有，如有侵權請聯繫刪除。",  # traditional Chinese
    "Hinweis: Dieser Beitrag wurde aus einer anderen Quelle übernommen. Die Rechte liegen beim ursprünglichen Autor.",
    "Aviso: los derechos de este artículo pertenecen a su autor original; reproducido solo con fines informativos.",
    "Все права на материал принадлежат автору; перепечатано исключительно в информационных целях.",
    "이 글의 저작권은 원작자에게 있으며, 정보 공유 목적으로 게재되었습니다. 문제가 될 경우 삭제하겠습니다.",
    "本記事の著作権は原作者に帰属します。情報共有を目的として転載しています。",
    "Note: the rights to this story remain with the original publisher; republished for information sharing only.",
]
CREDITS = [
    ("Source: Harbor Gazette", "Harbor Gazette"),
    ("Originally published on canalnews.example", "canalnews.example"),
    ("Quelle: Stadtanzeiger", "Stadtanzeiger"),
    ("Fuente: Diario del Puerto", "Diario del Puerto"),
    ("Источник: Речной вестник", "Речной вестник"),
    ("출처: 항구신문", "항구신문"),
    ("出典：港湾新聞", "港湾新聞"),
]


def test_seed_disclaimer_is_stripped_and_kept_as_marker():
    cleaned = strip_markers(article(CANAL_STORY + [SEED_DISCLAIMER]), CONFIG)
    assert "Reposting this article" not in cleaned.body
    assert cleaned.body.endswith(CANAL_STORY[-1])
    assert [m.kind for m in cleaned.markers] == ["disclaimer"]
    assert cleaned.markers[0].text == SEED_DISCLAIMER
    assert cleaned.markers[0].position == len(CANAL_STORY)
    assert cleaned.marks_copy
    assert any(a.kind == "disclaimer" and a.strength == "weak" for a in cleaned.attributions)


def test_chinese_disclaimer_and_credit_name_the_source():
    cleaned = strip_markers(article(CANAL_STORY + ["来源：海港日报", ZH_DISCLAIMER]), CONFIG)
    assert "版权" not in cleaned.body and "来源" not in cleaned.body
    credit = [a for a in cleaned.attributions if a.kind == "credit"]
    assert credit and credit[0].source_name == "海港日报" and credit[0].strength == "medium"


@pytest.mark.parametrize("disclaimer", DISCLAIMERS)
def test_disclaimers_in_many_languages(disclaimer):
    cleaned = strip_markers(article(CANAL_STORY + [disclaimer]), CONFIG)
    assert disclaimer not in cleaned.body
    assert cleaned.marks_copy


@pytest.mark.parametrize("credit, name", CREDITS)
def test_credit_lines_become_attributions(credit, name):
    cleaned = strip_markers(article(CANAL_STORY + [credit]), CONFIG)
    assert credit not in cleaned.body
    assert [a.source_name for a in cleaned.attributions if a.kind == "credit"] == [name]


def test_credit_with_url_is_strong():
    cleaned = strip_markers(article(CANAL_STORY + ["Source: https://canal.example/news/1"]), CONFIG)
    credit = [a for a in cleaned.attributions if a.kind == "credit"][0]
    assert credit.strength == "strong" and credit.source_url == "https://canal.example/news/1"


def test_photo_credit_is_kept():
    photo = "Photo by Jane Roe/AFP via Getty Images"
    cleaned = strip_markers(article(CANAL_STORY + [photo]), CONFIG)
    assert photo in cleaned.body and not cleaned.markers


def test_source_in_the_middle_of_a_story_is_not_cut():
    middle = "Source: a council engineer, who asked not to be named, said the gates are older than the records."
    paragraphs = CANAL_STORY[:3] + [middle] + CANAL_STORY[3:] + CANAL_STORY
    cleaned = strip_markers(article(paragraphs), CONFIG)
    assert middle in cleaned.body
    assert (
        "according to a source"
        in strip_markers(article(CANAL_STORY + ["The gates will hold, according to a source at the council."]), CONFIG).body
    )


def test_finance_risk_footer_is_a_marker_but_not_a_copy_sign():
    footer = "This article is for information only and does not constitute investment advice."
    cleaned = strip_markers(article(CANAL_STORY + [footer]), CONFIG)
    assert footer not in cleaned.body
    assert cleaned.markers[0].kind == "disclaimer" and not cleaned.markers[0].marks_copy
    assert not cleaned.marks_copy


def test_disclaimer_glued_to_the_last_paragraph_is_peeled_off():
    glued = (
        CANAL_STORY[-1]
        + " Quelle: Stadtanzeiger Hinweis: Dieser Artikel wurde von einer anderen Quelle übernommen. Das Urheberrecht liegt beim ursprünglichen Autor."
    )
    cleaned = strip_markers(article(CANAL_STORY[:-1] + [glued]), CONFIG)
    assert cleaned.body.endswith(CANAL_STORY[-1])
    assert cleaned.marks_copy


def test_dateline_header_is_removed_but_not_a_copy_sign():
    cleaned = strip_markers(article(["Post At: Jan 13/2024 07:50AM"] + CANAL_STORY), CONFIG)
    assert cleaned.markers[0].kind == "dateline" and not cleaned.marks_copy
    assert cleaned.body.startswith(CANAL_STORY[0])


def test_cross_domain_canonical_is_strong_evidence_and_own_canonical_is_not():
    other = strip_markers(article(CANAL_STORY, canonical="https://www.canal.example/story"), CONFIG)
    assert [(a.kind, a.strength, a.source_name) for a in other.attributions] == [("canonical", "strong", "www.canal.example")]
    own = strip_markers(article(CANAL_STORY, host="news.canal.example", canonical="https://www.canal.example/story"), CONFIG)
    assert own.attributions == ()


def test_user_rule_files_add_rules(tmp_path: Path):
    (tmp_path / "mine.toml").write_text(
        '[[rule]]\nid = "mine.disclaimer.mirror"\nkind = "disclaimer"\nall = ["mirrored by the canal watchers"]\n',
        encoding="utf-8",
    )
    rules = load_rules((tmp_path,))
    cleaned = strip_markers(article(CANAL_STORY + ["Mirrored by the Canal Watchers for our members."]), CleanConfig(rules=rules))
    assert [m.rule for m in cleaned.markers] == ["mine.disclaimer.mirror"]


def test_bad_rule_file_names_file_and_rule(tmp_path: Path):
    (tmp_path / "broken.toml").write_text('[[rule]]\nid = "x"\nkind = "disclaimer"\nall = ["(unclosed"]\n', encoding="utf-8")
    with pytest.raises(RuleError, match=r"broken.toml rule x: bad regular expression"):
        load_rules((tmp_path,))
    with pytest.raises(RuleError, match="rule directory not found"):
        load_rules((tmp_path / "nope",))


def _zone_rule(zone: str) -> str:
    return f'[[rule]]\nid = "mine.{zone}"\nkind = "boilerplate"\nzone = "{zone}"\nall = ["mirrored by the canal watchers"]\n'


def test_a_rule_applies_only_in_its_zone(tmp_path: Path):
    notice = "Mirrored by the Canal Watchers for our members."
    story = CANAL_STORY * 3  # long enough for a middle, away from the head and the tail
    placed = {"head": 0, "middle": len(story) // 2, "tail": len(story)}

    def rules_found(rule_text: str, at: int) -> list[str]:
        folder = tmp_path / f"rules-{abs(hash(rule_text))}"
        folder.mkdir(exist_ok=True)
        (folder / "zones.toml").write_text(rule_text, encoding="utf-8")
        cleaned = strip_markers(article(story[:at] + [notice] + story[at:]), CleanConfig(rules=load_rules((folder,))))
        assert (notice in cleaned.body) == (not cleaned.markers)
        return [m.rule for m in cleaned.markers if m.rule.startswith("mine.")]

    every_zone = "".join(_zone_rule(z) for z in ("anywhere", "head", "tail"))
    # the first rule that matches, in file order, among those of the paragraph's zones
    assert {w: rules_found(every_zone, at) for w, at in placed.items()} == {w: ["mine.anywhere"] for w in placed}
    assert {w: rules_found(_zone_rule("head"), at) for w, at in placed.items()} == {
        "head": ["mine.head"],
        "middle": [],
        "tail": [],
    }
    assert {w: rules_found(_zone_rule("tail"), at) for w, at in placed.items()} == {
        "head": [],
        "middle": [],
        "tail": ["mine.tail"],
    }
    # the packaged rules keep to the edges: a disclaimer mid-article stays
    middle = strip_markers(article(story[: placed["middle"]] + [SEED_DISCLAIMER] + story[placed["middle"] :]), CONFIG)
    assert SEED_DISCLAIMER in middle.body and middle.markers == ()


@pytest.mark.parametrize(
    "pattern, literals",
    [
        (r"\bfoo(bar|baz)\b", ("foo",)),  # the longest run a match must contain
        (r"(a|b)?xyz", ("xyz",)),  # an optional group asks for nothing
        (r"(hello )+world", ("hello ",)),
        (r"(reposted|reprinted) for (information|reference)", ("information", "reference")),
        (r"\d+\s*年", ("年",)),
        (r"(abc|\d)x", ("x",)),  # a branch without a literal: the group asks for nothing
        (r"(abc|\d)", None),
        (r"\d{4}", None),
        (r"(?i)copyright", None),  # case-insensitive: `in` cannot decide
        (r"x(?i:copyright)", ("x",)),
    ],
)
def test_required_literals_are_what_every_match_contains(pattern, literals):
    assert required_literals(re.compile(pattern)) == literals


def test_the_literal_prefilter_never_rejects_what_the_regex_matches():
    """Every packaged pattern, on the marker texts of these tests and on the
    strings its own literals make (each alone, with its neighbours): the
    prefilter lets through everything the regex finds."""
    rule_set = load_rules()
    regexes = [r for rule in rule_set.rules for r in rule.all + rule.none] + list(rule_set.guards)
    texts = [SEED_DISCLAIMER, ZH_DISCLAIMER, *CANAL_STORY]
    texts += [fold(t) for t in DISCLAIMERS] + [fold(c) for c, _ in CREDITS]
    literals = sorted({lit for r in regexes for lit in r.literals or ()})
    texts += literals + [" ".join(literals[i : i + 3]) for i in range(len(literals))]
    checked = 0
    for regex in regexes:
        for text in texts:
            found = regex.pattern.search(text) is not None
            assert (regex.search(text) is not None) == found, (regex.pattern.pattern, text)
            checked += found
    assert checked > 20  # the texts do exercise the patterns


def test_a_paragraph_folds_to_nothing_exactly_when_it_is_blank():
    """strip_markers does not fold the paragraphs no rule is tried on (the
    middle of an article): it keeps those that are not blank, which must be
    the same as those that fold to something, for every character."""
    differ = [
        hex(code) for code in range(0x110000) if not 0xD800 <= code <= 0xDFFF and bool(fold(chr(code))) != bool(chr(code).split())
    ]
    assert differ == []
    story = ["Dateline paragraph one.", "Second.", "Third.", "\u3000\u00a0 ", "A middle paragraph.", "\u2003", "Fourth."]
    story += ["Tail one.", "Tail two.", "Tail three.", "Tail four.", "Tail five."]
    body = strip_markers(article(story), CONFIG).body.split("\n")
    assert "A middle paragraph." in body and "\u2003" not in body and "\u3000\u00a0 " not in body


def test_ascii_text_folds_as_it_would_through_nfkc():
    """fold skips NFKC and the fancy forms for ASCII text: neither changes it."""
    import unicodedata

    from dedup.clean import _PLAIN_FORMS

    assert not any(fancy.isascii() for fancy, _ in _PLAIN_FORMS)
    samples = ["".join(map(chr, range(128))), "Source:  Harbor\tGazette ", "COPYRIGHT (c) 2026 -- All Rights"]
    for text in samples:
        assert fold(text) == " ".join(unicodedata.normalize("NFKC", text).casefold().split())
