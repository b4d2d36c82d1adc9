"""Link stage: candidate pairs from MinHash LSH, verified on the exact shingle sets.

The index is passed in and out (no module state): a run loads it from the
stored signatures, then adds each batch before linking it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from dedup.fingerprint import FingerprintConfig
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


class CandidateIndex:
    """LSH over document signatures, keyed by doc_id, in memory.

    The banding is MinHashLSH's with `params=(lsh_bands, lsh_rows)`, and the
    candidates are the ones it would return; the tables are numpy arrays
    instead of a dict of sets per band, which MinHashLSH keeps at about 10 KB
    per document (10 GB for a million pages) where these take 8 bytes per
    band. Stored signatures are loaded in bulk into sorted band tables; a
    run's new pages go to small per-band dicts, folded into the tables when
    they grow past a tenth of them.
    """

    def __init__(self, link: LinkConfig, fingerprint: FingerprintConfig) -> None:
        if link.lsh_bands * link.lsh_rows > fingerprint.num_perm:
            raise ValueError(
                f"{link.lsh_bands} LSH bands of {link.lsh_rows} rows need {link.lsh_bands * link.lsh_rows} "
                f"MinHash values, the signatures have {fingerprint.num_perm}"
            )
        self._fingerprint = fingerprint
        self.bands, self.rows = link.lsh_bands, link.lsh_rows
        self._key_dtype = fingerprint.dtype if self.rows == 1 else np.dtype(np.uint64)
        # sorted band tables: keys[band] ascending, doc_ids[rows[band]] their documents
        self._doc_ids = np.empty(0, dtype=np.int64)
        self._keys = np.empty((self.bands, 0), dtype=self._key_dtype)
        self._rows = np.empty((self.bands, 0), dtype=np.int32)
        # pages added since the tables were last built
        self._recent: list[dict[int, list[int]]] = [{} for _ in range(self.bands)]
        self._recent_ids: list[int] = []
        self._recent_keys: list[np.ndarray] = []
        self._members: set[int] = set()
        # recent pages are folded into the tables past this many, or a tenth of the tables
        self.fold_at = 10_000

    def __len__(self) -> int:
        return len(self._members)

    def band_keys(self, hashvalues: np.ndarray) -> np.ndarray:
        """One key per band for each signature (rows of `hashvalues`)."""
        used = hashvalues[:, : self.bands * self.rows]
        if self.rows == 1:
            return np.ascontiguousarray(used, dtype=self._key_dtype)
        parts = used.reshape(len(used), self.bands, self.rows).astype(np.uint64)
        keys = parts[:, :, 0].copy()
        for row in range(1, self.rows):
            keys *= np.uint64(0x9E3779B97F4A7C15)
            keys += parts[:, :, row]
        return keys

    def load(self, chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """Add stored signatures in bulk: (doc_ids, hashvalues matrix) chunks."""
        ids, keys = [self._doc_ids], [self._keys_by_document()]
        for doc_ids, hashvalues in chunks:
            fresh = np.array([d not in self._members for d in doc_ids.tolist()], dtype=bool)
            ids.append(doc_ids[fresh].astype(np.int64))
            keys.append(self.band_keys(hashvalues[fresh]))
            self._members.update(doc_ids[fresh].tolist())
        self._rebuild(np.concatenate(ids), np.concatenate(keys))

    def add_many(self, doc_ids: Sequence[int], hashvalues: np.ndarray) -> None:
        """Add a batch of new signatures (rows of `hashvalues`)."""
        keys = self.band_keys(hashvalues)
        for doc_id, row in zip(doc_ids, keys.tolist(), strict=True):
            if doc_id in self._members:
                continue
            self._members.add(doc_id)
            for band, key in enumerate(row):
                self._recent[band].setdefault(key, []).append(doc_id)
            self._recent_ids.append(doc_id)
            self._recent_keys.append(np.array(row, dtype=self._key_dtype))
        if len(self._recent_ids) > max(self.fold_at, len(self._doc_ids) // 10):
            recent_keys = np.stack(self._recent_keys)
            keys = np.concatenate([self._keys_by_document(), recent_keys])
            self._rebuild(np.concatenate([self._doc_ids, self._recent_ids]), keys)

    def _keys_by_document(self) -> np.ndarray:
        """The tables' keys, one row per document in `_doc_ids` order (the tables are sorted per band)."""
        by_document = np.empty_like(self._keys)
        np.put_along_axis(by_document, self._rows.astype(np.int64), self._keys, axis=1)
        return by_document.T

    def _rebuild(self, doc_ids: np.ndarray, keys: np.ndarray) -> None:
        """Sorted band tables over these documents; the recent dicts start empty."""
        self._doc_ids = doc_ids.astype(np.int64)
        columns = np.ascontiguousarray(keys.T)
        self._rows = np.argsort(columns, axis=1, kind="stable").astype(np.int32)
        self._keys = np.take_along_axis(columns, self._rows, axis=1)
        self._recent = [{} for _ in range(self.bands)]
        self._recent_ids, self._recent_keys = [], []

    def candidates_many(self, hashvalues: np.ndarray) -> list[set[int]]:
        """The documents sharing a band with each signature (rows of `hashvalues`)."""
        keys = self.band_keys(hashvalues)
        found: list[set[int]] = [set() for _ in range(len(keys))]
        for band in range(self.bands):
            table = self._keys[band]
            low = np.searchsorted(table, keys[:, band], side="left")
            high = np.searchsorted(table, keys[:, band], side="right")
            for query in np.flatnonzero(high > low).tolist():
                found[query].update(self._doc_ids[self._rows[band, low[query] : high[query]]].tolist())
            recent = self._recent[band]
            if recent:
                for query, key in enumerate(keys[:, band].tolist()):
                    if key in recent:
                        found[query].update(recent[key])
        return found

    def candidates(self, hashvalues: bytes) -> set[int]:
        return self.candidates_many(np.frombuffer(hashvalues, dtype=self._fingerprint.dtype)[None, :])[0]


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

    def _minhash(self, values: np.ndarray):
        from datasketch import LeanMinHash

        return LeanMinHash(seed=self._fingerprint.seed, hashvalues=values, scheme=self._fingerprint.scheme)

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

    def candidates(self, hashvalues: bytes) -> set[int]:
        return self.candidates_many(np.frombuffer(hashvalues, dtype=self._fingerprint.dtype)[None, :])[0]


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
