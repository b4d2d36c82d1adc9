"""Prefect flows: `crawl` (live URLs) and `ingest` (WARC files).

The flows only orchestrate: they cut the input into batches, run the CPU
stages of each batch in worker processes, and link and store the batches in
order, one transaction each. Everything they call lives in `dedup`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, replace

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context

from dedup.batch import (
    BatchStats,
    Linker,
    PreparedAhead,
    PreparedBatch,
    Settings,
    batches_of,
    open_store,
    prepare_warcs_ahead,
    run_description,
)
from dedup.fetch import Fetcher
from dedup.models import FetchedPage
from dedup.store import Store
from flows.monitor import RunMonitor, crawl_run_name, ingest_run_name
from flows.sources import check_urls, read_sources

ProgressCallback = Callable[[int], None]


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, task_run_name="fetch {n} urls")
def fetch_batch(fetcher: Fetcher, urls: list[str], n: int) -> list[FetchedPage]:
    """Fetch a batch of URLs politely; faults are recorded on the pages, not raised."""
    return fetcher.fetch(urls)


@task(cache_policy=NO_CACHE, task_run_name="link and store batch {number}")
def link_batch(linker: Linker, run_id: int, prepared: PreparedBatch, number: int) -> BatchStats:
    stats = linker.link_batch(run_id, prepared)
    get_run_logger().info(
        "batch %d: %d new pages, %d failed, %d new clusters, %d grew",
        number,
        stats.pages,
        stats.failed,
        stats.new_clusters,
        stats.grown_clusters,
    )
    return stats


def _flow_run_id() -> str | None:
    try:
        return str(get_run_context().flow_run.id)
    except Exception:  # noqa: BLE001 - outside a flow run there is no id to record
        return None


def _link_all(
    store: Store,
    settings: Settings,
    run_id: int,
    ahead: PreparedAhead,
    progress: ProgressCallback | None,
    monitor: RunMonitor,
) -> BatchStats:
    """Link and store the prepared batches in input order, one transaction each."""
    linker = Linker(store, settings, known_urls=ahead.stored_urls)
    total = BatchStats()
    try:
        for number, n_pages, input_read, future in ahead.in_order():
            total.add(link_batch(linker, run_id, future.result(), number))
            monitor.progress(input_read)
            if progress:
                progress(n_pages)
    finally:
        ahead.close()
    return total


@flow(name="ingest", flow_run_name=ingest_run_name, log_prints=False)
def ingest_flow(
    warc_paths: list[str],
    db: str = "reposts.duckdb",
    settings: Settings | None = None,
    workers: int = 2,
    progress: ProgressCallback | None = None,
    started: PreparedAhead | None = None,
) -> dict:
    """Read WARC files into the database; pages already stored are skipped.

    `started` is the same WARC files already handed to the workers by
    `prepare_warcs_ahead` (the CLI does this so extraction overlaps Prefect's
    start-up); without it the flow starts them itself.
    """
    settings = settings or Settings()
    monitor = RunMonitor("ingest")
    store = open_store(db, settings)
    with store.exclusive_run(run_description("ingest", len(warc_paths))):
        run_id = store.start_run("ingest", _flow_run_id(), {"warc_paths": warc_paths, "workers": workers})
        ahead = started or prepare_warcs_ahead(warc_paths, db, settings, workers)
        stats = _link_all(store, settings, run_id, ahead, progress, monitor)
        summary = {"run_id": run_id, **asdict(stats)}
        store.finish_run(run_id, summary)
    monitor.finish(store, run_id, summary)
    return summary


@flow(name="crawl", flow_run_name=crawl_run_name, log_prints=False)
def crawl_flow(
    urls: list[str] | None = None,
    sources_file: str | None = None,
    db: str = "reposts.duckdb",
    settings: Settings | None = None,
    workers: int = 2,
    allow_private_network: bool = False,
    progress: ProgressCallback | None = None,
) -> dict:
    """Fetch URLs (given, or listed in `sources_file`) into the database and link the copies.

    URLs already stored are not fetched again. `allow_private_network` turns
    the SSRF guard off for this run (intranet sources, tests); it stays on
    otherwise.
    """
    settings = settings or Settings()
    if allow_private_network:
        settings = replace(settings, fetch=replace(settings.fetch, ssrf_protection=False))
    urls = check_urls(list(urls or []) + (read_sources(sources_file) if sources_file else []))
    monitor = RunMonitor("crawl")
    store = open_store(db, settings)
    with store.exclusive_run(run_description("crawl", len(urls))):
        summary = _crawl(store, settings, urls, sources_file, workers, progress, monitor)
    monitor.finish(store, summary["run_id"], summary)
    return summary


def _crawl(
    store: Store,
    settings: Settings,
    urls: list[str],
    sources_file: str | None,
    workers: int,
    progress: ProgressCallback | None,
    monitor: RunMonitor,
) -> dict:
    run_id = store.start_run("crawl", _flow_run_id(), {"urls": len(urls), "sources_file": sources_file})
    known = store.known_urls()
    todo = [u for u in urls if u not in known]
    fetched_so_far = {"urls": 0}

    fetcher = Fetcher(settings.fetch)

    def fetched() -> Iterator[list[FetchedPage]]:
        for batch in batches_of(todo, settings.batch_size):
            pages = fetch_batch(fetcher, batch, len(batch))
            monitor.fetched(pages)
            fetched_so_far["urls"] += len(batch)
            yield pages

    ahead = PreparedAhead(
        fetched(),
        settings,
        workers,
        stored_urls=known,
        ahead=workers + 1,
        input_read=lambda: fetched_so_far["urls"] / max(1, len(todo)),
    )
    stats = _link_all(store, settings, run_id, ahead, progress, monitor)
    summary = {"run_id": run_id, "skipped_known": len(urls) - len(todo), **asdict(stats)}
    store.finish_run(run_id, summary)
    return summary
