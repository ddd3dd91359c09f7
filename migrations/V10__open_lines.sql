-- V10: a snapshot reads the open intervals of its series, with the hash of the line each was served
-- as, from one index alone (observations_open now holds those columns), and no longer looks up each
-- interval's version for its owner: the owners of the pins served again as before are the previous
-- complete snapshot's (snapshot_owners, V7) less those of the intervals not served so.
DROP INDEX observations_open;
CREATE INDEX observations_open ON observations (series_id, last_snapshot, cid_id, first_snapshot, line_hash)
    WHERE last_snapshot IS NULL;
