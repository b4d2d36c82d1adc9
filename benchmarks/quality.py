"""Quality on the labelled corpora of ../shared/repostbench, in one command.

    python benchmarks/quality.py [--shared DIR] [--record]   # `make quality`

Ingests each corpus into a new database in a temporary folder with the
`reposts` command, as a user would, and scores it with the corpus's own
script, through the public SQL interface:

- dev and dev2 with the rules on, and with `REPOSTS_RULES=none` (what the
  pipeline learns, alone): `score.py`;
- wire-dev's census and spotify sets: `wire_score.py score`;
- the real sentences of `markers-dev.jsonl`: `benchmarks/real_markers.py`.

Prints the rows of the quality tables of benchmarks/RESULTS.md; with
`--record` writes them there too, newest first, with the date and the
commit measured (a commit with uncommitted changes is marked "+").

A gate too: every figure is checked against the floors pinned in
`benchmarks/quality_floors.toml` (the least a score may be, the most a
residue may be), and the script exits 1 naming each figure past its floor.
Where ../shared/repostbench is not (a user's clone) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import real_markers
from results import record, row

ROOT = Path(__file__).resolve().parents[1]
FLOORS = Path(__file__).with_name("quality_floors.toml")
REPOSTS = Path(sys.executable).with_name("reposts")

# (label, corpus folder, REPOSTS_RULES)
LABELLED = [("dev", "dev", "default"), ("dev2", "dev2", "default"), ("dev, rules none", "dev", "none"), ("dev2, rules none", "dev2", "none")]
WIRE = ["census", "spotify"]

QUALITY_HEADER = "| date | commit | corpus | pair_f1 | provenance | originals | honesty | residue | false_strip | own_credit | body_f1 | impure |"
WIRE_HEADER = "| date | commit | wire-dev set | wire_honesty | wire_credited | false_originals | silver pair recall / precision |"
MARKERS_HEADER = "| date | commit | markers found (rules / learned / either) | negatives kept (rules / in copies / both) |"


def ingest(warc: Path, db: Path, rules: str) -> None:
    env = {**os.environ, "REPOSTS_RULES": rules, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    subprocess.run([str(REPOSTS), "--db", str(db), "ingest", str(warc)], env=env, check=True, capture_output=True)


def score(script: Path, *args: str) -> dict:
    out = subprocess.run([sys.executable, str(script), *args], check=True, capture_output=True, text=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("{")))


def _figure(metrics: dict, name: str, digits: int = 3) -> str:
    value = metrics.get(name)
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def measure(shared: Path) -> tuple[list[str], list[str], list[str], dict[str, dict]]:
    """The rows of the three tables, and every figure by corpus label (for the gate)."""
    quality, wire, figures_by_label = [], [], {}
    with tempfile.TemporaryDirectory() as folder:
        for label, corpus, rules in LABELLED:
            db = Path(folder) / f"{corpus}-{rules}.duckdb"
            ingest(shared / corpus / "pages.warc.gz", db, rules)
            m = score(shared / "score.py", "--db", str(db), "--labels", str(shared / corpus / "labels.jsonl"))
            figures_by_label[label] = m
            figures = [
                _figure(m, n)
                for n in (
                    "pair_f1", "provenance_accuracy", "originals_identified", "absent_original_honesty", "disclaimer_residue",
                    "false_strip", "own_credit_provenance", "body_f1", "impure_clusters",
                )
            ]  # fmt: skip
            quality.append(row(label, *figures))
        for name in WIRE:
            db = Path(folder) / f"{name}.duckdb"
            ingest(shared / "wire-dev" / name / "pages.warc.gz", db, "default")
            labels = shared / "wire-dev" / name / "labels.jsonl"
            m = score(shared / "wire_score.py", "score", "--db", str(db), "--labels", str(labels))
            figures_by_label[f"wire-dev {name}"] = m
            recall = f"{_figure(m, 'silver_pair_recall')} / {_figure(m, 'silver_pair_precision')}"
            wire.append(row(name, _figure(m, "wire_honesty"), _figure(m, "wire_credited"), _figure(m, "false_originals"), recall))
    summed = real_markers.totals(real_markers.check(shared / "markers-dev.jsonl")[0])
    markers, negatives = summed["marker"], summed["negative"]
    markers_row = row(
        f"{markers['rules']} / {markers['learned']} / {markers['ok']} of {markers['rows']}",
        f"{negatives['rules']} / {negatives['copies']} / {negatives['ok']} of {negatives['rows']}",
    )
    figures_by_label["markers-dev"] = {
        "markers_found": markers["ok"] / markers["rows"],
        "negatives_kept": negatives["ok"] / negatives["rows"],
    }
    return quality, wire, [markers_row], figures_by_label


def past_floors(figures_by_label: dict[str, dict], floors: dict[str, dict]) -> list[str]:
    """One line for each figure past its floor: under a `least`, over a `most`."""
    problems = []
    for label, pinned in floors.items():
        figures = figures_by_label.get(label, {})
        for bound, limits in pinned.items():
            for name, limit in limits.items():
                value = figures.get(name)
                if value is None:
                    problems.append(f"{label}: {name} was not measured")
                elif (bound == "least" and value < limit) or (bound == "most" and value > limit):
                    problems.append(f"{label}: {name} {value:.4f}, its floor is {bound} {limit}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "repostbench", help="the repostbench folder")
    parser.add_argument("--record", action="store_true", help="write the rows into benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if not (args.shared / "score.py").exists():
        print(f"{args.shared}: no repostbench corpora here; quality not measured")
        return 0
    quality, wire, markers, figures_by_label = measure(args.shared)
    for header, rows in ((QUALITY_HEADER, quality), (WIRE_HEADER, wire), (MARKERS_HEADER, markers)):
        print(header)
        print("\n".join(rows))
    if args.record:
        record({QUALITY_HEADER: quality, WIRE_HEADER: wire, MARKERS_HEADER: markers})
    problems = past_floors(figures_by_label, tomllib.loads(FLOORS.read_text(encoding="utf-8")))
    for problem in problems:
        print(f"below the floor: {problem}", file=sys.stderr)
    print(f"{FLOORS.name}: {'every figure holds its floor' if not problems else f'{len(problems)} past their floor'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
