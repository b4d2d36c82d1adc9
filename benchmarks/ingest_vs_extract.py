"""Whole-pipeline WARC ingest against trafilatura's extraction alone, in one run.

    python benchmarks/ingest_vs_extract.py [WARC] [--copies N] [--rounds N] [--record]

The pages are the WARC's HTML responses (default: the dev corpus,
../shared/repostbench/dev/pages.warc.gz), repeated `--copies` times under
other URLs (default 4, so a few thousand pages) in a temporary WARC file.
Four wall times:

- trafilatura's `bare_extraction` with its defaults (and metadata), in one
  process (its extensive date search reads dates out of the text too, which
  the pipeline does not, see dedup/extract.py);
- trafilatura's extraction alone, in one process, and spread over two
  processes (the floor on a two-core machine), with the options the pipeline
  passes to `bare_extraction` (dedup.extract.trafilatura_options);
- `reposts ingest` of the WARC file in a fresh process: start-up (Python,
  Prefect's temporary API), reading, extraction, cleaning, fingerprints,
  linking, provenance and the DuckDB writes;
- the same ingest with PREFECT_API_URL naming a running Prefect server (one
  the benchmark starts, as `make ui` does): what a scheduled run pays, without
  the temporary API's start-up;
- `reposts ingest` of a WARC file of one page: what every run pays before
  its first page (Python, Prefect, its temporary API, the workers).

The two-process extraction and the ingest are measured in turn, `--rounds`
times (default 3), and the ratio is the median of the rounds' ratios: on a
shared machine the speed of both cores drifts by a fifth within minutes,
and a floor measured minutes before the ingest would drift with it. Each
round also gives the CPU time of both (every process, the workers and
Prefect's temporary API included): what the stages after extraction add,
whether or not the cores were busy with something else.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from trafilatura import bare_extraction
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results import record, row  # noqa: E402

from dedup.archive import read_warc  # noqa: E402
from dedup.extract import ExtractConfig, trafilatura_options  # noqa: E402
from flows.local_api import free_port  # noqa: E402
from flows.ui import LocalPrefect  # noqa: E402

RESULTS_HEADER = "| date | commit | machine | rounds | ratio | CPU ratio | on a running server | one page |"
DEFAULT_WARC = Path(__file__).resolve().parents[1].parent / "shared" / "repostbench" / "dev" / "pages.warc.gz"


def copied_warc(source: Path, copies: int, out: Path, limit: int | None = None) -> list[tuple[str, bytes]]:
    """Write the source's HTML pages (the first `limit`) `copies` times (under /copy-k/ paths) and return them."""
    pages = [(p.url, p.html, p.content_type or "text/html") for p in read_warc(source) if p.ok][:limit]
    written = []
    with open(out, "wb") as stream:
        writer = WARCWriter(stream, gzip=True)
        for copy in range(copies):
            for url, html, content_type in pages:
                parts = urlsplit(url)
                new_url = urlunsplit(parts._replace(path=f"/copy-{copy}{parts.path}")) if copy else url
                headers = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
                record = writer.create_warc_record(new_url, "response", payload=io.BytesIO(html), http_headers=headers)
                writer.write_record(record)
                written.append((new_url, html))
    return written


def _extract(pages: list[tuple[str, bytes]], trafilatura_defaults: bool = False) -> int:
    options = {"with_metadata": True} if trafilatura_defaults else trafilatura_options(ExtractConfig())
    for url, html in pages:
        bare_extraction(html, url=url, **options)
    return len(pages)


def children_cpu_s() -> float:
    """CPU seconds used so far by this process's children that have ended (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def with_cpu(measure, *args, **kwargs) -> tuple[float, float]:
    """(wall seconds that `measure` returns, CPU seconds its child processes used)."""
    before = children_cpu_s()
    wall = measure(*args, **kwargs)
    return wall, children_cpu_s() - before


def extraction_alone(pages: list[tuple[str, bytes]], processes: int, trafilatura_defaults: bool = False) -> float:
    started = time.perf_counter()
    if processes == 1:
        _extract(pages, trafilatura_defaults)
    else:
        chunks = [pages[i : i + 50] for i in range(0, len(pages), 50)]
        with ProcessPoolExecutor(processes) as pool:
            list(pool.map(_extract, chunks))
    return time.perf_counter() - started


def pipeline_ingest(warc: Path, api_url: str | None = None) -> float:
    """`reposts ingest` in a fresh process: on its temporary Prefect API, or
    on the running Prefect server at `api_url`."""
    reposts = Path(sys.executable).with_name("reposts")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        subprocess.run(
            [str(reposts), "--db", f"{folder}/bench.duckdb", "ingest", str(warc)],
            check=True,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("warc", nargs="?", type=Path, default=DEFAULT_WARC)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="write the figures into benchmarks/RESULTS.md")
    args = parser.parse_args()
    if not args.warc.is_file():
        print(f"no WARC file at {args.warc}; pass one as the first argument", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder:
        warc = Path(folder) / "bench.warc.gz"
        pages = copied_warc(args.warc, args.copies, warc)
        one_page = Path(folder) / "one.warc.gz"
        copied_warc(args.warc, 1, one_page, limit=1)
        defaults = extraction_alone(pages, 1, trafilatura_defaults=True)
        one = extraction_alone(pages, 1)
        # a running Prefect server, as scheduled runs have (`make ui`), for the
        # ingest measured without the temporary API's start-up
        server = LocalPrefect(Path(folder) / "prefect", port=free_port(), log_dir=Path(folder))
        server.start_server()
        try:
            rounds, cpu, start_ups = [], [], []
            for _ in range(max(1, args.rounds)):
                (two_processes, floor_cpu), (ingest, ingest_cpu) = (
                    with_cpu(extraction_alone, pages, 2),
                    with_cpu(pipeline_ingest, warc),
                )
                rounds.append((two_processes, ingest, pipeline_ingest(warc, server.api_url)))
                cpu.append((floor_cpu, ingest_cpu))
                start_ups.append(pipeline_ingest(one_page))
        finally:
            server.stop()
    two, ingest, on_server = (statistics.median(r[i] for r in rounds) for i in (0, 1, 2))
    ratio = statistics.median(i / t for t, i, _ in rounds)
    ratio_on_server = statistics.median(s / t for t, _, s in rounds)
    print(f"pages:                                        {len(pages)}  ({args.copies} x {args.warc.name})")
    print(f"trafilatura's defaults (+ metadata), 1 process: {defaults:4.1f} s")
    print(f"trafilatura extraction alone, 1 process:      {one:6.1f} s")
    for number, ((t, i, o), (t_cpu, i_cpu)) in enumerate(zip(rounds, cpu, strict=True), start=1):
        print(
            f"round {number}: extraction in 2 processes {t:5.1f} s; reposts ingest {i:5.1f} s (ratio {i / t:4.2f}), "
            f"on a running server {o:5.1f} s (ratio {o / t:4.2f}); CPU {t_cpu:5.1f} against {i_cpu:5.1f} s "
            f"(ratio {i_cpu / t_cpu:4.2f})"
        )
    print(f"trafilatura extraction alone, 2 processes:    {two:6.1f} s  (median)")
    print(f"reposts ingest, start-up included:            {ingest:6.1f} s  (median)")
    print(f"ratio ingest / trafilatura's defaults:        {ingest / defaults:6.2f}")
    print(f"ratio ingest / extraction in 1 process:       {ingest / one:6.2f}")
    print(f"ratio ingest / extraction in 2 processes:     {ratio:6.2f}  (median of the rounds; limit 1.3)")
    print(
        f"ratio of their CPU time:                      {statistics.median(i / t for t, i in cpu):6.2f}  (median of the rounds)"
    )
    print(f"reposts ingest on a running Prefect server:   {on_server:6.1f} s  (median)")
    print(f"ratio of that / extraction in 2 processes:    {ratio_on_server:6.2f}  (median of the rounds)")
    print(f"reposts ingest of one page (start-up):        {statistics.median(start_ups):6.1f} s  (median)")
    if args.record:
        record(
            {
                RESULTS_HEADER: [
                    row(
                        f"extraction {two:.1f} s, ingest {ingest:.1f} s",
                        ", ".join(f"{i / t:.2f}" for t, i, _ in rounds),
                        f"{ratio:.2f}",
                        f"{statistics.median(i / t for t, i in cpu):.2f}",
                        f"{ratio_on_server:.2f}",
                        f"{statistics.median(start_ups):.1f} s",
                    )
                ]
            }
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
