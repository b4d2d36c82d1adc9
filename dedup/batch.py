"""One batch through the stages: the plain-Python core the flows call.

`prepare_pages` runs extract -> clean -> fingerprint on fetched pages (CPU
work, safe to run in worker processes). `Linker` holds a run's candidate
index and links, clusters and stores each prepared batch in turn.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np

from dedup.archive import read_warc
from dedup.boilerplate import (
    CARRIED_RULE_ID,
    RULE_ID,
    BoilerplateConfig,
    HostLines,
    StoredLineKeys,
    edge_lines,
    strip_furniture,
)
from dedup.clean import CleanConfig, fold, site_key, strip_markers
from dedup.extract import ExtractConfig, ExtractionError, extract_article
from dedup.fetch import FetchConfig
from dedup.fingerprint import FingerprintConfig, fingerprint, fingerprints, shingle_sets
from dedup.link import Candidates, LinkConfig, candidate_index, plausible_duplicates, similarity, verified_edges
from dedup.models import (
    CleanedAgain,
    CleanedArticle,
    ClusterEvent,
    FetchedPage,
    HostLineRow,
    Marker,
    Member,
    Page,
    Signature,
    Similarity,
)
from dedup.provenance import (
    AggregatorHosts,
    ClusterState,
    ProvenanceConfig,
    assign_pages,
    decide_clusters,
    find_hubs,
)
from dedup.recent import RecentShingleSets
from dedup.snapshot import Snapshot, StoredKeys
from dedup.store import BatchWrite, Store, StoredNumbers


@dataclass(frozen=True)
class Settings:
    """Every stage's settings; each stage gets only its own part."""

    fetch: FetchConfig = field(default_factory=FetchConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    boilerplate: BoilerplateConfig = field(default_factory=BoilerplateConfig)
    fingerprint: FingerprintConfig = field(default_factory=FingerprintConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    provenance: ProvenanceConfig = field(default_factory=ProvenanceConfig)
    # Pages per batch: one transaction, one task run. Large enough that the
    # per-task cost of the orchestrator is noise, small enough that a crash
    # loses little work. Each batch has a fixed cost (some 30 DuckDB
    # statements, an LSH search of each saved table, a task run): 10,000
    # pages into a million linked at 1,614 and 1,745 docs/s in batches of
    # 400, against 1,257 and 1,532 in batches of 200 (into an empty
    # database 3,562 and 3,863 against 2,830 and 2,924), with the same
    # clusters on the dev corpus.
    batch_size: int = 400
    # Pages per piece of a batch that one worker prepares (extract, clean,
    # fingerprint): a batch goes to the workers in pieces, so that at the
    # end of the input they run out of work together (with whole batches
    # one worker sat idle for up to a batch's time while the other finished).
    # A batch of fewer pages than the workers' pieces together (the last one
    # of a run, most often) is cut into one piece per worker instead.
    prepare_size: int = 50


@dataclass(frozen=True)
class Prepared:
    """A page that extracted to an article, cleaned and fingerprinted."""

    fetch: FetchedPage
    cleaned: CleanedArticle
    signature: Signature


@dataclass(frozen=True)
class PreparedBatch:
    prepared: list[Prepared]
    # every attempt, with the error of those that yielded no article
    fetches: list[FetchedPage]


def prepare_pages(pages: list[FetchedPage], settings: Settings) -> PreparedBatch:
    """Extract and clean each page, then fingerprint the batch's bodies together.
    The attempts come back without their HTML (see FetchedPage.without_body)."""
    outcomes: list[FetchedPage | tuple[FetchedPage, CleanedArticle]] = []
    for page in pages:
        try:
            article = extract_article(page, settings.extract)
        except ExtractionError as exc:
            outcomes.append(_with_error(page.without_body(), str(exc)))
            continue
        outcomes.append((page.without_body(), strip_markers(article, settings.clean)))
    cleaned = [o for o in outcomes if isinstance(o, tuple)]
    signatures = iter(fingerprints([c.body for _, c in cleaned], settings.fingerprint))
    prepared, fetches = [], []
    for outcome in outcomes:
        if not isinstance(outcome, tuple):
            fetches.append(outcome)
            continue
        page, article = outcome
        signature = next(signatures)
        if not len(signature.shingles):
            fetches.append(_with_error(page, "article body is empty once repost markers are removed"))
            continue
        prepared.append(Prepared(fetch=page, cleaned=article, signature=signature))
        fetches.append(page)
    return PreparedBatch(prepared=prepared, fetches=fetches)


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


def _with_error(page: FetchedPage, error: str) -> FetchedPage:
    return replace(page, error=error)


@dataclass
class BatchStats:
    pages: int = 0
    failed: int = 0
    new_clusters: int = 0
    grown_clusters: int = 0
    merged_clusters: int = 0
    originals_found: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, other: BatchStats) -> None:
        for name in ("pages", "failed", "new_clusters", "grown_clusters", "merged_clusters", "originals_found"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key, count in other.errors.items():
            self.errors[key] = self.errors.get(key, 0) + count


# 20 million shingle hashes (160 MB) of recent pages kept by the Linker
SHINGLE_CACHE_HASHES = 20_000_000


class Linker:
    """Links, clusters and stores prepared batches against one database."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        fingerprinting = settings.fingerprint
        with store.session():  # one connection for what a run reads first (opening a large file is not free)
            database_id = store.database_id()
            self.index = candidate_index(settings.link, fingerprinting, database_id, store.index_folder)
            # the index an earlier run saved, then the signatures stored after it
            indexed_through = self.index.resume(store.stored_through)
            self.index.load(store.signature_chunks(fingerprinting.dtype, fingerprinting.num_perm, after_doc_id=indexed_through))
            # what is stored, as the last run saved it or read from the database
            self.snapshot = Snapshot(store.snapshot_folder, stamp={"database_id": database_id})
            keys = self.snapshot.load(store.stored_through, *store.row_counts())
            self._snapshot_current = keys is not None and keys.line_numbers is not None  # nothing to save again
            keys = keys or self._read_keys()
            # every stored page's size in shingles, by doc_id (-1: none stored), for
            # the candidate filter; the run's pages are added as they come
            self._sizes = keys.sizes
            # which URLs are stored, as numbers (the run is the only writer: it
            # holds the run lock, and adds the URLs it stores)
            self._stored_urls = StoredNumbers(keys.url_numbers)
            # host -> (stored pages, copies), read once and kept up to date (aggregators are hosts of copies)
            self._host_pages = store.host_page_counts()
            # which host_lines rows are stored, read once and kept up to date (none
            # are read or written with learned boilerplate off)
            line_numbers = keys.line_numbers
            if line_numbers is None and settings.boilerplate.enabled:
                line_numbers = store.host_line_numbers()
            self._lines_held = line_numbers is not None
            self._stored_lines = StoredLineKeys(line_numbers if self._lines_held else np.empty(0, dtype=np.uint64))
            # the keys of the lines learned as furniture on some host (stripped on every host)
            self._furniture_keys: set[int] = (
                store.furniture_keys(settings.boilerplate.min_stories) if settings.boilerplate.enabled else set()
            )
            self._host_hashes: dict[str, int] = {}  # the hosts' DuckDB hashes those numbers use, asked once a host
            # the latest stored pages' shingle sets, as earlier runs saved them
            self.recent = RecentShingleSets(
                store.shingles_folder,
                stamp={"database_id": database_id, **fingerprinting.params()},
                budget=settings.link.recent_shingle_hashes,
            )
            self.recent.open(store.stored_through)
        self._next_id = len(self._sizes)
        # shingle sets kept from batch to batch (a story's pages tend to come
        # close together), up to SHINGLE_CACHE_HASHES hashes in all
        self._shingles: dict[int, np.ndarray] = {}
        self._cached_hashes = 0

    def _read_keys(self) -> StoredKeys:
        """What is stored, read from the database (the host lines are read apart: see __init__)."""
        doc_ids, n_shingles = self.store.shingle_counts()
        sizes = np.full(int(doc_ids.max(initial=0)) + 1, -1, dtype=np.int64)
        sizes[doc_ids] = n_shingles
        return StoredKeys(url_numbers=self.store.url_numbers(), sizes=sizes, line_numbers=None)

    def link_batch(self, run_id: int, batch: PreparedBatch) -> BatchStats:
        """Link, cluster and store one batch, over one database connection."""
        with self.store.session():
            return self._link_batch(run_id, batch)

    def _link_batch(self, run_id: int, batch: PreparedBatch) -> BatchStats:
        settings = self.settings
        self._forget_if_full()
        stats = BatchStats(failed=sum(1 for f in batch.fetches if f.error))
        for fetch in batch.fetches:
            if fetch.error:
                key = fetch.error.split(":")[0][:60]
                stats.errors[key] = stats.errors.get(key, 0) + 1
        pages: list[Page] = []
        # the URLs' hashes, and those of the hosts learned boilerplate has not
        # met yet, in one query
        urls = {item.cleaned.article.url for item in batch.prepared}
        hosts: set[str] = set()
        if settings.boilerplate.enabled:
            hosts = {item.cleaned.article.host or "" for item in batch.prepared} - self._host_hashes.keys()
        hashes = self.store.text_hashes(urls | hosts)
        self._host_hashes.update((host, hashes[host]) for host in hosts)
        # stored before (by an earlier run or batch), or twice in this batch: kept once
        stored = self._stored_before({url: hashes[url] for url in urls})
        seen: set[str] = set()
        for item in batch.prepared:
            url = item.cleaned.article.url
            if url in stored or url in seen:
                continue
            seen.add(url)
            pages.append(Page(doc_id=self._next_id, cleaned=item.cleaned, signature=item.signature, first_seen_run=run_id))
            self._next_id += 1
        stats.pages = len(pages)
        new_lines: list[HostLineRow] = []
        grown_lines: list[HostLineRow] = []
        again: dict[int, CleanedAgain] = {}
        if settings.boilerplate.enabled:
            lines = self._strip_learned_boilerplate(pages)
            new_lines, grown_lines = lines.changed_rows()
            # stored pages that carry a line learned here are cleaned again, and their clusters decided again
            again = {c.doc_id: c for c in self._clean_stored_again(lines)}
        for cleaned_again in again.values():
            self._remember(cleaned_again.doc_id, cleaned_again.signature.shingles)
            self._sizes[cleaned_again.doc_id] = cleaned_again.signature.n_shingles
        # candidates and verified edges: against the stored pages and this batch
        batch_index = {p.doc_id: p for p in pages}
        for page in pages:
            self._remember(page.doc_id, page.signature.shingles)
        self._note_sizes(pages)
        candidates = self._plausible(pages, self._candidates(pages)) if pages else {}
        stored_needed = {c for cands in candidates.values() for c in cands if c not in batch_index and c not in self._shingles}
        self._remember_stored(stored_needed)
        neighbours: dict[int, dict[int, Similarity]] = {}
        pairs: dict[tuple[int, int], Similarity] = {}
        for page in pages:
            for edge in verified_edges(
                page.doc_id, page.signature.shingles, candidates[page.doc_id], self._shingles, settings.link
            ):
                neighbours.setdefault(edge.a, {})[edge.b] = edge.similarity
                flipped = Similarity(edge.similarity.jaccard, edge.similarity.b_in_a, edge.similarity.a_in_b)
                neighbours.setdefault(edge.b, {})[edge.a] = flipped
                key, sim = ((edge.a, edge.b), edge.similarity) if edge.a < edge.b else ((edge.b, edge.a), flipped)
                pairs[key] = sim
        # the clusters this batch touches, with all their members
        stored_neighbours = {o for p in pages for o in neighbours.get(p.doc_id, {}) if o not in batch_index}
        touched_before = set(self.store.cluster_ids_of(stored_neighbours | again.keys()).values())
        cluster_rows = self.store.members(touched_before)
        members: dict[int, Member] = {m.doc_id: m for m in cluster_rows}
        for doc_id, cleaned_again in again.items():
            members[doc_id].n_shingles = cleaned_again.signature.n_shingles
        for page in pages:
            members[page.doc_id] = _member_of(page)
        before = self.store.clusters_before(touched_before)
        stored_cluster = {m.doc_id: m.cluster_id for m in cluster_rows}  # before assignment moves any
        cluster_members: dict[int, list[int]] = {}
        for member in cluster_rows:
            cluster_members.setdefault(member.cluster_id, []).append(member.doc_id)
        state = ClusterState(
            members=members,
            cluster_members=cluster_members,
            previous_original={c: o for c, (o, _) in before.items()},
            previous_size={c: s for c, (_, s) in before.items()},
        )
        known_pairs = self.store.pairs_among(set(members) - set(batch_index))
        # the stored pairs of pages cleaned again are measured again
        measured_before = [pair for pair in known_pairs if pair[0] in again or pair[1] in again]
        for pair in measured_before:
            del known_pairs[pair]
        known_pairs.update(pairs)

        def similarity_of(a: int, b: int) -> Similarity:
            if (a, b) in known_pairs:
                return known_pairs[(a, b)]
            if (b, a) in known_pairs:
                s = known_pairs[(b, a)]
                return Similarity(s.jaccard, s.b_in_a, s.a_in_b)
            if a not in self._shingles or b not in self._shingles:
                # a member's shingles are made from its body only if a pair needs
                # them (most pairs of a stored cluster were measured when it was
                # linked); then every touched member's missing ones, in one read
                self._remember_stored({d for d in members if d not in self._shingles})
            sim = similarity(self._shingles[a], self._shingles[b])
            known_pairs[(a, b)] = sim
            return sim

        hubs = self._find_hubs(set(batch_index) | stored_neighbours, known_pairs, members, similarity_of)
        for doc_id in hubs:
            members[doc_id].hub = True
            if doc_id in batch_index:
                batch_index[doc_id].hub = True
        # a page that carries what its host adds to stories and is linked to
        # another site's page is an aggregator's copy, by behaviour; the batch's
        # pages count towards their hosts' copy share before its clusters are decided
        self._note_added_lines(pages, neighbours, members)
        for page in pages:
            members[page.doc_id].adds_lines = page.adds_lines
            pages_of_host, copies = self._host_pages.get(page.article.host, (0, 0))
            self._host_pages[page.article.host] = (pages_of_host + 1, copies + int(page.cleaned.marks_copy or page.adds_lines))
        pairs_again = {pair: similarity_of(*pair) for pair in measured_before}
        self._note_lines_added_again(again, pairs_again, members)
        aggregators = AggregatorHosts(self._host_pages, settings.provenance)
        assign_pages(state, [p.doc_id for p in pages], neighbours, similarity_of, aggregators, settings.provenance)
        cleaned_clusters: dict[int, list[int]] = {}
        for doc_id in sorted(again):
            cleaned_clusters.setdefault(members[doc_id].cluster_id, []).append(doc_id)
        touched = {members[p.doc_id].cluster_id for p in pages} | set(state.merged_into.values()) | cleaned_clusters.keys()
        clusters, reposts, events = decide_clusters(state, touched, similarity_of, aggregators, settings.provenance)
        events += [
            ClusterEvent(cluster_id, "cleaned_again", f"pages {', '.join(map(str, doc_ids))} cleaned of lines learned later")
            for cluster_id, doc_ids in cleaned_clusters.items()
        ]
        for page in pages:
            page.cluster_id = members[page.doc_id].cluster_id
        moved = {d: c for d, c in ((d, members[d].cluster_id) for d in stored_cluster) if c != stored_cluster[d]}
        self.store.write_batch(
            BatchWrite(
                run_id=run_id,
                pages=pages,
                fetches=batch.fetches,
                pairs=pairs,
                clusters=clusters,
                reposts=reposts,
                events=events,
                moved=moved,
                removed_clusters=[g for g in state.merged_into if g not in state.new_clusters and g in before],
                host_lines=new_lines,
                host_lines_grown=grown_lines,
                cleaned_again=list(again.values()),
                pairs_again=pairs_again,
                hubs=sorted(hubs - batch_index.keys()),
            )
        )
        self._snapshot_current = False
        self._stored_urls.add(np.array([hashes[url] for url in seen], dtype=np.uint64))
        self._stored_lines.add(new_lines, self._host_hashes)  # the batch's hosts are hashed already
        if settings.boilerplate.enabled:
            self._furniture_keys |= lines.learned_keys
        for page in pages:
            self.recent.add(page.doc_id, page.signature.shingles)
        stats.new_clusters = sum(1 for e in events if e.kind == "created")
        stats.grown_clusters = sum(1 for e in events if e.kind == "grew")
        stats.merged_clusters = sum(1 for e in events if e.kind == "merged")
        stats.originals_found = sum(1 for c in clusters if c.original_doc_id is not None and len(c.members) > 1)
        return stats

    def save_for_next_run(self) -> list[str]:
        """Keep the LSH index, the latest pages' shingle sets and what the run
        holds of what is stored, for the next run (call once the run's batches
        are stored). What is stored does not depend on them: what cannot be
        written is returned (one line each), and the next run rebuilds the
        index, reads those pages' bodies, or reads what is stored."""
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
            url_numbers=self._stored_urls.all(),
            sizes=self._sizes[: self._next_id],
            line_numbers=self._stored_lines.all() if self._lines_held else None,
        )
        if keys.documents:  # nothing to save of an empty database
            self.snapshot.save(self.store.stored_through, keys)

    def _stored_before(self, url_hashes: dict[str, int]) -> set[str]:
        """Those of these URLs (with their hashes) the database holds: the few
        whose number a stored URL may have, looked up."""
        urls = list(url_hashes)
        numbers = np.array([url_hashes[url] for url in urls], dtype=np.uint64)
        maybe = [url for url, hit in zip(urls, self._stored_urls.may_hold(numbers).tolist(), strict=True) if hit]
        return self.store.stored_urls(maybe) if maybe else set()

    def _remember(self, doc_id: int, shingle_set: np.ndarray) -> None:
        self._shingles[doc_id] = shingle_set
        self._cached_hashes += len(shingle_set)

    def _remember_stored(self, doc_ids: set[int]) -> None:
        """The shingle sets of stored pages: those of the latest pages as a run
        saved them, the others made from their bodies (one read)."""
        for doc_id, shingle_set in self.recent.get(doc_ids).items():
            # a saved set of another size is not this page's (a database put back from a copy)
            if len(shingle_set) == self._sizes[doc_id]:
                self._remember(doc_id, shingle_set)
        bodies = self.store.bodies({d for d in doc_ids if d not in self._shingles})
        for doc_id, shingle_set in zip(bodies, shingle_sets(list(bodies.values()), self.settings.fingerprint), strict=True):
            self._remember(doc_id, shingle_set)

    def _forget_if_full(self) -> None:
        """Start the shingle cache over between batches once it holds too much."""
        if self._cached_hashes > SHINGLE_CACHE_HASHES:
            self._shingles.clear()
            self._cached_hashes = 0

    def _candidates(self, pages: list[Page]) -> Candidates:
        """Add the pages to the LSH index, and return their candidates (each
        page itself included; `query` is the page's place in `pages`)."""
        dtype = self.settings.fingerprint.dtype
        signatures = np.stack([np.frombuffer(p.signature.hashvalues, dtype=dtype) for p in pages])
        self.index.add_many([p.doc_id for p in pages], signatures)
        return self.index.candidates_many(signatures)

    def _note_sizes(self, pages: list[Page]) -> None:
        """Keep the pages' sizes in shingles, by doc_id, for `_plausible`."""
        if not pages:
            return
        top = max(p.doc_id for p in pages)
        if top >= len(self._sizes):
            grown = np.full(max(top + 1, 2 * len(self._sizes)), -1, dtype=np.int64)
            grown[: len(self._sizes)] = self._sizes
            self._sizes = grown
        for page in pages:
            self._sizes[page.doc_id] = page.signature.n_shingles

    def _plausible(self, pages: list[Page], found: Candidates) -> dict[int, set[int]]:
        """The candidates worth verifying: those sharing enough bands with the
        page for a near-duplicate of their sizes (most share one band by
        chance). A candidate the database does not hold (an index outside the
        run, Redis, may name a page a dead run never stored) is dropped here."""
        plausible: dict[int, set[int]] = {p.doc_id: set() for p in pages}
        a = np.array([p.doc_id for p in pages], dtype=np.int64)[found.query]
        b = found.doc_id
        size_b = np.full(len(b), -1, dtype=np.int64)
        known = b < len(self._sizes)
        size_b[known] = self._sizes[b[known]]
        kept = (a != b) & (size_b >= 0)
        kept[kept] = plausible_duplicates(found.bands[kept], self._sizes[a[kept]], size_b[kept], self.settings.link)
        for doc_id, other in zip(a[kept].tolist(), b[kept].tolist(), strict=True):
            plausible[doc_id].add(other)
        return plausible

    def _find_hubs(
        self,
        doc_ids: set[int],
        known_pairs: dict[tuple[int, int], Similarity],
        members: dict[int, Member],
        similarity_of: Callable[[int, int], Similarity],
    ) -> set[int]:
        """Those of these pages, not known as hubs yet, that hold several stories (`find_hubs`)."""
        asked = {d for d in doc_ids if not members[d].hub}
        pairs_of: dict[int, dict[int, Similarity]] = {}
        for (a, b), sim in known_pairs.items():
            if a in asked:
                pairs_of.setdefault(a, {})[b] = sim
            if b in asked:
                pairs_of.setdefault(b, {})[a] = Similarity(sim.jaccard, sim.b_in_a, sim.a_in_b)
        return find_hubs(sorted(asked), pairs_of, similarity_of, self.settings.provenance)

    def _note_added_lines(self, pages: list[Page], neighbours: dict[int, dict[int, Similarity]], members: dict[int, Member]) -> None:
        """Set `adds_lines` on the pages that carry a line (a marker other than
        a dateline or another host's furniture, learned or by a rule) that none
        of the pages of other sites they are linked to carries: what a copier
        adds to a story."""
        lines = {p.doc_id: _own_lines(p.cleaned.markers) for p in pages}
        partners = {p.doc_id: list(neighbours.get(p.doc_id, {})) for p in pages}
        adding = self._adding_lines(lines, partners, members, {p.doc_id: p.article.text for p in pages})
        for page in pages:
            page.adds_lines = page.doc_id in adding

    def _note_lines_added_again(
        self, again: dict[int, CleanedAgain], pairs: dict[tuple[int, int], Similarity], members: dict[int, Member]
    ) -> None:
        """`adds_lines` of stored pages cleaned again, from their new markers
        and the pages they were linked to, counted towards their hosts."""
        partners: dict[int, list[int]] = {d: [] for d in again}
        for a, b in pairs:
            for doc_id, other in ((a, b), (b, a)):
                if doc_id in again:
                    partners[doc_id].append(other)
        lines = {d: _own_lines(c.markers) for d, c in again.items() if not c.adds_lines}
        for doc_id in self._adding_lines(lines, partners, members, {}):
            again[doc_id].adds_lines = members[doc_id].adds_lines = True
            pages_of_host, copies = self._host_pages.get(members[doc_id].host, (0, 0))
            self._host_pages[members[doc_id].host] = (pages_of_host, copies + 1)

    def _adding_lines(
        self, lines: dict[int, set[str]], partners: dict[int, list[int]], members: dict[int, Member], known_texts: dict[int, str]
    ) -> set[int]:
        """Those of the pages (`lines`: doc_id -> its folded lines) that carry a
        line none of their `partners` of other sites carries (their texts:
        `known_texts`, else read)."""
        partners = {
            doc_id: [o for o in partners.get(doc_id, ()) if site_key(members[o].host) != site_key(members[doc_id].host)]
            for doc_id, found in lines.items()
            if found
        }
        wanted = {o for found in partners.values() for o in found}
        batch_texts = {d: t for d, t in known_texts.items() if d in wanted}
        stored_texts = self.store.texts(wanted - batch_texts.keys())
        texts = {doc_id: fold(text) for doc_id, text in (batch_texts | stored_texts).items()}
        adding = set()
        for doc_id, found in partners.items():
            others = [texts[o] for o in found if o in texts]
            # a line that one of them carries too is the story's own
            if others and any(all(line not in text for text in others) for line in lines[doc_id]):
                adding.add(doc_id)
        return adding

    def _clean_stored_again(self, lines: HostLines) -> list[CleanedAgain]:
        """Stored pages that carry a line learned in this batch (`lines`: the
        pages its host_lines rows name, of any host), cleaned of every learned
        line they carry. The LSH index keeps such a page's first bands (its
        copies still share most of them); its shingle set and size are the new ones."""
        if not lines.learned_keys:
            return []
        config = self.settings.boilerplate
        stored = self.store.stored_pages({d for row in self.store.host_lines_of(lines.learned_keys) for d in row[3]})
        furniture_keys = self._furniture_keys | lines.learned_keys
        # whose line each is: the host's own rows for the keys it may take off
        near_edges = {(p.host, key) for p in stored for key in edge_lines(p.body, config, p.title, reach=2)}
        own = {(h, k) for h, k, _, story_doc_ids in self.store.host_lines(near_edges) if len(story_doc_ids) >= config.min_stories}
        cleaned = []
        for page in stored:

            def rule_of(key: int, host: str = page.host) -> str | None:
                if key not in furniture_keys:
                    return None
                return RULE_ID if (host, key) in own or lines.is_furniture(host, key) else CARRIED_RULE_ID

            stripped = strip_furniture(page.body, page.text, page.title, config, rule_of)
            if stripped is None:
                continue
            body, markers = stripped
            signature = fingerprint(body, self.settings.fingerprint)
            if len(signature.shingles):
                cleaned.append(CleanedAgain(page.doc_id, body, signature, markers, page.adds_lines))
        return cleaned

    def _strip_learned_boilerplate(self, pages: list[Page]) -> HostLines:
        """Learn each host's furniture from this batch and the stored pages, strip it
        from this batch's pages (re-fingerprinting those that change), and return
        what was learned (its `changed_rows` are to be stored with the batch).
        The batch's hosts are hashed already (`_link_batch`)."""
        config = self.settings.boilerplate
        edges = {p.doc_id: edge_lines(p.cleaned.body, config, p.article.title) for p in pages}
        # the stored lines of the paragraphs that are or may come to an edge
        keys = {(p.article.host or "", key) for p in pages for key in edge_lines(p.cleaned.body, config, p.article.title, reach=2)}
        fingerprinting = self.settings.fingerprint
        lines = HostLines(config, fingerprinting.dtype, self._furniture_keys)
        rows = self.store.host_lines(self._stored_lines.held(keys, self._host_hashes))
        lines.load(
            rows, self.store.signatures_of({d for row in rows for d in row[3]}, fingerprinting.dtype, fingerprinting.num_perm)
        )
        for page in pages:
            host = page.article.host or ""
            lines.observe(host, page.doc_id, page.signature.hashvalues, page.signature.n_shingles, edges[page.doc_id])
        for page in pages:
            stripped = lines.strip(page.cleaned)
            if stripped is not page.cleaned:
                signature = fingerprint(stripped.body, self.settings.fingerprint)
                if len(signature.shingles):
                    page.cleaned, page.signature = stripped, signature
        return lines


def _own_lines(markers: Iterable[Marker]) -> set[str]:
    """The folded lines of a page that may be its host's additions (not
    datelines, not another host's furniture carried along)."""
    return {fold(m.text) for m in markers if m.kind != "dateline" and m.rule != CARRIED_RULE_ID}


def _member_of(page: Page) -> Member:
    cleaned = page.cleaned
    return Member(
        doc_id=page.doc_id,
        url=cleaned.article.url,
        host=cleaned.article.host,
        n_shingles=page.signature.n_shingles,
        marks_copy=cleaned.marks_copy,
        published_at=cleaned.article.published_at,
        first_seen_run=page.first_seen_run or 0,
        copy_marker_texts=tuple(m.text for m in cleaned.markers if m.marks_copy),
        credit_texts=tuple(m.text for m in cleaned.markers if m.marks_copy and m.kind == "credit"),
        attributions=cleaned.attributions,
        site_name=cleaned.article.site_name,
    )


def batches_of(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def run_description(kind: str, n_inputs: int) -> str:
    """How a run names itself in the run lock, for a second run that finds the database busy."""
    return {"ingest": f"an ingest of {n_inputs} WARC file(s)", "crawl": f"a crawl of {n_inputs} URL(s)"}[kind]


def open_store(db: str, settings: Settings) -> Store:
    """The database, migrated, checked to hold signatures made with these settings."""
    store = Store(db)
    store.migrate()
    store.check_signature_params(settings.fingerprint.params())
    return store


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
    gc.freeze()
    gc.enable()

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def prepare_warcs_ahead(
    warc_paths: list[str], db: str, settings: Settings, workers: int, executor: Executor | None = None
) -> PreparedAhead:
    """Start preparing the pages of WARC files that the database does not hold yet."""
    known = open_store(db, settings).known_urls()
    sizes = [Path(p).stat().st_size if Path(p).is_file() else 0 for p in warc_paths]
    read = {"files": 0, "offset": 0}

    def pages() -> Iterator[FetchedPage]:
        for number, path in enumerate(warc_paths):
            read["files"], read["offset"] = sum(sizes[:number]), 0
            yield from read_warc(Path(path), skip_urls=known, on_offset=lambda offset: read.update(offset=offset))
        read["files"], read["offset"] = sum(sizes), 0

    def input_read() -> float:
        return (read["files"] + read["offset"]) / max(1, sum(sizes))

    return PreparedAhead(batches_of(pages(), settings.batch_size), settings, workers, input_read=input_read, executor=executor)
