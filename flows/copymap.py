"""The copy map: who copies whom, as one self-contained HTML file (`reposts report`).

`read_copy_map` reads what the pictures show from the public SQL interface
(`repost_pairs`'s tables, `host_stats`, `clusters`, `runs`); `render_html`
draws them. The network's layout is networkx's (aggregators on an inner
ring, the hosts they copy on an outer one; a force-directed layout when
there is only one kind), the drawing is matplotlib's,
written as SVG into the page: the file opens offline, fetches nothing, and
stays small at any database size because it summarizes (the top pairs, the
largest stories, the busiest hosts), it does not list every page.
"""

from __future__ import annotations

import html
import io
import math
from dataclasses import dataclass, field
from datetime import datetime

import duckdb

from flows.errors import UserError

TOP_PAIRS = 30  # copier -> source pairs drawn in the network
TOP_STORIES = 6  # timelines, when no cluster is chosen
TOP_HOSTS = 30  # rows of the hosts table


@dataclass(frozen=True)
class Filters:
    since: datetime | None = None  # copies published (or, without a date, fetched) from then on
    host: str | None = None  # pairs with this host at either end
    cluster: int | None = None  # this story only
    run: int | None = None  # copies stored by this run

    def describe(self) -> str:
        said = [
            f"since {self.since:%Y-%m-%d %H:%M}" if self.since else "",
            f"host {self.host}" if self.host else "",
            f"cluster {self.cluster}" if self.cluster is not None else "",
            f"run {self.run}" if self.run is not None else "",
        ]
        return ", ".join(s for s in said if s) or "every page"


@dataclass(frozen=True)
class Pair:
    copier: str
    source: str
    copies: int
    median_lag_hours: float | None


@dataclass(frozen=True)
class Host:
    host: str
    pages: int
    copies: int
    originals: int
    median_lag_hours: float | None
    aggregator_score: float
    markers: tuple[str, ...] = ()  # the copy markers it adds most
    credits: tuple[str, ...] = ()  # the sources it credits most


@dataclass(frozen=True)
class StoryPage:
    doc_id: int
    host: str
    url: str
    when: datetime | None
    dated: bool  # `when` is its published date (else when it was fetched)
    original: bool
    lag_hours: float | None  # after the original's date
    evidence: str | None
    markers: str  # kinds of the copy markers it carries


@dataclass(frozen=True)
class Story:
    cluster_id: int
    size: int
    title: str | None
    reason: str | None
    pages: tuple[StoryPage, ...]


@dataclass
class CopyMap:
    filters: Filters
    pairs: list[Pair] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)
    stories: list[Story] = field(default_factory=list)
    runs: list[tuple] = field(default_factory=list)  # run_id, kind, started_at, pages, new clusters, interrupted


def _pair_filter(filters: Filters) -> tuple[str, list]:
    """The WHERE clause over copy `c`, source `s` and repost `r`."""
    where, params = ["c.host <> s.host"], []
    if filters.since is not None:
        where.append("coalesce(c.published_at, c.fetched_at) >= ?")
        params.append(filters.since)
    if filters.host is not None:
        where.append("(c.host = ? OR s.host = ?)")
        params += [filters.host, filters.host]
    if filters.cluster is not None:
        where.append("r.cluster_id = ?")
        params.append(filters.cluster)
    if filters.run is not None:
        where.append("c.run_id = ?")
        params.append(filters.run)
    return " AND ".join(where), params


def copier_source_pairs(con: duckdb.DuckDBPyConnection, filters: Filters, limit: int = TOP_PAIRS) -> list[Pair]:
    """Copies between two hosts, counted by (copier, source), most first;
    the lag is the copy's published date after its source's, in hours.
    Copies within one host are not counted."""
    where, params = _pair_filter(filters)
    rows = con.execute(
        f"""SELECT c.host, s.host, count(*) AS copies,
                   median(epoch(c.published_at) - epoch(s.published_at)) / 3600.0
            FROM reposts r JOIN documents c ON c.doc_id = r.doc_id JOIN documents s ON s.doc_id = r.source_doc_id
            WHERE {where} GROUP BY ALL ORDER BY copies DESC, c.host, s.host LIMIT {int(limit)}""",
        params,
    ).fetchall()
    return [Pair(copier, source, copies, lag) for copier, source, copies, lag in rows]


def read_network(con: duckdb.DuckDBPyConnection, filters: Filters, limit: int = TOP_PAIRS) -> CopyMap:
    """The copy network alone: the pairs and their hosts (no stories, no runs)."""
    found = CopyMap(filters=filters, pairs=copier_source_pairs(con, filters, limit))
    found.hosts = _hosts(con, list(dict.fromkeys([h for p in found.pairs for h in (p.copier, p.source)]))[:TOP_HOSTS])
    return found


def read_copy_map(con: duckdb.DuckDBPyConnection, filters: Filters) -> CopyMap:
    """What the report shows, read through the public SQL interface."""
    if filters.host is not None and not con.execute("SELECT 1 FROM documents WHERE host = ? LIMIT 1", [filters.host]).fetchone():
        raise UserError(f"no pages of host {filters.host} in the database")
    if filters.cluster is not None and not con.execute(
        "SELECT 1 FROM clusters WHERE cluster_id = ?", [filters.cluster]
    ).fetchone():
        raise UserError(f"no cluster {filters.cluster} in the database")
    found = read_network(con, filters)
    if filters.host is not None and filters.host not in {h.host for h in found.hosts}:
        found.hosts = (_hosts(con, [filters.host]) + found.hosts)[:TOP_HOSTS]
    found.stories = _stories(con, filters)
    found.runs = con.execute(
        """SELECT r.run_id, r.kind, r.started_at,
                  (SELECT count(*) FROM documents d WHERE d.run_id = r.run_id),
                  (SELECT count(*) FROM cluster_events e WHERE e.run_id = r.run_id AND e.kind = 'created'),
                  r.stats->>'interrupted'
           FROM runs r ORDER BY r.run_id DESC LIMIT 50"""
    ).fetchall()
    return found


def _hosts(con: duckdb.DuckDBPyConnection, names: list[str]) -> list[Host]:
    if not names:
        return []
    stats = {
        row[0]: row
        for row in con.execute(
            "SELECT host, pages, copies, originals, median_lag_hours, aggregator_score FROM host_stats WHERE host IN (SELECT unnest(?))",
            [names],
        ).fetchall()
    }
    markers: dict[str, list[str]] = {}
    for host, text in con.execute(
        """SELECT d.host, m.text FROM markers m JOIN documents d USING (doc_id)
           WHERE m.marks_copy AND d.host IN (SELECT unnest(?))
           GROUP BY ALL ORDER BY d.host, count(*) DESC, m.text""",
        [names],
    ).fetchall():
        markers.setdefault(host, []).append(text)
    credits: dict[str, list[str]] = {}
    for host, source in con.execute(
        """SELECT d.host, coalesce(a.source_name, a.source_url) AS source FROM attributions a JOIN documents d USING (doc_id)
           WHERE a.kind IN ('credit', 'wire') AND coalesce(a.source_name, a.source_url) IS NOT NULL
             AND d.host IN (SELECT unnest(?))
           GROUP BY ALL ORDER BY d.host, count(*) DESC, source""",
        [names],
    ).fetchall():
        credits.setdefault(host, []).append(source)
    return [
        Host(
            host=name,
            pages=stats[name][1],
            copies=stats[name][2],
            originals=stats[name][3],
            median_lag_hours=stats[name][4],
            aggregator_score=stats[name][5] or 0.0,
            markers=tuple(markers.get(name, [])[:2]),
            credits=tuple(credits.get(name, [])[:3]),
        )
        for name in names
        if name in stats
    ]


def _stories(con: duckdb.DuckDBPyConnection, filters: Filters) -> list[Story]:
    where, params = _pair_filter(filters)
    chosen = con.execute(
        f"""SELECT k.cluster_id FROM clusters k
            WHERE k.size > 1 AND k.cluster_id IN (
                SELECT r.cluster_id FROM reposts r JOIN documents c ON c.doc_id = r.doc_id
                JOIN documents s ON s.doc_id = r.source_doc_id WHERE {where})
            ORDER BY k.size DESC, k.cluster_id LIMIT {TOP_STORIES}""",
        params,
    ).fetchall()
    stories = []
    for (cluster_id,) in chosen:
        size, original, reason = con.execute(
            "SELECT size, original_doc_id, reason FROM clusters WHERE cluster_id = ?", [cluster_id]
        ).fetchone()
        rows = con.execute(
            """SELECT d.doc_id, d.host, d.url, d.title, coalesce(d.published_at, d.fetched_at), d.published_at IS NOT NULL,
                      epoch(d.published_at) - epoch(o.published_at), r.evidence,
                      (SELECT string_agg(DISTINCT m.kind, ', ') FROM markers m WHERE m.doc_id = d.doc_id AND m.marks_copy)
               FROM documents d
               LEFT JOIN reposts r ON r.doc_id = d.doc_id
               LEFT JOIN documents o ON o.doc_id = ?
               WHERE d.cluster_id = ? ORDER BY coalesce(d.published_at, d.fetched_at) NULLS LAST, d.doc_id""",
            [original, cluster_id],
        ).fetchall()
        pages = tuple(
            StoryPage(
                doc_id=doc_id,
                host=host or "-",
                url=url,
                when=when,
                dated=bool(dated),
                original=doc_id == original,
                lag_hours=None if doc_id == original or lag is None else lag / 3600.0,
                evidence=evidence,
                markers=kinds or "",
            )
            for doc_id, host, url, _, when, dated, lag, evidence, kinds in rows
        )
        title = next((row[3] for row in rows if row[0] == original and row[3]), None) or next((r[3] for r in rows if r[3]), None)
        stories.append(Story(cluster_id, size, title, reason, pages))
    return stories


# --- drawing -------------------------------------------------------------

# publisher (blue) to aggregator (red), by the share of a host's pages that are copies
_COLOURS = "coolwarm"


def _figure_svg(figure) -> str:
    """The figure as an SVG element to put in the page (text kept as text, no prologue)."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]


def lag_text(hours: float | None) -> str:
    if hours is None:
        return "-"
    if abs(hours) < 1:
        return f"{hours * 60:.0f} min"
    if abs(hours) < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} d"


def network_svg(copy_map: CopyMap) -> str | None:
    """The copy network as SVG (`network_figure`); None when there is no pair to draw."""
    return _figure_svg(network_figure(copy_map)) if copy_map.pairs else None


def network_png(copy_map: CopyMap) -> bytes | None:
    """The copy network as PNG (for the Prefect UI's markdown artifacts); None when there is no pair to draw."""
    if not copy_map.pairs:
        return None
    import matplotlib.pyplot as plt

    figure = network_figure(copy_map)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=72, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def network_figure(copy_map: CopyMap):
    """The copy network: hosts (size: pages; colour: aggregator score), arrows copier -> source
    (width: copies; label: median lag), as a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    graph = nx.DiGraph()
    for pair in copy_map.pairs:
        graph.add_edge(pair.copier, pair.source, copies=pair.copies, lag=pair.median_lag_hours)
    hosts = {h.host: h for h in copy_map.hosts}
    # aggregators (most of their pages copies) on an inner ring, the hosts they
    # copy on an outer one: a copy network is hubs and spokes, and a
    # force-directed layout piles the hubs on one another in the middle
    inner = [n for n in graph.nodes if n in hosts and hosts[n].aggregator_score >= 0.5]
    outer = [n for n in graph.nodes if n not in inner]
    if inner and outer:
        layout = nx.shell_layout(graph, nlist=[inner, outer], rotate=0.3)
    else:
        layout = nx.spring_layout(graph, seed=7, k=1.6 / math.sqrt(graph.number_of_nodes()), weight="copies")
    plt.rcParams["svg.fonttype"] = "none"
    figure, axes = plt.subplots(figsize=(11, 8))
    nodes = list(graph.nodes)
    most = max(pair.copies for pair in copy_map.pairs)
    nx.draw_networkx_nodes(
        graph,
        layout,
        nodelist=nodes,
        node_size=[120 + 40 * math.sqrt(hosts[n].pages if n in hosts else 1) for n in nodes],
        node_color=[hosts[n].aggregator_score if n in hosts else 0.0 for n in nodes],
        cmap=_COLOURS,
        vmin=0.0,
        vmax=1.0,
        edgecolors="#333333",
        ax=axes,
    )
    nx.draw_networkx_edges(
        graph,
        layout,
        width=[0.8 + 4.0 * graph.edges[e]["copies"] / most for e in graph.edges],
        arrowsize=14,
        edge_color="#666666",
        connectionstyle="arc3,rad=0.08",
        node_size=400,
        ax=axes,
    )
    nx.draw_networkx_labels(graph, layout, font_size=8, ax=axes)
    nx.draw_networkx_edge_labels(
        graph,
        layout,
        edge_labels={e: f"{graph.edges[e]['copies']} · {lag_text(graph.edges[e]['lag'])}" for e in graph.edges},
        font_size=7,
        connectionstyle="arc3,rad=0.08",
        ax=axes,
    )
    scale = plt.cm.ScalarMappable(cmap=_COLOURS, norm=plt.Normalize(0.0, 1.0))
    figure.colorbar(scale, ax=axes, shrink=0.6, label="aggregator score (share of its pages that are copies)")
    axes.set_axis_off()
    axes.margins(0.15)  # room for the labels of the hosts at the edges
    axes.set_title("copier → source (label: copies · median lag)", fontsize=10)
    return figure


def timeline_svg(story: Story) -> str | None:
    """One story on a time axis: a row per host, the original as a star, each copy as a dot."""
    # pages with a published date; when none has one, when they were fetched
    dated = [p for p in story.pages if p.dated] or [p for p in story.pages if p.when is not None]
    if not dated:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"
    rows = list(dict.fromkeys(p.host for p in dated))
    figure, axes = plt.subplots(figsize=(10, 0.8 + 0.35 * len(rows)))
    for page in dated:
        y = rows.index(page.host)
        style = {"marker": "*", "s": 160, "color": "#1f6feb"} if page.original else {"marker": "o", "s": 50, "color": "#d1242f"}
        if not page.dated:
            style["facecolors"] = "none"
            style["edgecolors"] = style.pop("color")
        axes.scatter([page.when], [y], zorder=3, **style)
        if page.lag_hours is not None:
            axes.annotate(lag_text(page.lag_hours), (page.when, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
    axes.set_yticks(range(len(rows)), rows, fontsize=8)
    axes.invert_yaxis()
    axes.grid(axis="x", alpha=0.3)
    axes.tick_params(axis="x", labelsize=7)
    figure.autofmt_xdate()
    return _figure_svg(figure)


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #1f2328; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.n { text-align: right; } .quiet { color: #59636e; }
svg { max-width: 100%; height: auto; }
"""


def _table(header: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=n' if i in numeric else ''}>{html.escape('' if v is None else str(v))}</td>" for i, v in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(copy_map: CopyMap, db_name: str) -> str:
    """The report as one HTML page: nothing in it is fetched from anywhere."""
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>Copy map of {html.escape(db_name)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Copy map of {html.escape(db_name)}</h1>",
        f"<p class=quiet>{html.escape(copy_map.filters.describe())}; made {datetime.now():%Y-%m-%d %H:%M}.</p>",
        "<h2>Who copies whom</h2>",
    ]
    network = network_svg(copy_map)
    if network is None:
        parts.append("<p>No copies between two hosts here.</p>")
    else:
        parts.append(
            "<p class=quiet>An arrow goes from the copier to the host it copied; its width is the number of copies, "
            "its label the copies and the median lag. A host's size is its pages; its colour goes from publisher (blue) "
            f"to aggregator (red). The top {TOP_PAIRS} pairs.</p>"
        )
        parts.append(network)
        parts.append(
            _table(
                ["copier", "source", "copies", "median lag"],
                [[p.copier, p.source, p.copies, lag_text(p.median_lag_hours)] for p in copy_map.pairs],
                numeric={2},
            )
        )
    parts.append("<h2>How stories spread</h2>")
    if not copy_map.stories:
        parts.append("<p>No story with copies here.</p>")
    for story in copy_map.stories:
        parts.append(f"<h3>Cluster {story.cluster_id}: {html.escape(story.title or 'untitled')} ({story.size} pages)</h3>")
        if story.reason:
            parts.append(f"<p class=quiet>Original: {html.escape(story.reason)}</p>")
        picture = timeline_svg(story)
        if picture:
            parts.append(picture)
        parts.append(
            "<p class=quiet>★ the original, ● a copy, by published date (pages without one are in the table; "
            "hollow: no page has one, placed when fetched); the label is the lag after the original.</p>"
        )
        parts.append(
            _table(
                ["when", "host", "role", "lag", "copy markers", "evidence", "URL"],
                [
                    [
                        f"{p.when:%Y-%m-%d %H:%M}" + ("" if p.dated else " (fetched)") if p.when else "-",
                        p.host,
                        "original" if p.original else "copy",
                        lag_text(p.lag_hours),
                        p.markers,
                        p.evidence,
                        p.url,
                    ]
                    for p in story.pages
                ],
            )
        )
    parts.append("<h2>Hosts</h2>")
    if copy_map.hosts:
        parts.append(
            _table(
                ["host", "pages", "copies", "originals", "median lag", "aggregator score", "copy markers it adds", "sources it credits"],
                [
                    [
                        h.host,
                        h.pages,
                        h.copies,
                        h.originals,
                        lag_text(h.median_lag_hours),
                        f"{h.aggregator_score:.2f}",
                        " | ".join(m[:80] for m in h.markers),
                        ", ".join(h.credits),
                    ]
                    for h in copy_map.hosts
                ],
                numeric={1, 2, 3, 5},
            )
        )
    else:
        parts.append("<p>No host here.</p>")
    parts.append("<h2>Runs</h2>")
    parts.append(
        _table(
            ["run", "kind", "started", "pages stored", "new clusters", "interrupted"],
            [[r[0], r[1], f"{r[2]:%Y-%m-%d %H:%M}" if r[2] else "-", r[3], r[4], r[5] or ""] for r in copy_map.runs],
            numeric={0, 3, 4},
        )
        if copy_map.runs
        else "<p>No run yet.</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)
