-- The id of the last batch stored, which runs no longer keep: what a run
-- saves next to the database is checked against the run that stored the
-- highest doc_id instead (Store.stored_through, dedup/snapshot.py).
DELETE FROM meta WHERE key = 'last_batch.id';
