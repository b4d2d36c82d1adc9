"""Connections to the database: when one is opened, shared, held across a
run's batches and given up for a reader, and the lock that lets one run
write at a time."""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import duckdb


class StoreError(Exception):
    """A database that cannot be used; the message says what to do."""


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# run locks this process holds (see Store.exclusive_run)
_RUN_LOCKS_HELD: set[Path] = set()


# The Store of each database file whose connection is held across a run's
# batches (`holding`), by path: another Store of the same file in this
# process (the WARC reader's) reads through it.
_HELD_IN_PROCESS: dict[Path, Connections] = {}

# how often a connection waiting for another process's lock tries again
LOCK_POLL_S = 0.02

# DuckDB's memory for a writing connection (its cache of table data above
# all: held across a run's batches, it would otherwise keep up to 80% of the
# machine's memory; beyond this it evicts, and spills a large query to disk)
WRITER_MEMORY_LIMIT = "1GB"

# How much a writing connection's log (WAL) grows before DuckDB folds it into
# the file: a checkpoint rewrites the last row group of each table appended
# to, so with DuckDB's default (16 MB) the checkpoints of a run cost a third
# of its time at a million pages. The log is folded in anyway when the
# connection closes (see docs/internals.md, "Writing a batch").
WRITER_CHECKPOINT_THRESHOLD = "256MB"

# Rows per row group of the tables a run appends to (DuckDB's default is
# 122,880): the most rows of a table a checkpoint rewrites. An option of the
# writing connection, not of the file: new rows start a row group of their
# own once the last one holds this many (docs/internals.md).
ROW_GROUP_ROWS = 16_384

# A run holding its connection across batches closes it when it next waits
# for its workers once it has held it this long, for readers that cannot
# leave a note (DuckDB's own command line): they get in if they try again.
# Each close folds the log into the file and the next batch opens it cold.
HOLD_S = 15.0


class Connections:
    """Opening the database: one connection per call, or one shared by a
    `session` and held across a run's sessions (`holding`), given up for
    readers who leave a note; and the run lock."""

    def __init__(self, path: str | Path, lock_wait_s: float = 30.0) -> None:
        self.path = Path(path)
        self.lock_wait_s = lock_wait_s
        self._session: duckdb.DuckDBPyConnection | None = None
        self._holding = False
        self._held: duckdb.DuckDBPyConnection | None = None
        self._held_since = 0.0

    @property
    def _waiting_folder(self) -> Path:
        """Where a process waiting for the file's lock leaves a note (one file per process)."""
        return self.path.with_name(self.path.name + ".waiting")

    @contextmanager
    def session(self) -> Iterator[None]:
        """Share one connection among the calls in this block (a batch's reads and
        its write): opening the file costs about 10 ms and a batch makes a dozen
        calls. The file stays locked for the block, so keep it short: between
        blocks, readers get in. Within `holding`, the connection outlives the
        block unless a reader is waiting."""
        if self._session is not None:
            yield
            return
        if not self._holding:
            with self.connect() as con:
                self._session = con
                try:
                    yield
                finally:
                    self._session = None
            return
        if self._held is None:
            self._held, self._held_since = self._open(read_only=False), time.monotonic()
            _HELD_IN_PROCESS[self.path.resolve()] = self
        self._session = self._held
        try:
            yield
        finally:
            self._session = None
            if self._reader_waiting():
                self.release()

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Keep the connection of one `session` open for the next (a run's
        batches), until a reader is waiting or `let_readers_in` finds it held
        for HOLD_S; closed at the end of the block."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            self.release()

    def let_readers_in(self) -> None:
        """Called while a run waits (for its workers): close the held connection
        if a reader is waiting or it has been held HOLD_S."""
        if self._held is not None and (self._reader_waiting() or time.monotonic() - self._held_since >= HOLD_S):
            self.release()

    def release(self) -> None:
        """Close the connection held across sessions, if any."""
        if self._held is not None:
            held, self._held = self._held, None
            if _HELD_IN_PROCESS.get(self.path.resolve()) is self:
                del _HELD_IN_PROCESS[self.path.resolve()]
            held.close()

    def _reader_waiting(self) -> bool:
        try:
            notes = list(os.scandir(self._waiting_folder))
        except OSError:
            return False
        for note in notes:
            pid = note.name.split("-")[0]
            if pid.isdigit() and _alive(int(pid)):
                return True
            Path(note.path).unlink(missing_ok=True)  # left by a process that died
        return False

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the database, waiting while another process holds its lock (or
        hand out the open connection of the current `session`, or the one
        held across sessions, this Store's or another's in this process: DuckDB
        lets a process attach a file once)."""
        if self._session is not None or self._held is not None:
            yield self._session or self._held
            return
        other = _HELD_IN_PROCESS.get(self.path.resolve())
        if other is not None and (other._session is not None or other._held is not None):
            yield other._session or other._held
            return
        con = self._open(read_only)
        try:
            yield con
        finally:
            con.close()

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if read_only and not self.path.exists():
            raise StoreError(f"no database at {self.path} (run `reposts crawl`, `ingest` or `demo` first, or pass --db)")
        deadline = time.monotonic() + self.lock_wait_s
        # a run's connection caches what it reads: bound it (readers keep DuckDB's default)
        config = {} if read_only else {"memory_limit": WRITER_MEMORY_LIMIT, "checkpoint_threshold": WRITER_CHECKPOINT_THRESHOLD}
        note: Path | None = None
        try:
            while True:
                try:
                    if read_only:
                        return _without_progress_bar(duckdb.connect(str(self.path), read_only=True, config=config))
                    return _without_progress_bar(_open_writer(self.path, config))
                except duckdb.IOException as exc:
                    if "lock" not in str(exc).lower():
                        raise StoreError(f"cannot open {self.path}: {' '.join(str(exc).split())}") from exc
                    if time.monotonic() >= deadline:
                        holder = _lock_holder(str(exc))
                        raise StoreError(
                            f"{self.path} is in use by another process{holder}; waited {self.lock_wait_s:.0f}s. "
                            "Try again when that run has finished."
                        ) from exc
                    if note is None:
                        note = self._leave_waiting_note()
                    time.sleep(LOCK_POLL_S)
                except duckdb.Error as exc:
                    raise StoreError(f"cannot open {self.path}: {' '.join(str(exc).split())}") from exc
        finally:
            if note is not None:
                note.unlink(missing_ok=True)

    def _leave_waiting_note(self) -> Path | None:
        """Tell a run holding the file that this process waits for it."""
        try:
            self._waiting_folder.mkdir(exist_ok=True)
            note = self._waiting_folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
            note.touch()
            return note
        except OSError:  # a folder we may not write to: wait without the note
            return None

    @contextmanager
    def exclusive_run(self, description: str) -> Iterator[None]:
        """Hold the database's run lock for a whole crawl or ingest.

        DuckDB's own lock is held only while a batch is written, so that people
        can query between batches; this lock (a POSIX lock on `<db>.run-lock`:
        owned by the process, so forked workers do not inherit it, and freed by
        the system even when the holder is killed) keeps a second run from
        writing at the same time. The second run stops at once with a message
        that names the first. Re-entrant within a process: the command line
        takes it before starting the flow, and the flow takes it again.
        """
        lock_path = self.path.resolve().with_name(self.path.name + ".run-lock")
        if lock_path in _RUN_LOCKS_HELD:
            yield
            return
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a+", encoding="utf-8") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "another run"
                raise StoreError(f"{self.path} is being written by {holder}; try again when it has finished") from None
            _RUN_LOCKS_HELD.add(lock_path)
            handle.seek(0)
            handle.truncate()
            handle.write(f"{description} (PID {os.getpid()}, since {utc_now():%Y-%m-%d %H:%M:%S} UTC)")
            handle.flush()
            try:
                yield
            finally:
                _RUN_LOCKS_HELD.discard(lock_path)
                handle.seek(0)
                handle.truncate()
                handle.flush()
                fcntl.lockf(handle, fcntl.LOCK_UN)


def _without_progress_bar(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """The connection, drawing no progress bar: DuckDB draws one on stdout
    under any statement that runs over 2 s (a migration of a large database,
    a long query), terminal or not, and it would land in a command's output."""
    try:
        con.execute("SET enable_progress_bar = false")
    except BaseException:
        con.close()
        raise
    return con


def _open_writer(path: Path, config: dict) -> duckdb.DuckDBPyConnection:
    """A writing connection to the file at `path`: attached (the only way to
    give DuckDB a row group size), as the connection's default database."""
    con = duckdb.connect(":memory:", config=config)
    try:
        quoted = str(path).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS store (ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
        con.execute("USE store")
    except BaseException:
        con.close()
        raise
    return con


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_holder(message: str) -> str:
    """DuckDB names the process holding the lock ("... (PID 1234)"): pass it on."""
    marker = "PID "
    if marker in message:
        pid = message.split(marker, 1)[1].split(")")[0].split()[0]
        return f" (PID {pid})"
    return ""
