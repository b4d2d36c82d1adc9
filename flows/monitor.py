"""What a run shows in the Prefect UI: progress, a summary, tables, readable logs.

Artifacts are keyed by the flow (`crawl-summary`, `ingest-summary`, ...), so
the Artifacts page holds each flow's latest summary, with every earlier run's
version behind it.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from datetime import datetime

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run

from dedup.models import FetchedPage
from dedup.store import Store
from flows.copymap import Filters, lag_text, network_png, read_network

# a host with this many failed fetches and none that worked gets a warning
FAILING_HOST_WARN_AT = 3
TABLE_ROWS = 200
# the progress artifact is updated at most this often (each update is a
# request the API server answers with a database write; a run links a batch
# every second or two) and once at the end
PROGRESS_EVERY_S = 5.0


def crawl_run_name() -> str:
    """'crawl 2026-11-25 14:00, 120 sources' (pages, feeds and sitemaps given)."""
    params = flow_run.parameters or {}
    n = sum(len(params.get(key) or []) for key in ("urls", "feeds", "sitemaps"))
    sources_file = params.get("sources_file")
    if sources_file:
        from flows.errors import UserError
        from flows.sources import read_sources

        try:
            n += len(read_sources(sources_file))
        except (OSError, UserError):
            pass
    return f"crawl {_start():%Y-%m-%d %H:%M}, {n} source{'s' if n != 1 else ''}"


def ingest_run_name() -> str:
    paths = (flow_run.parameters or {}).get("warc_paths") or []
    names = ", ".join(str(p).rsplit("/", 1)[-1] for p in paths[:2]) + (", ..." if len(paths) > 2 else "")
    return f"ingest {_start():%Y-%m-%d %H:%M}, {len(paths)} WARC file{'s' if len(paths) != 1 else ''} ({names})"


def _start() -> datetime:
    start = flow_run.scheduled_start_time
    return start if isinstance(start, datetime) else datetime.now()


class RunMonitor:
    """Progress artifact, failing-host warnings and the end-of-run artifacts of one flow run."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.logger = get_run_logger()
        self._progress_id = create_progress_artifact(
            0.0, key=f"{kind}-progress", description=f"Share of this {kind} run's input that is linked and stored."
        )
        self._progress_at = time.monotonic()
        self._failures: Counter[str] = Counter()
        self._successes: set[str] = set()
        self._warned: set[str] = set()

    def progress(self, fraction: float, final: bool = False) -> None:
        """Show the share of the input done (skipped if shown under PROGRESS_EVERY_S ago, unless `final`)."""
        now = time.monotonic()
        if not final and now - self._progress_at < PROGRESS_EVERY_S:
            return
        self._progress_at = now
        update_progress_artifact(self._progress_id, round(100.0 * min(1.0, max(0.0, fraction)), 1))

    def fetched(self, pages: list[FetchedPage]) -> None:
        """Warn once per run about a host that keeps failing."""
        for page in pages:
            host = page.url.split("/")[2] if "://" in page.url else page.url
            if page.error:
                self._failures[host] += 1
            else:
                self._successes.add(host)
            if self._failures[host] >= FAILING_HOST_WARN_AT and host not in self._successes and host not in self._warned:
                self._warned.add(host)
                self.logger.warning(
                    "host %s keeps failing: %d fetches, none worked (last: %s)", host, self._failures[host], page.error
                )

    def finish(self, store: Store, run_id: int, summary: dict) -> None:
        """The run's summary, its new and grown clusters, and its failed fetches, as artifacts."""
        self.progress(1.0, final=True)
        report = run_report(store, run_id)
        create_markdown_artifact(
            summary_markdown(self.kind, run_id, summary, report),
            key=f"{self.kind}-summary",
            description=f"What the latest {self.kind} run did: pages, failures by reason, clusters, the hosts that copied most.",
        )
        create_markdown_artifact(
            copy_map_markdown(self.kind, run_id, report),
            key=f"{self.kind}-copy-map",
            description=f"Who copied whom in the latest {self.kind} run: the copy network of the pages it stored, and the pairs.",
        )
        create_table_artifact(
            report["clusters"] or [{"cluster_id": None, "change": "no new or grown clusters"}],
            key=f"{self.kind}-clusters",
            description=f"Clusters the latest {self.kind} run created or grew, with their original and newest URLs.",
        )
        create_table_artifact(
            report["failed"] or [{"url": None, "error": "no failed fetches"}],
            key=f"{self.kind}-failed-fetches",
            description=f"Pages the latest {self.kind} run could not fetch or extract, with the reason.",
        )


def run_report(store: Store, run_id: int) -> dict:
    """The rows the end-of-run artifacts show, read from the database."""
    with store.connect() as con:
        # each cluster once, as it stands at the run's end (a cluster the run
        # made and then grew is "created"; one stored before and merged into, "merged")
        clusters = con.execute(
            f"""
            WITH touched AS (
                SELECT cluster_id,
                       CASE WHEN bool_or(kind = 'created') THEN 'created'
                            WHEN bool_or(kind = 'merged') THEN 'merged' ELSE 'grew' END AS change
                FROM cluster_events WHERE run_id = $run AND kind IN ('created', 'grew', 'merged') GROUP BY cluster_id
            )
            SELECT t.cluster_id, t.change, c.size,
                   coalesce(o.url, 'not in database') AS original,
                   coalesce(c.attributed_source, '') AS credited,
                   (SELECT string_agg(d.url, ' ' ORDER BY d.doc_id) FROM documents d
                     WHERE d.cluster_id = t.cluster_id AND d.run_id = $run) AS new_urls
            FROM touched t JOIN clusters c USING (cluster_id)
            LEFT JOIN documents o ON o.doc_id = c.original_doc_id
            WHERE c.size > 1
            ORDER BY c.size DESC, t.cluster_id LIMIT {TABLE_ROWS}
            """,
            {"run": run_id},
        ).fetchall()
        failed = con.execute(
            f"SELECT url, coalesce(status::VARCHAR, '') AS status, error FROM fetches "
            f"WHERE run_id = ? AND error IS NOT NULL ORDER BY url LIMIT {TABLE_ROWS}",
            [run_id],
        ).fetchall()
        copiers = con.execute(
            """SELECT d.host, count(*) AS copies FROM reposts r JOIN documents d USING (doc_id)
               WHERE d.run_id = ? GROUP BY d.host ORDER BY copies DESC, d.host LIMIT 10""",
            [run_id],
        ).fetchall()
        fetched = con.execute("SELECT count(*) FROM fetches WHERE run_id = ?", [run_id]).fetchone()[0]
        network = read_network(con, Filters(run=run_id), limit=15)
    columns = ("cluster_id", "change", "size", "original", "credited", "new_urls")
    return {
        "clusters": [dict(zip(columns, row, strict=True)) for row in clusters],
        "failed": [{"url": u, "status": s, "error": e} for u, s, e in failed],
        "copiers": copiers,
        "fetched": fetched,
        "network": network,
        "db": str(store.path),
    }


def summary_markdown(kind: str, run_id: int, summary: dict, report: dict) -> str:
    lines = [
        f"# {kind} run {run_id}",
        "",
        "| | |",
        "|---|---|",
        f"| pages read | {report['fetched']} |",
        f"| new documents | {summary['pages']} |",
        f"| failed | {summary['failed']} |",
        f"| new clusters | {summary['new_clusters']} |",
        f"| clusters that grew | {summary['grown_clusters']} |",
        f"| clusters merged | {summary['merged_clusters']} |",
        f"| clusters with an original | {summary['originals_found']} |",
    ]
    if summary.get("skipped_known"):
        lines.append(f"| skipped (already stored) | {summary['skipped_known']} |")
    if summary.get("errors"):
        lines += ["", "## Failures by reason", "", "| reason | pages |", "|---|---|"]
        lines += [f"| {reason} | {count} |" for reason, count in sorted(summary["errors"].items(), key=lambda kv: -kv[1])]
    if report["copiers"]:
        lines += ["", "## Hosts that copied most", "", "| host | copies stored this run |", "|---|---|"]
        lines += [f"| {host} | {copies} |" for host, copies in report["copiers"]]
    return "\n".join(lines) + "\n"


def copy_map_markdown(kind: str, run_id: int, report: dict) -> str:
    """Who copied whom in the run: the copy network as a picture (the UI shows
    an image in a markdown artifact), the pairs, and the command for the full report."""
    network = report["network"]
    lines = [f"# Who copied whom in {kind} run {run_id}", ""]
    if not network.pairs:
        return "\n".join([*lines, "No page this run stored is a copy of another host's page.", ""])
    png = network_png(network)
    lines += [f"![copy network: copier -> source](data:image/png;base64,{base64.b64encode(png).decode()})", ""]
    lines += ["| copier | source | copies | median lag |", "|---|---|---|---|"]
    lines += [f"| {p.copier} | {p.source} | {p.copies} | {lag_text(p.median_lag_hours)} |" for p in network.pairs]
    lines += ["", f"The whole copy map of this run's pages: `reposts --db {report['db']} report --run {run_id} --out run-{run_id}.html`"]
    return "\n".join(lines) + "\n"
