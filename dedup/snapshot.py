"""What a run reads from the database before its first batch, kept for the next run.

Before it links anything, a run reads every stored URL's number and every
host line's (`StoredNumbers`) and every page's size in shingles: scans of
the documents and host_lines tables, and sorts, that take 0.6 to 0.8 s at a
million pages, before each run however few pages it brings. At its end a
run writes what it then holds next to the database (as dedup/saved.py saves
arrays), with the highest doc_id stored and the run that stored that page.
The next run uses them only if the database still holds as many pages up
to that doc_id and none above it, the page at it stored by the same run
(`Store.stored_through`, as the LSH tables and the shingle sets are
checked), and host_lines as many rows as they stand for; otherwise (a run
that died before saving, a database put back from a copy, rows added by
hand) it reads the database, and saves again at its end.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dedup.saved import new_name, read_manifest, replace_manifest, save_arrays, still_stored

_MANIFEST = "snapshot.json"
_FORMAT = 2
_PARTS = ("url_numbers", "sizes", "line_numbers")


@dataclass(frozen=True)
class StoredKeys:
    """A run's view of what is stored."""

    url_numbers: np.ndarray  # every stored URL's number, sorted (uint64)
    sizes: np.ndarray  # every page's size in shingles, by doc_id (-1: no page)
    line_numbers: np.ndarray | None  # every host_lines row's number, sorted; None: not held

    @property
    def documents(self) -> int:
        return len(self.url_numbers)

    @property
    def through(self) -> int:
        """The highest doc_id stored (0 when none is)."""
        stored = np.flatnonzero(self.sizes >= 0)
        return int(stored[-1]) if len(stored) else 0


class Snapshot:
    """The StoredKeys a run saved in `folder`, for the next run's start."""

    def __init__(self, folder: Path, stamp: dict) -> None:
        """`stamp`: what the saved keys must have been made for (the database's id)."""
        self.folder = folder
        self.stamp = {**stamp, "snapshot_format": _FORMAT}

    def load(self, stored_through: Callable[[int], tuple[int, str | None]], documents: int, host_lines: int) -> StoredKeys | None:
        """The saved keys, if they are those of the database as it stands, of
        its `documents` pages (`stored_through`: Store.stored_through) and, for
        the line numbers, of its `host_lines` rows."""
        fields = {"stamp": dict, "name": str, "through": int, "through_run": str, "documents": int, "checksums": dict}
        manifest = read_manifest(self.folder, _MANIFEST, fields)
        if manifest is None or manifest["stamp"] != self.stamp or manifest["documents"] != documents:
            return None
        if not still_stored(stored_through, manifest["through"], documents, manifest["through_run"]):
            return None
        try:
            urls, sizes, lines = (np.load(self.folder / f"{manifest['name']}.{part}.npy") for part in _PARTS)
        except (OSError, ValueError):
            return None
        # the files are not synced when saved: after a crash of the machine
        # they may not hold what their manifest says
        if [_checksum(a) for a in (urls, sizes, lines)] != [manifest["checksums"].get(part) for part in _PARTS]:
            return None
        if len(urls) != documents or int(np.count_nonzero(sizes >= 0)) != documents:
            return None
        lines_held = manifest.get("host_lines") == host_lines == len(lines)
        return StoredKeys(url_numbers=urls, sizes=sizes, line_numbers=lines if lines_held else None)

    def save(self, stored_through: Callable[[int], tuple[int, str | None]], keys: StoredKeys) -> None:
        """Write the keys (those of the database as it stands, `stored_through`:
        as in `load`), then the manifest naming them (replaced in one rename),
        then remove the files it no longer names."""
        name = new_name("keys")
        lines = keys.line_numbers if keys.line_numbers is not None else np.empty(0, dtype=np.uint64)
        arrays = [np.ascontiguousarray(a) for a in (keys.url_numbers, keys.sizes, lines)]
        # not synced (tens of megabytes at a million pages, 0.15 to 0.37 s
        # here): the checksums tell a torn file on reading
        save_arrays(self.folder, name, zip(_PARTS, arrays, strict=True), sync=False)
        manifest = {
            "stamp": self.stamp,
            "name": name,
            "through": keys.through,
            "through_run": stored_through(keys.through)[1],
            "documents": keys.documents,
            "host_lines": len(lines) if keys.line_numbers is not None else None,
            "checksums": {part: _checksum(a) for part, a in zip(_PARTS, arrays, strict=True)},
        }
        replace_manifest(self.folder, _MANIFEST, manifest, [(name, part) for part in _PARTS])


def _checksum(array: np.ndarray) -> int:
    """CRC-32 of the array's bytes (20 ms for 40 MB)."""
    return zlib.crc32(np.ascontiguousarray(array))
