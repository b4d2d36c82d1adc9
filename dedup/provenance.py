"""Provenance stage: clusters that resist chaining, the original, the repost tree.

Clustering is incremental and centre-based: a page joins the cluster whose
centre (its original, or its largest page while no original is known) it
matches, so one bad edge between two peripheral copies cannot glue two stories
together. Two clusters merge only when their centres match each other.

The original is chosen from evidence, in this order of weight: repost markers
rule a page out; attributions (canonical, og:url, credits) that point at a
member vote for it; a page that contains the others is likelier the source;
an earlier date helps but never decides alone; the first seen breaks ties.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache

from dedup.clean import fold, site_key
from dedup.extract import host_of
from dedup.models import Attribution, Cluster, ClusterEvent, Member, Repost, Similarity


@dataclass(frozen=True)
class ProvenanceConfig:
    # A page joins a cluster through a non-centre member only on a strong
    # match (near-identical copies); weaker links must reach the centre.
    strong_jaccard: float = 0.6
    # A host whose known pages carry repost markers at least this often is an
    # aggregator; its unmarked pages are not taken for originals. Counted only
    # once the host has this many pages stored.
    aggregator_copy_share: float = 0.5
    aggregator_min_pages: int = 3
    # weights of the evidence for choosing between unmarked candidates
    weight_attribution: float = 3.0
    weight_containment: float = 2.0
    weight_earliest_date: float = 1.0
    # A page is a hub (a digest, a live blog, a topic page) when two pages
    # linked to it have this share of their text in it, it has less than
    # this share of its text in either, and the two share less than
    # `hub_story_overlap` of each other's text (two stories, not a story and
    # its copy).
    hub_part_share: float = 0.5
    hub_story_overlap: float = 0.3


SimilarityOf = Callable[[int, int], Similarity]


@dataclass
class Decision:
    original_doc_id: int | None
    confidence: float
    reason: str
    attributed_source: str | None = None


@lru_cache(maxsize=1 << 16)
def _norm_url(url: str | None) -> str:
    if not url:
        return ""
    url = url.split("#")[0].rstrip("/").lower()
    for prefix in ("https://", "http://"):
        url = url.removeprefix(prefix)
    return url.removeprefix("www.")


def attribution_targets(member: Member, members: list[Member]) -> list[tuple[Member, Attribution]]:
    """Members of the cluster that `member`'s attributions point at (other sites only)."""
    found = []
    for attribution in member.attributions:
        if attribution.kind == "disclaimer":
            continue
        wanted_url = _norm_url(attribution.source_url)
        wanted_site = site_key(host_of(attribution.source_url) or _hostlike(attribution.source_name))
        wanted_name = _folded(attribution.source_name)
        for other in members:
            if other.doc_id == member.doc_id or site_key(other.host) == site_key(member.host):
                continue
            if (
                (wanted_url and _norm_url(other.url) == wanted_url)
                or (wanted_site and site_key(other.host) == wanted_site)
                or (wanted_name and _folded(other.site_name) == wanted_name)
                or (wanted_name and _names_site(wanted_name, other.host))
            ):
                found.append((other, attribution))
    return found


@lru_cache(maxsize=1 << 16)
def _folded(text: str | None) -> str:
    """`fold`, remembered: site names and marker texts recur in every pair of a cluster."""
    return fold(text) if text else ""


# News agencies known by a short name and a site that is not their name
_AGENCIES = {"ap": "associated press", "afp": "agence france-presse"}
_AGENCY_SITES = {"associated press": "apnews.com", "agence france-presse": "afp.com"}


def _agency(name: str) -> str:
    """A credited name in one form for each agency ("AP", "The Associated Press" -> "associated press")."""
    name = _folded(name).removeprefix("the ")
    return _AGENCIES.get(name, name)


def _names_site(name: str, host: str | None) -> bool:
    """Whether a credited name is the site's own name: "CNN" for cnn.com,
    "The Conversation" for theconversation.com, the Associated Press for apnews.com."""
    site = site_key(host)
    if not site:
        return False
    agency = _agency(name)
    if _AGENCY_SITES.get(agency) == site:
        return True
    compact = "".join(ch for ch in agency if ch.isalnum())
    label = site.split(".")[0]
    return len(compact) >= 3 and compact in (label, "the" + label, label.removeprefix("the"))


def _wire_source(candidates: list[Member], members: list[Member]) -> str | None:
    """The agency whose wire story the candidates carry (a dateline or
    byline naming it, attribution kind "wire"), when they name no other
    agency and no member is the agency's own page; as the pages name it."""
    written: dict[str, str] = {}
    for member in candidates:
        written.update({_agency(a.source_name): a.source_name for a in member.attributions if a.kind == "wire" and a.source_name})
    if len(written) != 1:
        return None
    ((agency, name),) = written.items()
    if any(_names_site(agency, m.host) for m in members):
        return None
    return name


def _hostlike(name: str | None) -> str | None:
    if not name:
        return None
    name = name.strip().lower()
    return name if "." in name and " " not in name else None


def _credited_name(members: list[Member]) -> str | None:
    """The source the copies credit most, when it is not one of them."""
    names = Counter()
    member_sites = {site_key(m.host) for m in members}
    for member in members:
        for attribution in member.attributions:
            if attribution.kind == "disclaimer":
                continue
            name = attribution.source_name or host_of(attribution.source_url)
            if name and site_key(_hostlike(name) or "") not in member_sites:
                names[name] += 1
    return names.most_common(1)[0][0] if names else None


@dataclass(frozen=True)
class AggregatorHosts:
    """Which hosts behave as aggregators: at least `aggregator_min_pages` of
    their pages, of which `aggregator_copy_share` or more are copies (by their
    markers, or by the lines their host adds: `Member.adds_lines`).

    `page_counts` is host -> (pages, copies), every page of a decision
    counted. A page is judged on its host's other pages: its own markers
    speak for it already, and a site that publishes its own stories beside
    a few reposts is not made an aggregator by the story itself."""

    page_counts: Mapping[str | None, tuple[int, int]]
    config: ProvenanceConfig

    def holds(self, member: Member) -> bool:
        """Whether `member`'s host, its other pages judged, is an aggregator."""
        pages, copies = self.page_counts.get(member.host, (0, 0))
        if pages:
            pages, copies = pages - 1, copies - int(member.marks_copy or member.adds_lines)
        return self._aggregator(pages, copies)

    def hosts(self) -> set[str | None]:
        """The hosts that are aggregators on all their pages."""
        return {host for host, (pages, copies) in self.page_counts.items() if self._aggregator(pages, copies)}

    def _aggregator(self, pages: int, copies: int) -> bool:
        return pages >= self.config.aggregator_min_pages and copies >= self.config.aggregator_copy_share * pages


def choose_original(
    members: list[Member],
    similarity_of: SimilarityOf,
    aggregators: AggregatorHosts,
    config: ProvenanceConfig,
) -> Decision:
    """Pick the cluster's original, or say that it is missing, with the reason."""
    if len(members) == 1:
        only = members[0]
        if only.marks_copy:
            return Decision(
                None, 0.5, "single page that carries repost markers; its original is not in the database", _credited_name(members)
            )
        if aggregators.holds(only):
            return Decision(
                None, 0.5, "single page from an aggregator host; its original is not in the database", _credited_name(members)
            )
        wire = _wire_source(members, members)
        if wire:
            return Decision(None, 0.7, f"single page that carries a wire story of {wire}; its original is not in the database", wire)
        return Decision(only.doc_id, 0.5, "single page, no copies found")
    marked = _marked_copies(members)
    copies = [m for m in members if m.doc_id in marked or m.adds_lines]
    copy_ids = {m.doc_id for m in copies}
    candidates = [m for m in members if not (m.doc_id in copy_ids or m.hub or aggregators.holds(m))]
    votes: Counter[int] = Counter()
    vote_kinds: dict[int, set[str]] = {}
    for member in members:
        for target, attribution in attribution_targets(member, members):
            weight = 1.0 if attribution.strength == "strong" else 0.7 if attribution.strength == "medium" else 0.3
            votes[target.doc_id] += weight
            vote_kinds.setdefault(target.doc_id, set()).add(attribution.kind)
    if not candidates:
        credited = _credited_name(members)
        why = f"all {len(members)} pages carry repost markers or come from aggregator hosts; the original is not in the database"
        if credited:
            why += f"; the copies credit {credited}"
        return Decision(None, 0.8 if copies else 0.5, why, credited)

    wire = _wire_source(candidates, members)
    if wire and (len(candidates) > 1 or not copies):
        why = (
            f"the {len(candidates)} page(s) that carry no repost markers carry a wire story of {wire} "
            "(a dateline or byline names it), and none is its own page; the original is not in the database"
        )
        return Decision(None, 0.8, why, wire)
    dated = [m.published_at for m in candidates if m.published_at]
    earliest = min(dated) if dated else None
    scored = []
    for candidate in candidates:
        others = [m for m in members if m.doc_id != candidate.doc_id]
        contains = sum(_share_in(o, candidate, similarity_of) for o in others) / len(others)
        score = (
            config.weight_attribution * min(votes[candidate.doc_id], 2.0)
            + config.weight_containment * contains
            + (config.weight_earliest_date if earliest and candidate.published_at == earliest and len(dated) > 1 else 0.0)
        )
        scored.append((score, -candidate.first_seen_run, -candidate.doc_id, candidate, contains))
    scored.sort(key=lambda s: s[:3], reverse=True)
    best_score, _, _, best, contains = scored[0]
    reasons = []
    if len(candidates) == 1:
        reasons.append(f"the only page without repost markers; {len(copies)} of {len(members)} carry disclaimers or credits")
    else:
        reasons.append(f"{len(candidates)} pages carry no repost markers")
    if votes[best.doc_id]:
        reasons.append(f"named as source by {', '.join(sorted(vote_kinds[best.doc_id]))}")
    reasons.append(f"contains {contains:.0%} of the other pages' text on average")
    if earliest and best.published_at == earliest and len(dated) > 1:
        reasons.append("earliest date among the candidates")
    if len(candidates) == 1:
        confidence = 0.95 if copies else 0.7
    else:
        margin = best_score - scored[1][0]
        confidence = round(min(0.9, 0.5 + margin / 4), 2)
    return Decision(best.doc_id, confidence, "; ".join(reasons))


def _marked_copies(members: list[Member]) -> set[int]:
    """The members whose markers say they are copies. A credit line that a
    member of another site carries too is the story's own (an original that
    ends with "Source: ..." or a wire sign-off, and the copies that kept
    it): it does not make a page a copy."""
    sites_of: dict[str, set[str]] = {}
    for member in members:
        for text in member.credit_texts:
            sites_of.setdefault(_folded(text), set()).add(site_key(member.host))
    carried = {text for text, sites in sites_of.items() if len(sites) > 1}
    return {m.doc_id for m in members if m.marks_copy and any(_folded(t) not in carried for t in m.copy_marker_texts)}


def centre_of(decision: Decision, members: list[Member]) -> int:
    """The page a cluster is matched against: its original, else its largest
    page that is not a hub (unless all are)."""
    if decision.original_doc_id is not None:
        return decision.original_doc_id
    return max(members, key=lambda m: (not m.hub, m.n_shingles, -m.doc_id)).doc_id


def find_hubs(doc_ids: Iterable[int], pairs_of: dict[int, dict[int, Similarity]], similarity_of: SimilarityOf, config: ProvenanceConfig) -> set[int]:
    """Those of these pages that hold several stories: two of the pages
    linked to them (`pairs_of[doc_id]`: other -> Similarity(jaccard, share
    of doc_id in other, share of other in doc_id)) are mostly in the page,
    the page is not mostly in them, and they are not copies of each other."""
    hubs = set()
    for doc_id in doc_ids:
        parts = sorted(
            other
            for other, sim in pairs_of.get(doc_id, {}).items()
            if sim.b_in_a >= config.hub_part_share and sim.a_in_b < config.hub_part_share
        )
        if any(
            _strength(similarity_of(a, b)) < config.hub_story_overlap for i, a in enumerate(parts) for b in parts[i + 1 :]
        ):
            hubs.add(doc_id)
    return hubs


def _share_in(part: Member, whole: Member, similarity_of: SimilarityOf) -> float:
    """Share of `part`'s shingles found in `whole`."""
    return similarity_of(part.doc_id, whole.doc_id).a_in_b


def repost_tree(members: list[Member], original: int | None, centre: int, similarity_of: SimilarityOf) -> list[Repost]:
    """Each copy's most likely source: a member it credits, a copy whose
    disclaimer it carries (a copy of a copy), else the original."""
    by_id = {m.doc_id: m for m in members}
    root = original if original is not None else centre
    reposts: list[Repost] = []
    for member in members:
        if member.doc_id == root:
            continue
        source, evidence = None, ""
        credited = [t for t, _ in attribution_targets(member, members)]
        carried = _carried_disclaimer_sources(member, members)
        if credited:
            source = max(credited, key=lambda t: similarity_of(member.doc_id, t.doc_id).a_in_b)
            evidence = f"credits {source.host}"
        elif carried:
            source = max(carried, key=lambda t: similarity_of(member.doc_id, t.doc_id).a_in_b)
            evidence = f"carries the repost disclaimer of {source.host} (a copy of a copy)"
        else:
            source = by_id[root]
            evidence = (
                "copy of the original" if original is not None else "copy of the largest page (original not in the database)"
            )
        sim = similarity_of(member.doc_id, source.doc_id)
        reposts.append(
            Repost(
                doc_id=member.doc_id,
                source_doc_id=source.doc_id,
                cluster_id=member.cluster_id or 0,
                jaccard=round(sim.jaccard, 4),
                containment=round(sim.a_in_b, 4),
                evidence=evidence,
            )
        )
    return _break_cycles(reposts, root)


def _carried_disclaimer_sources(member: Member, members: list[Member]) -> list[Member]:
    """Copies whose own closing marker `member` carries in its text, while
    `member` closes with a marker of its own: it copied from them."""
    if len(member.copy_marker_texts) < 2:
        return []
    own = {_folded(t) for t in member.copy_marker_texts}
    own_last = _folded(member.copy_marker_texts[-1])
    return [
        other
        for other in members
        if other.doc_id != member.doc_id
        and other.host != member.host
        and other.copy_marker_texts
        and _folded(other.copy_marker_texts[-1]) in own
        and own_last not in {_folded(t) for t in other.copy_marker_texts}
    ]


def _break_cycles(reposts: list[Repost], root: int) -> list[Repost]:
    """Evidence can point two copies at each other; such a loop is cut by
    pointing the copy at the root instead."""
    source_of = {r.doc_id: r.source_doc_id for r in reposts}
    fixed = []
    for repost in reposts:
        seen, node = {repost.doc_id}, repost.source_doc_id
        while node in source_of and node not in seen:
            seen.add(node)
            node = source_of[node]
        if node in seen:
            source_of[repost.doc_id] = root
            repost = replace(repost, source_doc_id=root, evidence=repost.evidence + "; loop in the evidence, pointed at the root")
        fixed.append(repost)
    return fixed


@dataclass
class ClusterState:
    """Clusters touched by a batch: membership, centres and what changed."""

    members: dict[int, Member]
    cluster_members: dict[int, list[int]]
    previous_original: dict[int, int | None] = field(default_factory=dict)
    previous_size: dict[int, int] = field(default_factory=dict)
    merged_into: dict[int, int] = field(default_factory=dict)
    new_clusters: set[int] = field(default_factory=set)


def assign_pages(
    state: ClusterState,
    new_ids: list[int],
    neighbours: dict[int, dict[int, Similarity]],
    similarity_of: SimilarityOf,
    aggregators: AggregatorHosts,
    config: ProvenanceConfig,
) -> None:
    """Put each new page into a cluster (updating `state` in place).

    Likely originals go first (unmarked, then larger), so they become centres
    and the copies of a batch attach to them.
    """
    centre_cache: dict[int, int] = {}

    def centre(cluster_id: int) -> int:
        if cluster_id not in centre_cache:
            member_list = [state.members[d] for d in state.cluster_members[cluster_id]]
            decision = choose_original(member_list, similarity_of, aggregators, config)
            centre_cache[cluster_id] = centre_of(decision, member_list)
        return centre_cache[cluster_id]

    # hubs go last, and join the cluster of the story they hold most of; no page joins through a hub
    order = sorted(new_ids, key=lambda d: (state.members[d].hub, state.members[d].marks_copy, -state.members[d].n_shingles, d))
    for doc_id in order:
        member = state.members[doc_id]
        linked = {
            other: sim
            for other, sim in neighbours.get(doc_id, {}).items()
            if state.members.get(other) is not None
            and state.members[other].cluster_id is not None
            and (member.hub or not state.members[other].hub)
        }
        if member.hub:
            target = state.members[max(linked, key=lambda o: (linked[o].b_in_a, -o))].cluster_id if linked else None
        else:
            target = _pick_cluster(doc_id, linked, state, centre, config)
        if target is None:
            target = doc_id  # a new cluster takes its founding page's id
            state.cluster_members[target] = []
            state.new_clusters.add(target)
        member.cluster_id = target
        state.cluster_members[target].append(doc_id)
        centre_cache.pop(target, None)
        if centre(target) == doc_id:
            _merge_matching_centres(target, doc_id, linked, state, centre, centre_cache)


def _strength(sim: Similarity) -> float:
    return max(sim.jaccard, sim.a_in_b, sim.b_in_a)


def _pick_cluster(doc_id, linked, state: ClusterState, centre, config: ProvenanceConfig) -> int | None:
    by_cluster: dict[int, list[tuple[int, Similarity]]] = {}
    for other, sim in linked.items():
        by_cluster.setdefault(state.members[other].cluster_id, []).append((other, sim))
    if not by_cluster:
        return None
    centre_hits = [
        (_strength(sim), -cluster_id, cluster_id)
        for cluster_id, hits in by_cluster.items()
        for other, sim in hits
        if other == centre(cluster_id)
    ]
    if centre_hits:
        return max(centre_hits)[2]
    strong = [
        (sim.jaccard, -cluster_id, cluster_id)
        for cluster_id, hits in by_cluster.items()
        for _, sim in hits
        if sim.jaccard >= config.strong_jaccard
    ]
    if strong:
        return max(strong)[2]
    # several members of one cluster match, none strongly: join the one with most
    counted = sorted(((len(hits), -cid, cid) for cid, hits in by_cluster.items()), reverse=True)
    return counted[0][2] if counted[0][0] >= 2 else None


def _merge_matching_centres(target: int, new_centre: int, linked, state: ClusterState, centre, centre_cache) -> None:
    """The page just became the centre of `target`: clusters whose centre it
    matches are the same story and merge into the older id."""
    others = {state.members[o].cluster_id for o in linked} - {target}
    for other_cluster in sorted(others):
        if other_cluster not in state.cluster_members or other_cluster == target:
            continue
        if centre(other_cluster) not in linked:
            continue
        keep, gone = min(target, other_cluster), max(target, other_cluster)
        for doc_id in state.cluster_members[gone]:
            state.members[doc_id].cluster_id = keep
        state.cluster_members[keep].extend(state.cluster_members.pop(gone))
        state.merged_into[gone] = keep
        state.new_clusters.discard(gone)
        centre_cache.pop(keep, None)
        centre_cache.pop(gone, None)
        target = keep


def decide_clusters(
    state: ClusterState,
    touched: set[int],
    similarity_of: SimilarityOf,
    aggregators: AggregatorHosts,
    config: ProvenanceConfig,
) -> tuple[list[Cluster], list[Repost], list[ClusterEvent]]:
    """Final original, reason, tree and change events for each touched cluster."""
    clusters, reposts, events = [], [], []
    for gone, keep in sorted(state.merged_into.items()):
        if gone not in state.new_clusters:
            events.append(ClusterEvent(cluster_id=keep, kind="merged", detail=f"cluster {gone} merged in", other_cluster_id=gone))
    for cluster_id in sorted(touched):
        if cluster_id not in state.cluster_members:
            continue
        member_list = [state.members[d] for d in state.cluster_members[cluster_id]]
        decision = choose_original(member_list, similarity_of, aggregators, config)
        centre = centre_of(decision, member_list)
        original = state.members.get(decision.original_doc_id) if decision.original_doc_id is not None else None
        dates = [m.published_at for m in member_list if m.published_at]
        first_published = original.published_at if original and original.published_at else (min(dates) if dates else None)
        clusters.append(
            Cluster(
                cluster_id=cluster_id,
                members=[m.doc_id for m in member_list],
                original_doc_id=decision.original_doc_id,
                attributed_source=decision.attributed_source,
                confidence=decision.confidence,
                reason=decision.reason,
                first_published_at=first_published,
            )
        )
        reposts.extend(repost_tree(member_list, decision.original_doc_id, centre, similarity_of))
        if cluster_id in state.new_clusters:
            events.append(ClusterEvent(cluster_id=cluster_id, kind="created", detail=f"{len(member_list)} page(s)"))
            continue
        before = state.previous_size.get(cluster_id, 0)
        if len(member_list) > before:
            events.append(ClusterEvent(cluster_id=cluster_id, kind="grew", detail=f"{before} -> {len(member_list)} pages"))
        if state.previous_original.get(cluster_id) != decision.original_doc_id:
            events.append(
                ClusterEvent(
                    cluster_id=cluster_id,
                    kind="original_changed",
                    detail=f"{state.previous_original.get(cluster_id)} -> {decision.original_doc_id}: {decision.reason}",
                )
            )
    return clusters, reposts, events
