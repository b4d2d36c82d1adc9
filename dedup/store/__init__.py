"""Store stage: the DuckDB database, its migrations, and batched writes.

A connection is opened for each read or write and closed right after, except
while a run links its batches (`Store.holding`): then one connection serves
batch after batch (DuckDB keeps its caches and skips a checkpoint per batch),
and is closed whenever a reader is waiting for the file and whenever the run
waits for its workers after holding it a few seconds, so a person can still
query between batches. Each batch is written in one transaction: a crash
leaves the database as it was before that batch.
"""

from __future__ import annotations

from dedup.store.connection import Connections, StoreError
from dedup.store.ids import StoredNumbers
from dedup.store.reads import Reads
from dedup.store.schema import Schema, migrations
from dedup.store.write import BatchWrite, BatchWriting

__all__ = ["BatchWrite", "Store", "StoreError", "StoredNumbers", "migrations"]


class Store(Connections, Schema, Reads, BatchWriting):
    """The database at `path`: its connections (`connection`), schema and
    runs (`schema`), reads (`reads`) and the batch write (`write`)."""
