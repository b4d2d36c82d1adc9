"""Real marker and negative sentences (../shared/repostbench/markers-dev.jsonl)
through the clean step and the learned layer, one sentence at a time.

    python benchmarks/real_markers.py [MARKERS.jsonl] [--details]

Each row's sentence is put at the end of an article of this project's own
writing (or, for markers, at its start):

- a marker (every class but `negative`) is found by the rules when the clean
  step strips it or takes it as a credit (a marker or an attribution that
  holds it); it is learned when three pages of one host, with three
  different stories that end with it, are linked and stored with the rules
  off: no stored body holds it then;
- a negative sentence must stay, as the last paragraph of an article: of
  one article through the rules, and of one story published by a newsroom
  and copied by two other hosts, linked and stored (rules and learning).

Prints a table by class and language (found: by the rules or learned), and
each miss with --details. Exits 1 when a negative sentence is stripped (the
one outcome the pipeline must never have), else 0.
`tests/test_real_markers.py` and `benchmarks/quality.py` run `check`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter, defaultdict
from datetime import datetime
from html import escape
from pathlib import Path

import duckdb

from dedup.batch import Settings, prepare_pages
from dedup.clean import CleanConfig, fold, rules_for, strip_markers
from dedup.linker import Linker
from dedup.models import Article, FetchedPage
from dedup.store import Store

DEFAULT_MARKERS = Path(__file__).resolve().parents[2] / "shared" / "repostbench" / "markers-dev.jsonl"

# three stories of this project's own writing, different enough not to be linked
STORIES = [
    [
        "The ferry between the two harbor towns will run every half hour from May, the operator said, after the new boat passed its sea trials in the bay last week.",
        "Tickets bought on the pier will cost the same as before, while passengers who book online will pay a fifth less on weekday mornings before eight.",
        "The old boat will be kept in reserve for the summer and sold in the autumn to a company that runs excursions on the lake further inland.",
        "Commuters had asked for the shorter interval for years; most of them cross to work in the shipyard, whose shifts start at six and at two.",
        "The harbor master warned that the timetable may slip on days of strong westerly wind, when the crossing takes ten minutes longer than planned.",
    ],
    [
        "Volunteers counted two hundred and twelve swifts nesting under the eaves of the school this spring, twice as many as when the boxes were put up five years ago.",
        "The birds arrive in the first week of May and leave in early August; the pupils follow one nest on a camera that streams to the classroom screen.",
        "The parish plans to hang forty more boxes on the church tower once the roofers have finished repairing the slates that the winter storms loosened.",
        "Swifts spend almost their whole lives in the air, the bird club explained, landing only to breed, which is why old buildings with gaps under the roof matter so much to them.",
        "The club will hold an evening walk in June to watch the screaming parties that circle the square at dusk; anyone may join at the fountain at nine.",
    ],
    [
        "The cooperative dairy in the valley has begun to sell its milk in returnable glass bottles again, fifty years after it switched to cartons for the supermarkets.",
        "Shops that take part keep a crate behind the counter; customers pay a deposit of forty cents a bottle and get it back when they return the empties.",
        "The dairy washes the bottles in a machine it bought second-hand from a brewery, which can clean three thousand of them in an hour with water from its own well.",
        "Twelve farms deliver to the cooperative, most of them with herds of fewer than sixty cows that graze on the slopes from April until the first snow.",
        "The manager said the bottles pay for themselves after about twenty trips, and that the oldest ones in the crates have already made more than a hundred.",
    ],
]


def article(host: str, n: int, paragraphs: list[str]) -> Article:
    url = f"https://{host}/story-{n}"
    return Article(url=url, final_url=url, host=host, fetched_at=datetime(2026, 1, 1), text="\n".join(paragraphs))


def found_by_rules(sentence: str, config: CleanConfig) -> bool:
    """Whether the clean step strips the sentence or takes it as a credit, at
    the end of an article or at its start (a rule may look at one edge only)."""
    held = fold(sentence)
    for paragraphs in ([*STORIES[0], sentence], [sentence, *STORIES[0]]):
        cleaned = strip_markers(article("relay.example", 0, paragraphs), config)
        if held not in fold(cleaned.body) or any(held in fold(m.text) or fold(m.text) in held for m in cleaned.markers):
            return True
        if any(a.kind in ("credit", "wire") for a in cleaned.attributions):
            return True
    return False


def kept_by_rules(sentence: str, config: CleanConfig) -> bool:
    cleaned = strip_markers(article("newsroom.example", 0, [*STORIES[0], sentence]), config)
    return fold(sentence) in fold(cleaned.body)


def learned(sentence: str, folder: Path, n: int) -> bool:
    """Whether no stored body holds the sentence once three pages of one
    host, with three different stories that end with it, are stored (rules off)."""
    pages = [page(f"host{n}.example", i, [*story, sentence]) for i, story in enumerate(STORIES)]
    return not any(fold(sentence) in fold(body) for body in stored_bodies(pages, folder / f"learned-{n}.duckdb", "none"))


def kept_in_copies(sentence: str, folder: Path, n: int) -> bool:
    """Whether the sentence stays in every stored body of one story, ending
    with it, published by a newsroom and copied by two other hosts."""
    pages = [page(host, 0, [*STORIES[0], sentence]) for host in ("newsroom.example", "relay.example", "mirror.example")]
    return all(fold(sentence) in fold(body) for body in stored_bodies(pages, folder / f"copies-{n}.duckdb", "default"))


def stored_bodies(pages: list[FetchedPage], path: Path, rules: str) -> list[str]:
    settings = Settings(clean=CleanConfig(rules=rules_for(rules)))
    store = Store(path)
    store.migrate()
    store.check_signature_params(settings.fingerprint.params())
    Linker(store, settings).link_batch(store.start_run("check", None, {}), prepare_pages(pages, settings))
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        bodies = [body for (body,) in con.execute("SELECT body FROM documents").fetchall()]
    finally:
        con.close()
    return bodies


def page(host: str, n: int, paragraphs: list[str]) -> FetchedPage:
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    document = f"<html><head><title>Story {n} of {host}</title></head><body><article><h1>Story {n}</h1>{body}</article></body></html>"
    url = f"https://{host}/story-{n}"
    return FetchedPage(
        url=url, source="http", final_url=url, status=200, content_type="text/html; charset=utf-8", html=document.encode(),
        fetched_at=datetime(2026, 1, 1),
    )  # fmt: skip


Tallies = dict[tuple[str, str], Counter]  # ("marker" or "negative", language) -> counts


def check(markers: Path) -> tuple[Tallies, list[tuple]]:
    """Each row of `markers` through the rules and the learned layer: the
    counts by class and language ("rows", "rules", "learned" or "copies",
    "ok": found or kept) and the misses (row, class, language, outcome, text)."""
    rows = [json.loads(line) for line in markers.read_text(encoding="utf-8").splitlines() if line.strip()]
    config = CleanConfig()
    counts: Tallies = defaultdict(Counter)
    misses = []
    with tempfile.TemporaryDirectory() as folder:
        for n, row in enumerate(rows):
            text, kind = row["text"], row["class"]
            tally = counts[("negative" if kind == "negative" else "marker", row["lang"])]
            tally["rows"] += 1
            if kind == "negative":
                outcome = {"rules": kept_by_rules(text, config), "copies": kept_in_copies(text, Path(folder), n)}
                outcome["ok"] = outcome["rules"] and outcome["copies"]
            else:
                outcome = {"rules": found_by_rules(text, config), "learned": learned(text, Path(folder), n)}
                outcome["ok"] = outcome["rules"] or outcome["learned"]
            tally.update({name: int(value) for name, value in outcome.items()})
            if not all(outcome.values()):
                misses.append((n, kind, row["lang"], outcome, text))
    return counts, misses


def totals(counts: Tallies) -> dict[str, Counter]:
    """The counts of "marker" and "negative" over every language."""
    summed: dict[str, Counter] = defaultdict(Counter)
    for (what, _), tally in counts.items():
        summed[what].update(tally)
    return summed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("markers", nargs="?", type=Path, default=DEFAULT_MARKERS)
    parser.add_argument("--details", action="store_true", help="print every miss")
    args = parser.parse_args(argv)
    if not args.markers.exists():
        print(f"{args.markers}: not found (the benchmark corpora are in ../shared/repostbench)", file=sys.stderr)
        return 2
    counts, misses = check(args.markers)
    summed = totals(counts)
    print("| rows | language | n | by the rules | learned / in copies | found / kept |")
    print("|---|---|---|---|---|---|")
    for (what, lang), tally in sorted(counts.items()):
        print(_row(what, lang, tally))
    for what, tally in sorted(summed.items()):
        print(_row(what, "all", tally))
    if args.details:
        for n, kind, lang, outcome, text in misses:
            said = ", ".join(f"{name} {'ok' if value else 'MISS'}" for name, value in outcome.items() if name != "ok")
            print(f"row {n} {kind} {lang}: {said}: {text[:120]}")
    return 1 if summed["negative"]["rows"] != summed["negative"]["ok"] else 0


def _row(what: str, lang: str, tally: Counter) -> str:
    if what == "marker":
        return f"| markers found | {lang} | {tally['rows']} | {tally['rules']} | {tally['learned']} | {tally['ok']} |"
    return f"| negatives kept | {lang} | {tally['rows']} | {tally['rules']} | {tally['copies']} | {tally['ok']} |"


if __name__ == "__main__":
    sys.exit(main())
