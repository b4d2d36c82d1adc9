"""Prefect flows: `crawl` (live URLs) and `ingest` (WARC files).

The flows only orchestrate: they cut the input into batches, run the CPU
stages of each batch in worker processes, and link and store the batches in
order, one transaction each. Everything they call lives in `dedup`.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextlib import closing, contextmanager, nullcontext
from dataclasses import asdict, replace
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.utilities.annotations import quote

from dedup.ahead import PreparedAhead, prepare_warcs_ahead
from dedup.batch import BatchStats, PreparedBatch, Settings, open_store, run_description
from dedup.clean import CleanConfig, rules_for
from dedup.discover import Discovered, Source
from dedup.evidence import WarcEvidence
from dedup.fetch import Fetcher
from dedup.linker import Linker
from dedup.models import FetchedPage
from dedup.store import Store
from flows.errors import stop_signal
from flows.monitor import RunMonitor, crawl_run_name, ingest_run_name
from flows.sources import check_sources, page_urls, read_sources, sources_of

ProgressCallback = Callable[[int], None]

# how often the linker, waiting for a batch, looks for readers waiting for the
# database (it also looks each time a piece of the input is prepared)
WAIT_POLL_S = 0.2


@task(cache_policy=NO_CACHE, task_run_name="fetch {n} urls")
def fetch_batch(answers: Iterator[FetchedPage], n: int) -> list[FetchedPage]:
    """The next `n` pages fetched (`Fetcher.fetch_as_answered`: every host at
    its own pace); faults are recorded on the pages, not raised."""
    return list(islice(answers, n))


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2, task_run_name="read {n} feeds and sitemaps")
def discover_urls(fetcher: Fetcher, sources: list[Source], n: int) -> list[Discovered]:
    """The article URLs the feeds and sitemaps list; a source that fails is reported, not raised."""
    found = fetcher.discover(sources)
    logger = get_run_logger()
    for item in found:
        if item.error:
            logger.warning("%s %s: %s", item.source.kind, item.source.url, item.error)
        else:
            logger.info("%s %s: %d article URLs", item.source.kind, item.source.url, len(item.urls))
    return found


@task(cache_policy=NO_CACHE, task_run_name="link and store batch {number}")
def link_batch(linker: Linker, run_id: int, prepared: PreparedBatch, number: str) -> BatchStats:
    stats = linker.link_batch(run_id, prepared)
    get_run_logger().info(
        "batch %s: %d new pages, %d failed, %d new clusters, %d grew",
        number,
        stats.pages,
        stats.failed,
        stats.new_clusters,
        stats.grown_clusters,
    )
    return stats


@contextmanager
def cpu_workers(dask_address: str | None) -> Iterator[Executor | None]:
    """Where the CPU stages (extract, clean, fingerprint) run: None for the
    local process pool, or the executor of the Dask cluster at `dask_address`
    (a scheduler address, `tcp://host:8786`), connected through prefect-dask's
    DaskTaskRunner. Every batch goes to either the same way."""
    if not dask_address:
        yield None
        return
    from prefect_dask import DaskTaskRunner

    with DaskTaskRunner(address=dask_address) as runner:
        yield runner.client.get_executor()


@contextmanager
def recorded_if_stopped(store: Store, run_id: int, stop: Callable[[], None] | None = None) -> Iterator[None]:
    """A run asked to stop (Ctrl-C, or SIGTERM: what Prefect's Cancel, systemd
    and Kubernetes send) stops its other work (`stop`) and is recorded in
    `runs` as interrupted, with the signal's name in `stats`; the batch being
    written when it came was rolled back, the batches before it stay."""
    try:
        yield
    except BaseException as exc:
        number = stop_signal(exc)
        if number is not None:
            if stop:
                stop()
            store.finish_run(run_id, {"run_id": run_id, "interrupted": signal.Signals(number).name})
        raise


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
    extract_stored_again: bool = False,
) -> BatchStats:
    """Link and store the prepared batches in input order, one transaction each,
    over one connection held from batch to batch (closed for readers while
    the run waits for its workers, see Store.holding); the linker's start
    reads over it too.

    At the end of the input a batch may be linked in parts, each its own
    transaction: when the workers hold the input's last pieces, the run links
    what of the batch is prepared while they finish the rest. Once they are
    done one core is idle, and everything still to link waits on the other
    (in the ingest benchmark the run's end, from the workers' last piece,
    went from 1.38 s to 0.82 and 0.86 s)."""
    total = BatchStats()
    try:
        with store.holding():
            linker = Linker(store, settings, extract_stored_again)
            # the linker and the pages are quoted: Prefect would otherwise walk
            # every page of a batch looking for futures
            for number, n_pages, input_read, pending in ahead.in_order():
                part = 0
                while not ahead.wait(pending, timeout=WAIT_POLL_S):
                    store.let_readers_in()
                    if ahead.on_last_pieces(pending) and (prepared := pending.take_prepared()):
                        part += 1
                        total.add(link_batch(quote(linker), run_id, quote(prepared), f"{number}, part {part}"))
                label = f"{number}, part {part + 1}" if part else str(number)
                total.add(link_batch(quote(linker), run_id, quote(pending.result()), label))
                monitor.progress(input_read)
                if progress:
                    progress(n_pages)
            for problem in linker.save_for_next_run():
                get_run_logger().warning(problem)
            # the run's clusters counted once each, not once per batch that touched them
            for name, count in store.run_cluster_counts(run_id).items():
                setattr(total, name, count)
    finally:
        ahead.close()
    return total


def default_settings(rules: str | None = None) -> Settings:
    """The settings of a run: the embedded defaults, with the rules the
    environment asks for (REPOSTS_RULES: "default" or "none"; `rules`
    overrides it) and the user's rule files (REPOSTS_RULES_DIR: folders of
    `*.toml`, separated by the path separator)."""
    mode = rules or os.environ.get("REPOSTS_RULES") or "default"
    rule_dirs = tuple(Path(p) for p in os.environ.get("REPOSTS_RULES_DIR", "").split(os.pathsep) if p)
    if mode == "default" and not rule_dirs:
        return Settings()
    return replace(Settings(), clean=CleanConfig(rules=rules_for(mode, rule_dirs)))


@flow(name="ingest", flow_run_name=ingest_run_name, log_prints=False)
def ingest_flow(
    warc_paths: list[str],
    db: str = "reposts.duckdb",
    settings: Settings | None = None,
    workers: int = 2,
    progress: ProgressCallback | None = None,
    started: PreparedAhead | None = None,
    dask_address: str | None = None,
    reprocess: bool = False,
) -> dict:
    """Read WARC files into the database; pages already stored are skipped,
    unless `reprocess`: then their extraction is replaced by what the
    archived HTML gives now, and every page is cleaned, fingerprinted, linked
    and decided again (`flows.rebuild`), for when extraction has improved.

    `started` is the same WARC files already handed to the workers by
    `prepare_warcs_ahead` (the CLI does this so extraction overlaps Prefect's
    start-up); without it the flow starts them itself, in `workers` local
    processes or on the Dask cluster at `dask_address`.
    """
    settings = settings or default_settings()
    monitor = RunMonitor("ingest")
    store = open_store(db, settings)
    with store.exclusive_run(run_description("ingest", len(warc_paths))), cpu_workers(dask_address) as executor:
        params = {"warc_paths": warc_paths, "workers": workers, "dask_address": dask_address, "reprocess": reprocess}
        run_id = store.start_run("ingest", _flow_run_id(), params)
        with recorded_if_stopped(store, run_id):
            ahead = started or prepare_warcs_ahead(warc_paths, db, settings, workers, executor, reprocess=reprocess)
            stats = _link_all(store, settings, run_id, ahead, progress, monitor, extract_stored_again=reprocess)
        summary = {"run_id": run_id, **asdict(stats)}
        store.finish_run(run_id, summary)
        if reprocess:
            from flows.rebuild import rebuild

            summary["rebuild"] = rebuild(db, settings)
    monitor.finish(store, run_id, summary)
    return summary


@flow(name="crawl", flow_run_name=crawl_run_name, log_prints=False)
def crawl_flow(
    urls: list[str] | None = None,
    sources_file: str | None = None,
    feeds: list[str] | None = None,
    sitemaps: list[str] | None = None,
    refresh: bool = False,
    db: str = "reposts.duckdb",
    settings: Settings | None = None,
    workers: int = 2,
    allow_private_network: bool = False,
    progress: ProgressCallback | None = None,
    dask_address: str | None = None,
    host_delay_s: float | None = None,
    warc_dir: str | None = None,
    keep_warc: bool = True,
) -> dict:
    """Fetch pages, and the articles that feeds and sitemaps list, into the database and link the copies.

    Sources are the `urls`, `feeds` and `sitemaps` given and those listed in
    `sources_file`. A URL already stored is not fetched again unless
    `refresh` (then the new fetch is recorded in `fetches`; the stored first
    capture is kept). `allow_private_network` turns the SSRF guard off for
    this run (intranet sources, tests); it stays on otherwise. The CPU stages
    run in `workers` local processes, or on the Dask cluster at `dask_address`.
    `host_delay_s` sets the seconds between two requests to one host (a
    robots.txt `Crawl-delay` that asks for more is honoured). What the run
    fetched is written to `<warc_dir>/run-N.warc.gz` (default: the folder
    `<db>.warc` next to the database) unless `keep_warc` is false.
    """
    settings = settings or default_settings()
    if host_delay_s is not None:
        settings = replace(settings, fetch=replace(settings.fetch, host_delay_s=host_delay_s))
    if allow_private_network:
        settings = replace(settings, fetch=replace(settings.fetch, ssrf_protection=False))
    sources = check_sources(sources_of(urls, feeds, sitemaps) + (read_sources(sources_file) if sources_file else []))
    monitor = RunMonitor("crawl")
    store = open_store(db, settings)
    with store.exclusive_run(run_description("crawl", len(sources))), cpu_workers(dask_address) as executor:
        evidence_dir = None if not keep_warc else Path(warc_dir) if warc_dir else store.path.with_name(store.path.name + ".warc")
        summary = _crawl(store, settings, sources, sources_file, refresh, workers, executor, progress, monitor, evidence_dir)
    monitor.finish(store, summary["run_id"], summary)
    return summary


def _crawl(
    store: Store,
    settings: Settings,
    sources: list[Source],
    sources_file: str | None,
    refresh: bool,
    workers: int,
    executor: Executor | None,
    progress: ProgressCallback | None,
    monitor: RunMonitor,
    evidence_dir: Path | None,
) -> dict:
    params = {"sources": len(sources), "sources_file": sources_file, "refresh": refresh}
    run_id = store.start_run("crawl", _flow_run_id(), params)
    evidence = WarcEvidence(evidence_dir / f"run-{run_id}.warc.gz", settings.fetch.user_agent) if evidence_dir else None
    fetcher = Fetcher(settings.fetch, evidence)
    with recorded_if_stopped(store, run_id, fetcher.stop), closing(evidence) if evidence else nullcontext():
        listed = [s for s in sources if s.kind != "page"]
        found = discover_urls(fetcher, listed, len(listed)) if listed else []
        urls = list(dict.fromkeys(page_urls(sources) + [u for d in found for u in d.urls]))
        known = store.stored_urls(urls)
        todo = urls if refresh else [u for u in urls if u not in known]
        fetched_so_far = {"urls": 0}
        # a feed or sitemap that gave nothing is recorded in `fetches` with the first batch
        failed_sources = [_failed_source(d) for d in found if d.error]

        def fetched() -> Iterator[list[FetchedPage]]:
            if failed_sources:
                monitor.fetched(failed_sources)
                yield failed_sources
            answers = fetcher.fetch_as_answered(todo)
            while fetched_so_far["urls"] < len(todo):
                # fetching takes network time, in the linker's thread: the database is not held meanwhile
                store.release()
                pages = fetch_batch(quote(answers), min(settings.batch_size, len(todo) - fetched_so_far["urls"]))
                if not pages:
                    break
                monitor.fetched(pages)
                fetched_so_far["urls"] += len(pages)
                yield pages

        ahead = PreparedAhead(
            fetched(),
            settings,
            workers,
            ahead=workers + 1,
            input_read=lambda: fetched_so_far["urls"] / max(1, len(todo)),
            executor=executor,
        )
        stats = _link_all(store, settings, run_id, ahead, progress, monitor)
        summary = {
            "run_id": run_id,
            "discovered": sum(len(d.urls) for d in found),
            "skipped_known": len(urls) - len(todo),
            "refetched_known": sum(1 for u in todo if u in known),
            "warc": str(evidence.path) if evidence else None,
            **asdict(stats),
        }
    store.finish_run(run_id, summary)
    return summary


def _failed_source(found: Discovered) -> FetchedPage:
    return FetchedPage(
        url=found.source.url,
        source=found.source.kind,
        fetched_at=datetime.now(UTC).replace(tzinfo=None),
        error=found.error,
    )
