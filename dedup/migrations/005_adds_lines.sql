-- A page that carries a line (a marker other than a dateline, learned or by
-- a rule) that none of the pages of other sites it is linked to carries: the
-- behaviour of an aggregator, whatever the language of what it adds. host_stats gives each
-- host the share of its pages that are copies by their markers or by this
-- behaviour (aggregator_score).
-- (DuckDB alters no table that an index depends on: the cluster index is
-- made again after the column is added)
DROP INDEX documents_cluster;
ALTER TABLE documents ADD COLUMN adds_lines BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX documents_cluster ON documents (cluster_id);

DROP VIEW host_stats;
CREATE VIEW host_stats AS
SELECT
    d.host,
    count(*) AS pages,
    count(r.doc_id) AS copies,
    count(k.original_doc_id) AS originals,
    median(epoch(d.published_at) - epoch(s.published_at)) / 3600.0 AS median_lag_hours,
    count(*) FILTER (d.marks_copy OR d.adds_lines) / count(*) AS aggregator_score
FROM documents d
LEFT JOIN reposts r ON r.doc_id = d.doc_id
LEFT JOIN documents s ON s.doc_id = r.source_doc_id
LEFT JOIN clusters k ON k.original_doc_id = d.doc_id AND k.size > 1
GROUP BY d.host;
