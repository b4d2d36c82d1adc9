"""Prefect flows: `crawl` (live URLs) and `ingest` (WARC files).

The flows only orchestrate: they cut the input into batches, run the CPU
stages of each batch in worker processes, and link and store the batches in
order, one transaction each. Everything they call lives in `dedup`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict

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
)
from dedup.fetch import FetchConfig, fetch_page
from dedup.models import FetchedPage
from dedup.store import Store

ProgressCallback = Callable[[int], None]


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, task_run_name="fetch {n} urls")
def fetch_batch(urls: list[str], config: FetchConfig, n: int) -> list[FetchedPage]:
    """Fetch a batch of URLs; faults are recorded on the pages, not raised."""
    traf_config = config.trafilatura_config()
    return [fetch_page(url, config, traf_config) for url in urls]


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
    store: Store, settings: Settings, run_id: int, ahead: PreparedAhead, progress: ProgressCallback | None
) -> BatchStats:
    """Link and store the prepared batches in input order, one transaction each."""
    linker = Linker(store, settings)
    total = BatchStats()
    try:
        for number, n_pages, future in ahead.in_order():
            total.add(link_batch(linker, run_id, future.result(), number))
            if progress:
                progress(n_pages)
    finally:
        ahead.close()
    return total


@flow(name="ingest", log_prints=False)
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
    store = open_store(db, settings)
    run_id = store.start_run("ingest", _flow_run_id(), {"warc_paths": warc_paths, "workers": workers})
    ahead = started or prepare_warcs_ahead(warc_paths, db, settings, workers)
    stats = _link_all(store, settings, run_id, ahead, progress)
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
    store = open_store(db, settings)
    run_id = store.start_run("crawl", _flow_run_id(), {"urls": len(urls)})
    known = store.known_urls()
    todo = list(dict.fromkeys(u for u in urls if u not in known))

    def fetched() -> Iterator[list[FetchedPage]]:
        for batch in batches_of(todo, settings.batch_size):
            yield fetch_batch(batch, settings.fetch, len(batch))

    stats = _link_all(store, settings, run_id, PreparedAhead(fetched(), settings, workers, ahead=workers + 1), progress)
    summary = {"run_id": run_id, "skipped_known": len(urls) - len(todo), **asdict(stats)}
    store.finish_run(run_id, summary)
    return summary
