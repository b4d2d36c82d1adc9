"""Worker scheduling: batches prepared in worker processes a few batches
ahead of the linker, in pieces, so that at the end of the input the workers
run out of work together and a batch can be linked in parts."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from pathlib import Path

from dedup.archive import read_warc
from dedup.batch import PreparedBatch, Settings, batches_of, open_store, prepare_pages
from dedup.models import (
    FetchedPage,
)


class PendingBatch:
    """A batch in the workers' hands, as the pieces they prepare (Settings.prepare_size)."""

    __slots__ = ("futures",)

    def __init__(self, futures: list[Future]) -> None:
        self.futures = futures

    def unfinished(self) -> list[Future]:
        """The pieces not prepared yet."""
        return [future for future in self.futures if not future.done()]

    def result(self) -> PreparedBatch:
        """The pieces joined into one batch, in input order (a worker's error is raised here)."""
        return _joined([future.result() for future in self.futures])

    def take_prepared(self) -> PreparedBatch | None:
        """The pieces at the front that are prepared, joined, and no longer
        part of this batch; None if the first piece is not prepared yet."""
        n = next((i for i, future in enumerate(self.futures) if not future.done()), len(self.futures))
        if not n:
            return None
        taken, self.futures = self.futures[:n], self.futures[n:]
        return _joined([future.result() for future in taken])

    def cancel(self) -> None:
        for future in self.futures:
            future.cancel()


def _joined(pieces: list[PreparedBatch]) -> PreparedBatch:
    return PreparedBatch(
        prepared=[item for piece in pieces for item in piece.prepared],
        fetches=[fetch for piece in pieces for fetch in piece.fetches],
    )


class PreparedAhead:
    """Batches of pages prepared in worker processes, a few batches ahead of use.

    The workers are an `Executor`: a local process pool made here with
    `workers` processes by default, or one the caller gives (a Dask cluster's,
    through prefect-dask; see flows/pipeline.py). The batches go to it the
    same way, in pieces of `settings.prepare_size` pages,
    `executor.submit(prepare_pages, piece, settings)`.

    `in_order()` yields `(number, n_pages, input_read, pending)` in input order
    (`pending`: the batch's PendingBatch),
    where `input_read` is the share of the input read once that batch was
    (for progress reports), and hands the next batch to the workers each time
    one is taken, so at most `ahead` batches wait in memory. Started before an
    orchestrator is up (the CLI does this before the Prefect flow), the
    workers are busy while it starts. `wait` waits for the next piece of the
    input to be prepared; `on_last_pieces` says when the workers hold the
    input's last pieces, when a batch is best linked in parts
    (`PendingBatch.take_prepared`, see flows/pipeline.py).

    Passed as a Prefect flow parameter, it must not look like data: Prefect
    records parameters with a JSON encoder that would drain an iterable or the
    generators in an object's `__dict__`. Hence `in_order()` rather than
    `__iter__`, and `__slots__` (no `__dict__`): the encoder gives up and
    Prefect records a placeholder.
    """

    __slots__ = (
        "_ahead",
        "_batches",
        "_executor",
        "_input_read",
        "_input_taken",
        "_number",
        "_owns_executor",
        "_queue",
        "_settings",
        "_workers",
    )

    def __init__(
        self,
        page_batches: Iterator[list[FetchedPage]],
        settings: Settings,
        workers: int,
        *,
        ahead: int | None = None,
        input_read: Callable[[], float] = lambda: 0.0,
        executor: Executor | None = None,
    ):
        self._batches = page_batches
        self._settings = settings
        self._input_read = input_read
        self._owns_executor = executor is None
        self._executor = executor or ProcessPoolExecutor(
            max_workers=max(1, workers), initializer=_set_up_worker, initargs=(os.getpid(),)
        )
        self._workers = max(1, workers)
        self._ahead = ahead or 2 * self._workers + 1
        self._queue: deque[tuple[int, int, float, PendingBatch]] = deque()
        self._number = 0
        self._input_taken = False  # every batch of the input is in the workers' hands
        self._fill()

    def _fill(self) -> None:
        while len(self._queue) < self._ahead:
            pages = next(self._batches, None)
            if pages is None:
                self._input_taken = True
                return
            self._number += 1
            piece_size = min(self._settings.prepare_size, -(-len(pages) // self._workers))
            pieces = list(batches_of(pages, max(1, piece_size))) or [pages]
            pending = PendingBatch([self._executor.submit(prepare_pages, piece, self._settings) for piece in pieces])
            self._queue.append((self._number, len(pages), self._input_read(), pending))

    def in_order(self) -> Iterator[tuple[int, int, float, PendingBatch]]:
        while self._queue:
            item = self._queue.popleft()
            self._fill()
            yield item

    def wait(self, current: PendingBatch, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a piece of the input to be
        prepared (`current`: the batch taken from `in_order` last, or one
        after it); whether every piece of `current` is."""
        if current.unfinished():
            wait(self._unfinished(current), timeout, FIRST_COMPLETED)
        return not current.unfinished()

    def on_last_pieces(self, current: PendingBatch) -> bool:
        """Whether the workers hold the input's last pieces, no more than one
        each (`current`: as in `wait`): from now on a core is left idle
        whenever the run waits for them."""
        return self._input_taken and len(self._unfinished(current)) <= self._workers

    def _unfinished(self, current: PendingBatch) -> list[Future]:
        """The pieces of `current` and of the batches after it not prepared yet."""
        return current.unfinished() + [future for *_, pending in self._queue for future in pending.unfinished()]

    def close(self) -> None:
        for *_, pending in self._queue:
            pending.cancel()
        self._queue.clear()
        if self._owns_executor:
            self._executor.shutdown(wait=True, cancel_futures=True)


def _set_up_worker(parent_pid: int) -> None:
    """In a worker process: exit when the run that started it is gone (killed
    with -9, say), instead of waiting for work forever. Workers also run at a
    lower priority: the orchestrator's start-up and the linker are on the
    critical path, the workers soak up what CPU is left. A worker collects
    garbage, whether or not its parent had the collector off when it forked
    (the command line has it off while it imports), but not over what it
    inherited (the modules, the run's settings), which lives as long as it:
    that is frozen out of its collections (0.24 s of collection a worker in
    the ingest benchmark, 0.09 s frozen)."""
    os.nice(10)
    # Ctrl-C reaches every process of the terminal's group: the run stops its workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.freeze()
    gc.enable()

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def prepare_warcs_ahead(
    warc_paths: list[str], db: str, settings: Settings, workers: int, executor: Executor | None = None, reprocess: bool = False
) -> PreparedAhead:
    """Start preparing the pages of WARC files that the database does not
    hold yet (every page, to `reprocess` the stored ones). Which are stored
    is asked of the database a batch at a time (`Store.stored_urls`, the
    lookup the linker makes too), before the batch goes to the workers."""
    store = open_store(db, settings)
    sizes = [Path(p).stat().st_size if Path(p).is_file() else 0 for p in warc_paths]
    read = {"files": 0, "offset": 0}

    def pages() -> Iterator[FetchedPage]:
        for number, path in enumerate(warc_paths):
            read["files"], read["offset"] = sum(sizes[:number]), 0
            yield from read_warc(Path(path), on_offset=lambda offset: read.update(offset=offset))
        read["files"], read["offset"] = sum(sizes), 0

    def new_pages() -> Iterator[list[FetchedPage]]:
        for batch in batches_of(pages(), settings.batch_size):
            if not reprocess:
                stored = store.stored_urls([page.url for page in batch if not page.error])
                batch = [page for page in batch if page.error or page.url not in stored]
            if batch:
                yield batch

    def input_read() -> float:
        return (read["files"] + read["offset"]) / max(1, sum(sizes))

    return PreparedAhead(new_pages(), settings, workers, input_read=input_read, executor=executor)
