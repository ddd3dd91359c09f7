-- V7: what a complete snapshot lost, how many pins each owner has in it and whose owner changed are
-- recorded when the snapshot is committed (losses, loss_fields, loss_sightings; snapshot_owners;
-- owner_changes), so that post-incident queries read them instead of re-reading every change of the
-- history. The rules of what counts as lost are those of V4's lost_metadata, kept in one view
-- (change_losses) that the snapshot commit reads for its own changes and this migration reads once
-- for the history before it. lost_metadata keeps its columns and reads the new tables. Intervals
-- opened by a snapshot are indexed too, so two snapshots of one peer are compared by what changed
-- between them.

-- Every value that a change between two consecutive complete snapshots of a peer lost: the rules of
-- V4's lost_metadata (added values are not losses, nor are values at their empty default before; an
-- empty value counts as gone). A filter on first_lacking reaches the snapshots table, so the commit
-- of a snapshot reads only its own changes.
CREATE VIEW change_losses AS
WITH ch AS NOT MATERIALIZED (
    SELECT pc.cid_id, pc.series_id, pc.last_had, pc.first_lacking, pc.before_digest, pc.after_digest,
           b.name AS b_name, b.metadata AS b_metadata, b.allocations AS b_allocations,
           b.replication_min AS b_rmin, b.replication_max AS b_rmax, b.expire_at AS b_expire,
           a.name AS a_name, a.metadata AS a_metadata, a.allocations AS a_allocations,
           a.replication_min AS a_rmin, a.replication_max AS a_rmax, a.expire_at AS a_expire
    FROM pin_changes pc
    JOIN pin_versions b ON b.cid_id = pc.cid_id AND b.digest = pc.before_digest
    LEFT JOIN pin_versions a ON a.cid_id = pc.cid_id AND a.digest = pc.after_digest
),
fields AS (
    SELECT ch.*, 'metadata.' || j.key AS field, j.value AS before_value,
           (SELECT nullif(v.value, '') FROM json_each(ch.a_metadata) v WHERE v.key = j.key) AS after_value
    FROM ch, json_each(ch.b_metadata) j
    -- (a pre-filter only: metadata that merged into the after version's leaves it as it was lost
    -- nothing; any other case is read key by key)
    WHERE ch.a_metadata IS NULL OR json_patch(ch.a_metadata, ch.b_metadata) IS NOT ch.a_metadata
    UNION ALL
    SELECT ch.*, k.field,
           CASE k.field
               WHEN 'name' THEN nullif(b_name, '')
               WHEN 'allocations' THEN nullif(b_allocations, '[]')
               WHEN 'replication_min' THEN nullif(CAST(b_rmin AS TEXT), '-1')
               WHEN 'replication_max' THEN nullif(CAST(b_rmax AS TEXT), '-1')
               ELSE b_expire
           END,
           CASE k.field
               WHEN 'name' THEN nullif(a_name, '')
               WHEN 'allocations' THEN nullif(a_allocations, '[]')
               WHEN 'replication_min' THEN CAST(a_rmin AS TEXT)
               WHEN 'replication_max' THEN CAST(a_rmax AS TEXT)
               ELSE a_expire
           END
    FROM ch, (SELECT 'name' AS field UNION ALL SELECT 'allocations' UNION ALL SELECT 'replication_min'
              UNION ALL SELECT 'replication_max' UNION ALL SELECT 'expire_at') k
    WHERE NOT (b_name IS a_name AND b_allocations IS a_allocations AND b_rmin IS a_rmin
               AND b_rmax IS a_rmax AND b_expire IS a_expire)
)
SELECT cid_id, series_id, last_had, first_lacking, before_digest, after_digest, field, before_value,
       after_value
FROM fields
WHERE before_value IS NOT NULL AND before_value <> '' AND after_value IS NOT before_value;

-- One row per change of a pin (version before → version after; after NULL: unpinned) that lost
-- values, merged over every peer that saw it: where it starts is the earliest complete snapshot
-- that lacked the values (series_id, last_had, first_lacking: that sighting).
CREATE TABLE losses (
    id INTEGER PRIMARY KEY,
    cid_id INTEGER NOT NULL REFERENCES cids (id),
    before_digest BLOB NOT NULL,
    after_digest BLOB,
    series_id INTEGER NOT NULL REFERENCES series (id),
    last_had INTEGER NOT NULL REFERENCES snapshots (id),
    first_lacking INTEGER NOT NULL REFERENCES snapshots (id),
    FOREIGN KEY (cid_id, before_digest) REFERENCES pin_versions (cid_id, digest)
) STRICT;
CREATE UNIQUE INDEX losses_change ON losses (cid_id, before_digest, coalesce(after_digest, X''));
CREATE INDEX losses_first_lacking ON losses (first_lacking);

-- The values a loss lost (the same for every peer that saw it: they follow from the two versions).
CREATE TABLE loss_fields (
    loss_id INTEGER NOT NULL REFERENCES losses (id),
    field TEXT NOT NULL,               -- metadata.KEY, name, allocations, replication_min|max, expire_at
    before_value TEXT NOT NULL,
    after_value TEXT,                  -- NULL: gone
    PRIMARY KEY (loss_id, field)
) STRICT, WITHOUT ROWID;

-- Every complete snapshot that saw a loss first: the peer's snapshot before (last_had) held the
-- version before, this one (first_lacking) the version after or no pin.
CREATE TABLE loss_sightings (
    loss_id INTEGER NOT NULL REFERENCES losses (id),
    first_lacking INTEGER NOT NULL REFERENCES snapshots (id),
    series_id INTEGER NOT NULL REFERENCES series (id),
    last_had INTEGER NOT NULL REFERENCES snapshots (id),
    PRIMARY KEY (loss_id, first_lacking)
) STRICT, WITHOUT ROWID;

-- The history before this migration (read once), merged as the snapshot commit merges it.
CREATE TEMP TABLE history_losses AS SELECT * FROM change_losses;

INSERT INTO losses (cid_id, before_digest, after_digest, series_id, last_had, first_lacking)
SELECT cid_id, before_digest, after_digest, series_id, last_had, min(first_lacking)
FROM temp.history_losses
GROUP BY cid_id, before_digest, after_digest;

INSERT INTO loss_sightings (loss_id, first_lacking, series_id, last_had)
SELECT DISTINCT l.id, c.first_lacking, c.series_id, c.last_had
FROM temp.history_losses c
JOIN losses l ON l.cid_id = c.cid_id AND l.before_digest = c.before_digest
             AND l.after_digest IS c.after_digest;

INSERT INTO loss_fields (loss_id, field, before_value, after_value)
SELECT l.id, c.field, c.before_value, c.after_value
FROM temp.history_losses c
JOIN losses l ON l.cid_id = c.cid_id AND l.before_digest = c.before_digest
             AND l.after_digest IS c.after_digest AND l.first_lacking = c.first_lacking;

DROP TABLE temp.history_losses;

-- Who made each sighting of a loss: `repin_id`, the re-pin of ledger's that made it, if any (one whose
-- recorded answer turned the one version into the other, or one whose result was never read back,
-- sent between the two snapshots); `attribution`: 'ours' (that re-pin), 'outside' (the pin's cluster
-- timestamp moved: someone re-pinned it), 'cluster' (it changed with the same timestamp, e.g. a
-- re-allocation) or 'unpinned'.
CREATE VIEW loss_attribution AS
WITH s AS NOT MATERIALIZED (
    SELECT s.loss_id, s.first_lacking, s.series_id, s.last_had, l.cid_id, l.before_digest,
           l.after_digest,
           CASE WHEN l.after_digest IS NOT NULL THEN coalesce(
               (SELECT max(r.id) FROM repins r
                 WHERE r.cid_id = l.cid_id AND r.before_digest = l.before_digest
                   AND r.after_digest = l.after_digest AND r.status = 'sent'),
               (SELECT max(r.id) FROM repins r
                 JOIN snapshots s1 ON s1.id = s.last_had JOIN snapshots s2 ON s2.id = s.first_lacking
                 WHERE r.cid_id = l.cid_id AND r.status = 'sent' AND r.after_digest IS NULL
                   AND r.requested_at >= s1.started_at AND r.requested_at <= s2.finished_at)
           ) END AS repin_id
    FROM loss_sightings s
    JOIN losses l ON l.id = s.loss_id
)
SELECT s.loss_id, s.first_lacking, s.series_id, s.last_had, s.repin_id,
       CASE
           WHEN s.after_digest IS NULL THEN 'unpinned'
           WHEN s.repin_id IS NOT NULL THEN 'ours'
           WHEN av.cluster_timestamp IS NOT bv.cluster_timestamp THEN 'outside'
           ELSE 'cluster'
       END AS attribution,
       bv.cluster_timestamp AS timestamp_before, av.cluster_timestamp AS timestamp_after
FROM s
JOIN pin_versions bv ON bv.cid_id = s.cid_id AND bv.digest = s.before_digest
LEFT JOIN pin_versions av ON av.cid_id = s.cid_id AND av.digest = s.after_digest;

-- lost_metadata as V4 defined it (one row per peer that saw a loss and value it lost), now read
-- from the recorded losses.
DROP VIEW lost_metadata;
CREATE VIEW lost_metadata AS
SELECT x.cid, se.cluster, se.peer, a.last_had,
       s1.started_at AS last_had_at, a.first_lacking, s2.started_at AS first_lacking_at,
       f.field, f.before_value, f.after_value, a.attribution,
       a.repin_id, r.run_id, r.pass, r.query, a.timestamp_before, a.timestamp_after,
       lower(hex(l.before_digest)) AS before_digest, lower(hex(l.after_digest)) AS after_digest
FROM loss_attribution a
JOIN losses l ON l.id = a.loss_id
JOIN loss_fields f ON f.loss_id = a.loss_id
JOIN cids x ON x.id = l.cid_id
JOIN series se ON se.id = a.series_id
JOIN snapshots s1 ON s1.id = a.last_had
JOIN snapshots s2 ON s2.id = a.first_lacking
LEFT JOIN repins r ON r.id = a.repin_id;

-- Pins of a complete snapshot per owner (`org` NULL: unowned), counted as the snapshot read its
-- stream and recorded as it was committed; the latest complete snapshot of each series before this
-- migration is counted from its intervals.
CREATE TABLE snapshot_owners (
    snapshot_id INTEGER NOT NULL REFERENCES snapshots (id),
    org TEXT,
    pins INTEGER NOT NULL
) STRICT;
CREATE INDEX snapshot_owners_snapshot ON snapshot_owners (snapshot_id);

INSERT INTO snapshot_owners (snapshot_id, org, pins)
SELECT snapshot_id, org, pins FROM owners WHERE snapshot_id IS NOT NULL;

-- Per peer, the pins of its latest complete snapshot by owner (`org` NULL: unowned), as V4's view,
-- now read from the recorded counts.
DROP VIEW owners;
CREATE VIEW owners AS
SELECT se.cluster, se.peer, s.id AS snapshot_id, o.org, o.pins
FROM series se
JOIN snapshots s ON s.id = (SELECT max(id) FROM snapshots WHERE series_id = se.id AND state = 'complete')
JOIN snapshot_owners o ON o.snapshot_id = s.id;

-- A pin's owner changing (`from_org` → `to_org`, '' for none: the rules of V4's org_changes), once
-- per pin and pair however many peers saw it, recorded when a complete snapshot that saw it was
-- committed: `series_id` and `changed_in` name the earliest such snapshot.
CREATE TABLE owner_changes (
    cid_id INTEGER NOT NULL REFERENCES cids (id),
    from_org TEXT NOT NULL,
    to_org TEXT NOT NULL,
    series_id INTEGER NOT NULL REFERENCES series (id),
    changed_in INTEGER NOT NULL REFERENCES snapshots (id),
    PRIMARY KEY (cid_id, from_org, to_org)
) STRICT, WITHOUT ROWID;

INSERT INTO owner_changes (cid_id, from_org, to_org, series_id, changed_in)
SELECT x.id, coalesce(o.from_org, ''), coalesce(o.to_org, ''), se.id, min(o.changed_in)
FROM org_changes o
JOIN cids x ON x.cid = o.cid
JOIN series se ON se.cluster = o.cluster AND se.peer = o.peer
GROUP BY 1, 2, 3;

-- Intervals by the snapshot that opened them: with observations_closed, what changed between two
-- complete snapshots of one peer, without reading the pins that did not.
CREATE INDEX observations_opened ON observations (series_id, first_snapshot);
