"""Each stage after extraction on a synthetic corpus, against naive baselines measured in the same run.

    python benchmarks/stages.py [--sizes 10000,100000] [--sample 10000] [--rounds 3] [--record]

For each corpus size (benchmarks/corpus.py, cached under benchmarks/.cache)
it prints documents per second and memory (each measurement runs in a fresh
process: its peak, and how much of it the stage added to the interpreter and
libraries already loaded) for:

- fingerprint: our batched numpy MinHash, in one process and spread over two;
  baseline: datasketch `MinHash.update_batch`, one document at a time (the
  shingle strings of our tokenizer, datasketch's default SHA-1 hash);
- lsh: our band tables, a batch (the pipeline's batch size) added then
  queried at a time;
  baseline: datasketch MinHashLSH with the same bands, one insert and one
  query per document (on the first `--sample` documents; ours is measured on
  the same sample for the ratio, and on the whole corpus);
- link+store: the Linker (candidates, exact verification, clusters,
  provenance, one DuckDB transaction per batch) into an empty database;
- incremental: 10,000 more documents into the database of the whole corpus,
  against the same 10,000 into an empty database, the two measured in turn
  `--rounds` times (default 3); the median of the rounds' ratios is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import results  # noqa: E402

from benchmarks.corpus import CACHE, corpus_file, read_chunks  # noqa: E402
from dedup.batch import Prepared, PreparedBatch, Settings, open_store  # noqa: E402
from dedup.fingerprint import fingerprints, shingle_strings  # noqa: E402
from dedup.link import CandidateIndex  # noqa: E402
from dedup.linker import Linker  # noqa: E402
from dedup.models import Article, CleanedArticle, FetchedPage  # noqa: E402
from dedup.store import Store  # noqa: E402

SETTINGS = Settings()
FP = SETTINGS.fingerprint
BATCH = SETTINGS.batch_size  # pages a run links (and searches the LSH index for) at a time
ADDED = 10_000


def peak_mb() -> float:
    """This process's peak resident memory since it started. Not ru_maxrss:
    Linux carries that over from the process that spawned this one (the
    report's, which holds a corpus), so a stage using less than the report
    showed the report's peak (every small stage at 100,000 documents showed
    517 MB, and the LSH memory ratio 1.0x)."""
    return _status_mb("VmHWM:")


def current_mb() -> float:
    return _status_mb("VmRSS:")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024


def texts(path: Path, limit: int | None = None):
    seen = 0
    for chunk in read_chunks(path):
        for row in chunk:
            if limit is not None and seen >= limit:
                return
            seen += 1
            yield row


def batches(rows, size=BATCH):
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# -- the measurements, each run in its own process ---------------------------


def fingerprint_ours(path: Path, limit: int | None) -> tuple[int, float]:
    total = pq.ParquetFile(path).metadata.num_rows if limit is None else limit
    matrix = np.empty((total, FP.num_perm), dtype=FP.dtype)
    n, elapsed = 0, 0.0
    for batch in batches(texts(path, limit)):
        started = time.perf_counter()
        signatures = fingerprints([r["text"] for r in batch], FP)
        elapsed += time.perf_counter() - started
        for row, signature in enumerate(signatures, start=n):
            matrix[row] = np.frombuffer(signature.hashvalues, dtype=FP.dtype)
        n += len(batch)
    if limit is None:  # the lsh measurements start from these
        np.save(signatures_file(path), matrix[:n])
    return n, elapsed


def _fingerprint_texts(batch_texts: list[str]) -> int:
    return len(fingerprints(batch_texts, FP))


def fingerprint_two_processes(path: Path, limit: int | None) -> tuple[int, float]:
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_fingerprint_texts, [["warm-up text"]] * 2))  # start-up is not the stage
        started, n, pending = time.perf_counter(), 0, deque()
        for batch in batches(texts(path, limit)):
            pending.append(pool.submit(_fingerprint_texts, [r["text"] for r in batch]))
            if len(pending) > 8:  # a few batches in flight, not the whole corpus in memory
                n += pending.popleft().result()
        n += sum(f.result() for f in pending)
        return n, time.perf_counter() - started


def fingerprint_baseline(path: Path, limit: int | None) -> tuple[int, float]:
    from datasketch import MinHash

    n, elapsed = 0, 0.0
    for row in texts(path, limit):
        started = time.perf_counter()
        minhash = MinHash(num_perm=FP.num_perm, seed=FP.seed, scheme=FP.scheme)
        minhash.update_batch([s.encode("utf-8") for s in set(shingle_strings(row["text"], FP))])
        elapsed += time.perf_counter() - started
        n += 1
    return n, elapsed


def lsh_ours(path: Path, limit: int | None) -> tuple[int, float]:
    matrix = np.load(signatures_file(path))[:limit]
    index = CandidateIndex(SETTINGS.link, FP)
    started = time.perf_counter()
    for start in range(0, len(matrix), BATCH):
        block = matrix[start : start + BATCH]
        index.add_many(list(range(start, start + len(block))), block)
        index.candidates_many(block)
    return len(matrix), time.perf_counter() - started


def lsh_baseline(path: Path, limit: int | None) -> tuple[int, float]:
    from datasketch import LeanMinHash, MinHashLSH

    matrix = np.load(signatures_file(path))[:limit]
    lsh = MinHashLSH(num_perm=FP.num_perm, params=(SETTINGS.link.lsh_bands, SETTINGS.link.lsh_rows))
    started = time.perf_counter()
    for doc_id, values in enumerate(matrix):
        minhash = LeanMinHash(seed=FP.seed, hashvalues=values, scheme=FP.scheme)
        lsh.insert(doc_id, minhash)
        lsh.query(minhash)
    return len(matrix), time.perf_counter() - started


def prepared_batch(rows: list[dict]) -> PreparedBatch:
    now = datetime(2026, 1, 1)
    prepared = []
    for row, signature in zip(rows, fingerprints([r["text"] for r in rows], FP), strict=True):
        article = Article(
            url=row["url"], final_url=row["url"], host=row["host"], fetched_at=now, text=row["text"], source="bench"
        )
        fetch = FetchedPage(url=row["url"], source="bench", fetched_at=now, status=200, html=b"-")
        prepared.append(Prepared(fetch=fetch, cleaned=CleanedArticle(article=article, body=row["text"]), signature=signature))
    return PreparedBatch(prepared=prepared, fetches=[p.fetch for p in prepared])


def link_into(db: str, rows) -> tuple[int, float]:
    """Link and store the rows as a run does; timed: the linker's start (it
    loads the stored index), its batches, what it saves for the next run and
    the closing of the run's connection, not the reading of the corpus or the
    fingerprints."""
    store = open_store(db, SETTINGS)
    run_id = store.start_run("bench", None, {})
    elapsed, n = 0.0, 0
    with store.holding():  # one connection from the start to the last batch, closed (checkpointed) at the end
        started = time.perf_counter()
        linker = Linker(store, SETTINGS)
        elapsed += time.perf_counter() - started
        for batch in batches(rows):
            prepared = prepared_batch(batch)
            started = time.perf_counter()
            linker.link_batch(run_id, prepared)
            elapsed += time.perf_counter() - started
            n += len(batch)
        started = time.perf_counter()
        linker.save_for_next_run()  # as a run does at its end
    elapsed += time.perf_counter() - started
    return n, elapsed


def link_store(path: Path, limit: int | None) -> tuple[int, float]:
    """The base corpus into an empty database (kept for the incremental measure)."""
    db = database_file(path)
    db.unlink(missing_ok=True)
    store = Store(db)
    for folder in (store.index_folder, store.shingles_folder, store.snapshot_folder):
        shutil.rmtree(folder, ignore_errors=True)
    return link_into(str(db), (r for r in texts(path) if r["doc"] < base_size(path)))


def incremental_full(path: Path, limit: int | None) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "full.duckdb"
        shutil.copy(database_file(path), db)
        base, full = Store(database_file(path)), Store(db)
        # the LSH index, the latest pages' shingle sets and the snapshot the base's run saved
        for saved, copy in (
            (base.index_folder, full.index_folder),
            (base.shingles_folder, full.shingles_folder),
            (base.snapshot_folder, full.snapshot_folder),
        ):
            if saved.is_dir():
                shutil.copytree(saved, copy)
        # the copy written out before the clock starts: the run's first sync
        # would otherwise wait for gigabytes of it (a user's database is not
        # copied the moment before a run)
        os.sync()
        return link_into(str(db), (r for r in texts(path) if r["doc"] >= base_size(path)))


def incremental_empty(path: Path, limit: int | None) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as folder:
        return link_into(str(Path(folder) / "empty.duckdb"), (r for r in texts(path) if r["doc"] >= base_size(path)))


STAGES = {
    "fingerprint": fingerprint_ours,
    "fingerprint-2proc": fingerprint_two_processes,
    "fingerprint-baseline": fingerprint_baseline,
    "lsh": lsh_ours,
    "lsh-baseline": lsh_baseline,
    "link+store": link_store,
    "incremental-full": incremental_full,
    "incremental-empty": incremental_empty,
}


def signatures_file(path: Path) -> Path:
    return path.with_suffix(".signatures.npy")


def database_file(path: Path) -> Path:
    return path.with_suffix(".duckdb")


def base_size(path: Path) -> int:
    return int(path.name.split("-")[1]) - ADDED


def child(stage: str, path: Path, limit: int | None) -> int:
    before = current_mb()  # the interpreter and the libraries, before the stage
    n, seconds = STAGES[stage](path, limit)
    result = {"stage": stage, "docs": n, "seconds": seconds, "docs_per_s": n / seconds, "peak_mb": peak_mb()}
    print(json.dumps({**result, "stage_mb": result["peak_mb"] - before}))
    return 0


# -- the report ----------------------------------------------------------------


def measure(stage: str, path: Path, limit: int | None = None) -> dict:
    command = [sys.executable, __file__, "--child", stage, "--corpus", str(path)]
    if limit is not None:
        command += ["--limit", str(limit)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def line(label: str, result: dict, ratio: str = "") -> None:
    print(
        f"  {label:<46} {result['docs']:>9,} docs {result['docs_per_s']:>9,.0f} docs/s "
        f"{result['peak_mb']:>7,.0f} MB peak ({result['stage_mb']:>+6,.0f} MB for the stage)  {ratio}"
    )


def report(size: int, sample: int, parts: set[str], rounds: int) -> dict:
    """Print the measures of one corpus size; return their figures (for `--record`)."""
    # the corpus holds the base documents and the 10,000 added incrementally
    path = corpus_file(size + ADDED)
    sample = min(sample, size)
    print(f"\n{size:,} documents (+{ADDED:,} for the incremental measure), corpus {path.name}")
    figures: dict = {"size": size}
    if "fingerprint" in parts or "lsh" in parts:
        figures.update(report_fingerprint_and_lsh(path, sample, parts))
    if "link" in parts or "incremental" in parts:
        figures.update(report_link(path, size, build="link" in parts, rounds=rounds))
    return figures


STAGES_HEADER = "| date | commit | machine | size | fingerprints (x baseline) | LSH (x baseline, x less memory) | link + store | incremental |"
MILLION_HEADER = "| date | commit | rounds | ratio | full run | empty run | peak memory |"


def result_rows(figures: dict) -> dict[str, list[str]]:
    """The RESULTS.md rows of one size's figures: the million's table for a
    million pages and more, the stages' table below that."""
    ratios = figures.get("ratios", [])
    rounds = ", ".join(f"{r:.2f}" for r in ratios)
    ratio = f"{statistics.median(ratios):.2f}x" if ratios else "-"
    if figures["size"] >= 1_000_000:
        if not ratios:
            return {}
        full = sorted(r["docs_per_s"] for r in figures["full"])
        empty = sorted(r["docs_per_s"] for r in figures["empty"])
        peak = max(r["peak_mb"] for r in figures["full"]) / 1000
        cells = (rounds, ratio, f"{full[0]:,.0f} to {full[-1]:,.0f} docs/s", f"{empty[0]:,.0f} to {empty[-1]:,.0f} docs/s", f"{peak:.1f} GB")
        return {MILLION_HEADER: [results.row(*cells)]}
    fp, lsh, linked = figures.get("fingerprint"), figures.get("lsh"), figures.get("linked")
    return {
        STAGES_HEADER: [
            results.row(
                "-",
                f"{figures['size']:,}",
                f"{fp['docs_per_s']:,.0f} docs/s ({fp['ratio']:.1f}x; 2 processes {fp['two']:.2f}x)" if fp else "-",
                f"{lsh['ratio']:.1f}x, {lsh['memory']:.1f}x" if lsh else "-",
                f"{linked['docs_per_s']:,.0f} docs/s, {linked['peak_mb']:,.0f} MB" if linked else "-",
                f"{ratio} ({rounds})" if ratios else "-",
            )
        ]
    }


def report_fingerprint_and_lsh(path: Path, sample: int, parts: set[str]) -> dict:
    ours = measure("fingerprint", path)
    two = measure("fingerprint-2proc", path)
    ours_sample = measure("fingerprint", path, sample)
    base = measure("fingerprint-baseline", path, sample)
    line("fingerprint, ours, 1 process", ours)
    line("fingerprint, ours, 2 processes", two, f"x{two['docs_per_s'] / ours['docs_per_s']:.2f} of 1 process")
    line("fingerprint, datasketch update_batch per doc", base)
    print(
        f"  -> fingerprint per document: {ours_sample['docs_per_s'] / base['docs_per_s']:.1f}x the baseline (same {sample:,} documents, 1 process)"
    )
    lsh = measure("lsh", path)
    lsh_sample = measure("lsh", path, sample)
    lsh_base = measure("lsh-baseline", path, sample)
    line(f"lsh, ours (add + query per batch of {BATCH})", lsh)
    line("lsh, MinHashLSH insert + query per doc", lsh_base)
    print(
        f"  -> lsh: {lsh_sample['docs_per_s'] / lsh_base['docs_per_s']:.1f}x the baseline's speed, "
        f"{lsh_base['stage_mb'] / max(1.0, lsh_sample['stage_mb']):.1f}x less memory for the stage (same {sample:,} documents)"
    )
    return {
        "fingerprint": {
            "docs_per_s": ours["docs_per_s"],
            "ratio": ours_sample["docs_per_s"] / base["docs_per_s"],
            "two": two["docs_per_s"] / ours["docs_per_s"],
        },
        "lsh": {
            "ratio": lsh_sample["docs_per_s"] / lsh_base["docs_per_s"],
            "memory": lsh_base["stage_mb"] / max(1.0, lsh_sample["stage_mb"]),
        },
    }


def report_link(path: Path, size: int, build: bool, rounds: int) -> dict:
    figures: dict = {"full": [], "empty": []}
    if build:
        linked = measure("link+store", path)
        line(f"link+store, {size:,} into an empty database", linked)
        figures["linked"] = linked
    elif not database_file(path).exists():
        print(f"  no database of {size:,} documents yet: run with --parts link first")
        return {}
    elif not Store(database_file(path)).index_folder.is_dir():
        # a base built before runs saved their LSH index: save it as its run would have
        store = open_store(str(database_file(path)), SETTINGS)
        Linker(store, SETTINGS).save_for_next_run()
    # measured in turn, `rounds` times: the machine's speed drifts between
    # two measures of a few seconds each, and one pair's ratio drifts with it
    ratios = []
    for number in range(1, rounds + 1):
        full = measure("incremental-full", path)
        empty = measure("incremental-empty", path)
        ratios.append(full["seconds"] / empty["seconds"])
        figures["full"].append(full)
        figures["empty"].append(empty)
        line(f"incremental {number}: {ADDED:,} into a database of {size:,}", full)
        line(f"incremental {number}: {ADDED:,} into an empty database", empty, f"ratio {ratios[-1]:.2f}")
    print(f"  -> incremental cost: {statistics.median(ratios):.2f}x the empty database's (median of {rounds}; limit 2)")
    return {**figures, "ratios": ratios}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="corpus sizes, comma-separated (1000000 takes a while)")
    parser.add_argument("--sample", type=int, default=10_000, help="documents for the slow baselines")
    parser.add_argument(
        "--parts",
        default="fingerprint,lsh,link",
        help="which measurements (fingerprint, lsh, link; incremental: only the incremental ones, on the database link built)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternated measures of the incremental cost (the median ratio is reported)"
    )
    parser.add_argument("--record", action="store_true", help="write the figures into benchmarks/RESULTS.md")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.corpus, args.limit)
    CACHE.mkdir(exist_ok=True)
    for size in (int(s) for s in args.sizes.split(",")):
        figures = report(size, args.sample, set(args.parts.split(",")), max(1, args.rounds))
        if args.record:
            results.record(result_rows(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
