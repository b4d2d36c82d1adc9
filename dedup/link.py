"""Link stage: candidate pairs from MinHash LSH, verified on the exact shingle sets.

The index is passed in and out (no module state): a run loads it from the
stored signatures, then adds each batch before linking it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from datasketch import LeanMinHash

from dedup.fingerprint import FingerprintConfig, lean_minhash
from dedup.models import Edge, Similarity


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
    # Where the LSH index lives: None in memory (rebuilt from the stored
    # signatures by each run), or a Redis URL (redis://host:6379/0), where
    # datasketch's MinHashLSH keeps it between runs, shared by every process
    # that links into the same database.
    redis_url: str | None = None

    def __post_init__(self) -> None:
        for name in ("min_jaccard", "min_containment"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"link.{name} must be in (0, 1], got {value}")
        if self.lsh_bands < 1 or self.lsh_rows < 1:
            raise ValueError("link.lsh_bands and link.lsh_rows must be at least 1")


_ROW_BITS = np.uint64(32)
_ROW_MASK = np.uint64(0xFFFFFFFF)


class _BandTable:
    """The band keys of a set of documents, sorted per band. Each entry packs a
    32-bit key and the document's row (key << 32 | row) in one uint64, so a
    plain sort orders them (numpy sorts integers much faster than it argsorts)."""

    def __init__(self, doc_ids: np.ndarray, keys: np.ndarray) -> None:
        """`keys`: one row per document, one column per band (uint32)."""
        self.doc_ids = doc_ids.astype(np.int64)
        rows = np.arange(len(doc_ids), dtype=np.uint64)
        self.entries = np.ascontiguousarray(keys.T, dtype=np.uint64) << _ROW_BITS
        self.entries |= rows
        self.entries.sort(axis=1)

    def __len__(self) -> int:
        return len(self.doc_ids)

    def keys_by_document(self) -> np.ndarray:
        """The keys again, one row per document in `doc_ids` order."""
        by_document = np.empty(self.entries.shape, dtype=np.uint32)
        rows = (self.entries & _ROW_MASK).astype(np.int64)
        np.put_along_axis(by_document, rows, (self.entries >> _ROW_BITS).astype(np.uint32), axis=1)
        return by_document.T

    def hits(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query number, doc_id) of every band key the queries share with the table."""
        found_queries, found_docs = [], []
        for band in range(self.entries.shape[0]):
            table = self.entries[band]
            wanted = queries[:, band].astype(np.uint64) << _ROW_BITS
            low = np.searchsorted(table, wanted, side="left")
            counts = np.searchsorted(table, wanted | _ROW_MASK, side="right") - low
            total = int(counts.sum())
            if not total:
                continue
            first_hit = np.cumsum(counts) - counts
            positions = np.repeat(low - first_hit, counts) + np.arange(total)
            found_queries.append(np.repeat(np.arange(len(wanted)), counts))
            found_docs.append(self.doc_ids[(table[positions] & _ROW_MASK).astype(np.int64)])
        if not found_queries:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        return np.concatenate(found_queries), np.concatenate(found_docs)


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
    """

    def __init__(self, link: LinkConfig, fingerprint: FingerprintConfig) -> None:
        if link.lsh_bands * link.lsh_rows > fingerprint.num_perm:
            raise ValueError(
                f"{link.lsh_bands} LSH bands of {link.lsh_rows} rows need {link.lsh_bands * link.lsh_rows} "
                f"MinHash values, the signatures have {fingerprint.num_perm}"
            )
        self.bands, self.rows = link.lsh_bands, link.lsh_rows
        self._tables: list[_BandTable] = []
        self._members: set[int] = set()

    def __len__(self) -> int:
        return len(self._members)

    def band_keys(self, hashvalues: np.ndarray) -> np.ndarray:
        """One 32-bit key per band for each signature (rows of `hashvalues`)."""
        used = hashvalues[:, : self.bands * self.rows]
        if self.rows == 1 and used.dtype == np.uint32:
            return np.ascontiguousarray(used)
        parts = used.reshape(len(used), self.bands, self.rows).astype(np.uint64)
        keys = parts[:, :, 0].copy()
        for row in range(1, self.rows):
            keys *= np.uint64(0x9E3779B97F4A7C15)
            keys += parts[:, :, row]
        # several values (or 64-bit ones) folded to 32 bits: two different bands
        # of values that fold to one key only add a candidate, which
        # verification drops
        return (keys ^ (keys >> np.uint64(32))).astype(np.uint32)

    def _fresh(self, doc_ids: np.ndarray) -> np.ndarray:
        """Which of these doc_ids the index does not hold yet (and, from now on, holds)."""
        fresh = np.array([d not in self._members for d in doc_ids.tolist()], dtype=bool)
        self._members.update(doc_ids[fresh].tolist())
        return fresh

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
        table = _BandTable(doc_ids, keys)
        while self._tables and len(self._tables[-1]) <= len(table):
            previous = self._tables.pop()
            table = _BandTable(
                np.concatenate([previous.doc_ids, table.doc_ids]),
                np.concatenate([previous.keys_by_document(), table.keys_by_document()]),
            )
        self._tables.append(table)

    def candidates_many(self, hashvalues: np.ndarray) -> list[set[int]]:
        """The documents sharing a band with each signature (rows of `hashvalues`)."""
        keys = self.band_keys(hashvalues)
        hits = [table.hits(keys) for table in self._tables]
        queries = np.concatenate([q for q, _ in hits] + [np.empty(0, dtype=np.int64)])
        docs = np.concatenate([d for _, d in hits] + [np.empty(0, dtype=np.int64)])
        order = np.argsort(queries, kind="stable")
        boundaries = np.searchsorted(queries[order], np.arange(1, len(keys)))
        return [set(group.tolist()) for group in np.split(docs[order], boundaries)]


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

    def candidates_many(self, hashvalues: np.ndarray) -> list[set[int]]:
        return [set(self._lsh.query(self._minhash(values))) for values in hashvalues]


def candidate_index(link: LinkConfig, fingerprint: FingerprintConfig, namespace: str) -> CandidateIndex | RedisCandidateIndex:
    """The LSH index the settings ask for; `namespace` names the database (for Redis)."""
    if link.redis_url:
        return RedisCandidateIndex(link, fingerprint, link.redis_url, namespace)
    return CandidateIndex(link, fingerprint)


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
