-- Learned host boilerplate (dedup/boilerplate.py): for each edge paragraph a
-- host's pages carried, up to a few pages with different stories that carried
-- it. A line with enough of them is that host's furniture (rule `learned`).
CREATE TABLE host_lines (
    host VARCHAR NOT NULL,
    line_key BIGINT NOT NULL,
    text VARCHAR NOT NULL,
    story_doc_ids BIGINT[] NOT NULL,
    PRIMARY KEY (host, line_key)
);
