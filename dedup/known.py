"""What a run knows of what is stored.

Before its first batch a run opens what earlier runs saved next to the
database: the LSH index (`<db>.lsh/`), the latest pages' shingle sets
(`<db>.shingles/`) and the keys below (`<db>.snapshot/`), each checked
against the database as it stands (`Store.stored_through`); what is not
there or does not match is read from the database instead. After each
batch is committed it is kept in step (`committed`), and at the run's end it
is saved for the next run (`save`). docs/internals.md says why each is kept.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from dedup.batch import Settings
from dedup.boilerplate import StoredLineKeys
from dedup.link import candidate_index
from dedup.models import HostLineRow, Page
from dedup.recent import RecentShingleSets
from dedup.snapshot import Snapshot, StoredKeys
from dedup.store import Store, StoredNumbers


class KnownStored:
    """The run's view of the database: its LSH index (`index`), the latest
    pages' shingle sets (`recent`), every page's size in shingles by doc_id
    (`sizes`, -1: none), which URLs and host lines are stored, the keys of
    the lines learned as furniture on some host (`furniture_keys`), and each
    host's stored pages and copies (`host_pages`). The run is the only
    writer (it holds the run lock), so what it stores is all that changes."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        fingerprinting, learning = settings.fingerprint, settings.boilerplate.enabled
        with store.session():  # one connection for what a run reads first (opening a large file is not free)
            database_id = store.database_id()
            self.index = candidate_index(settings.link, fingerprinting, database_id, store.index_folder)
            # the index an earlier run saved, then the signatures stored after it
            indexed_through = self.index.resume(store.stored_through)
            self.index.load(store.signature_chunks(fingerprinting.dtype, fingerprinting.num_perm, after_doc_id=indexed_through))
            self.snapshot = Snapshot(store.snapshot_folder, stamp={"database_id": database_id})
            keys = self.snapshot.load(store.stored_through, *store.row_counts())
            self._snapshot_current = keys is not None and keys.line_numbers is not None  # nothing to save again
            keys = keys or self._read_keys()
            self.sizes = keys.sizes
            self._urls = StoredNumbers(keys.url_numbers)
            self.host_pages: dict[str | None, tuple[int, int]] = store.host_page_counts()
            # host_lines rows are neither read nor written with learned boilerplate off
            line_numbers = keys.line_numbers
            if line_numbers is None and learning:
                line_numbers = store.host_line_numbers()
            self._lines_held = line_numbers is not None
            self._lines = StoredLineKeys(line_numbers if self._lines_held else np.empty(0, dtype=np.uint64))
            self._host_hashes: dict[str, int] = {}  # the hosts' DuckDB hashes those numbers use, asked once a host
            self.furniture_keys: set[int] = store.furniture_keys(settings.boilerplate.min_stories) if learning else set()
            self.recent = RecentShingleSets(
                store.shingles_folder,
                stamp={"database_id": database_id, **fingerprinting.params()},
                budget=settings.link.recent_shingle_hashes,
            )
            self.recent.open(store.stored_through)
        self.next_id = len(self.sizes)

    def _read_keys(self) -> StoredKeys:
        """What is stored, read from the database (the host lines are read apart: see __init__)."""
        doc_ids, n_shingles = self.store.shingle_counts()
        sizes = np.full(int(doc_ids.max(initial=0)) + 1, -1, dtype=np.int64)
        sizes[doc_ids] = n_shingles
        return StoredKeys(url_numbers=self.store.url_numbers(), sizes=sizes, line_numbers=None)

    def hashes(self, urls: set[str], hosts: set[str]) -> dict[str, int]:
        """DuckDB's hash of each URL, in one query with those of the hosts not met yet (kept)."""
        hosts = hosts - self._host_hashes.keys()
        hashes = self.store.text_hashes(urls | hosts)
        self._host_hashes.update((host, hashes[host]) for host in hosts)
        return hashes

    def stored_urls(self, url_hashes: dict[str, int]) -> set[str]:
        """Those of these URLs (with their hashes) the database holds: the few
        whose number a stored URL may have, looked up."""
        urls = list(url_hashes)
        numbers = np.array([url_hashes[url] for url in urls], dtype=np.uint64)
        maybe = [url for url, hit in zip(urls, self._urls.may_hold(numbers).tolist(), strict=True) if hit]
        return self.store.stored_urls(maybe) if maybe else set()

    def stored_lines(self, keys: set[tuple[str, int]]) -> list[HostLineRow]:
        """The stored host_lines rows of these (host, line key) pairs (their hosts hashed by `hashes`)."""
        return self.store.host_lines(self._lines.held(keys, self._host_hashes))

    def note_sizes(self, pages: list[Page]) -> None:
        """Keep the pages' sizes in shingles, by doc_id."""
        if not pages:
            return
        top = max(p.doc_id for p in pages)
        if top >= len(self.sizes):
            grown = np.full(max(top + 1, 2 * len(self.sizes)), -1, dtype=np.int64)
            grown[: len(self.sizes)] = self.sizes
            self.sizes = grown
        for page in pages:
            self.sizes[page.doc_id] = page.signature.n_shingles

    def count_pages(self, host: str | None, pages: int, copies: int) -> None:
        """Count pages (and copies among them) towards a host (aggregators are hosts of copies)."""
        stored_pages, stored_copies = self.host_pages.get(host, (0, 0))
        self.host_pages[host] = (stored_pages + pages, stored_copies + copies)

    def committed(
        self, pages: list[Page], url_hashes: dict[str, int], new_lines: list[HostLineRow], learned_keys: set[int]
    ) -> None:
        """Keep in step with a batch just committed: its pages (their URLs'
        hashes), its new host lines, the keys of the lines it learned."""
        self._snapshot_current = False
        self._urls.add(np.array([url_hashes[p.article.url] for p in pages], dtype=np.uint64))
        self._lines.add(new_lines, self._host_hashes)  # the batch's hosts are hashed already
        self.furniture_keys |= learned_keys
        for page in pages:
            self.recent.add(page.doc_id, page.signature.shingles)

    def save(self) -> list[str]:
        """Keep the LSH index, the latest pages' shingle sets and the keys for
        the next run (call once the run's batches are stored). What is stored
        does not depend on them: what cannot be written is returned (one line
        each), and the next run rebuilds the index, reads those pages' bodies,
        or reads the keys from the database."""
        problems = []
        for saving, what, instead in (
            (partial(self.index.save, self.store.stored_through), "the LSH index", "the next run rebuilds it"),
            (
                partial(self.recent.save, self.store.stored_through),
                "the latest pages' shingle sets",
                "the next run reads those pages' bodies instead",
            ),
            (self._save_snapshot, "what the run holds of what is stored", "the next run reads it from the database"),
        ):
            try:
                saving()
            except OSError as exc:
                problems.append(f"{what} was not saved ({exc.strerror or exc}: {exc.filename}); {instead}")
        return problems

    def _save_snapshot(self) -> None:
        if self._snapshot_current:  # nothing stored since the last save
            return
        keys = StoredKeys(
            url_numbers=self._urls.all(),
            sizes=self.sizes[: self.next_id],
            line_numbers=self._lines.all() if self._lines_held else None,
        )
        if keys.documents:  # nothing to save of an empty database
            self.snapshot.save(self.store.stored_through, keys)
