"""The schema (the packaged migrations), the database's settings and id, and its runs."""

from __future__ import annotations

import json
import uuid
from importlib import resources

from dedup.store.connection import StoreError, utc_now


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of the packaged migrations, in order."""
    found = []
    for entry in resources.files("dedup.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


class Schema:
    """Migrations, the settings signatures were made with, the database's id, runs."""

    def migrate(self) -> None:
        with self.connect() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)"
            )
            applied = {v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}
            for version, name, sql in migrations():
                if version in applied:
                    continue
                con.execute("BEGIN")
                try:
                    con.execute(sql)
                    con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, utc_now()])
                    con.execute("COMMIT")
                except BaseException:  # an interrupt (Ctrl-C, SIGTERM) too
                    con.execute("ROLLBACK")
                    raise

    def check_signature_params(self, params: dict[str, str]) -> None:
        """Signatures are only comparable with the settings they were made with."""
        with self.connect() as con:
            stored = dict(con.execute("SELECT key, value FROM meta").fetchall())
            if not any(key in stored for key in params):
                con.executemany("INSERT INTO meta VALUES (?, ?)", list(params.items()))
                return
        differing = {k: (stored.get(k), v) for k, v in params.items() if stored.get(k) != v}
        if differing:
            detail = ", ".join(f"{k}: stored {a}, configured {b}" for k, (a, b) in sorted(differing.items()))
            raise StoreError(
                f"{self.path} was fingerprinted with other settings ({detail}); "
                "`reposts rebuild` makes its signatures again with these, or use a new --db"
            )

    def row_counts(self) -> tuple[int, int]:
        """How many rows documents and host_lines hold."""
        with self.connect() as con:
            ((documents, host_lines),) = con.execute(
                "SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM host_lines)"
            ).fetchall()
        return documents, host_lines

    def database_id(self) -> str:
        """This database's own id, made on first use (it names its LSH index in Redis)."""
        with self.connect() as con:
            # fetched to the end (fetchall): a result left open keeps the
            # connection from relational queries in the same session
            rows = con.execute("SELECT value FROM meta WHERE key = 'database.id'").fetchall()
            if rows:
                return rows[0][0]
            value = uuid.uuid4().hex
            con.execute("INSERT INTO meta VALUES ('database.id', ?)", [value])
            return value

    def start_run(self, kind: str, flow_run_id: str | None, params: dict) -> int:
        with self.connect() as con:
            (run_id,) = con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs").fetchone()
            con.execute(
                "INSERT INTO runs (run_id, flow_run_id, kind, started_at, params) VALUES (?, ?, ?, ?, ?)",
                [run_id, flow_run_id, kind, utc_now(), json.dumps(params, default=str)],
            )
        return run_id

    def finish_run(self, run_id: int, stats: dict) -> None:
        with self.connect() as con:
            con.execute(
                "UPDATE runs SET finished_at = ?, stats = ? WHERE run_id = ?",
                [utc_now(), json.dumps(stats, default=str), run_id],
            )

    def run_cluster_counts(self, run_id: int) -> dict[str, int]:
        """What a run did to the clusters, each cluster counted once, as they
        stand at its end: `new_clusters` (created by the run), `grown_clusters`
        (stored before it, given pages or merged clusters by it),
        `originals_found` (of those two, the copied ones with an original).
        Summing each batch's counts instead would count a cluster in every
        batch that touched it (a first ingest of the dev corpus: 283 "grew")."""
        with self.connect() as con:
            ((new, grown, with_original),) = con.execute(
                """
                WITH touched AS (
                    SELECT cluster_id, bool_or(kind = 'created') AS created FROM cluster_events
                    WHERE run_id = ? AND kind IN ('created', 'grew', 'merged') GROUP BY cluster_id
                )
                SELECT count(*) FILTER (WHERE t.created),
                       count(*) FILTER (WHERE NOT t.created),
                       count(*) FILTER (WHERE c.original_doc_id IS NOT NULL AND c.size > 1)
                FROM touched t JOIN clusters c USING (cluster_id)
                """,
                [run_id],
            ).fetchall()
        return {"new_clusters": new, "grown_clusters": grown, "originals_found": with_original}
