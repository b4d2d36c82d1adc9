"""Clean stage: take the repost markers out of the text and keep them as evidence.

Rules are data (`dedup/rules/*.toml`, plus any files a user adds). A rule
matches one paragraph of the extracted text, after the paragraph is folded
(NFKC, case-folded, quotes straightened, whitespace collapsed) so the rule
tolerates full-width characters, punctuation and spacing variants.

Rule fields:
  id          unique name, reported in `markers.rule`
  kind        disclaimer | credit | dateline | boilerplate
  all         regexes that must all match the folded paragraph
  none        regexes that, if any matches, veto the rule (guards)
  max_chars   the rule only applies to paragraphs up to this length
  zone        "edges" (default: the first and last few paragraphs), "head",
              "tail" or "anywhere"
  marks_copy  the marker says "this page is a copy" (default true for
              disclaimer and credit, false otherwise)
  source      for credits: a regex with a named group `source`, matched
              against the original paragraph, that names the credited source
  keep        the paragraph is story text that names its source (a wire
              dateline, an agency byline): it stays in the body and is kept
              as an attribution of kind "wire", not as a marker

A paragraph that any `[[guard]]` pattern matches is never cut (photo credits,
for example).
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from dedup.extract import host_of
from dedup.models import Article, Attribution, CleanedArticle, Marker

RULES_DIR = Path(__file__).parent / "rules"
KINDS = ("disclaimer", "credit", "dateline", "boilerplate")
ZONES = ("edges", "head", "tail", "anywhere")

# typographic quotes and dashes and their plain forms (str.replace, which is
# several times faster than str.translate with a dict on short paragraphs)
_PLAIN_FORMS = (
    ("“", '"'),
    ("”", '"'),
    ("„", '"'),
    ("«", '"'),
    ("»", '"'),
    ("‘", "'"),
    ("’", "'"),
    ("‚", "'"),
    ("–", "-"),
    ("—", "-"),
)
_DOMAIN = re.compile(r"^(?:https?://)?((?:[a-z0-9-]+\.)+[a-z]{2,})(?:/\S*)?$", re.IGNORECASE)
_URL_IN_TEXT = re.compile(r"https?://[^\s<>\"')\]]+", re.IGNORECASE)


class RuleError(ValueError):
    """A rule file that cannot be used; the message names the file and the rule."""


def fold(text: str) -> str:
    """The form rules are matched against."""
    if not text.isascii():  # ASCII is its own NFKC form, and holds none of the fancy forms
        text = unicodedata.normalize("NFKC", text)
        for fancy, plain in _PLAIN_FORMS:
            if fancy in text:
                text = text.replace(fancy, plain)
    return " ".join(text.casefold().split())


class Regex:
    """A rule's compiled regex, with strings one of which every match
    contains (`required_literals`): `search` looks for them first (`in`, much
    faster than the regex), since most paragraphs a rule is tried on are not
    markers and carry none of them."""

    __slots__ = ("literals", "pattern")

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.literals = required_literals(pattern)

    def search(self, text: str) -> re.Match[str] | None:
        if self.literals is not None:
            for literal in self.literals:
                if literal in text:
                    break
            else:
                return None
        return self.pattern.search(text)


def required_literals(pattern: re.Pattern[str]) -> tuple[str, ...] | None:
    """Strings one of which every match of `pattern` contains, read from its
    parse: the most selective of the literal runs and groups a match must
    go through (an alternation contributes the strings of all its branches).
    None when there are none to be sure of (a branch, or the whole pattern,
    that can match without a literal; a pattern that ignores case)."""
    if pattern.flags & re.IGNORECASE:
        return None
    try:
        # the stdlib's own parse of the pattern, and its opcodes (private
        # modules: on a Python where they differ, no prefilter, same matches)
        from re import _constants, _parser

        found = _sequence_literals(list(_parser.parse(pattern.pattern, pattern.flags)), _constants)
    except Exception:  # noqa: BLE001 - see above
        return None
    return tuple(sorted(found)) if found else None


def _sequence_literals(items: list, ops) -> frozenset[str] | None:
    """`required_literals` of a parsed sequence (list of (op, argument));
    `ops`: the parser's opcodes."""
    candidates: list[frozenset[str]] = []
    run: list[str] = []
    for op, argument in items:
        if op is ops.LITERAL:
            run.append(chr(argument))
            continue
        if run:
            candidates.append(frozenset({"".join(run)}))
            run = []
        found = None
        if op is ops.SUBPATTERN and not argument[1] & re.IGNORECASE:
            found = _sequence_literals(list(argument[3]), ops)
        elif op is ops.ATOMIC_GROUP:
            found = _sequence_literals(list(argument), ops)
        elif op in (ops.MAX_REPEAT, ops.MIN_REPEAT, ops.POSSESSIVE_REPEAT) and argument[0] >= 1:
            found = _sequence_literals(list(argument[2]), ops)
        elif op is ops.BRANCH:
            branches = [_sequence_literals(list(branch), ops) for branch in argument[1]]
            found = frozenset().union(*branches) if all(branches) else None
        # anything else (a class, any character, an anchor, a look-around, a
        # back reference) asks for no particular string
        if found:
            candidates.append(found)
    if run:
        candidates.append(frozenset({"".join(run)}))
    if not candidates:
        return None
    return max(candidates, key=lambda strings: (min(map(len, strings)), -len(strings)))


@dataclass(frozen=True)
class Rule:
    id: str
    kind: str
    all: tuple[Regex, ...]
    none: tuple[Regex, ...] = ()
    max_chars: int = 600
    zone: str = "edges"
    marks_copy: bool = False
    source: re.Pattern[str] | None = None
    keep: bool = False

    def matches(self, folded: str) -> bool:
        if len(folded) > self.max_chars:
            return False
        for pattern in self.all:
            if not pattern.search(folded):
                return False
        return not any(p.search(folded) for p in self.none)


# Where a paragraph can sit: the zones it is in (every paragraph is in
# "anywhere"; the first ones in "head", the last ones in "tail", both in "edges").
_MIDDLE = frozenset({"anywhere"})
_HEAD = frozenset({"anywhere", "head", "edges"})
_TAIL = frozenset({"anywhere", "tail", "edges"})
_HEAD_AND_TAIL = _HEAD | _TAIL


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    guards: tuple[Regex, ...] = ()

    def __post_init__(self) -> None:
        # the rules that apply in each place, in file order: a paragraph is
        # tried against these only (the packaged rules all keep to the edges,
        # so the middle of an article is tried against none)
        by_zones = {zones: tuple(r for r in self.rules if r.zone in zones) for zones in (_MIDDLE, _HEAD, _TAIL, _HEAD_AND_TAIL)}
        object.__setattr__(self, "_by_zones", by_zones)
        object.__setattr__(self, "_keeping", {zones: tuple(r for r in rules if r.keep) for zones, rules in by_zones.items()})
        object.__setattr__(self, "_cutting", {zones: tuple(r for r in rules if not r.keep) for zones, rules in by_zones.items()})

    def applicable(self, zones: frozenset[str]) -> tuple[Rule, ...]:
        return self._by_zones[zones]

    def keeping(self, zones: frozenset[str]) -> tuple[Rule, ...]:
        """Of `applicable`, the rules that leave their paragraph in the body (`keep`)."""
        return self._keeping[zones]

    def cutting(self, zones: frozenset[str]) -> tuple[Rule, ...]:
        """Of `applicable`, the rules that take their paragraph out."""
        return self._cutting[zones]

    def is_guarded(self, folded: str) -> bool:
        return any(g.search(folded) for g in self.guards)


@dataclass(frozen=True)
class CleanConfig:
    # Paragraphs counted as the head and the tail of an article: where
    # aggregators put datelines, credits and disclaimers. The dev corpus puts
    # up to four marker paragraphs at the tail (two disclaimers and two
    # credits on a copy of a copy); five leaves a margin.
    head_paragraphs: int = 3
    tail_paragraphs: int = 5
    rules: RuleSet = field(default_factory=lambda: load_rules())


def _compile(pattern: object, where: str) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern:
        raise RuleError(f"{where}: a pattern must be a non-empty string")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise RuleError(f"{where}: bad regular expression {pattern!r}: {exc}") from exc


def _regex(pattern: object, where: str) -> Regex:
    return Regex(_compile(pattern, where))


def _rule_from_table(table: dict, where: str) -> Rule:
    rule_id = table.get("id")
    if not isinstance(rule_id, str) or not rule_id:
        raise RuleError(f"{where}: every rule needs an `id`")
    where = f"{where} rule {rule_id}"
    kind = table.get("kind")
    if kind not in KINDS:
        raise RuleError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    zone = table.get("zone", "edges")
    if zone not in ZONES:
        raise RuleError(f"{where}: zone must be one of {', '.join(ZONES)}, got {zone!r}")
    patterns = table.get("all")
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise RuleError(f"{where}: needs `all`, a list of one or more regexes")
    source = table.get("source")
    unknown = set(table) - {"id", "kind", "all", "none", "max_chars", "zone", "marks_copy", "source", "keep"}
    if unknown:
        raise RuleError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    return Rule(
        id=rule_id,
        kind=kind,
        all=tuple(_regex(p, where) for p in patterns),
        none=tuple(_regex(p, where) for p in table.get("none", [])),
        max_chars=int(table.get("max_chars", 600)),
        zone=zone,
        marks_copy=bool(table.get("marks_copy", kind in ("disclaimer", "credit"))),
        source=_compile(source, where) if source is not None else None,
        keep=bool(table.get("keep", False)),
    )


def load_rules(extra_dirs: tuple[Path, ...] = ()) -> RuleSet:
    """Load the packaged rule files, then the user's (`*.toml` in each extra dir)."""
    files = sorted(RULES_DIR.glob("*.toml"))
    for directory in extra_dirs:
        directory = Path(directory)
        if not directory.is_dir():
            raise RuleError(f"rule directory not found: {directory} (set REPOSTS_RULES_DIR to a folder of .toml rule files)")
        files.extend(sorted(directory.glob("*.toml")))
    rules: list[Rule] = []
    guards: list[Regex] = []
    seen: set[str] = set()
    for path in files:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise RuleError(f"{path}: not valid TOML: {exc}") from exc
        for table in data.get("rule", []):
            rule = _rule_from_table(table, str(path.name))
            if rule.id in seen:
                raise RuleError(f"{path.name}: rule id {rule.id!r} is defined twice")
            seen.add(rule.id)
            rules.append(rule)
        for table in data.get("guard", []):
            guards.append(_regex(table.get("pattern"), f"{path.name} guard"))
    return RuleSet(rules=tuple(rules), guards=tuple(guards))


# what `rules_for` takes: the rule files with what is learned, or what is learned alone
RULE_MODES = ("default", "none")


def rules_for(mode: str = "default", extra_dirs: tuple[Path, ...] = ()) -> RuleSet:
    """The rules of a mode: "default", the packaged rule files and the user's
    (`extra_dirs`); "none", no rule at all, so that what the pipeline learns
    from the corpus (host lines, what copies add) works alone."""
    if mode not in RULE_MODES:
        raise RuleError(f"rules must be one of {', '.join(RULE_MODES)}, got {mode!r}")
    return RuleSet(rules=()) if mode == "none" else load_rules(extra_dirs)


def _credited_source(rule: Rule, paragraph: str) -> tuple[str | None, str | None]:
    """The source a credit names: (name, url)."""
    url_match = _URL_IN_TEXT.search(paragraph)
    url = url_match.group(0).rstrip(".,;") if url_match else None
    name = None
    if rule.source is not None:
        found = rule.source.search(unicodedata.normalize("NFKC", paragraph))
        if found and found.groupdict().get("source"):
            name = found.group("source").strip(" .,:;|-\"'")
    if name and url is None:
        domain = _DOMAIN.match(name)
        if domain:
            url = name if name.lower().startswith("http") else None
            name = domain.group(1).lower()
    return (name or None), url


def strip_markers(article: Article, config: CleanConfig) -> CleanedArticle:
    """Remove marker paragraphs from the article text; return body, markers and attributions."""
    paragraphs = article.text.split("\n")
    n = len(paragraphs)
    markers: list[Marker] = []
    kept: list[str] = []
    wire: list[Marker] = []  # paragraphs that name their source and stay
    for index, paragraph in enumerate(paragraphs):
        in_head, in_tail = index < config.head_paragraphs, index >= n - config.tail_paragraphs
        zones = _HEAD_AND_TAIL if in_head and in_tail else _HEAD if in_head else _TAIL if in_tail else _MIDDLE
        rules = config.rules.applicable(zones)
        if not rules:
            # not folded: a paragraph folds to nothing exactly when it is
            # blank (tests/test_clean.py checks every code point)
            if paragraph.split():
                kept.append(paragraph)
            continue
        folded = fold(paragraph)
        if not folded:
            continue
        segments = _segments(paragraph)
        if len(segments) <= 1 or len(paragraph) <= _WHOLE_PARAGRAPH_MAX_CHARS:
            whole = _first_marker(paragraph, folded, index, rules, config.rules)
        else:  # only a rule that cuts nothing reads a long paragraph whole (a wire dateline)
            whole = _first_marker(paragraph, folded, index, config.rules.keeping(zones), config.rules)
        if whole is not None and whole.kept:
            wire.append(whole)
            kept.append(paragraph)
            continue
        if whole is not None:
            markers.append(whole)
            continue
        if in_tail and len(segments) > 1:
            paragraph = _peel_tail(paragraph, segments, index, config.rules.cutting(zones), config.rules, markers)
        if paragraph:
            kept.append(paragraph)
    return CleanedArticle(
        article=article,
        body="\n".join(kept).strip(),
        markers=tuple(markers),
        attributions=tuple(attributions_of(article, markers, wire)),
    )


# Sentence ends, and the " | " that templates put between furniture items.
_SEGMENT_BREAK = re.compile(r"(?<=[.!?。！？])\s+|\s+\|\s*|\s*\|\s+")
# How many trailing sentences one marker may span when a template glued it to
# the last paragraph of the story (the seed disclaimer has five sentences;
# peeling takes it in groups).
_MAX_PEEL_SEGMENTS = 4
# A paragraph of several sentences longer than this is only cut sentence by
# sentence from its end: a rule must not take a story sentence with it.
_WHOLE_PARAGRAPH_MAX_CHARS = 160


def _segments(paragraph: str) -> list[str]:
    return [s for s in _SEGMENT_BREAK.split(paragraph) if s and s.strip(" |")]


def _peel_tail(
    paragraph: str, segments: list[str], index: int, rules: tuple[Rule, ...], rule_set: RuleSet, markers: list[Marker]
) -> str:
    """Cut markers off the end of a paragraph, a group of sentences at a time.

    A paragraph that is all markers becomes one marker with its whole text.
    """
    segments = list(segments)
    peeled: list[Marker] = []
    while segments:
        for k in range(1, min(_MAX_PEEL_SEGMENTS, len(segments)) + 1):
            tail = " ".join(segments[-k:])
            marker = _first_marker(tail, fold(tail), index, rules, rule_set)
            if marker is not None:
                peeled.append(marker)
                del segments[-k:]
                break
        else:
            break
    if not peeled:
        return paragraph
    if not segments:
        lead = next((m for m in reversed(peeled) if m.marks_copy), peeled[-1])
        markers.append(replace(lead, text=paragraph.strip()))
        return ""
    markers.extend(reversed(peeled))
    return " ".join(segments)


def _first_marker(paragraph: str, folded: str, index: int, rules: tuple[Rule, ...], rule_set: RuleSet) -> Marker | None:
    """The marker `paragraph` is (`folded`: its folded form), by the first of
    `rules` that matches it, a rule that marks a copy first."""
    if rule_set.is_guarded(folded):
        return None
    best: Rule | None = None
    for rule in rules:
        if rule.matches(folded):
            # a rule that says "copy" outranks one that does not (a repost
            # disclaimer that also says "not investment advice")
            if best is None or (rule.marks_copy and not best.marks_copy):
                best = rule
    if best is None:
        return None
    name, url = _credited_source(best, paragraph) if best.kind == "credit" else (None, None)
    return Marker(
        kind=best.kind,
        rule=best.id,
        text=paragraph.strip(),
        position=index,
        marks_copy=best.marks_copy,
        source_name=name,
        source_url=url,
        kept=best.keep,
    )


def attributions_of(article: Article, markers: list[Marker], wire: list[Marker] = ()) -> list[Attribution]:
    """The evidence on a page that names where it came from (`wire`: the
    paragraphs kept in the body that name their source)."""
    found: list[Attribution] = []
    own_host = article.host
    for kind, url in (
        ("canonical", article.canonical_url),
        ("og_url", article.og_url),
        ("declared", article.declared_source_url),
    ):
        host = host_of(url)
        if url and host and _different_site(host, own_host):
            found.append(Attribution(kind=kind, strength="strong", source_name=host, source_url=url))
    for marker in markers:
        if marker.kind == "credit" and marker.marks_copy and (marker.source_name or marker.source_url):
            strength = "strong" if marker.source_url else "medium"
            name = marker.source_name or host_of(marker.source_url)
            found.append(Attribution(kind="credit", strength=strength, source_name=name, source_url=marker.source_url))
        elif marker.marks_copy and marker.kind == "disclaimer":
            found.append(Attribution(kind="disclaimer", strength="weak"))
    for line in wire:
        if line.source_name:
            found.append(Attribution(kind="wire", strength="strong", source_name=line.source_name))
    return found


# second-level labels under a country code that are not themselves a site (example.co.uk)
_SHARED_SECOND_LEVEL = {"co", "com", "net", "org", "gov", "ac", "edu"}


@lru_cache(maxsize=1 << 16)
def site_key(host: str | None) -> str:
    """The part of a host that names the site: news.example.com -> example.com."""
    if not host:
        return ""
    parts = host.lower().removeprefix("www.").split(".")
    keep = 3 if len(parts) >= 3 and parts[-2] in _SHARED_SECOND_LEVEL and len(parts[-1]) == 2 else 2
    return ".".join(parts[-keep:])


def _different_site(host: str, other: str | None) -> bool:
    return site_key(host) != site_key(other)
