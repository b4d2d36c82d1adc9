"""Learned host boilerplate: the paragraphs a site puts on all its pages.

An aggregator's own disclaimer, a "follow us" line, a site slogan: no rule
names them, but they recur at the edges of many pages of one host that carry
different stories. Once a paragraph has been seen on `min_stories` pages of
a host whose stories differ, it is that host's furniture, and the clean step
strips it from that host's pages with the rule `learned` (kind boilerplate).

"Different stories" is measured, not assumed from titles: an aggregator that
reposts one story three times under three titles repeats the story's own
paragraphs, and those must stay. Two pages count as different stories when
they would not be linked as copies: the MinHash estimate of their Jaccard
similarity is below `story_jaccard` and neither body is mostly contained in
the other (containment estimated from the Jaccard estimate and the two
shingle counts, below `story_containment`).

What is remembered per (host, paragraph): its text and the ids of up to
`min_stories` pages with different stories that carried it (the `host_lines`
table), so learning carries over from one run to the next.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from difflib import SequenceMatcher
from functools import lru_cache

import numpy as np

from dedup.clean import fold
from dedup.models import CleanedArticle, HostLineRow, Marker
from dedup.store import StoredNumbers

RULE_ID = "learned"
# a line learned on another host, carried along by a page that copied it
CARRIED_RULE_ID = "learned-carried"


@dataclass(frozen=True)
class BoilerplateConfig:
    enabled: bool = True
    # pages of one host, with pairwise different stories, that must carry a
    # paragraph before it counts as the host's furniture
    min_stories: int = 3
    # only the first and last few paragraphs of a body are looked at
    edge_paragraphs: int = 3
    min_chars: int = 8
    max_chars: int = 500
    # two pages carry different stories when their estimated Jaccard and
    # containment are both below these (the linking thresholds)
    story_jaccard: float = 0.3
    story_containment: float = 0.5


# The parts of a template line that change from page to page: links and
# domains, quoted titles, numbers (years, dates, ids) and names (a word that
# starts with a capital letter, the line's first word aside). What is left
# is the template's own wording.
# (a domain's own characters are ASCII: one written next to Chinese or
# Japanese text ends where they do; what is written onto its front is the link's)
_URL_OR_DOMAIN = re.compile(
    r"(?:https?://|www\.)[!-~]+|(?<![!-~])[!-~]*?(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![A-Za-z0-9])(?:/[!-~]*)?|[!-~]+@[!-~]+"
)
# every link, domain or address has a dot between two characters of its own, or an @
_MAYBE_LINK = re.compile(r"[A-Za-z0-9-]\.[A-Za-z]|@|www|://")
_QUOTED = re.compile(r'"[^"]{1,300}"|\'[^\']{3,300}\'|《[^》]{1,300}》|「[^」]{1,300}」|『[^』]{1,300}』')
_NUMBER = re.compile(r"\d+")
# a word in an alphabet with capital letters (a name in Chinese or Japanese
# is not told apart this way)
_LETTERS = "A-Za-z\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff\u1e00-\u1eff"
_WORD_PATTERN = f"[{_LETTERS}][{_LETTERS}0-9'&.-]*"
_WORD = re.compile(_WORD_PATTERN)
# the line's opening word, unless a capitalised word follows it or it has
# capitals inside ("Harbor Weekly", "FiveThirtyEight": a name)
_OPENING = re.compile(f"[^\\w]*(?:(?![{_LETTERS}][a-z\u00e0-\u024f]*[A-Z0-9])(?!{_WORD_PATTERN}\\s+[A-Z]){_WORD_PATTERN})?")
_CJK = re.compile("[\u2e80-\u9fff\uac00-\ud7af]")
_SLOT = "\x00"
# slots next to each other, or joined by a short word ("Presse de Tunisie"), are one
_SLOTS = re.compile(r"\x00(?:[^\w\x00]*(?:\w{1,3}[^\w\x00]+)?\x00)+")
_SPACE_AROUND_SLOT = re.compile(r"\s*\x00\s*")
# a template keeps at least this many letters of its own once its slots are
# set aside; a line with fewer is keyed by its whole text
_MIN_TEMPLATE_LETTERS = 8
_LETTERS_ENOUGH = re.compile(f"(?:[^\\W\\d_][\\W\\d_]*){{{_MIN_TEMPLATE_LETTERS}}}")
# a run of a template's fixed wording with this many letters keys the line
_MIN_ANCHOR_LETTERS = 16
_RUN_EDGES = re.compile(r"^[\W_]+|[\W_]+$")
# a part of the title shorter than this is not set aside as the title
_MIN_TITLE_CHARS = 12


def line_template(paragraph: str, title: str | None = None) -> str | None:
    """The paragraph with the parts that vary between pages set aside (the
    page's `title`, links, quotes, numbers, names), folded; None when too
    little of it is left to be a template."""
    text = _without_title(fold(paragraph), fold(title) if title else "")
    if _MAYBE_LINK.search(text):  # (most lines hold no link: the slow pattern only where one may be)
        text = _URL_OR_DOMAIN.sub(_SLOT, text)
    text = _QUOTED.sub(_SLOT, text)
    # names are found by their capital letter, in the paragraph as written
    # (the paragraph's own first word aside: a sentence starts with a
    # capital; and a word it also writes in lowercase is not a name)
    opening = _OPENING.match(paragraph)
    words = [m.group() for m in _WORD.finditer(paragraph, opening.end())]
    capitals = {w.casefold() for w in words if w[0].isupper()} - {w for w in words if w[0].islower()}
    if _CJK.search(text):  # a line in Chinese, Japanese or Korean writes the names it fills in in other scripts
        nameless = _WORD.sub(_SLOT, text)
    else:
        nameless = _WORD.sub(lambda m: _SLOT if m.group() in capitals else m.group(), text)
    nameless, text = (_SLOTS.sub(_SLOT, _NUMBER.sub(_SLOT, t)) for t in (nameless, text))
    # a line in title case loses its own words with the names: then only
    # the other parts are set aside
    for template in (nameless, text):
        template = " ".join(_SPACE_AROUND_SLOT.sub(" \x00 ", template).split())
        if _LETTERS_ENOUGH.search(template):
            return template
    return None


def _letter_weight(text: str) -> int:
    """Letters, a Chinese, Japanese or Korean character counting as two
    (it holds about what two letters of an alphabet do)."""
    return sum(2 if ch >= "\u2e80" else 1 for ch in text if ch.isalpha())


def _without_title(text: str, title: str) -> str:
    """`text` with the longest parts it shares with the page's title set
    aside (an aggregator's title wraps the story's: "[Site] Title", "Title | Site")."""
    for _ in range(2):
        if len(title) < _MIN_TITLE_CHARS:
            return text
        # (most lines share no part of the title: a quick look at each of its pieces first)
        if not any(title[i : i + _MIN_TITLE_CHARS] in text for i in range(len(title) - _MIN_TITLE_CHARS + 1)):
            return text
        match = SequenceMatcher(None, text, title, autojunk=False).find_longest_match(0, len(text), 0, len(title))
        if match.size < _MIN_TITLE_CHARS:
            return text
        text = text[: match.a] + _SLOT + text[match.a + match.size :]
        title = title[: match.b] + _SLOT + title[match.b + match.size :]
    return text


@lru_cache(maxsize=1 << 14)
def line_key(paragraph: str, title: str | None = None) -> int:
    """A stable 63-bit key for a paragraph: of its template (`line_template`),
    so that one host's line filled in with each page's own title, link, year
    or source is one line, else of its folded text. A template is keyed by
    its longest run of fixed wording (`template_anchor`) when that is long
    enough: a slot's value can bring lowercase words of its own ("Frau
    Sabienes sagt"), which the rest of the line does not change with."""
    template = line_template(paragraph, title)
    key = fold(paragraph) if template is None else template_anchor(template)
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def template_anchor(template: str) -> str:
    """The template's longest run between slots, trimmed of punctuation, if
    it holds `_MIN_ANCHOR_LETTERS` letters (`_letter_weight`); else the template."""
    runs = [_RUN_EDGES.sub("", run) for run in template.split(_SLOT)]
    longest = max(runs, key=len)
    if len(runs) > 1 and _letter_weight(longest) >= _MIN_ANCHOR_LETTERS:
        return longest
    return template


def edge_lines(body: str, config: BoilerplateConfig, title: str | None = None, reach: int = 1) -> dict[int, str]:
    """The body's edge paragraphs that are candidates for furniture, by key
    (`reach` times as many at each edge: those that come to an edge once
    furniture before them is taken off)."""
    paragraphs = [p for p in body.split("\n") if p.strip()]
    n = config.edge_paragraphs * reach
    edges = paragraphs if len(paragraphs) <= 2 * n else paragraphs[:n] + paragraphs[-n:]
    return {line_key(p, title): p for p in edges if config.min_chars <= len(p.strip()) <= config.max_chars}


def strip_furniture(
    body: str, text: str, title: str | None, config: BoilerplateConfig, rule_of: Callable[[int], str | None]
) -> tuple[str, list[Marker]] | None:
    """`body` without the edge paragraphs whose key `rule_of` gives a rule,
    again and again as others come to the edge, and a marker for each; None
    when none is taken off."""
    markers: list[Marker] = []
    while True:
        edges = edge_lines(body, config, title)
        stripped = without_furniture(body, text, {line: rule for key, line in edges.items() if (rule := rule_of(key))})
        if stripped is None:
            return (body, markers) if markers else None
        body, found = stripped
        markers += found


def without_furniture(body: str, text: str, furniture: dict[str, str]) -> tuple[str, list[Marker]] | None:
    """`body` without the paragraphs in `furniture` (paragraph -> rule), and
    a marker for each (placed by its paragraph in the page's `text`); None
    when none is there, or when nothing would be left (a page that is all
    furniture keeps its text rather than vanish)."""
    text_lines = text.split("\n")
    kept, markers = [], []
    for paragraph in body.split("\n"):
        if paragraph in furniture:
            position = text_lines.index(paragraph) if paragraph in text_lines else -1
            markers.append(Marker(kind="boilerplate", rule=furniture[paragraph], text=paragraph, position=position))
        else:
            kept.append(paragraph)
    stripped = "\n".join(kept).strip()
    return (stripped, markers) if markers and stripped else None


@dataclass
class LineSeen:
    """One paragraph of one host: its text and the pages of different stories that carried it."""

    text: str
    story_doc_ids: list[int] = field(default_factory=list)
    changed: bool = False
    stored: bool = False  # the database holds a row for it


class StoredLineKeys:
    """Which (host, line_key) pairs have a row in host_lines, held by a run
    so that a batch looks up only the pairs stored: most of a batch's edge
    paragraphs are new (its stories' own text), and finding the few stored
    ones meant a scan of the table's key column for every batch (at a
    million pages, 3 million rows).

    A pair is held as one 64-bit number, DuckDB's hash of the host xor the
    key (`Store.host_line_numbers`, `Store.text_hashes`), in a StoredNumbers."""

    def __init__(self, numbers: np.ndarray) -> None:
        """`numbers`: the stored pairs' numbers, sorted."""
        self._numbers = StoredNumbers(numbers)

    @staticmethod
    def numbers_of(pairs: list[tuple[str, int]], host_hashes: dict[str, int]) -> np.ndarray:
        hashes = np.array([host_hashes[host] for host, _ in pairs], dtype=np.uint64)
        return hashes ^ np.array([key for _, key in pairs], dtype=np.int64).astype(np.uint64)

    def held(self, pairs: set[tuple[str, int]], host_hashes: dict[str, int]) -> set[tuple[str, int]]:
        """Those of these pairs that may have a stored row (`host_hashes`: each of their hosts' hash)."""
        asked = list(pairs)
        found = self._numbers.may_hold(self.numbers_of(asked, host_hashes))
        return {pair for pair, hit in zip(asked, found.tolist(), strict=True) if hit}

    def add(self, rows: list[HostLineRow], host_hashes: dict[str, int]) -> None:
        """Rows the run has stored (call once their batch is committed)."""
        self._numbers.add(self.numbers_of([(host, key) for host, key, _, _ in rows], host_hashes))

    def all(self) -> np.ndarray:
        """The numbers of every stored pair, sorted."""
        return self._numbers.all()


class HostLines:
    """What has been seen of each host's edge paragraphs, and what is learned.

    `observe` every page of a batch first, then `strip` them: a paragraph
    that reaches the threshold within a batch is taken off all of that
    batch's pages, the first ones included.

    A line learned on one host is furniture on every host: a copier that
    scrapes a page takes the source's related links, newsletter box or
    notice along, and they are not the story's text there either.
    `furniture_keys` are the keys learned on some host before this batch.
    """

    def __init__(self, config: BoilerplateConfig, dtype: np.dtype, furniture_keys: set[int] | None = None) -> None:
        self.config = config
        self.dtype = np.dtype(dtype)
        self.lines: dict[tuple[str, int], LineSeen] = {}
        self._signatures: dict[int, tuple[np.ndarray, int]] = {}
        self._furniture_keys = furniture_keys if furniture_keys is not None else set()
        self.learned_keys: set[int] = set()  # keys that became furniture on some host here

    def load(self, rows: list[HostLineRow], signatures: tuple[np.ndarray, np.ndarray, np.ndarray] = ((), (), ())) -> None:
        """Stored lines (host, key, text, story doc ids), and the signatures of
        those docs (doc ids, hash values matrix, shingle counts: `Store.signatures_of`),
        which only pages still to be `observe`d are compared with."""
        for host, key, text, doc_ids in rows:
            self.lines.setdefault((host, key), LineSeen(text=text, story_doc_ids=list(doc_ids), stored=True))
        for doc_id, values, n_shingles in zip(*signatures, strict=True):
            self._signatures.setdefault(int(doc_id), (values, int(n_shingles)))

    def observe(self, host: str, doc_id: int, hashvalues: bytes, n_shingles: int, edges: dict[int, str]) -> None:
        """Count a page's edge paragraphs (`edge_lines` of its body) for its host."""
        signature = (np.frombuffer(hashvalues, dtype=self.dtype), n_shingles)
        self._signatures[doc_id] = signature
        for key, text in edges.items():
            seen = self.lines.setdefault((host, key), LineSeen(text=text))
            if len(seen.story_doc_ids) >= self.config.min_stories or doc_id in seen.story_doc_ids:
                continue
            if all(self._different_story(signature, other) for other in seen.story_doc_ids):
                seen.story_doc_ids.append(doc_id)
                seen.changed = True
                if len(seen.story_doc_ids) >= self.config.min_stories:
                    self.learned_keys.add(key)

    def _different_story(self, signature: tuple[np.ndarray, int], other_doc_id: int) -> bool:
        if other_doc_id not in self._signatures:  # its page is gone; it counted when it was stored
            return True
        (values, n_a), (other, n_b) = signature, self._signatures[other_doc_id]
        jaccard = float(np.mean(values == other))
        common = jaccard * (n_a + n_b) / (1.0 + jaccard)
        containment = common / max(1, min(n_a, n_b))
        return jaccard < self.config.story_jaccard and containment < self.config.story_containment

    def is_furniture(self, host: str, key: int) -> bool:
        """Whether the line is this host's furniture."""
        seen = self.lines.get((host, key))
        return seen is not None and len(seen.story_doc_ids) >= self.config.min_stories

    def is_carried(self, key: int) -> bool:
        """Whether the line is furniture of some host."""
        return key in self._furniture_keys or key in self.learned_keys

    def rule_for(self, host: str, key: int) -> str | None:
        """The rule a line of this host is furniture by (the host's own, or
        carried from another), None if it is not furniture."""
        if self.is_furniture(host, key):
            return RULE_ID
        return CARRIED_RULE_ID if self.is_carried(key) else None

    def strip(self, cleaned: CleanedArticle) -> CleanedArticle:
        """The article without its host's learned furniture (unchanged if none),
        again and again as lines come to the edge (their stored rows `load`ed:
        `edge_lines` with a `reach` of 2)."""
        host = cleaned.article.host or ""
        stripped = strip_furniture(
            cleaned.body, cleaned.article.text, cleaned.article.title, self.config, lambda key: self.rule_for(host, key)
        )
        if stripped is None:
            return cleaned
        body, markers = stripped
        return replace(cleaned, body=body, markers=tuple(sorted([*cleaned.markers, *markers], key=lambda m: m.position)))

    def changed_rows(self) -> tuple[list[HostLineRow], list[HostLineRow]]:
        """Lines whose story list grew since the last call, as rows to store:
        (new lines, lines the database holds with a shorter list)."""
        new, grown = [], []
        for (host, key), seen in self.lines.items():
            if seen.changed:
                (grown if seen.stored else new).append((host, key, seen.text, list(seen.story_doc_ids)))
                seen.changed, seen.stored = False, True
        return new, grown
