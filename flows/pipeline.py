"""Prefect flows: `crawl` (live URLs) and `ingest` (WARC files).

The flows only orchestrate: they cut the input into batches, run the CPU
stages of each batch in worker processes, and link and store the batches in
order, one transaction each. Everything they call lives in `dedup`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict
from itertools import islice
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context

from dedup.archive import read_warc
from dedup.batch import BatchStats, Linker, PreparedBatch, Settings, prepare_pages
from dedup.fetch import FetchConfig, fetch_page
from dedup.models import FetchedPage
from dedup.store import Store

ProgressCallback = Callable[[int], None]


def _batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, task_run_name="fetch {n} urls")
def fetch_batch(urls: list[str], config: FetchConfig, n: int) -> list[FetchedPage]:
    """Fetch a batch of URLs; faults are recorded on the pages, not raised."""
    traf_config = config.trafilatura_config()
    return [fetch_page(url, config, traf_config) for url in urls]


@task(cache_policy=NO_CACHE, task_run_name="prepare batch {number}")
def prepare_batch(pages: list[FetchedPage], settings: Settings, executor: Executor, number: int) -> PreparedBatch:
    return executor.submit(prepare_pages, pages, settings).result()


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


def _open_store(db: str, settings: Settings) -> Store:
    store = Store(db)
    store.migrate()
    store.check_signature_params(settings.fingerprint.params())
    return store


def _run_batches(
    store: Store,
    settings: Settings,
    run_id: int,
    page_batches: Iterator[list[FetchedPage]],
    workers: int,
    progress: ProgressCallback | None,
) -> BatchStats:
    """Prepare batches in worker processes (a few ahead), link them in order."""
    linker = Linker(store, settings)
    total = BatchStats()
    with ProcessPoolExecutor(max_workers=max(1, workers)) as executor:
        in_flight = []
        number = 0
        for pages in page_batches:
            number += 1
            in_flight.append((number, len(pages), prepare_batch.submit(pages, settings, executor, number)))
            if len(in_flight) > workers:
                total.add(_finish(linker, run_id, in_flight.pop(0), progress))
        while in_flight:
            total.add(_finish(linker, run_id, in_flight.pop(0), progress))
    return total


def _finish(linker: Linker, run_id: int, item, progress: ProgressCallback | None) -> BatchStats:
    number, n_pages, future = item
    stats = link_batch(linker, run_id, future.result(), number)
    if progress:
        progress(n_pages)
    return stats


@flow(name="ingest", log_prints=False)
def ingest_flow(
    warc_paths: list[str],
    db: str = "reposts.duckdb",
    settings: Settings | None = None,
    workers: int = 2,
    progress: ProgressCallback | None = None,
) -> dict:
    """Read WARC files into the database; pages already stored are skipped."""
    settings = settings or Settings()
    store = _open_store(db, settings)
    run_id = store.start_run("ingest", _flow_run_id(), {"warc_paths": warc_paths, "workers": workers})
    known = frozenset(store.known_urls())

    def pages() -> Iterator[FetchedPage]:
        for path in warc_paths:
            yield from read_warc(Path(path), skip_urls=known)

    stats = _run_batches(store, settings, run_id, _batches(pages(), settings.batch_size), workers, progress)
    summary = {"run_id": run_id, **asdict(stats)}
    store.finish_run(run_id, summary)
    return summary


@flow(name="crawl", log_prints=False)
def crawl_flow(
    urls: list[str],
    db: str = "reposts.duckdb",
    settings: Settings | None = None,
    workers: int = 2,
    progress: ProgressCallback | None = None,
) -> dict:
    """Fetch URLs into the database; URLs already stored are not fetched again."""
    settings = settings or Settings()
    store = _open_store(db, settings)
    run_id = store.start_run("crawl", _flow_run_id(), {"urls": len(urls)})
    known = store.known_urls()
    todo = list(dict.fromkeys(u for u in urls if u not in known))

    def fetched() -> Iterator[list[FetchedPage]]:
        for batch in _batches(todo, settings.batch_size):
            yield fetch_batch(batch, settings.fetch, len(batch))

    stats = _run_batches(store, settings, run_id, fetched(), workers, progress)
    summary = {"run_id": run_id, "skipped_known": len(urls) - len(todo), **asdict(stats)}
    store.finish_run(run_id, summary)
    return summary
