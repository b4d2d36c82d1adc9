"""Text reports for people: `reposts show CLUSTER` and `reposts explain URL`."""

from __future__ import annotations

from dedup.store import Store
from flows.errors import UserError


def _fmt_time(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "date unknown"


def show_cluster(db: str, cluster_id: int) -> str:
    with Store(db, lock_wait_s=10).connect(read_only=True) as con:
        cluster = con.execute(
            "SELECT original_doc_id, attributed_source, size, confidence, reason FROM clusters WHERE cluster_id = ?", [cluster_id]
        ).fetchone()
        if cluster is None:
            raise UserError(f"no cluster {cluster_id} in {db}")
        rows = con.execute(
            """SELECT d.doc_id, d.url, d.host, d.published_at, d.title, r.source_doc_id, r.evidence
               FROM documents d LEFT JOIN reposts r ON r.doc_id = d.doc_id
               WHERE d.cluster_id = ? ORDER BY d.published_at NULLS LAST, d.doc_id""",
            [cluster_id],
        ).fetchall()
    original, attributed, size, confidence, reason = cluster
    lines = [f"cluster {cluster_id}: {size} page(s)"]
    if original is not None:
        lines.append(f"original: doc {original} (confidence {confidence:.2f}) - {reason}")
    else:
        lines.append(f"original: not in the database{f'; credited source: {attributed}' if attributed else ''} - {reason}")
    lines.append("")
    for doc_id, url, host, published, title, source, evidence in rows:
        role = "ORIGINAL" if doc_id == original else (f"copy of doc {source}" if source is not None else "root")
        lines.append(f"{_fmt_time(published):16}  {host or '-':28}  doc {doc_id:<6} {role}")
        lines.append(f"{'':16}  {url}")
        if title:
            lines.append(f"{'':16}  {title[:90]}")
        if evidence:
            lines.append(f"{'':16}  why: {evidence}")
    return "\n".join(lines)


def explain_url(db: str, url: str) -> str:
    with Store(db, lock_wait_s=10).connect(read_only=True) as con:
        doc = con.execute(
            "SELECT doc_id, cluster_id, host, published_at, n_shingles, title FROM documents WHERE url = ? OR url = ?",
            [url, url.rstrip("/")],
        ).fetchone()
        if doc is None:
            raise UserError(f"{url} is not in {db}")
        doc_id, cluster_id, host, published, n_shingles, title = doc
        cluster = con.execute(
            "SELECT original_doc_id, attributed_source, size, confidence, reason FROM clusters WHERE cluster_id = ?", [cluster_id]
        ).fetchone()
        repost = con.execute(
            """SELECT r.source_doc_id, s.url, r.jaccard, r.containment, r.evidence
               FROM reposts r JOIN documents s ON s.doc_id = r.source_doc_id WHERE r.doc_id = ?""",
            [doc_id],
        ).fetchone()
        original_url = (
            con.execute("SELECT url FROM documents WHERE doc_id = ?", [cluster[0]]).fetchone()[0]
            if cluster[0] is not None
            else None
        )
        markers = con.execute(
            "SELECT kind, rule, position, text FROM markers WHERE doc_id = ? ORDER BY position", [doc_id]
        ).fetchall()
        attributions = con.execute(
            "SELECT kind, strength, source_name, source_url FROM attributions WHERE doc_id = ?", [doc_id]
        ).fetchall()
        pairs = con.execute(
            """SELECT CASE WHEN doc_a = ? THEN doc_b ELSE doc_a END, jaccard,
                      CASE WHEN doc_a = ? THEN a_in_b ELSE b_in_a END,
                      CASE WHEN doc_a = ? THEN b_in_a ELSE a_in_b END
               FROM similar_pairs WHERE doc_a = ? OR doc_b = ? ORDER BY jaccard DESC LIMIT 10""",
            [doc_id] * 5,
        ).fetchall()
    original, attributed, size, confidence, reason = cluster
    lines = [f"{url}", f"  doc {doc_id} on {host}, {_fmt_time(published)}, {n_shingles} shingles: {title or ''}"]
    lines.append(f"cluster {cluster_id} ({size} pages)")
    if original == doc_id:
        lines.append(f"  this page is the original (confidence {confidence:.2f}): {reason}")
    elif original is not None:
        lines.append(f"  original: {original_url} (confidence {confidence:.2f}): {reason}")
    else:
        lines.append(f"  original: not in the database{f'; credited: {attributed}' if attributed else ''}: {reason}")
    if repost:
        lines.append(f"copied from: {repost[1]}  (jaccard {repost[2]:.2f}, {repost[3]:.0%} of this page is in it): {repost[4]}")
    lines.append(f"markers removed ({len(markers)}):" if markers else "markers removed: none")
    for kind, rule, position, text in markers:
        lines.append(f"  [{kind}] {rule} at paragraph {position}: {text[:160]}")
    lines.append(f"attributions ({len(attributions)}):" if attributions else "attributions: none")
    for kind, strength, name, source_url in attributions:
        lines.append(f"  [{kind}, {strength}] {name or ''} {source_url or ''}".rstrip())
    if pairs:
        lines.append("similar pages (jaccard, share of this page in it, share of it in this page):")
        for other, jaccard, mine_in_other, other_in_mine in pairs:
            lines.append(f"  doc {other}: {jaccard:.2f}, {mine_in_other:.0%}, {other_in_mine:.0%}")
    return "\n".join(lines)
