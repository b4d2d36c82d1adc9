"""The `reposts` command line.

Errors a user can cause (a missing file, a bad query, a locked database)
print one line and exit with status 2; they never show a traceback.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import gc
import json
import logging
import os
import signal
import sys
from pathlib import Path

from flows.errors import Stopped, UserError, stop_signal

DEFAULT_DB = "reposts.duckdb"


def _local_prefect():
    """Set up Prefect for a run from the command line: quiet (a progress bar
    and a summary, not Prefect's chatter), and its temporary API server
    started now, before anything else (see flows/local_api.py)."""
    # no telemetry, the server's or the client's (DO_NOT_TRACK: Prefect's SDK
    # analytics): users did not ask for it, and there may be no internet
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    from flows.local_api import TemporaryAPI

    return TemporaryAPI.start()


def _imports_done() -> None:
    """The command has imported what its run needs (Prefect, the stages):
    with Python's garbage collector off for those imports (see `run`), turn
    it on, and freeze what is there now out of its full collections. The
    imports make some 200,000 objects that live as long as the process; in
    an ingest the collector went over them 460 times while they were
    imported, and again at every full collection after (0.82 s of
    collection in the benchmark's ingest, 0.18 s now)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _db_path(args: argparse.Namespace) -> str:
    return args.db or os.environ.get("REPOSTS_DB") or DEFAULT_DB


class Progress:
    """A one-line progress counter on stderr (only when it is a terminal)."""

    def __init__(self, total: int | None, label: str) -> None:
        self.total, self.label, self.done = total, label, 0
        self.enabled = sys.stderr.isatty()

    def __call__(self, n: int) -> None:
        self.done += n
        if self.enabled:
            of = f"/{self.total}" if self.total else ""
            sys.stderr.write(f"\r{self.label}: {self.done}{of} pages")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            sys.stderr.write("\n")


def _settings(args: argparse.Namespace):
    from dataclasses import replace

    from flows.pipeline import default_settings

    settings = default_settings(getattr(args, "rules", None))
    if getattr(args, "batch_size", None):
        settings = replace(settings, batch_size=args.batch_size)
    if getattr(args, "lsh_redis", None):
        settings = replace(settings, link=replace(settings.link, redis_url=args.lsh_redis))
    return settings


def _print_summary(summary: dict, db: str) -> None:
    if summary.get("discovered"):
        print(f"{summary['discovered']} article URLs found in feeds and sitemaps")
    print(
        f"{summary['pages']} new pages stored, {summary['failed']} failed; "
        f"{summary['new_clusters']} new clusters, {summary['grown_clusters']} grew, "
        f"{summary['originals_found']} with an original  (run {summary['run_id']}, {db})"
    )
    for reason, count in sorted(summary.get("errors", {}).items(), key=lambda kv: -kv[1]):
        print(f"  failed: {count} x {reason}")
    if summary.get("warc"):
        print(f"what was fetched: {summary['warc']}")
    if summary.get("rebuild"):
        _print_rebuilt(summary["rebuild"], "then rebuilt: ")


def _print_rebuilt(summary: dict, lead: str = "") -> None:
    from flows.rebuild import summary_line

    print(lead + summary_line(summary))
    print(f"the database as it was: {summary['kept_as']} (delete it once you are satisfied)")


def cmd_ingest(args: argparse.Namespace) -> int:
    for path in args.warc:
        if not Path(path).is_file():
            raise UserError(f"no such WARC file: {path}")
    with _local_prefect() as api:  # first: the server starts while this process imports the stages
        from dedup.ahead import prepare_warcs_ahead
        from dedup.batch import run_description
        from dedup.store import Store

        db, settings, warcs = _db_path(args), _settings(args), list(args.warc)
        with Store(db).exclusive_run(run_description("ingest", len(warcs))):
            # local workers start on the first batches now, while Prefect starts its API
            started = None if args.dask else prepare_warcs_ahead(warcs, db, settings, args.workers, reprocess=args.reprocess)
            progress = Progress(None, "ingest")
            try:
                from flows.pipeline import ingest_flow

                _imports_done()
                with api.serving():
                    summary = ingest_flow(
                        warcs,
                        db=db,
                        settings=settings,
                        workers=args.workers,
                        progress=progress,
                        started=started,
                        dask_address=args.dask,
                        reprocess=args.reprocess,
                    )
            finally:
                if started:
                    started.close()
                progress.close()
    _print_summary(summary, _db_path(args))
    from dedup.archive import DAMAGED

    # what could be read is stored; a damaged input is said by the exit status too
    return 1 if summary.get("errors", {}).get(DAMAGED) else 0


def _read_sources(args: argparse.Namespace) -> list:
    from flows.sources import check_sources, read_sources, sources_of

    sources = sources_of(args.urls, args.feed, args.sitemap)
    if args.urls_file:
        sources = check_sources(sources + read_sources(args.urls_file))
    if not sources:
        raise UserError("give URLs to crawl, --feed URL, --sitemap URL or --urls-file FILE")
    return sources


def cmd_crawl(args: argparse.Namespace) -> int:
    with _local_prefect() as api:  # first: the server starts while this process reads the sources and imports the stages
        sources = _read_sources(args)
        pages = [s.url for s in sources if s.kind == "page"]
        progress = Progress(len(pages) if len(pages) == len(sources) else None, "crawl")
        from dedup.batch import run_description
        from dedup.store import Store
        from flows.pipeline import crawl_flow

        _imports_done()
        try:
            with Store(_db_path(args)).exclusive_run(run_description("crawl", len(sources))), api.serving():
                summary = crawl_flow(
                    pages,
                    feeds=[s.url for s in sources if s.kind == "feed"],
                    sitemaps=[s.url for s in sources if s.kind == "sitemap"],
                    refresh=args.refresh,
                    dask_address=args.dask,
                    db=_db_path(args),
                    settings=_settings(args),
                    workers=args.workers,
                    allow_private_network=args.allow_private_network,
                    progress=progress,
                    host_delay_s=args.host_delay,
                    warc_dir=args.warc_dir,
                    keep_warc=not args.no_warc,
                )
        finally:
            progress.close()
    _print_summary(summary, _db_path(args))
    return 0


def run_query(db: str, query: str) -> tuple[list[str], list[tuple]]:
    import duckdb

    from dedup.store import Store

    with Store(db, lock_wait_s=10).connect(read_only=True) as con:
        try:
            cursor = con.execute(query)
        except duckdb.Error as exc:
            raise UserError(f"query failed: {' '.join(str(exc).split())}") from exc
        if cursor.description is None:
            return [], []
        return [d[0] for d in cursor.description], cursor.fetchall()


def _print_rows(columns: list[str], rows: list[tuple], fmt: str, max_width: int = 60) -> None:
    if fmt == "json":
        for row in rows:
            print(json.dumps(dict(zip(columns, row, strict=True)), default=str, ensure_ascii=False))
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def _cell(value, max_width: int) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


def cmd_sql(args: argparse.Namespace) -> int:
    columns, rows = run_query(_db_path(args), args.query)
    _print_rows(columns, rows, args.format)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from flows.report import show_cluster

    print(show_cluster(_db_path(args), args.cluster))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from flows.report import explain_url

    print(explain_url(_db_path(args), args.url))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    path = write_report(_db_path(args), args.out, since=args.since, host=args.host, cluster=args.cluster, run=args.run)
    print(f"report: {path}")
    return 0


def write_report(db: str, out: str, since: str | None = None, host=None, cluster=None, run=None) -> Path:
    """Write the copy map of the database at `db` to `out`; the file's path."""
    from datetime import datetime

    from dedup.store import Store
    from flows.copymap import Filters, read_copy_map, render_html

    try:
        when = datetime.fromisoformat(since) if since else None
    except ValueError:
        raise UserError(f"--since takes a date (2026-12-01) or a time (2026-12-01T08:00), got {since!r}") from None
    filters = Filters(since=when, host=host, cluster=cluster, run=run)
    if not Path(db).exists():
        raise UserError(f"no database at {db}")
    with Store(db, lock_wait_s=10).connect(read_only=True) as con:
        copy_map = read_copy_map(con, filters)
    path = Path(out)
    try:
        path.write_text(render_html(copy_map, Path(db).name), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror}") from None
    return path.resolve()


def cmd_rebuild(args: argparse.Namespace) -> int:
    from flows.rebuild import rebuild

    _imports_done()
    progress = Progress(None, "rebuild")
    try:
        summary = rebuild(_db_path(args), _settings(args), progress)
    finally:
        progress.close()
    _print_rebuilt(summary)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    with _local_prefect() as api:
        from flows.demo import run_demo

        _imports_done()
        with api.serving():
            return run_demo(_db_path(args), settings=_settings(args))


def _scale_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--dask", metavar="ADDRESS", help="run the CPU stages on the Dask cluster at this scheduler address")
    command.add_argument("--lsh-redis", metavar="URL", help="keep the LSH index in Redis at this URL (redis://host:6379/0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reposts", description="Find which news pages are copies of which, and who published first."
    )
    db_help = f"DuckDB file (default: $REPOSTS_DB or ./{DEFAULT_DB})"
    parser.add_argument("--db", help=db_help)
    parser.add_argument(
        "--rules",
        help="repost-marker rules: default (the rule files and what is learned) or none (what is learned alone);"
        " default: $REPOSTS_RULES or default",
    )
    # --db is accepted after the command too (`reposts ingest FILE --db X`);
    # SUPPRESS keeps a value given before the command when it is absent after.
    verbose_help = "show the fetching and extraction libraries' log lines (the faults are in `fetches` either way)"
    parser.add_argument("--verbose", action="store_true", help=verbose_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, help=db_help)
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help)
    sub = parser.add_subparsers(dest="command", required=True)

    crawl = sub.add_parser("crawl", parents=[common], help="fetch URLs and link the copies")
    crawl.add_argument("urls", nargs="*", help="page URLs")
    crawl.add_argument("--feed", action="append", default=[], help="an RSS/Atom feed, or a page linking to one (repeatable)")
    crawl.add_argument("--sitemap", action="append", default=[], help="a sitemap, or a site's home (repeatable)")
    crawl.add_argument("--urls-file", help="a sources file: one `URL`, `feed URL` or `sitemap URL` per line")
    crawl.add_argument("--refresh", action="store_true", help="fetch URLs already stored again (default: new URLs only)")
    crawl.add_argument(
        "--allow-private-network",
        action="store_true",
        help="allow fetching loopback and private addresses (intranet use; off by default)",
    )
    crawl.add_argument("--host-delay", type=float, help="seconds between two requests to one host (default 2)")
    crawl.add_argument("--warc-dir", help="where the run's WARC file of what it fetched goes (default: <db>.warc/)")
    crawl.add_argument("--no-warc", action="store_true", help="keep no WARC file of what the run fetched")
    crawl.add_argument("--workers", type=int, default=2, help="worker processes for extraction (default 2)")
    crawl.add_argument("--batch-size", type=int, help="pages per batch (default: the setting batch_size, 400)")
    _scale_options(crawl)
    crawl.set_defaults(func=cmd_crawl)

    ingest = sub.add_parser("ingest", parents=[common], help="read WARC files (.warc, .warc.gz)")
    ingest.add_argument("warc", nargs="+", help="WARC files")
    ingest.add_argument("--workers", type=int, default=2, help="worker processes for extraction (default 2)")
    ingest.add_argument(
        "--reprocess",
        action="store_true",
        help="extract stored pages again from these files (a crawl's own WARC files), then rebuild: when extraction improved",
    )
    ingest.add_argument("--batch-size", type=int, help="pages per batch (default: the setting batch_size, 400)")
    _scale_options(ingest)
    ingest.set_defaults(func=cmd_ingest)

    sql = sub.add_parser("sql", parents=[common], help="run a read-only SQL query")
    sql.add_argument("query")
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.set_defaults(func=cmd_sql)

    show = sub.add_parser("show", parents=[common], help="a cluster's pages as a timeline")
    show.add_argument("cluster", type=int)
    show.set_defaults(func=cmd_show)

    explain = sub.add_parser("explain", parents=[common], help="why a page is where it is")
    explain.add_argument("url")
    explain.set_defaults(func=cmd_explain)

    report = sub.add_parser("report", parents=[common], help="the copy map: one HTML file of pictures (opens offline)")
    report.add_argument("--out", default="report.html", help="the HTML file to write (default report.html)")
    report.add_argument("--since", help="copies published (or fetched, without a date) from this date or time on")
    report.add_argument("--host", help="pairs with this host at either end")
    report.add_argument("--cluster", type=int, help="this story only")
    report.add_argument("--run", type=int, help="copies stored by this run")
    report.set_defaults(func=cmd_report)

    rebuild = sub.add_parser(
        "rebuild", parents=[common], help="clean, fingerprint, link and decide every stored page again with the current settings"
    )
    rebuild.add_argument("--batch-size", type=int, help="pages per batch (default: the setting batch_size, 400)")
    rebuild.set_defaults(func=cmd_rebuild)

    demo = sub.add_parser("demo", parents=[common], help="serve the bundled demo sites on loopback and crawl them")
    demo.set_defaults(func=cmd_demo)
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors a user can cause, each a one-line message. Imported when one
    is raised: importing the stages' modules first (0.28 s) would hold back
    the temporary Prefect server, which a run starts first thing."""
    from dedup.archive import ArchiveError
    from dedup.clean import RuleError
    from dedup.store import StoreError
    from flows.local_api import TemporaryAPIError

    return UserError, StoreError, ArchiveError, RuleError, TemporaryAPIError


# The libraries that log each fault a run records in `fetches` (urllib3's
# retries, trafilatura's download errors, courlan's and htmldate's notes)
QUIET_LOGGERS = ("urllib3", "trafilatura", "courlan", "htmldate", "charset_normalizer")


def quiet_libraries(verbose: bool) -> None:
    """Keep the libraries' log lines off the terminal unless `verbose`: a run
    records every fault in `fetches` and its summary, and a line per retry
    above the summary hides it. The records still reach handlers on the
    libraries' own loggers (dedup/fetch.py reads the download errors there)."""
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        logger.propagate = verbose
        if not verbose and not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())  # not Python's last-resort handler either


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries(args.verbose)
    signal.signal(signal.SIGTERM, _stop_on_signal)  # a flow run puts Prefect's own in its place while it runs
    try:
        return args.func(args)
    except _user_errors() as exc:  # an except clause's classes are looked up only when something is raised
        print(f"reposts: error: {exc}", file=sys.stderr)
        return 2
    except BaseException as exc:
        number = stop_signal(exc)
        if number is None:
            raise
        name = signal.Signals(number).name
        print(f"reposts: stopped by {name}; the batches stored before it stay, the run is recorded as interrupted", file=sys.stderr)
        return 128 + number


def _stop_on_signal(number: int, _frame: object) -> None:
    raise Stopped(number)


def run() -> None:
    """The `reposts` command: `main`, then an exit that skips the interpreter's
    teardown. Once the work is written and every exit handler has run (Prefect
    stops its temporary server in one), tearing down the thousands of modules
    Prefect loads takes about a second more, for nothing."""
    # Off while the command imports (see `_imports_done`): nothing it makes
    # then is garbage. A command that imports little (sql, show) keeps it off
    # to its end.
    gc.disable()
    exit_code = [1]

    def exit_now() -> None:  # registered first, so it runs after every other exit handler
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code[0])

    atexit.register(exit_now)
    exit_code[0] = main()
    sys.exit(exit_code[0])


if __name__ == "__main__":
    run()
