"""`reposts rebuild`: clean, fingerprint, link and decide every stored page
again, from its stored text (nothing is fetched), with the current rules and
settings.

The pages are linked again in doc_id order, in batches (one transaction
each), into a new database file next to the old one (`<db>.rebuilding`); the
old file is not touched meanwhile, so a rebuild that is stopped or fails
leaves it as it was, and the next rebuild starts over. At the end, in one
transaction: each page keeps its doc_id and the run that first stored it;
clusters keep their ids where they survive (`dedup.rebuild`); the old
history (`runs`, `fetches`, `cluster_events`) is carried over, and the
rebuild's changes are added to it as events of its own run. Then the new
file takes the old one's place, and the old one is kept beside it as
`<db>.before-rebuild` until the user deletes it.

This is also how a database made with other fingerprint settings is
upgraded: the signatures are made again with the current ones.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from dedup.batch import BatchStats, Settings, open_store, prepare_articles
from dedup.linker import Linker
from dedup.rebuild import kept_cluster_ids, rebuild_events
from dedup.store import Store
from flows.errors import UserError


def rebuild(db: str, settings: Settings, progress: Callable[[int], None] | None = None) -> dict:
    """Rebuild the database at `db`; the run's summary."""
    path = Path(db)
    if not path.is_file():
        raise UserError(f"no database at {db}")
    old = Store(path)
    old.migrate()
    with old.exclusive_run("a rebuild"):
        target = path.with_name(path.name + ".rebuilding")
        _remove(target)
        new = open_store(str(target), settings)
        with new.connect() as con:
            _attach(con, path)
            con.execute("INSERT INTO runs SELECT * FROM old.runs")
        run_id = new.start_run("rebuild", None, {"db": str(path)})
        stats = BatchStats()
        with new.holding():
            linker = Linker(new, settings)
            after = -1
            while articles := old.stored_articles(after, settings.batch_size):
                stats.add(linker.link_batch(run_id, prepare_articles(articles, settings)))
                after = articles[-1][0]
                if progress:
                    progress(len(articles))
            linker.save_for_next_run()
        summary = {"run_id": run_id, **_adopt_history(old, new, path, run_id), "pages": stats.pages, "failed": stats.failed}
        new.finish_run(run_id, summary)
        summary["kept_as"] = str(_swap(path, target))
    return summary


def _attach(con, path: Path) -> None:
    quoted = str(path).replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS old (READ_ONLY)")


def _clusters_of(store: Store) -> tuple[dict[int, int], dict[int, int | None]]:
    """Each page's cluster, and each cluster's original."""
    with store.connect(read_only=True) as con:
        pages = dict(con.execute("SELECT doc_id, cluster_id FROM documents").fetchall())
        originals = dict(con.execute("SELECT cluster_id, original_doc_id FROM clusters").fetchall())
    return pages, originals


def _adopt_history(old: Store, new: Store, path: Path, run_id: int) -> dict:
    """Give the new database the old one's ids and history, in one transaction;
    what changed, counted."""
    old_pages, old_originals = _clusters_of(old)
    new_pages, new_originals = _clusters_of(new)
    final = kept_cluster_ids(old_pages, new_pages)
    pages_now = {doc: final[cluster] for doc, cluster in new_pages.items()}
    events = rebuild_events(old_pages, pages_now, old_originals, {final[c]: o for c, o in new_originals.items()})
    with new.connect() as con:
        _attach(con, path)
        con.execute("BEGIN")
        try:
            con.execute("CREATE TEMP TABLE final_ids (new_id BIGINT, cluster_id BIGINT)")
            con.executemany("INSERT INTO final_ids VALUES (?, ?)", list(final.items()))
            con.execute("UPDATE documents SET cluster_id = f.cluster_id FROM final_ids f WHERE documents.cluster_id = f.new_id")
            con.execute("UPDATE reposts SET cluster_id = f.cluster_id FROM final_ids f WHERE reposts.cluster_id = f.new_id")
            # a cluster's id is its key: the rows are written again with their final ids
            con.execute(
                "CREATE TEMP TABLE renamed AS SELECT c.* REPLACE (f.cluster_id AS cluster_id) FROM clusters c "
                "JOIN final_ids f ON c.cluster_id = f.new_id"
            )
            con.execute("DELETE FROM clusters")
            con.execute("INSERT INTO clusters SELECT * FROM renamed")
            # what was first stored by which run, and when a surviving cluster was made
            con.execute("UPDATE documents SET run_id = o.run_id FROM old.documents o WHERE o.doc_id = documents.doc_id")
            con.execute(
                "UPDATE clusters SET created_run = o.created_run FROM old.clusters o WHERE o.cluster_id = clusters.cluster_id"
            )
            # the history, and the rebuild's changes on top of it (its own linking events say nothing new)
            con.execute("DELETE FROM cluster_events")
            con.execute("INSERT INTO cluster_events SELECT * FROM old.cluster_events")
            if events:
                con.executemany(
                    "INSERT INTO cluster_events VALUES (?, ?, ?, ?, ?, now())",
                    [[run_id, e.cluster_id, e.kind, e.detail, e.other_cluster_id] for e in events],
                )
            con.execute("INSERT INTO fetches SELECT * FROM old.fetches")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    kinds = [e.kind for e in events]
    return {
        "clusters": len(set(final.values())),
        "clusters_kept": sum(1 for new_id, cluster in final.items() if cluster in old_originals),
        "clusters_created": kinds.count("created"),
        "clusters_changed": kinds.count("rebuilt"),
        "clusters_merged": kinds.count("merged"),
        "originals_changed": kinds.count("original_changed"),
    }


def _caches(db: Path) -> list[Path]:
    """The folders a run keeps next to a database (caches: see docs/internals.md)."""
    store = Store(db)
    return [store.index_folder, store.shingles_folder, store.snapshot_folder]


def _remove(db: Path) -> None:
    """A database file and what a run keeps next to it (a rebuild's leftovers)."""
    for suffix in ("", ".wal"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    for cache in _caches(db):
        shutil.rmtree(cache, ignore_errors=True)


def _swap(path: Path, target: Path) -> Path:
    """Put the rebuilt file in the old one's place; the old one's new path."""
    kept = path.with_name(path.name + ".before-rebuild")
    _remove(kept)
    os.replace(path, kept)
    wal = path.with_name(path.name + ".wal")
    if wal.exists():
        os.replace(wal, kept.with_name(kept.name + ".wal"))
    os.replace(target, path)
    for cache, made in zip(_caches(path), _caches(target), strict=True):
        shutil.rmtree(cache, ignore_errors=True)
        if made.exists():
            os.replace(made, cache)
    return kept


def summary_line(summary: dict) -> str:
    return (
        f"{summary['pages']} pages linked again, {summary['failed']} empty once cleaned; {summary['clusters']} clusters "
        f"({summary['clusters_kept']} kept their id, {summary['clusters_created']} new, {summary['clusters_changed']} changed, "
        f"{summary['clusters_merged']} merged), {summary['originals_changed']} originals changed  (run {summary['run_id']})"
    )

