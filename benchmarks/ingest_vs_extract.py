"""Whole-pipeline WARC ingest against trafilatura's extraction alone, one run.

    python benchmarks/ingest_vs_extract.py [WARC]   (default: ../shared/repostbench/dev/pages.warc.gz)

Prints both wall times and their ratio. The ingest runs as the `reposts`
command in a fresh process, so Prefect's start-up is included.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trafilatura import bare_extraction

from dedup.archive import read_warc

DEFAULT_WARC = Path(__file__).resolve().parents[1].parent / "shared" / "repostbench" / "dev" / "pages.warc.gz"


def extraction_alone(warc: Path) -> tuple[float, int]:
    pages = [p for p in read_warc(warc) if p.ok]
    started = time.perf_counter()
    for page in pages:
        bare_extraction(page.html, url=page.url, with_metadata=True, include_comments=False)
    return time.perf_counter() - started, len(pages)


def pipeline_ingest(warc: Path) -> float:
    reposts = Path(sys.executable).with_name("reposts")
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        subprocess.run(
            [str(reposts), "--db", f"{folder}/bench.duckdb", "ingest", str(warc)], check=True, stdout=subprocess.DEVNULL
        )
        return time.perf_counter() - started


def main() -> int:
    warc = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_WARC
    if not warc.is_file():
        print(f"no WARC file at {warc}; pass one as the first argument", file=sys.stderr)
        return 1
    extract_s, n_pages = extraction_alone(warc)
    ingest_s = pipeline_ingest(warc)
    print(f"pages:                                  {n_pages}")
    print(f"trafilatura extraction alone (1 proc):  {extract_s:6.1f} s")
    print(f"reposts ingest, start-up included:      {ingest_s:6.1f} s")
    print(f"ratio ingest / extraction:              {ingest_s / extract_s:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
