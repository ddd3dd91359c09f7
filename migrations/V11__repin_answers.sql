-- V11: a re-pin is written twice and never updated. Its request (the intent, committed before it is
-- sent) goes in repin_requests; what the cluster answered, the pin as read back and the outcome go,
-- once known, in a row of their own in repin_answers. Settling a re-pin was an UPDATE that grew each
-- row by the cluster's answer and moved two index entries, about a quarter of the CPU of a tag's
-- pass; it is now an INSERT at the end of a table. A request with no answer yet is listed in
-- repins_unanswered (the next run reads those pins to settle them). The view `repins` keeps V2's
-- columns, with status 'pending' where there is no answer, so every reader reads it as before.

CREATE TABLE repin_requests (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    pass INTEGER NOT NULL,
    cid_id INTEGER NOT NULL REFERENCES cids (id),
    before_digest BLOB,                -- the pin as read just before: pin_versions (cid_id, digest)
    path TEXT NOT NULL,                -- POST path, e.g. /pins/<cid> or /pins/ipfs/<cid>
    query TEXT NOT NULL,               -- exactly the query sent; never credentials
    intended TEXT NOT NULL,            -- JSON: the fields the re-pin keeps or sets
    requested_at TEXT NOT NULL,
    FOREIGN KEY (cid_id, before_digest) REFERENCES pin_versions (cid_id, digest)
) STRICT;
CREATE INDEX repin_requests_cid ON repin_requests (cid_id);

CREATE TABLE repin_answers (
    repin_id INTEGER PRIMARY KEY REFERENCES repin_requests (id),
    cid_id INTEGER NOT NULL,           -- the request's, so the pin version read back can be named
    status TEXT NOT NULL CHECK (status IN ('sent', 'failed', 'refused')),
    http_status INTEGER,
    response TEXT,
    error TEXT,
    after_digest BLOB,                 -- the pin as read back: pin_versions (cid_id, digest)
    verified_at TEXT,
    outcome TEXT CHECK (outcome IN ('applied', 'mismatch', 'not-applied', 'refused', 'failed')),
    FOREIGN KEY (cid_id, after_digest) REFERENCES pin_versions (cid_id, digest)
) STRICT;
-- The re-pin that made a loss is found from this index (loss_attribution).
CREATE INDEX repin_answers_cid ON repin_answers (cid_id, status, after_digest);

CREATE TABLE repins_unanswered (
    repin_id INTEGER PRIMARY KEY REFERENCES repin_requests (id)
) STRICT;

INSERT INTO repin_requests (id, run_id, pass, cid_id, before_digest, path, query, intended, requested_at)
SELECT id, run_id, pass, cid_id, before_digest, path, query, intended, requested_at FROM repins ORDER BY id;
INSERT INTO repin_answers (repin_id, cid_id, status, http_status, response, error, after_digest,
                           verified_at, outcome)
SELECT id, cid_id, status, http_status, response, error, after_digest, verified_at, outcome
FROM repins WHERE status <> 'pending' ORDER BY id;
INSERT INTO repins_unanswered (repin_id) SELECT id FROM repins WHERE status = 'pending' ORDER BY id;

DROP VIEW lost_metadata;
DROP VIEW loss_attribution;
DROP INDEX repins_pending;
DROP INDEX repins_cid;
DROP TABLE repins;

CREATE VIEW repins AS
SELECT q.id, q.run_id, q.pass, q.cid_id, q.before_digest, q.path, q.query, q.intended, q.requested_at,
       coalesce(a.status, 'pending') AS status, a.http_status, a.response, a.error, a.after_digest,
       a.verified_at, a.outcome
FROM repin_requests q
LEFT JOIN repin_answers a ON a.repin_id = q.id;

-- V8's, the re-pin looked up in repin_answers_cid: the newest one sent whose recorded answer turned
-- the one version into the other, or else the newest sent between the two snapshots and never read
-- back.
CREATE VIEW loss_attribution AS
SELECT s.loss_id, s.first_lacking, s.series_id, s.last_had, r.id AS repin_id,
       CASE
           WHEN l.after_digest IS NULL THEN 'unpinned'
           WHEN r.id IS NOT NULL THEN 'ours'
           WHEN l.timestamp_after IS NOT l.timestamp_before THEN 'outside'
           ELSE 'cluster'
       END AS attribution,
       l.timestamp_before, l.timestamp_after, r.run_id, r.pass, r.query
FROM loss_sightings s
JOIN losses l ON l.id = s.loss_id
JOIN snapshots s1 ON s1.id = s.last_had
JOIN snapshots s2 ON s2.id = s.first_lacking
LEFT JOIN repin_requests r ON l.after_digest IS NOT NULL AND r.id = coalesce(
    (SELECT max(a.repin_id) FROM repin_answers a JOIN repin_requests q ON q.id = a.repin_id
      WHERE a.cid_id = l.cid_id AND a.status = 'sent' AND a.after_digest = l.after_digest
        AND q.before_digest = l.before_digest),
    (SELECT max(a.repin_id) FROM repin_answers a JOIN repin_requests q ON q.id = a.repin_id
      WHERE a.cid_id = l.cid_id AND a.status = 'sent' AND a.after_digest IS NULL
        AND q.requested_at >= s1.started_at AND q.requested_at <= s2.finished_at));

-- V8's, unchanged.
CREATE VIEW lost_metadata AS
SELECT x.cid, se.cluster, se.peer, a.last_had,
       s1.started_at AS last_had_at, a.first_lacking, s2.started_at AS first_lacking_at,
       json_extract(f.value, '$[0]') AS field, json_extract(f.value, '$[1]') AS before_value,
       json_extract(f.value, '$[2]') AS after_value, a.attribution,
       a.repin_id, a.run_id, a.pass, a.query, a.timestamp_before, a.timestamp_after,
       lower(hex(l.before_digest)) AS before_digest, lower(hex(l.after_digest)) AS after_digest
FROM loss_attribution a
JOIN losses l ON l.id = a.loss_id
JOIN json_each(l.fields) f
JOIN cids x ON x.id = l.cid_id
JOIN series se ON se.id = a.series_id
JOIN snapshots s1 ON s1.id = a.last_had
JOIN snapshots s2 ON s2.id = a.first_lacking;
