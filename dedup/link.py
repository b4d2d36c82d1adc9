"""Link stage: candidate pairs from MinHashLSH, verified on the exact shingle sets.

The index is passed in and out (no module state): a run rebuilds it from the
stored signatures, then adds each batch after linking it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from datasketch import MinHashLSH

from dedup.fingerprint import FingerprintConfig, lean_minhash
from dedup.models import Edge, Similarity


@dataclass(frozen=True)
class LinkConfig:
    # MinHashLSH threshold for candidates. Low, because a cut copy or an
    # excerpt has a low Jaccard with its source (0.03 to 0.2 for excerpts on
    # the dev corpus) while containment stays high; every candidate is then
    # verified exactly, so a low threshold costs time, not precision. On the
    # dev corpus 0.05 misses 5 of 517 copy->source pairs (0.1 misses 17) for
    # 12 candidates per page.
    lsh_threshold: float = 0.05
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

    def __post_init__(self) -> None:
        for name in ("lsh_threshold", "min_jaccard", "min_containment"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"link.{name} must be in (0, 1], got {value}")


class CandidateIndex:
    """A MinHashLSH over document signatures, keyed by doc_id."""

    def __init__(self, link: LinkConfig, fingerprint: FingerprintConfig) -> None:
        self._fingerprint = fingerprint
        self._lsh = MinHashLSH(threshold=link.lsh_threshold, num_perm=fingerprint.num_perm)
        self._keys: set[int] = set()

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, doc_id: int, hashvalues: bytes) -> None:
        if doc_id in self._keys:
            return
        self._lsh.insert(doc_id, lean_minhash(hashvalues, self._fingerprint), check_duplication=False)
        self._keys.add(doc_id)

    def add_many(self, items: Iterable[tuple[int, bytes]]) -> None:
        with self._lsh.insertion_session() as session:
            for doc_id, hashvalues in items:
                if doc_id not in self._keys:
                    session.insert(doc_id, lean_minhash(hashvalues, self._fingerprint), check_duplication=False)
                    self._keys.add(doc_id)

    def candidates(self, hashvalues: bytes) -> set[int]:
        return set(self._lsh.query(lean_minhash(hashvalues, self._fingerprint)))


def similarity(a: frozenset[str], b: frozenset[str]) -> Similarity:
    if not a or not b:
        return Similarity(0.0, 0.0, 0.0)
    common = len(a & b)
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
    shingles: frozenset[str],
    candidates: Iterable[int],
    shingles_of: dict[int, frozenset[str]],
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
