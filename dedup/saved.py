"""Arrays kept next to the database between runs, named by a JSON manifest.

The LSH tables (dedup/link.py) and the latest pages' shingle sets
(dedup/recent.py) are saved the same way: each array in an `.npy` file of
its own, written and synced before the manifest that names it, and the
manifest replaced in one rename, so a crash leaves the old one whole; the
files the new manifest does not name are removed after. Both are caches:
what they hold can be made again from the database.

Each folder (and the snapshot of dedup/snapshot.py) is used only while the
database still holds what it was made from: `still_stored`, one check for all.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

# Store.stored_through: for a doc_id, how many pages up to it are stored, and the run that stored it
StoredThrough = Callable[[int], tuple[int, str | None]]


def still_stored(stored_through: StoredThrough, last: int, pages: int, last_run: str | None, first: int | None = None) -> bool:
    """Whether the database holds what a saved folder was made from: `pages`
    pages with doc_ids up to `last` (from `first`, when given), page `last`
    stored by the run `last_run`. A database put back from a copy, or a run
    that died before saving, fails it even where the counts agree again."""
    through_last, run = stored_through(last)
    before = stored_through(first - 1)[0] if first is not None else 0
    return (through_last - before, run) == (pages, last_run)


def new_name(prefix: str) -> str:
    """A name for a set of files that no earlier save used."""
    return f"{prefix}-{uuid.uuid4().hex}"


def save_arrays(folder: Path, name: str, arrays: Iterable[tuple[str, np.ndarray]], sync: bool = True) -> None:
    """Write each (part, array) to `<name>.<part>.npy`, synced to disk (or,
    `sync` False, left to the system to write out: for arrays whose manifest
    holds their checksums, checked when they are read)."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, array in arrays:
        with open(folder / f"{name}.{part}.npy", "wb") as out:
            np.save(out, array)
            if sync:
                out.flush()
                os.fsync(out.fileno())


def replace_manifest(folder: Path, manifest_name: str, manifest: dict, arrays: Iterable[tuple[str, str]]) -> None:
    """Replace the manifest in one rename, then remove the files of the
    folder other than it and the (name, part) arrays it names."""
    partial = folder / f"{manifest_name}.partial"
    partial.write_text(json.dumps(manifest, indent=1))
    os.replace(partial, folder / manifest_name)
    keep = {f"{name}.{part}.npy" for name, part in arrays} | {manifest_name}
    for path in folder.iterdir():
        if path.name not in keep:
            path.unlink(missing_ok=True)


def read_manifest(folder: Path | None, manifest_name: str, fields: dict[str, type]) -> dict | None:
    """The saved manifest, if there is one with these fields of these types."""
    if folder is None:
        return None
    try:
        manifest = json.loads((folder / manifest_name).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or any(not isinstance(manifest.get(k), t) for k, t in fields.items()):
        return None
    return manifest
