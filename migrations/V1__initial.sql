-- V1: the first schema. A pin is stored once per distinct stored form (pin_versions) and observed over a
-- peer's complete snapshots as intervals (observations), so the database grows with changes, not with
-- pins × passes. Incomplete snapshots keep what they read in partial_observations and never open or
-- close an interval: a cut stream is never evidence that a pin vanished.

-- One (cluster, peer) pair whose pin set is snapshotted: the peer's own replica.
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    cluster TEXT NOT NULL,
    peer TEXT NOT NULL,
    UNIQUE (cluster, peer)
) STRICT;

CREATE TABLE cids (
    id INTEGER PRIMARY KEY,
    cid TEXT NOT NULL UNIQUE
) STRICT;

-- One row per distinct stored form of a pin. Times are UTC RFC 3339; lists and maps canonical JSON.
-- A version is named by (cid_id, digest): no lookup is needed to know whether it is stored.
CREATE TABLE pin_versions (
    cid_id INTEGER NOT NULL REFERENCES cids (id),
    digest BLOB NOT NULL,              -- xxh3-128 of the canonical form
    name TEXT NOT NULL,
    metadata TEXT,                     -- JSON object, keys sorted; NULL when empty
    org TEXT,                          -- metadata.org, for owner queries; NULL when absent
    allocations TEXT NOT NULL,         -- JSON array of peer IDs
    replication_min INTEGER NOT NULL,
    replication_max INTEGER NOT NULL,
    mode TEXT NOT NULL,                -- recursive | direct
    max_depth INTEGER NOT NULL,
    expire_at TEXT,                    -- NULL: never expires
    origins TEXT NOT NULL,             -- JSON array of multiaddrs
    type TEXT NOT NULL,
    shard_size INTEGER NOT NULL,
    reference TEXT,
    pin_update TEXT,
    cluster_timestamp TEXT,            -- the pin's `timestamp`: when it was last (re)pinned
    PRIMARY KEY (cid_id, digest)
) STRICT, WITHOUT ROWID;

CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL REFERENCES series (id),
    peer_url TEXT NOT NULL,            -- never holds credentials
    run_id INTEGER,
    pass INTEGER,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    state TEXT NOT NULL CHECK (state IN ('running', 'complete', 'incomplete')),
    pins_seen INTEGER NOT NULL DEFAULT 0,
    previous_id INTEGER REFERENCES snapshots (id), -- the series' previous complete snapshot
    new_pins INTEGER,
    changed_pins INTEGER,
    vanished_pins INTEGER,
    error TEXT
) STRICT;
CREATE INDEX snapshots_series ON snapshots (series_id, state, id);

-- Version (cid_id, digest) of a pin was seen in every complete snapshot of the series from first_snapshot
-- to last_snapshot (NULL: up to now). Keyed by CID so a pin's history is one range of the table.
CREATE TABLE observations (
    cid_id INTEGER NOT NULL REFERENCES cids (id),
    series_id INTEGER NOT NULL REFERENCES series (id),
    first_snapshot INTEGER NOT NULL REFERENCES snapshots (id),
    last_snapshot INTEGER REFERENCES snapshots (id),
    digest BLOB NOT NULL,              -- the version: pin_versions (cid_id, digest)
    line_hash BLOB NOT NULL,           -- xxh3-128 of the line as served: an unchanged line skips parsing
    PRIMARY KEY (cid_id, series_id, first_snapshot),
    FOREIGN KEY (cid_id, digest) REFERENCES pin_versions (cid_id, digest)
) STRICT, WITHOUT ROWID;
CREATE INDEX observations_open ON observations (series_id) WHERE last_snapshot IS NULL;

-- What an incomplete snapshot read before it broke.
CREATE TABLE partial_observations (
    snapshot_id INTEGER NOT NULL REFERENCES snapshots (id),
    cid_id INTEGER NOT NULL REFERENCES cids (id),
    digest BLOB NOT NULL,
    PRIMARY KEY (snapshot_id, cid_id),
    FOREIGN KEY (cid_id, digest) REFERENCES pin_versions (cid_id, digest)
) STRICT, WITHOUT ROWID;
