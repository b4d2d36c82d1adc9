"""What a rebuild changed: which new cluster keeps which old cluster's id, and the events that say so.

A rebuild (`reposts rebuild`) links every stored page again into new
clusters. An old cluster survives in the new cluster that holds most of its
pages, and that cluster keeps its id; when one new cluster holds most of
several old ones (a merge), it keeps the oldest (the lowest id), as a merge
does in a run. Every other new cluster gets an id no cluster had.
"""

from __future__ import annotations

from collections import Counter

from dedup.models import ClusterEvent


def kept_cluster_ids(old: dict[int, int], new: dict[int, int]) -> dict[int, int]:
    """Each new cluster's id after the rebuild. `old` and `new` give each
    page's cluster (doc_id -> cluster_id) before and after."""
    final: dict[int, int] = {}
    for old_id, new_id in sorted(_homes(old, new).items()):  # the oldest first: it keeps its id in a merge
        final.setdefault(new_id, old_id)
    free = max([*old.values(), *new.values(), 0]) + 1
    for new_id in sorted(set(new.values()) - final.keys()):
        final[new_id] = free
        free += 1
    return final


def _homes(old: dict[int, int], new: dict[int, int]) -> dict[int, int]:
    """Each old cluster's home: the new cluster that holds most of its pages (between equals, the lowest id)."""
    counts: dict[int, Counter] = {}
    for doc, old_id in old.items():
        if doc in new:
            counts.setdefault(old_id, Counter())[new[doc]] += 1
    return {old_id: min(c, key=lambda new_id: (-c[new_id], new_id)) for old_id, c in counts.items()}


def rebuild_events(
    old: dict[int, int], new: dict[int, int], old_originals: dict[int, int | None], new_originals: dict[int, int | None]
) -> list[ClusterEvent]:
    """The changes a rebuild made, as cluster events: `old` and `new` give
    each page's cluster before and after (final ids), the originals each
    cluster's original doc_id before and after."""
    old_members: dict[int, set[int]] = {}
    for doc, cluster in old.items():
        old_members.setdefault(cluster, set()).add(doc)
    new_members: dict[int, set[int]] = {}
    for doc, cluster in new.items():
        new_members.setdefault(cluster, set()).add(doc)
    homes = _homes(old, new)
    events = []
    for cluster, members in sorted(new_members.items()):
        before = old_members.get(cluster)
        if before is None:
            events.append(ClusterEvent(cluster_id=cluster, kind="created", detail=f"rebuild: {len(members)} page(s)"))
            continue
        if members != before:
            joined, left = len(members - before), len(before - members)
            events.append(ClusterEvent(cluster_id=cluster, kind="rebuilt", detail=f"rebuild: {joined} page(s) joined, {left} left"))
        if old_originals.get(cluster) != new_originals.get(cluster):
            detail = f"rebuild: {old_originals.get(cluster)} -> {new_originals.get(cluster)}"
            events.append(ClusterEvent(cluster_id=cluster, kind="original_changed", detail=detail))
    for cluster in sorted(old_members):
        if cluster in new_members:
            continue
        home = homes.get(cluster)
        if home is not None:
            events.append(
                ClusterEvent(cluster_id=home, kind="merged", detail=f"rebuild: cluster {cluster} merged in", other_cluster_id=cluster)
            )
    return events
