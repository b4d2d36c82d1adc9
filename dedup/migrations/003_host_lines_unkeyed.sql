-- host_lines without its primary key. Nothing looks a line up through the
-- key's index (a batch's lines are found by a scan of line_key), and at a
-- million pages keeping the index of three million (host, line_key) pairs
-- was most of what storing a batch's lines cost. A (host, line_key) pair is
-- still stored once: the linker reads the stored rows of every key a batch
-- carries before it writes, and stores those it did not find as new rows
-- and the others in place of the stored ones (dedup/linker.py); the run lock
-- makes it the only writer.
ALTER TABLE host_lines RENAME TO host_lines_keyed;
CREATE TABLE host_lines (
    host VARCHAR NOT NULL,
    line_key BIGINT NOT NULL,
    text VARCHAR NOT NULL,
    story_doc_ids BIGINT[] NOT NULL
);
INSERT INTO host_lines SELECT host, line_key, text, story_doc_ids FROM host_lines_keyed;
DROP TABLE host_lines_keyed;
