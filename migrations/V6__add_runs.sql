-- V6: `ledger add` runs. A run may now be of kind 'add', and each add run records what it uploaded:
-- every file and directory the cluster's answer named, with its local path, its size and its CID,
-- and, for each pin the add made, the pin as read back from every peer.
--
-- SQLite cannot change a CHECK constraint in place, so `runs` is rebuilt as SQLite documents it
-- (https://www.sqlite.org/lang_altertable.html, "other kinds of table schema changes"): the ledger
-- runs its migrations with foreign keys off, the one view over `runs` is dropped and made again, and
-- every row is copied as it was (same ids, so every reference to a run still holds).

DROP VIEW convergence;

CREATE TABLE runs_v6 (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('tag', 'repin', 'restore', 'add')),
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
INSERT INTO runs_v6 (id, kind, cluster, peer, peer_url, org, params, dry_run, started_at, finished_at, state)
SELECT id, kind, cluster, peer, peer_url, org, params, dry_run, started_at, finished_at, state FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v6 RENAME TO runs;

-- The convergence samples of every tag run: tagged targets per peer, seconds after the run started.
CREATE VIEW convergence AS
SELECT p.run_id AS run, r.org, p.pass, p.peer, p.at, p.seconds, p.targets, p.tagged,
       CASE WHEN p.targets > 0 THEN round(100.0 * p.tagged / p.targets, 2) ELSE 100.0 END AS percent
FROM probes p
JOIN runs r ON r.id = p.run_id;

-- Every entry an add run's uploads got back from the cluster, in the order of the answers: the
-- answer's `name` (the path inside the upload, '' for the --wrap directory), the local path it came
-- from, what it is, its bytes on disk (files), the DAG's cumulative size as the cluster counts it,
-- and its CID. `pinned` marks the root each upload pinned.
CREATE TABLE added (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    seq INTEGER NOT NULL,
    upload INTEGER NOT NULL,           -- which upload of the run (one per path, one with --wrap)
    name TEXT NOT NULL,
    path TEXT,                         -- the local path; NULL for the --wrap directory
    kind TEXT NOT NULL CHECK (kind IN ('file', 'directory', 'symlink')),
    bytes INTEGER,                     -- a file's length; NULL for the others
    size INTEGER NOT NULL,
    cid_id INTEGER NOT NULL REFERENCES cids (id),
    pinned INTEGER NOT NULL CHECK (pinned IN (0, 1)),
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;
CREATE INDEX added_cid ON added (cid_id);

-- Each pin an add made, as each peer showed it after the add: `digest` is the pin as read back
-- (pin_versions), NULL when the peer did not show the pin as the write peer does within --timeout,
-- or could not be read (`error`). `peer` is the peer's ID, or its URL when it did not answer /id.
CREATE TABLE added_reads (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    cid_id INTEGER NOT NULL REFERENCES cids (id),
    peer TEXT NOT NULL,
    read_at TEXT NOT NULL,
    digest BLOB,
    error TEXT,
    PRIMARY KEY (run_id, cid_id, peer),
    FOREIGN KEY (cid_id, digest) REFERENCES pin_versions (cid_id, digest)
) STRICT, WITHOUT ROWID;

-- What each add run pinned, per peer: the pin's name, org and replication as that peer showed it
-- (NULL columns: the peer did not show it).
CREATE VIEW added_pins AS
SELECT a.run_id AS run, r.started_at, a.path, a.name AS entry, x.cid, a.size, rd.peer, rd.read_at,
       v.name, v.org, v.replication_min, v.replication_max, v.expire_at, rd.error
FROM added a
JOIN runs r ON r.id = a.run_id
JOIN cids x ON x.id = a.cid_id
JOIN added_reads rd ON rd.run_id = a.run_id AND rd.cid_id = a.cid_id
LEFT JOIN pin_versions v ON v.cid_id = rd.cid_id AND v.digest = rd.digest
WHERE a.pinned = 1;
