-- V2: runs of ledger's writing commands and the record of every re-pin they send. A re-pin is written
-- as an intent (status 'pending') and committed before the request goes out, then completed with the
-- response and the pin as read back, so a crash between the two leaves a row that the next run
-- reconciles by reading the pin.

CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('tag', 'repin', 'restore')),
    cluster TEXT NOT NULL,
    peer TEXT NOT NULL,                -- the write peer's ID
    peer_url TEXT NOT NULL,            -- never holds credentials
    org TEXT,
    params TEXT NOT NULL,              -- the command's options as JSON; never credentials
    dry_run INTEGER NOT NULL DEFAULT 0 CHECK (dry_run IN (0, 1)),
    started_at TEXT NOT NULL,
    finished_at TEXT,
    state TEXT NOT NULL CHECK (state IN ('running', 'done', 'attention', 'failed', 'interrupted'))
) STRICT;

CREATE TABLE passes (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    pass INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    targets INTEGER NOT NULL DEFAULT 0,
    attempted INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, pass)
) STRICT, WITHOUT ROWID;

CREATE TABLE repins (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    pass INTEGER NOT NULL,
    cid_id INTEGER NOT NULL REFERENCES cids (id),
    before_digest BLOB,                -- the pin as read just before: pin_versions (cid_id, digest)
    path TEXT NOT NULL,                -- POST path, e.g. /pins/<cid> or /pins/ipfs/<cid>
    query TEXT NOT NULL,               -- exactly the query sent; never credentials
    intended TEXT NOT NULL,            -- JSON: the fields the re-pin keeps or sets
    requested_at TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'refused')),
    http_status INTEGER,
    response TEXT,
    error TEXT,
    after_digest BLOB,                 -- the pin as read back: pin_versions (cid_id, digest)
    verified_at TEXT,
    outcome TEXT CHECK (outcome IN ('applied', 'mismatch', 'not-applied', 'refused', 'failed')),
    FOREIGN KEY (cid_id, before_digest) REFERENCES pin_versions (cid_id, digest),
    FOREIGN KEY (cid_id, after_digest) REFERENCES pin_versions (cid_id, digest)
) STRICT;
CREATE INDEX repins_pending ON repins (run_id) WHERE status = 'pending';
CREATE INDEX repins_cid ON repins (cid_id);

-- Time-stamped convergence samples: how many targets a peer showed tagged, `seconds` after run start.
CREATE TABLE probes (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    pass INTEGER NOT NULL,
    peer TEXT NOT NULL,
    at TEXT NOT NULL,
    seconds REAL NOT NULL,
    tagged INTEGER NOT NULL,
    targets INTEGER NOT NULL
) STRICT;
CREATE INDEX probes_run ON probes (run_id, peer, seconds);
