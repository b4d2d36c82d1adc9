-- The public SQL interface (see README "Tables"). Names are a contract.
CREATE TABLE meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);

CREATE TABLE runs (
    run_id BIGINT PRIMARY KEY,
    flow_run_id VARCHAR,
    kind VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    params JSON,
    stats JSON
);

CREATE TABLE documents (
    doc_id BIGINT PRIMARY KEY,
    url VARCHAR NOT NULL UNIQUE,
    final_url VARCHAR,
    canonical_url VARCHAR,
    og_url VARCHAR,
    host VARCHAR,
    site_name VARCHAR,
    title VARCHAR,
    author VARCHAR,
    published_at TIMESTAMP,
    fetched_at TIMESTAMP,
    lang VARCHAR,
    text VARCHAR,
    body VARCHAR,
    n_shingles INTEGER NOT NULL,
    minhash BLOB NOT NULL,
    marks_copy BOOLEAN NOT NULL,
    cluster_id BIGINT NOT NULL,
    run_id BIGINT NOT NULL,
    source VARCHAR
);

CREATE TABLE clusters (
    cluster_id BIGINT PRIMARY KEY,
    original_doc_id BIGINT,
    attributed_source VARCHAR,
    size INTEGER NOT NULL,
    confidence DOUBLE NOT NULL,
    reason VARCHAR NOT NULL,
    first_published_at TIMESTAMP,
    created_run BIGINT NOT NULL,
    updated_run BIGINT NOT NULL
);

CREATE TABLE reposts (
    doc_id BIGINT PRIMARY KEY,
    source_doc_id BIGINT NOT NULL,
    cluster_id BIGINT NOT NULL,
    jaccard DOUBLE NOT NULL,
    containment DOUBLE NOT NULL,
    evidence VARCHAR NOT NULL
);

-- every verified near-duplicate pair, both containment directions (doc_a < doc_b)
CREATE TABLE similar_pairs (
    doc_a BIGINT NOT NULL,
    doc_b BIGINT NOT NULL,
    jaccard DOUBLE NOT NULL,
    a_in_b DOUBLE NOT NULL,
    b_in_a DOUBLE NOT NULL,
    run_id BIGINT NOT NULL,
    PRIMARY KEY (doc_a, doc_b)
);

CREATE TABLE markers (
    doc_id BIGINT NOT NULL,
    kind VARCHAR NOT NULL,
    rule VARCHAR NOT NULL,
    text VARCHAR NOT NULL,
    position INTEGER NOT NULL,
    marks_copy BOOLEAN NOT NULL
);

CREATE TABLE attributions (
    doc_id BIGINT NOT NULL,
    kind VARCHAR NOT NULL,
    source_name VARCHAR,
    source_url VARCHAR,
    strength VARCHAR NOT NULL
);

CREATE TABLE fetches (
    run_id BIGINT NOT NULL,
    url VARCHAR NOT NULL,
    status INTEGER,
    error VARCHAR,
    fetched_at TIMESTAMP,
    bytes BIGINT,
    elapsed_ms BIGINT,
    source VARCHAR
);

CREATE TABLE cluster_events (
    run_id BIGINT NOT NULL,
    cluster_id BIGINT NOT NULL,
    kind VARCHAR NOT NULL,
    detail VARCHAR,
    other_cluster_id BIGINT,
    happened_at TIMESTAMP NOT NULL
);

CREATE INDEX documents_cluster ON documents (cluster_id);
CREATE INDEX markers_doc ON markers (doc_id);
CREATE INDEX attributions_doc ON attributions (doc_id);

CREATE VIEW repost_pairs AS
SELECT
    r.cluster_id,
    c.url AS copy_url,
    c.host AS copy_host,
    s.url AS source_url,
    s.host AS source_host,
    r.jaccard,
    r.containment,
    r.evidence,
    c.published_at - s.published_at AS lag
FROM reposts r
JOIN documents c ON c.doc_id = r.doc_id
JOIN documents s ON s.doc_id = r.source_doc_id;

CREATE VIEW host_stats AS
SELECT
    d.host,
    count(*) AS pages,
    count(r.doc_id) AS copies,
    count(k.original_doc_id) AS originals,
    median(epoch(d.published_at) - epoch(s.published_at)) / 3600.0 AS median_lag_hours
FROM documents d
LEFT JOIN reposts r ON r.doc_id = d.doc_id
LEFT JOIN documents s ON s.doc_id = r.source_doc_id
LEFT JOIN clusters k ON k.original_doc_id = d.doc_id AND k.size > 1
GROUP BY d.host;
