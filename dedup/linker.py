"""The linker: a run's view of what is stored, and each prepared batch
linked, clustered and stored against it (one transaction a batch)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import numpy as np

from dedup.batch import BatchStats, PreparedBatch, Settings
from dedup.boilerplate import (
    CARRIED_RULE_ID,
    HostLines,
    edge_lines,
    strip_furniture,
)
from dedup.clean import fold, site_key
from dedup.fingerprint import fingerprint, shingle_sets
from dedup.known import KnownStored
from dedup.link import Candidates, plausible_duplicates, similarity, verified_edges
from dedup.models import (
    Article,
    CleanedAgain,
    ClusterEvent,
    Marker,
    Member,
    Page,
    Similarity,
)
from dedup.provenance import (
    AggregatorHosts,
    ClusterState,
    assign_pages,
    decide_clusters,
    find_hubs,
)
from dedup.store import BatchWrite, Store

# 20 million shingle hashes (160 MB) of recent pages kept by the Linker
SHINGLE_CACHE_HASHES = 20_000_000


@dataclass
class Touched:
    """The clusters a batch touches, with all their members, as provenance sees them."""

    state: ClusterState
    members: dict[int, Member]
    before: dict[int, tuple[int | None, int]]  # cluster -> (original, size) as stored
    stored_cluster: dict[int, int]  # stored member -> its cluster before the batch
    stored_neighbours: set[int]  # the stored pages the batch's pages link to
    known_pairs: dict[tuple[int, int], Similarity]  # measured pairs among the members
    measured_before: list[tuple[int, int]]  # stored pairs of pages cleaned again, to measure again


class Linker:
    """Links, clusters and stores prepared batches against one database.

    A batch, in `link_batch`: its pages new to the database get their doc
    ids; the lines their hosts put on every page are learned and stripped
    (stored pages that carried them are cleaned again); the pages are
    linked to their near-duplicates (LSH candidates, verified exactly); the
    clusters they touch are decided (hubs, what copies add, the original);
    all of it is written in one transaction, and what the run knows of what
    is stored (`KnownStored`) is kept in step."""

    def __init__(self, store: Store, settings: Settings, extract_stored_again: bool = False) -> None:
        self.store = store
        self.settings = settings
        # a stored URL met again replaces its page's extraction (`ingest --reprocess`), else it is skipped
        self.extract_stored_again = extract_stored_again
        self.known = KnownStored(store, settings)
        # shingle sets kept from batch to batch (a story's pages tend to come
        # close together), up to SHINGLE_CACHE_HASHES hashes in all
        self._shingles: dict[int, np.ndarray] = {}
        self._cached_hashes = 0

    def link_batch(self, run_id: int, batch: PreparedBatch) -> BatchStats:
        """Link, cluster and store one batch, over one database connection."""
        with self.store.session():
            return self._link_batch(run_id, batch)

    def save_for_next_run(self) -> list[str]:
        """Save what the run knows of what is stored for the next run (`KnownStored.save`)."""
        return self.known.save()

    def _link_batch(self, run_id: int, batch: PreparedBatch) -> BatchStats:
        self._forget_if_full()
        pages, url_hashes, extracted_again = self._new_pages(run_id, batch)
        lines, again = self._learn_lines(pages)
        neighbours, pairs = self._link(pages)
        touched = self._touched(pages, neighbours, pairs, again)
        clusters, reposts, events, hubs, pairs_again = self._decide(pages, neighbours, again, touched)
        batch_ids = {p.doc_id for p in pages}
        new_lines, grown_lines = lines.changed_rows() if lines else ([], [])
        self.store.write_batch(
            BatchWrite(
                run_id=run_id,
                pages=pages,
                fetches=batch.fetches,
                pairs=pairs,
                clusters=clusters,
                reposts=reposts,
                events=events,
                moved={
                    d: touched.members[d].cluster_id
                    for d, c in touched.stored_cluster.items()
                    if touched.members[d].cluster_id != c
                },
                removed_clusters=[
                    g for g in touched.state.merged_into if g not in touched.state.new_clusters and g in touched.before
                ],
                host_lines=new_lines,
                host_lines_grown=grown_lines,
                cleaned_again=list(again.values()),
                pairs_again=pairs_again,
                hubs=sorted(hubs - batch_ids),
                extracted_again=extracted_again,
            )
        )
        self.known.committed(pages, url_hashes, new_lines, lines.learned_keys if lines else set())
        return _stats(batch, pages, clusters, events)

    def _new_pages(self, run_id: int, batch: PreparedBatch) -> tuple[list[Page], dict[str, int], list[Article]]:
        """The batch's pages the database does not hold (a URL twice in the
        batch is kept once), with their doc ids; their URLs' hashes; and the
        articles of the stored ones, when they are to replace their extraction."""
        urls = {item.cleaned.article.url for item in batch.prepared}
        hosts = {item.cleaned.article.host or "" for item in batch.prepared} if self.settings.boilerplate.enabled else set()
        hashes = self.known.hashes(urls, hosts)
        stored = self.known.stored_urls({url: hashes[url] for url in urls})
        pages: list[Page] = []
        extracted_again: list[Article] = []
        seen: set[str] = set()
        for item in batch.prepared:
            url = item.cleaned.article.url
            if url in seen:
                continue
            seen.add(url)
            if url in stored:
                if self.extract_stored_again:
                    extracted_again.append(item.cleaned.article)
                continue
            doc_id = self.known.next_id if item.doc_id is None else item.doc_id
            pages.append(Page(doc_id=doc_id, cleaned=item.cleaned, signature=item.signature, first_seen_run=run_id))
            self.known.next_id = max(self.known.next_id, doc_id + 1)
        return pages, hashes, extracted_again

    def _learn_lines(self, pages: list[Page]) -> tuple[HostLines | None, dict[int, CleanedAgain]]:
        """Learn and strip the hosts' furniture (None with learning off), and
        clean again the stored pages that carry a line learned here."""
        if not self.settings.boilerplate.enabled:
            return None, {}
        lines = self._strip_learned_boilerplate(pages)
        again = {c.doc_id: c for c in self._clean_stored_again(lines)}
        for cleaned_again in again.values():
            self._remember(cleaned_again.doc_id, cleaned_again.signature.shingles)
            self.known.sizes[cleaned_again.doc_id] = cleaned_again.signature.n_shingles
        return lines, again

    def _link(self, pages: list[Page]) -> tuple[dict[int, dict[int, Similarity]], dict[tuple[int, int], Similarity]]:
        """The pages' verified near-duplicates, among the stored pages and this
        batch: each page's neighbours (other -> Similarity seen from the page),
        and each pair once (a < b)."""
        batch_ids = {p.doc_id for p in pages}
        for page in pages:
            self._remember(page.doc_id, page.signature.shingles)
        self.known.note_sizes(pages)
        candidates = self._plausible(pages, self._candidates(pages)) if pages else {}
        self._remember_stored(
            {c for cands in candidates.values() for c in cands if c not in batch_ids and c not in self._shingles}
        )
        neighbours: dict[int, dict[int, Similarity]] = {}
        pairs: dict[tuple[int, int], Similarity] = {}
        for page in pages:
            for edge in verified_edges(
                page.doc_id, page.signature.shingles, candidates[page.doc_id], self._shingles, self.settings.link
            ):
                neighbours.setdefault(edge.a, {})[edge.b] = edge.similarity
                flipped = edge.similarity.flipped()
                neighbours.setdefault(edge.b, {})[edge.a] = flipped
                key, sim = ((edge.a, edge.b), edge.similarity) if edge.a < edge.b else ((edge.b, edge.a), flipped)
                pairs[key] = sim
        return neighbours, pairs

    def _touched(
        self,
        pages: list[Page],
        neighbours: dict[int, dict[int, Similarity]],
        pairs: dict[tuple[int, int], Similarity],
        again: dict[int, CleanedAgain],
    ) -> Touched:
        """The clusters the batch touches (of the stored pages its pages link
        to, and of the pages cleaned again), with all their members."""
        batch_ids = {p.doc_id for p in pages}
        stored_neighbours = {o for p in pages for o in neighbours.get(p.doc_id, {}) if o not in batch_ids}
        touched_before = set(self.store.cluster_ids_of(stored_neighbours | again.keys()).values())
        cluster_rows = self.store.members(touched_before)
        members: dict[int, Member] = {m.doc_id: m for m in cluster_rows}
        for doc_id, cleaned_again in again.items():
            members[doc_id].n_shingles = cleaned_again.signature.n_shingles
        for page in pages:
            members[page.doc_id] = Member.of_page(page)
        before = self.store.clusters_before(touched_before)
        cluster_members: dict[int, list[int]] = {}
        for member in cluster_rows:
            cluster_members.setdefault(member.cluster_id, []).append(member.doc_id)
        state = ClusterState(
            members=members,
            cluster_members=cluster_members,
            previous_original={c: o for c, (o, _) in before.items()},
            previous_size={c: s for c, (_, s) in before.items()},
        )
        known_pairs = self.store.pairs_among(set(members) - batch_ids)
        # the stored pairs of pages cleaned again are measured again
        measured_before = [pair for pair in known_pairs if pair[0] in again or pair[1] in again]
        for pair in measured_before:
            del known_pairs[pair]
        known_pairs.update(pairs)
        return Touched(
            state=state,
            members=members,
            before=before,
            stored_cluster={m.doc_id: m.cluster_id for m in cluster_rows},
            stored_neighbours=stored_neighbours,
            known_pairs=known_pairs,
            measured_before=measured_before,
        )

    def _similarity_of(self, touched: Touched) -> Callable[[int, int], Similarity]:
        """The similarity of two members: measured, or measured now (and kept)."""
        known_pairs, members = touched.known_pairs, touched.members

        def similarity_of(a: int, b: int) -> Similarity:
            if (a, b) in known_pairs:
                return known_pairs[(a, b)]
            if (b, a) in known_pairs:
                return known_pairs[(b, a)].flipped()
            if a not in self._shingles or b not in self._shingles:
                # a member's shingles are made from its body only if a pair needs
                # them (most pairs of a stored cluster were measured when it was
                # linked); then every touched member's missing ones, in one read
                self._remember_stored({d for d in members if d not in self._shingles})
            sim = similarity(self._shingles[a], self._shingles[b])
            known_pairs[(a, b)] = sim
            return sim

        return similarity_of

    def _decide(
        self, pages: list[Page], neighbours: dict[int, dict[int, Similarity]], again: dict[int, CleanedAgain], touched: Touched
    ) -> tuple[list, list, list, set[int], dict[tuple[int, int], Similarity]]:
        """Hubs, what the pages add, each page's cluster, and each touched
        cluster's original and tree: (clusters, reposts, events, hubs, the
        stored pairs measured again)."""
        settings, members, state = self.settings, touched.members, touched.state
        similarity_of = self._similarity_of(touched)
        batch_ids = {p.doc_id for p in pages}
        hubs = self._find_hubs(batch_ids | touched.stored_neighbours, touched.known_pairs, members, similarity_of)
        for page in pages:
            page.hub = page.doc_id in hubs
        for doc_id in hubs:
            members[doc_id].hub = True
        # a page that carries what its host adds to stories and is linked to
        # another site's page is an aggregator's copy, by behaviour; the batch's
        # pages count towards their hosts' copy share before its clusters are decided
        self._note_added_lines(pages, neighbours, members)
        for page in pages:
            members[page.doc_id].adds_lines = page.adds_lines
            self.known.count_pages(page.article.host, 1, int(page.cleaned.marks_copy or page.adds_lines))
        pairs_again = {pair: similarity_of(*pair) for pair in touched.measured_before}
        self._note_lines_added_again(again, pairs_again, members)
        aggregators = AggregatorHosts(self.known.host_pages, settings.provenance)
        assign_pages(state, [p.doc_id for p in pages], neighbours, similarity_of, aggregators, settings.provenance)
        cleaned_clusters: dict[int, list[int]] = {}
        for doc_id in sorted(again):
            cleaned_clusters.setdefault(members[doc_id].cluster_id, []).append(doc_id)
        decided = {members[p.doc_id].cluster_id for p in pages} | set(state.merged_into.values()) | cleaned_clusters.keys()
        clusters, reposts, events = decide_clusters(state, decided, similarity_of, aggregators, settings.provenance)
        events += [
            ClusterEvent(cluster_id, "cleaned_again", f"pages {', '.join(map(str, doc_ids))} cleaned of lines learned later")
            for cluster_id, doc_ids in cleaned_clusters.items()
        ]
        for page in pages:
            page.cluster_id = members[page.doc_id].cluster_id
        return clusters, reposts, events, hubs, pairs_again

    def _remember(self, doc_id: int, shingle_set: np.ndarray) -> None:
        self._shingles[doc_id] = shingle_set
        self._cached_hashes += len(shingle_set)

    def _remember_stored(self, doc_ids: set[int]) -> None:
        """The shingle sets of stored pages: those of the latest pages as a run
        saved them, the others made from their bodies (one read)."""
        for doc_id, shingle_set in self.known.recent.get(doc_ids).items():
            # a saved set of another size is not this page's (a database put back from a copy)
            if len(shingle_set) == self.known.sizes[doc_id]:
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
        self.known.index.add_many([p.doc_id for p in pages], signatures)
        return self.known.index.candidates_many(signatures)

    def _plausible(self, pages: list[Page], found: Candidates) -> dict[int, set[int]]:
        """The candidates worth verifying: those sharing enough bands with the
        page for a near-duplicate of their sizes (most share one band by
        chance). A candidate the database does not hold (an index outside the
        run, Redis, may name a page a dead run never stored) is dropped here."""
        plausible: dict[int, set[int]] = {p.doc_id: set() for p in pages}
        a = np.array([p.doc_id for p in pages], dtype=np.int64)[found.query]
        b = found.doc_id
        size_b = np.full(len(b), -1, dtype=np.int64)
        known = b < len(self.known.sizes)
        size_b[known] = self.known.sizes[b[known]]
        kept = (a != b) & (size_b >= 0)
        kept[kept] = plausible_duplicates(found.bands[kept], self.known.sizes[a[kept]], size_b[kept], self.settings.link)
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
                pairs_of.setdefault(b, {})[a] = sim.flipped()
        return find_hubs(sorted(asked), pairs_of, similarity_of, self.settings.provenance)

    def _note_added_lines(
        self, pages: list[Page], neighbours: dict[int, dict[int, Similarity]], members: dict[int, Member]
    ) -> None:
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
            self.known.count_pages(members[doc_id].host, 0, 1)

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
        # whose line each is: the hosts' own stored rows for the lines they may take off
        lines.load(self.store.host_lines({(p.host, key) for p in stored for key in edge_lines(p.body, config, p.title, reach=2)}))
        cleaned = []
        for page in stored:
            rule_of = partial(lines.rule_for, page.host)
            stripped = strip_furniture(page.body, page.text, page.title, config, rule_of)
            if stripped is None:
                continue
            body, markers = stripped
            signature = fingerprint(body, self.settings.fingerprint)
            if len(signature.shingles):
                cleaned.append(CleanedAgain(page.doc_id, body, signature, markers, page.adds_lines))
        return cleaned

    def _load_lines(self, lines: HostLines, keys: set[tuple[str, int]]) -> None:
        """Give `lines` the stored rows of these (host, line key) pairs, and the signatures of their pages."""
        fingerprinting = self.settings.fingerprint
        rows = self.known.stored_lines(keys)
        lines.load(
            rows, self.store.signatures_of({d for row in rows for d in row[3]}, fingerprinting.dtype, fingerprinting.num_perm)
        )

    def _strip_learned_boilerplate(self, pages: list[Page]) -> HostLines:
        """Learn each host's furniture from this batch and the stored pages, strip it
        from this batch's pages (re-fingerprinting those that change), and return
        what was learned (its `changed_rows` are to be stored with the batch).
        The batch's hosts are hashed already (`_new_pages`)."""
        config = self.settings.boilerplate
        edges = {p.doc_id: edge_lines(p.cleaned.body, config, p.article.title) for p in pages}
        keys = {(p.article.host or "", key) for p in pages for key in edges[p.doc_id]}
        lines = HostLines(config, self.settings.fingerprint.dtype, self.known.furniture_keys)
        self._load_lines(lines, keys)
        for page in pages:
            host = page.article.host or ""
            lines.observe(host, page.doc_id, page.signature.hashvalues, page.signature.n_shingles, edges[page.doc_id])
        # a page with furniture at its edges may have more behind it: the stored
        # lines of the paragraphs that come to the edge once it is taken off
        behind = {
            (host, key)
            for p in pages
            if any(lines.rule_for(host := p.article.host or "", k) for k in edges[p.doc_id])
            for key in edge_lines(p.cleaned.body, config, p.article.title, reach=2)
        } - keys
        self._load_lines(lines, behind)
        for page in pages:
            stripped = lines.strip(page.cleaned)
            if stripped is not page.cleaned:
                signature = fingerprint(stripped.body, self.settings.fingerprint)
                if len(signature.shingles):
                    page.cleaned, page.signature = stripped, signature
        return lines


def _stats(batch: PreparedBatch, pages: list[Page], clusters: list, events: list[ClusterEvent]) -> BatchStats:
    stats = BatchStats(pages=len(pages), failed=sum(1 for f in batch.fetches if f.error))
    for fetch in batch.fetches:
        if fetch.error:
            # errors are grouped by what comes before the colon ("not HTML: ..."),
            # but a URL not fetched says why after it ("skipped: host not answering")
            key = fetch.error if fetch.error.startswith("skipped:") else fetch.error.split(":")[0]
            key = key[:60]
            stats.errors[key] = stats.errors.get(key, 0) + 1
    stats.new_clusters = sum(1 for e in events if e.kind == "created")
    stats.grown_clusters = sum(1 for e in events if e.kind == "grew")
    stats.merged_clusters = sum(1 for e in events if e.kind == "merged")
    stats.originals_found = sum(1 for c in clusters if c.original_doc_id is not None and len(c.members) > 1)
    return stats


def _own_lines(markers: Iterable[Marker]) -> set[str]:
    """The folded lines of a page that may be its host's additions (not
    datelines, not another host's furniture carried along)."""
    return {fold(m.text) for m in markers if m.kind != "dateline" and m.rule != CARRIED_RULE_ID}
