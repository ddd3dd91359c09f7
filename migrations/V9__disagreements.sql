-- V9: the pins on which the peers of a cluster disagree now are kept as each complete snapshot is
-- committed (disagreements), so `ledger drift` reads those and the pins that changed within the
-- rounds it counts, instead of every interval of every peer. The rule is one view
-- (disagreeing_pins) that the commit reads for the pins it changed, and this migration reads once.

-- A pin on which the peers of a cluster (series.cluster) disagree in their latest complete
-- snapshots: those series with a complete snapshot do not all hold the same version of it (absent
-- counts as a version), and at least one holds it. Read with a filter on cid_id, it reads only
-- those pins' open intervals.
CREATE VIEW disagreeing_pins AS
SELECT c.cluster, x.id AS cid_id
FROM (SELECT DISTINCT cluster FROM series) c, cids x
WHERE (SELECT count(*) > 0
              AND (count(*) <> (SELECT count(*) FROM series t WHERE t.cluster = c.cluster
                                  AND EXISTS (SELECT 1 FROM snapshots s
                                              WHERE s.series_id = t.id AND s.state = 'complete'))
                   OR min(o.digest) <> max(o.digest))
       FROM observations o JOIN series se ON se.id = o.series_id
       WHERE o.cid_id = x.id AND o.last_snapshot IS NULL AND se.cluster = c.cluster);

-- disagreeing_pins as of the latest commit: the commit of a complete snapshot of a series of the
-- cluster re-reads it for the pins whose interval the snapshot opened or closed (for every pin,
-- when it is the series' first complete snapshot, since the peers compared then change).
CREATE TABLE disagreements (
    cluster TEXT NOT NULL,
    cid_id INTEGER NOT NULL REFERENCES cids (id),
    PRIMARY KEY (cluster, cid_id)
) STRICT, WITHOUT ROWID;

INSERT INTO disagreements (cluster, cid_id) SELECT cluster, cid_id FROM disagreeing_pins;
