-- V5: each peer's own tracker status of its pins over time (`ledger snapshot --status`, read by
-- `ledger drift --status`). A snapshot may read the peer's `GET /pins?local=true` beside its pin set:
-- that reading is a row of status_readings, and the statuses are stored as intervals over the
-- complete readings of the peer's series, as pin versions are over its complete snapshots. A new
-- status opens an interval, the same status read again costs nothing, a change or a pin no longer
-- listed closes it. A snapshot without --status has no reading and touches no interval; an
-- incomplete reading (a cut stream) never opens or closes one.

-- One reading of a peer's statuses, taken with (after) snapshot `snapshot_id`. Readings of a series
-- are ordered by id.
CREATE TABLE status_readings (
    id INTEGER PRIMARY KEY,
    snapshot_id INTEGER NOT NULL UNIQUE REFERENCES snapshots (id),
    series_id INTEGER NOT NULL REFERENCES series (id),
    started_at TEXT NOT NULL,
    finished_at TEXT,
    state TEXT NOT NULL CHECK (state IN ('running', 'complete', 'incomplete')),
    entries INTEGER NOT NULL DEFAULT 0,  -- status lines read
    previous_id INTEGER REFERENCES status_readings (id), -- the series' previous complete reading
    opened INTEGER,                      -- intervals opened (new or changed statuses)
    closed INTEGER,                      -- intervals closed (changed statuses, pins no longer listed)
    error TEXT
) STRICT;
CREATE INDEX status_readings_series ON status_readings (series_id, state, id);

-- Pin `cid_id` had `status` (with `error`, the tracker's text, '' when none) on the peer of the
-- series in every complete reading from first_reading to last_reading (NULL: up to the series'
-- latest complete reading). `status_at` and `attempt_count` are the tracker's `timestamp` and
-- `attempt_count` as the first reading of the interval saw them.
CREATE TABLE pin_statuses (
    cid_id INTEGER NOT NULL REFERENCES cids (id),
    series_id INTEGER NOT NULL REFERENCES series (id),
    first_reading INTEGER NOT NULL REFERENCES status_readings (id),
    last_reading INTEGER REFERENCES status_readings (id),
    status TEXT NOT NULL,
    error TEXT NOT NULL,
    status_at TEXT,
    attempt_count INTEGER NOT NULL,
    PRIMARY KEY (cid_id, series_id, first_reading)
) STRICT, WITHOUT ROWID;
CREATE INDEX pin_statuses_open ON pin_statuses (series_id, status) WHERE last_reading IS NULL;

-- Every status interval with its CID, peer and times: `since` is when the first reading that saw
-- the status started, `last_seen` when the last one that still saw it started (for an open
-- interval, the series' latest complete reading).
CREATE VIEW status_history AS
SELECT c.cid, se.cluster, se.peer, ps.status, ps.error, ps.status_at, ps.attempt_count,
       ps.first_reading, f.snapshot_id AS first_snapshot, f.started_at AS since,
       coalesce(ps.last_reading, lr.id) AS last_reading, coalesce(l.started_at, lr.started_at) AS last_seen,
       ps.last_reading IS NULL AS current
FROM pin_statuses ps
JOIN cids c ON c.id = ps.cid_id
JOIN series se ON se.id = ps.series_id
JOIN status_readings f ON f.id = ps.first_reading
LEFT JOIN status_readings l ON l.id = ps.last_reading
LEFT JOIN status_readings lr ON ps.last_reading IS NULL AND lr.id = (
    SELECT max(r.id) FROM status_readings r WHERE r.series_id = ps.series_id AND r.state = 'complete');
