"""Shingle sets of the latest stored pages, kept on disk for the next runs.

Verifying a candidate compares exact shingle sets. A run holds the sets of
its own pages; a stored page's set is made again from its body, read from
DuckDB and shingled, which at a million stored pages costs about 300 us a
page and is most of what adding pages to a large database costs over an
empty one. Copies follow their originals within days, so at the end of a
run the sets of the latest pages it stored (up to `budget` hashes in all,
newest first) are written next to the database, and the next runs map them
instead of reading those bodies.

Each run that stores pages writes one segment (three .npy files: doc_ids,
offsets into hashes, hashes) and then `segments.json`, which names the
segments in doc_id order with what they were made for (the database's id,
the shingle settings), as dedup/saved.py saves them. A segment is merged
into the new one when it is not larger (so there are few segments however
small the runs), and the oldest are dropped once the newer ones hold
`budget` hashes (so between about `budget` and twice that are kept).
Nothing here is needed: a page the segments do not hold, or a folder that
is gone, costs only the body read it would have cost anyway.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dedup.saved import new_name, read_manifest, replace_manifest, save_arrays, still_stored

_MANIFEST = "segments.json"
_FORMAT = 1
_PARTS = ("doc_ids", "offsets", "hashes")


@dataclass
class _Segment:
    doc_ids: np.ndarray  # sorted
    offsets: np.ndarray  # len(doc_ids) + 1; the sets are hashes[offsets[i]:offsets[i + 1]]
    hashes: np.ndarray
    saved_as: str | None = None

    @property
    def n_hashes(self) -> int:
        return int(self.offsets[-1])

    @classmethod
    def of_sets(cls, sets: Iterable[tuple[int, np.ndarray]]) -> _Segment:
        ordered = sorted(sets, key=lambda item: item[0])
        offsets = np.zeros(len(ordered) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(s) for _, s in ordered])
        hashes = np.concatenate([s for _, s in ordered] + [np.empty(0, dtype=np.uint64)]).astype(np.uint64, copy=False)
        return cls(np.array([d for d, _ in ordered], dtype=np.int64), offsets, hashes)

    def merged_with(self, later: _Segment) -> _Segment:
        """This segment and a later one (all of whose doc_ids are higher) as one."""
        return _Segment(
            np.concatenate([self.doc_ids, later.doc_ids]),
            np.concatenate([self.offsets[:-1], later.offsets + self.n_hashes]),
            np.concatenate([self.hashes, later.hashes]),
        )


class RecentShingleSets:
    """The shingle sets of the latest stored pages, saved in `folder` between runs."""

    def __init__(self, folder: Path | None, stamp: dict, budget: int) -> None:
        """`stamp`: what the saved sets must have been made for (the database's
        id, the shingle settings); `budget`: how many hashes to keep (0: none)."""
        self.folder = folder
        self.stamp = {**stamp, "segment_format": _FORMAT}
        self.budget = budget
        self._segments: list[_Segment] = []
        self._ids = np.empty(0, dtype=np.int64)  # every saved doc_id, segment after segment
        self._starts = np.zeros(1, dtype=np.int64)  # where each segment's doc_ids start in _ids
        # the pages this run stored, newest last, up to `budget` hashes
        self._stored: deque[tuple[int, np.ndarray]] = deque()
        self._stored_hashes = 0

    def open(self, stored_through: Callable[[int], tuple[int, str | None]]) -> None:
        """Map the segments an earlier run saved, if they were made for this
        database and these settings; a segment is not used unless the
        database holds as many pages in its doc_ids' range as it does, its
        last page stored by the same run (`stored_through`: Store.stored_through)."""
        manifest = read_manifest(self.folder, _MANIFEST, {"stamp": dict, "segments": list})
        if not self.budget or manifest is None or manifest["stamp"] != self.stamp:
            return
        for entry in manifest["segments"]:
            try:
                name, first, last, count = entry["name"], int(entry["first"]), int(entry["last"]), int(entry["count"])
                last_run = str(entry["last_run"])
                doc_ids, offsets = (np.load(self.folder / f"{name}.{part}.npy") for part in _PARTS[:2])
                # mapped, not read: only the sets asked for are read
                hashes = np.load(self.folder / f"{name}.hashes.npy", mmap_mode="r").view(np.ndarray)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            consistent = (
                len(doc_ids) == count
                and len(offsets) == count + 1
                and count > 0
                and int(doc_ids[0]) == first
                and int(doc_ids[-1]) == last
                and int(offsets[-1]) == len(hashes)
                and (not self._segments or first > int(self._segments[-1].doc_ids[-1]))
            )
            if consistent and still_stored(stored_through, last, count, last_run, first=first):
                self._segments.append(_Segment(doc_ids, offsets, hashes, saved_as=name))
        self._index_segments()

    def _index_segments(self) -> None:
        self._ids = np.concatenate([s.doc_ids for s in self._segments] + [np.empty(0, dtype=np.int64)])
        self._starts = np.cumsum([0] + [len(s.doc_ids) for s in self._segments])

    def get(self, doc_ids: Iterable[int]) -> dict[int, np.ndarray]:
        """The saved sets of those of `doc_ids` the segments hold."""
        wanted = np.fromiter(doc_ids, dtype=np.int64)
        if not len(wanted) or not len(self._ids):
            return {}
        rows = np.minimum(np.searchsorted(self._ids, wanted), len(self._ids) - 1)
        held = self._ids[rows] == wanted
        rows = rows[held]
        numbers = np.searchsorted(self._starts, rows, side="right") - 1
        found = {}
        for doc_id, number, local in zip(
            wanted[held].tolist(), numbers.tolist(), (rows - self._starts[numbers]).tolist(), strict=True
        ):
            segment = self._segments[number]
            found[doc_id] = np.array(segment.hashes[segment.offsets[local] : segment.offsets[local + 1]])
        return found

    def add(self, doc_id: int, shingle_set: np.ndarray) -> None:
        """A page this run stored (call once its batch is committed), for `save`."""
        if not self.budget:
            return
        self._stored.append((doc_id, shingle_set))
        self._stored_hashes += len(shingle_set)
        while self._stored_hashes - len(self._stored[0][1]) >= self.budget:
            self._stored_hashes -= len(self._stored.popleft()[1])

    def save(self, stored_through: Callable[[int], tuple[int, str | None]]) -> None:
        """Write the run's pages as a segment, after dropping the oldest
        segments beyond the budget and merging the ones before it that are not
        larger; then replace the manifest and remove the files it no longer
        names. Call once the run's pages are stored (`stored_through`: as in `open`)."""
        if self.folder is None or not self._stored:
            return
        newest = _Segment.of_sets(self._stored)
        segments = [s for s in self._segments if s.doc_ids[-1] < newest.doc_ids[0]] + [newest]
        while len(segments) > 1 and sum(s.n_hashes for s in segments[1:]) >= self.budget:
            segments.pop(0)
        while len(segments) > 1 and segments[-2].n_hashes <= segments[-1].n_hashes:
            segments[-2:] = [segments[-2].merged_with(segments[-1])]
        newest = segments[-1]
        name = new_name("sets")
        save_arrays(self.folder, name, ((part, getattr(newest, part)) for part in _PARTS))
        newest.saved_as = name
        manifest = {
            "stamp": self.stamp,
            "segments": [
                {
                    "name": s.saved_as,
                    "first": int(s.doc_ids[0]),
                    "last": int(s.doc_ids[-1]),
                    "count": len(s.doc_ids),
                    "last_run": stored_through(int(s.doc_ids[-1]))[1],
                }
                for s in segments
            ],
        }
        replace_manifest(self.folder, _MANIFEST, manifest, [(s.saved_as, part) for s in segments for part in _PARTS])
        self._segments, self._stored, self._stored_hashes = segments, deque(), 0
        self._index_segments()
