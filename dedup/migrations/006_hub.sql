-- A page whose text holds several stories that are not copies of each other
-- (a digest, a live blog, a topic page): it stays in the cluster of the
-- story it matches most, but is never a cluster's original or centre, and
-- no page joins a cluster through it (dedup/provenance.py, find_hubs).
-- (DuckDB alters no table that an index depends on: the cluster index is
-- made again after the column is added)
DROP INDEX documents_cluster;
ALTER TABLE documents ADD COLUMN hub BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX documents_cluster ON documents (cluster_id);
