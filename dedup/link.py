"""Link stage: candidate pairs from MinHash LSH, verified on the exact shingle sets.

The index is passed in and out (no module state): a run loads it from the
stored signatures, then adds each batch before linking it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasketch import LeanMinHash

from dedup.fingerprint import FingerprintConfig, lean_minhash, mix32
from dedup.models import Edge, Similarity
from dedup.saved import new_name, read_manifest, replace_manifest, save_arrays, still_stored


@dataclass(frozen=True)
class LinkConfig:
    # LSH banding of the MinHash values: a pair is a candidate when its two
    # signatures agree on all `lsh_rows` values of at least one of
    # `lsh_bands` bands. One value per band and every permutation a band:
    # a cut copy or an excerpt has a low Jaccard with its source (0.03 to 0.2
    # on the dev corpus) while its containment stays high, and every
    # candidate is verified exactly, so recall is what the bands are for. On
    # the dev corpus, over three permutation seeds, 128 bands miss 2 of 1024
    # same-story pairs where MinHashLSH's own choice for threshold 0.05 (32
    # bands) misses 13, for the same 2.6 candidates per page.
    lsh_bands: int = 128
    lsh_rows: int = 1
    # Accept a pair when the exact Jaccard of the shingle sets reaches this.
    # Unrelated stories top out at 0.09 on the dev corpus; copies with a
    # dropped paragraph or typos start around 0.3.
    min_jaccard: float = 0.3
    # ...or when this share of the smaller page's shingles is in the larger
    # (an excerpt or a cut copy). Unrelated pages reach 0.37 on the dev
    # corpus (shared boilerplate), excerpts start at 0.58.
    min_containment: float = 0.5
    # Containment is not trusted on pages this short (in shingles): a
    # two-sentence page is contained in anything that quotes it.
    min_shingles_for_containment: int = 25
    # A candidate is verified only if its MinHash agreement is at least this
    # likely for a near-duplicate of its size (see `plausible_duplicates`).
    # Most candidates share one band by chance (at a million pages, 51 of the
    # 56 a page gets, on the synthetic corpus), and verifying one means
    # reading its body from the database. At 1e-4, adding 10,000 synthetic
    # pages to a million read 2,526 stored bodies, none of them a copy; at
    # 1e-3, 770, and the same 4,334 pairs were linked (the dev corpus: the
    # same 1,035 pairs either way). A pair at the very edge of the linking
    # thresholds then goes unverified once in a thousand.
    candidate_miss_rate: float = 1e-3
    # Where the LSH index lives: None in memory (rebuilt from the stored
    # signatures by each run), or a Redis URL (redis://host:6379/0), where
    # datasketch's MinHashLSH keeps it between runs, shared by every process
    # that links into the same database.
    redis_url: str | None = None
    # The shingle sets of the latest stored pages, up to this many hashes
    # (8 bytes each: 400 MB for about 150,000 pages), are kept on disk next
    # to the database, so verifying a copy of a recent page does not read
    # and shingle its body again (see dedup/recent.py). 0 keeps none.
    recent_shingle_hashes: int = 50_000_000

    def __post_init__(self) -> None:
        if not 0.0 <= self.candidate_miss_rate < 1.0:
            raise ValueError(f"link.candidate_miss_rate must be in [0, 1), got {self.candidate_miss_rate}")
        for name in ("min_jaccard", "min_containment"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"link.{name} must be in (0, 1], got {value}")
        if self.lsh_bands < 1 or self.lsh_rows < 1:
            raise ValueError("link.lsh_bands and link.lsh_rows must be at least 1")
        if self.recent_shingle_hashes < 0:
            raise ValueError(f"link.recent_shingle_hashes must be at least 0, got {self.recent_shingle_hashes}")


# the file in an index folder that names its tables and what they were made for
_MANIFEST = "index.json"

_ROW_BITS = np.uint64(32)
_ROW_MASK = np.uint64(0xFFFFFFFF)

# How the saved tables are laid out (band keys mixed, see `band_keys`): tables
# saved in another layout are not used, and the index is built again.
_TABLE_FORMAT = 3


def _directory_bits(n: int) -> int:
    """The leading bits of a band key that index a table of `n` pages'
    directory: one slot for every one to two entries of a band (the entries
    of a query's slot are all read: with two to four, tables of up to 200,000
    pages took 1.4 to 2.3 times as long to search)."""
    return max(1, n.bit_length() - 1)


@dataclass(frozen=True)
class Candidates:
    """The LSH candidates of a batch of signatures: one entry per (query,
    document) pair, sorted by query then doc_id, with the number of bands the
    two share (the query's row in the batch, the document's doc_id)."""

    query: np.ndarray
    doc_id: np.ndarray
    bands: np.ndarray

    @classmethod
    def of_hits(cls, queries: np.ndarray, docs: np.ndarray) -> Candidates:
        """From one (query, doc_id) entry per band found in."""
        span = np.int64(int(docs.max(initial=0)) + 1)
        pairs, bands = np.unique(queries * span + docs, return_counts=True)
        query, doc_id = np.divmod(pairs, span)
        return cls(query=query, doc_id=doc_id, bands=bands)

    def of(self, query: int) -> dict[int, int]:
        """One query's candidates: doc_id -> bands shared."""
        start, end = np.searchsorted(self.query, [query, query + 1])
        return dict(zip(self.doc_id[start:end].tolist(), self.bands[start:end].tolist(), strict=True))


class _BandTable:
    """The band keys of a set of documents, sorted per band. Each entry packs a
    32-bit key and the document's row (key << 32 | row) in one uint64, so a
    plain sort orders them (numpy sorts integers much faster than it argsorts).

    A key is found through the band's directory: where the entries whose keys
    start with each value of their leading bits begin (keys are spread evenly,
    see `CandidateIndex.band_keys`, so a slot holds a few entries). The
    entries of every query's slot, in every band, are read and compared at
    once: one gather, where a binary search per band waits on a cache miss at
    each of its last steps in a large table and costs a numpy call per band
    in a small one."""

    def __init__(
        self, doc_ids: np.ndarray, entries: np.ndarray, saved_as: str | None = None, directory: np.ndarray | None = None
    ) -> None:
        """`entries`: one sorted row of packed entries per band (see `of_keys`);
        `saved_as`: the name of the files that hold this table, if any;
        `directory`: the saved one (else it is made on the first search)."""
        self.doc_ids = doc_ids
        self.entries = entries
        self.saved_as = saved_as
        self._directory = directory

    @classmethod
    def of_keys(cls, doc_ids: np.ndarray, keys: np.ndarray) -> _BandTable:
        """`keys`: one row per document, one column per band (uint32)."""
        rows = np.arange(len(doc_ids), dtype=np.uint64)
        entries = np.ascontiguousarray(keys.T, dtype=np.uint64) << _ROW_BITS
        entries |= rows
        entries.sort(axis=1)
        return cls(doc_ids.astype(np.int64), entries)

    def __len__(self) -> int:
        return len(self.doc_ids)

    def merged_with(self, later: _BandTable) -> _BandTable:
        """One table of both: per band, the later table's rows shifted past this
        one's and the two sorted runs merged (a stable sort of two runs is a
        merge), one band at a time so the extra memory is one band's."""
        shift = np.uint64(len(self))
        entries = np.empty((self.entries.shape[0], len(self) + len(later)), dtype=np.uint64)
        for band in range(entries.shape[0]):
            both = np.concatenate([self.entries[band], later.entries[band] + shift])
            entries[band] = np.sort(both, kind="stable")
        return _BandTable(np.concatenate([self.doc_ids, later.doc_ids]), entries)

    def directory(self) -> np.ndarray:
        """Per band, where the entries of each slot start (one row of
        2**_directory_bits(len) + 1 positions per band; the last is the band's end)."""
        if self._directory is None:
            n_bands, n = self.entries.shape
            bits = _directory_bits(n)
            directory = np.zeros((n_bands, (1 << bits) + 1), dtype=np.int32 if n < 2**31 else np.int64)
            shift = np.uint64(64 - bits)
            for band in range(n_bands):
                counts = np.bincount((self.entries[band] >> shift).astype(np.intp), minlength=1 << bits)
                directory[band, 1:] = np.cumsum(counts)
            self._directory = directory
        return self._directory

    def hits(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query number, doc_id) of every band key the queries (one row of
        band keys each) share with the table, once per band they share it in."""
        n_bands, n = self.entries.shape
        nothing = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        if not n or not len(queries):
            return nothing
        directory = self.directory()
        keys = np.ascontiguousarray(queries.T).ravel()  # band after band
        n_queries, width = len(queries), directory.shape[1]
        # each (band, query)'s slot in the flattened directory: np.take of flat
        # positions, half the time of indexing the 2-D one with two arrays
        slots = (keys >> np.uint32(32 - _directory_bits(n))).astype(np.intp)
        slots += np.repeat(np.arange(0, n_bands * width, width, dtype=np.intp), n_queries)
        flat_directory = directory.reshape(-1)
        starts = np.take(flat_directory, slots).astype(np.int64)
        sizes = np.take(flat_directory, slots + 1) - starts
        total = int(sizes.sum())
        if not total:
            return nothing
        # every entry of every (band, query) slot, read from the flattened
        # table (band after band): the i-th one read is at i + the shift of its slot
        looked_up = np.repeat(np.arange(len(sizes)), sizes)
        starts += np.repeat(np.arange(0, n_bands * n, n, dtype=np.int64), n_queries)
        shift = starts - (np.cumsum(sizes) - sizes)
        where = shift[looked_up]
        where += np.arange(total)
        entries = np.take(self.entries.reshape(-1), where)
        shared = (entries >> _ROW_BITS).astype(np.uint32) == keys[looked_up]
        rows = (entries[shared] & _ROW_MASK).astype(np.int64)
        return looked_up[shared] % n_queries, self.doc_ids[rows]


class CandidateIndex:
    """LSH over document signatures, keyed by doc_id, in memory.

    The banding is MinHashLSH's with `params=(lsh_bands, lsh_rows)`, and the
    candidates are the ones it would return; the tables are sorted numpy
    arrays instead of a dict of sets per band, which MinHashLSH keeps at about
    10 KB per document (10 GB for a million pages) where these take 8 bytes
    per band. The stored signatures are loaded in bulk into one table; each
    new batch gets a small table of its own, and a table is merged with the
    one before it once it is as large (so there are about log2(n/batch)
    tables, and a page is re-sorted about that many times in all).

    With a `folder`, the tables outlive the run: `save` writes the ones not
    on disk yet, and the next run's `resume` maps them back (sorting a
    million pages' band keys again would take seconds) and loads only the
    signatures stored after them.
    """

    def __init__(
        self, link: LinkConfig, fingerprint: FingerprintConfig, folder: Path | None = None, stamp: dict | None = None
    ) -> None:
        """`stamp`: what the saved tables must have been made for (the database's
        id, the bands, the signature parameters); other tables are not used."""
        if link.lsh_bands * link.lsh_rows > fingerprint.num_perm:
            raise ValueError(
                f"{link.lsh_bands} LSH bands of {link.lsh_rows} rows need {link.lsh_bands * link.lsh_rows} "
                f"MinHash values, the signatures have {fingerprint.num_perm}"
            )
        self.bands, self.rows = link.lsh_bands, link.lsh_rows
        self.folder = folder
        self.stamp = {
            **(stamp or {}),
            "table_format": _TABLE_FORMAT,
            "lsh_bands": self.bands,
            "lsh_rows": self.rows,
            **fingerprint.params(),
        }
        self._tables: list[_BandTable] = []
        self._max_id = 0

    def __len__(self) -> int:
        return sum(len(t) for t in self._tables)

    def band_keys(self, hashvalues: np.ndarray) -> np.ndarray:
        """One 32-bit key per band for each signature (rows of `hashvalues`),
        mixed: MinHash values are minima, crowded near zero, and the tables'
        directories want keys spread evenly (a bijection, so two bands share a
        key exactly when they share their values)."""
        used = hashvalues[:, : self.bands * self.rows]
        if self.rows == 1 and used.dtype == np.uint32:
            return mix32(np.ascontiguousarray(used))
        parts = used.reshape(len(used), self.bands, self.rows).astype(np.uint64)
        keys = parts[:, :, 0].copy()
        for row in range(1, self.rows):
            keys *= np.uint64(0x9E3779B97F4A7C15)
            keys += parts[:, :, row]
        # several values (or 64-bit ones) folded to 32 bits: two different bands
        # of values that fold to one key only add a candidate, which
        # verification drops
        return mix32((keys ^ (keys >> np.uint64(32))).astype(np.uint32))

    def _fresh(self, doc_ids: np.ndarray) -> np.ndarray:
        """Which of these doc_ids the index does not hold yet (and, from now on, holds).
        Pages come in doc_id order, so this is mostly one comparison."""
        if not len(doc_ids):
            return np.zeros(0, dtype=bool)
        if doc_ids.min() > self._max_id and len(np.unique(doc_ids)) == len(doc_ids):
            fresh = np.ones(len(doc_ids), dtype=bool)
        else:
            held = np.concatenate([t.doc_ids for t in self._tables] + [np.empty(0, dtype=np.int64)])
            first = np.zeros(len(doc_ids), dtype=bool)
            first[np.unique(doc_ids, return_index=True)[1]] = True
            fresh = first & ~np.isin(doc_ids, held)
        if fresh.any():
            self._max_id = max(self._max_id, int(doc_ids[fresh].max()))
        return fresh

    def resume(self, stored_through: Callable[[int], tuple[int, str | None]]) -> int:
        """Map the tables an earlier run saved, if they were made for this
        database and these settings and it still holds the pages they index
        (`stored_through`: Store.stored_through; the count of pages up to the
        highest doc_id indexed, and the run that stored that page, are still
        what they were). Returns the highest doc_id they index (0 when there
        are none to use): the signatures above it are the ones left to `load`."""
        manifest = self._saved_manifest()
        if manifest is None or manifest["stamp"] != self.stamp:
            return 0
        through = manifest["indexed_through"]
        if not still_stored(stored_through, through, manifest["documents"], manifest["through_run"]):
            return 0
        tables = []
        for name in manifest["tables"]:
            try:
                doc_ids = np.load(self.folder / f"{name}.doc_ids.npy")
                # mapped, not read: the pages a query touches are read when touched
                entries = np.load(self.folder / f"{name}.entries.npy", mmap_mode="r").view(np.ndarray)
                directory = np.load(self.folder / f"{name}.directory.npy", mmap_mode="r").view(np.ndarray)
            except (OSError, ValueError):
                return 0
            if entries.shape != (self.bands, len(doc_ids)) or directory.shape != (
                self.bands,
                (1 << _directory_bits(len(doc_ids))) + 1,
            ):
                return 0
            tables.append(_BandTable(doc_ids, entries, saved_as=name, directory=directory))
        if sum(len(t) for t in tables) != manifest["documents"]:
            return 0
        self._tables, self._max_id = tables, through
        return through

    def save(self, stored_through: Callable[[int], tuple[int, str | None]]) -> None:
        """Write the tables that are not on disk yet, then the manifest naming
        them all (replaced in one rename, so a crash leaves the old one whole),
        then remove the files it no longer names. Call once every page the
        tables index is stored (`stored_through`: as in `resume`)."""
        if self.folder is None or not self._tables:
            return
        for table in self._tables:
            if table.saved_as is None:
                name = new_name("bands")
                save_arrays(
                    self.folder, name, (("doc_ids", table.doc_ids), ("entries", table.entries), ("directory", table.directory()))
                )
                table.saved_as = name
        manifest = {
            "stamp": self.stamp,
            "indexed_through": self._max_id,
            "documents": len(self),
            "through_run": stored_through(self._max_id)[1],
            "tables": [t.saved_as for t in self._tables],
        }
        replace_manifest(
            self.folder,
            _MANIFEST,
            manifest,
            [(name, part) for name in manifest["tables"] for part in ("doc_ids", "entries", "directory")],
        )

    def _saved_manifest(self) -> dict | None:
        return read_manifest(
            self.folder, _MANIFEST, {"stamp": dict, "indexed_through": int, "documents": int, "through_run": str, "tables": list}
        )

    def load(self, chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """Add stored signatures in bulk: (doc_ids, hashvalues matrix) chunks."""
        ids, keys = [], []
        for doc_ids, hashvalues in chunks:
            doc_ids = np.asarray(doc_ids, dtype=np.int64)
            fresh = self._fresh(doc_ids)
            ids.append(doc_ids[fresh])
            keys.append(self.band_keys(hashvalues[fresh]))
        if ids and sum(len(i) for i in ids):
            self._push(np.concatenate(ids), np.concatenate(keys))

    def add_many(self, doc_ids: Sequence[int], hashvalues: np.ndarray) -> None:
        """Add a batch of new signatures (rows of `hashvalues`)."""
        doc_ids = np.asarray(doc_ids, dtype=np.int64)
        fresh = self._fresh(doc_ids)
        if fresh.any():
            self._push(doc_ids[fresh], self.band_keys(hashvalues[fresh]))

    def _push(self, doc_ids: np.ndarray, keys: np.ndarray) -> None:
        table = _BandTable.of_keys(doc_ids, keys)
        while self._tables and len(self._tables[-1]) <= len(table):
            table = self._tables.pop().merged_with(table)
        self._tables.append(table)

    def candidates_many(self, hashvalues: np.ndarray) -> Candidates:
        """The documents sharing a band with each signature (rows of `hashvalues`)."""
        keys = self.band_keys(hashvalues)
        hits = [table.hits(keys) for table in self._tables]
        return Candidates.of_hits(
            np.concatenate([q for q, _ in hits] + [np.empty(0, dtype=np.int64)]),
            np.concatenate([d for _, d in hits] + [np.empty(0, dtype=np.int64)]),
        )


class RedisCandidateIndex:
    """The LSH index in Redis: datasketch's MinHashLSH with its Redis storage
    and the same bands, under a prefix of its own per database.

    It outlives a run: `load` adds only the stored signatures above the
    highest doc_id it holds. A doc_id it holds already is removed before it is
    added again (a run that died between indexing and committing leaves such
    ids behind; the next run gives them to other pages).
    """

    def __init__(self, link: LinkConfig, fingerprint: FingerprintConfig, redis_url: str, namespace: str) -> None:
        import redis
        from datasketch import MinHashLSH

        self._fingerprint = fingerprint
        self._redis = redis.Redis.from_url(redis_url)
        kwargs = self._redis.connection_pool.connection_kwargs
        storage = {
            "type": "redis",
            "basename": f"reposts:{namespace}".encode(),
            "redis": {"host": kwargs.get("host", "localhost"), "port": kwargs.get("port", 6379), "db": kwargs.get("db", 0)},
        }
        self._lsh = MinHashLSH(num_perm=fingerprint.num_perm, params=(link.lsh_bands, link.lsh_rows), storage_config=storage)
        self._through_key = f"reposts:{namespace}:indexed-through"

    def __len__(self) -> int:
        return len(self._lsh.keys.keys())

    def _minhash(self, values: np.ndarray) -> LeanMinHash:
        return lean_minhash(values, self._fingerprint)

    def indexed_through(self) -> int:
        value = self._redis.get(self._through_key)
        return int(value) if value is not None else 0

    def resume(self, stored_through: Callable[[int], tuple[int, str | None]]) -> int:
        """The highest doc_id the index holds: it lives in Redis between runs."""
        return self.indexed_through()

    def save(self, stored_through: Callable[[int], tuple[int, str | None]]) -> None:
        """Nothing to do: every page is in Redis once added."""

    def load(self, chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        through = self.indexed_through()
        for doc_ids, hashvalues in chunks:
            fresh = doc_ids > through
            if fresh.any():
                self.add_many(doc_ids[fresh].tolist(), hashvalues[fresh])

    def add_many(self, doc_ids: Sequence[int], hashvalues: np.ndarray) -> None:
        stale = [d for d in doc_ids if d in self._lsh]
        for doc_id in stale:
            self._lsh.remove(doc_id)
        with self._lsh.insertion_session() as session:
            for doc_id, values in zip(doc_ids, hashvalues, strict=True):
                session.insert(doc_id, self._minhash(values), check_duplication=False)
        if doc_ids:
            self._redis.set(self._through_key, max(max(doc_ids), self.indexed_through()))

    def candidates_many(self, hashvalues: np.ndarray) -> Candidates:
        """As CandidateIndex's: each band's bucket read (one read per band, as
        MinHashLSH.query makes)."""
        queries, docs = [], []
        for query, values in enumerate(hashvalues):
            minhash = self._minhash(values)
            for (start, end), table in zip(self._lsh.hashranges, self._lsh.hashtables, strict=True):
                # _H: MinHashLSH's own band key (what its query looks up)
                found = table.get(self._lsh._H(minhash.hashvalues[start:end]))
                docs.extend(pickle.loads(key) for key in found)  # keys in Redis are pickled (prepickle)
                queries.extend([query] * len(found))
        return Candidates.of_hits(np.array(queries, dtype=np.int64), np.array(docs, dtype=np.int64))


def candidate_index(
    link: LinkConfig, fingerprint: FingerprintConfig, database_id: str, folder: Path | None = None
) -> CandidateIndex | RedisCandidateIndex:
    """The LSH index the settings ask for: in Redis under the database's id, or
    in memory, saved between runs in `folder` if one is given."""
    if link.redis_url:
        return RedisCandidateIndex(link, fingerprint, link.redis_url, database_id)
    return CandidateIndex(link, fingerprint, folder, stamp={"database_id": database_id})


def similarity(a: np.ndarray, b: np.ndarray) -> Similarity:
    """Exact Jaccard and both containments of two shingle sets (sorted arrays of distinct hashes)."""
    if not len(a) or not len(b):
        return Similarity(0.0, 0.0, 0.0)
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    positions = np.minimum(np.searchsorted(large, small), len(large) - 1)
    common = int(np.count_nonzero(large[positions] == small))
    return Similarity(
        jaccard=common / (len(a) + len(b) - common),
        a_in_b=common / len(a),
        b_in_a=common / len(b),
    )


def plausible_duplicates(matching_bands: np.ndarray, n_a: np.ndarray, n_b: np.ndarray, config: LinkConfig) -> np.ndarray:
    """Which pairs of pages, whose signatures agree on `matching_bands` bands,
    could be near-duplicates given their sizes in shingles (arrays, one entry
    per pair). The least Jaccard a near-duplicate pair of these sizes can
    have (a copy at `min_jaccard`, or the smaller page contained at
    `min_containment` in the larger) makes each band agree with a known
    chance p; a pair agreeing on fewer bands than a near-duplicate would with
    probability `candidate_miss_rate` (the binomial tail) is not one. A small
    page in a large one (an excerpt) has a low least Jaccard, so one band in
    common is enough for it; two pages of like size need far more."""
    matching = np.asarray(matching_bands, dtype=np.int64)
    small = np.minimum(n_a, n_b).astype(np.float64)
    large = np.maximum(n_a, n_b).astype(np.float64)
    shared = config.min_containment * small
    contained = shared / np.maximum(small + large - shared, 1.0)
    countable = small >= config.min_shingles_for_containment
    least_jaccard = np.where(countable, np.minimum(config.min_jaccard, contained), config.min_jaccard)
    bands, p = config.lsh_bands, least_jaccard**config.lsh_rows
    plausible = matching >= bands * p  # as many as a near-duplicate's mean, or more
    # for the others, P(agreeing on at most `matching` bands), summed term by
    # term up to the largest count among them (a copy's 128 bands need no sum)
    doubtful = np.flatnonzero(~plausible)
    matching, p = matching[doubtful], p[doubtful]
    tail = np.zeros(len(matching))
    term = (1.0 - p) ** bands  # P(0 bands)
    for k in range(int(matching.max(initial=-1)) + 1):
        if k:
            term = term * (bands - k + 1) / k * p / np.maximum(1.0 - p, 1e-300)
        tail += np.where(matching >= k, term, 0.0)
    plausible[doubtful] = tail >= config.candidate_miss_rate
    return plausible


def is_near_duplicate(sim: Similarity, n_a: int, n_b: int, config: LinkConfig) -> bool:
    if sim.jaccard >= config.min_jaccard:
        return True
    # containment of the smaller page in the larger one
    smaller_in_larger = sim.a_in_b if n_a <= n_b else sim.b_in_a
    return min(n_a, n_b) >= config.min_shingles_for_containment and smaller_in_larger >= config.min_containment


def verified_edges(
    doc_id: int,
    shingles: np.ndarray,
    candidates: Iterable[int],
    shingles_of: dict[int, np.ndarray],
    config: LinkConfig,
) -> list[Edge]:
    """Verify candidates against one document; `shingles_of` holds every candidate's set."""
    edges = []
    for other in candidates:
        if other == doc_id:
            continue
        other_shingles = shingles_of[other]
        sim = similarity(shingles, other_shingles)
        if is_near_duplicate(sim, len(shingles), len(other_shingles), config):
            edges.append(Edge(a=doc_id, b=other, similarity=sim))
    return edges
