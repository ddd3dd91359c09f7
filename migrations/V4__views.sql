-- V4: SQL views for people who open the ledger with sqlite3 or Datasette, and that ledger's own
-- post-incident commands (lost, restore, owners) read. Views only: no stored data changes.

-- Every interval in which a version of a pin was seen on a peer, with the version's fields.
CREATE VIEW pin_history AS
SELECT c.cid, se.cluster, se.peer,
       o.first_snapshot, f.started_at AS first_seen_at,
       o.last_snapshot, l.started_at AS last_seen_at,
       v.name, v.metadata, v.org, v.allocations, v.replication_min, v.replication_max, v.mode,
       v.expire_at, v.origins, v.cluster_timestamp, lower(hex(o.digest)) AS digest
FROM observations o
JOIN cids c ON c.id = o.cid_id
JOIN series se ON se.id = o.series_id
JOIN pin_versions v ON v.cid_id = o.cid_id AND v.digest = o.digest
JOIN snapshots f ON f.id = o.first_snapshot
LEFT JOIN snapshots l ON l.id = o.last_snapshot;

-- Closed intervals by series and the snapshot they were last seen in, and snapshots by the complete
-- snapshot before them: how a change is found from the snapshot that saw it.
CREATE INDEX observations_closed ON observations (series_id, last_snapshot) WHERE last_snapshot IS NOT NULL;
CREATE INDEX snapshots_previous ON snapshots (previous_id);

-- Every change of a pin on a peer between two consecutive complete snapshots of that peer: the version
-- last seen (in last_had) and what the next complete snapshot (first_lacking) saw instead, NULL when
-- it did not see the pin at all (unpinned). Incomplete snapshots never open or close an interval, so
-- they are never evidence here.
CREATE VIEW pin_changes AS
SELECT o.cid_id, o.series_id, s.previous_id AS last_had, s.id AS first_lacking,
       o.digest AS before_digest, n.digest AS after_digest
FROM snapshots s
JOIN observations o ON o.series_id = s.series_id AND o.last_snapshot = s.previous_id
LEFT JOIN observations n ON n.cid_id = o.cid_id AND n.series_id = s.series_id AND n.first_snapshot = s.id
WHERE s.state = 'complete';

-- One row per value that a pin had and then lost or saw changed between two consecutive complete
-- snapshots of a peer: a metadata key (field 'metadata.KEY'), the name, the allocations, the
-- replication factors or the expiry. Added values are not losses, nor are values that were at their
-- empty default before (an empty metadata value, no name, no allocations, no expiry, replication -1:
-- what a re-pin without options falls back to). `after_value` is NULL when the value is gone (an
-- empty value counts as gone).
-- `attribution`: 'ours' (a re-pin ledger sent turned the one version into the other, or one whose
-- result was never read back was sent between the two snapshots; `repin_id` names it), 'outside' (the
-- pin's cluster timestamp moved: someone re-pinned it), 'cluster' (it changed with the same
-- timestamp, e.g. a re-allocation) or 'unpinned'.
-- Changes are read through `ch` once per kind of field, so a filter on first_lacking reaches the
-- snapshots table; attribution is worked out only for the values that were lost.
CREATE VIEW lost_metadata AS
WITH ch AS NOT MATERIALIZED (
    SELECT pc.cid_id, pc.series_id, pc.last_had, pc.first_lacking, pc.before_digest, pc.after_digest,
           b.name AS b_name, b.metadata AS b_metadata, b.allocations AS b_allocations,
           b.replication_min AS b_rmin, b.replication_max AS b_rmax, b.expire_at AS b_expire,
           b.cluster_timestamp AS b_ts,
           a.name AS a_name, a.metadata AS a_metadata, a.allocations AS a_allocations,
           a.replication_min AS a_rmin, a.replication_max AS a_rmax, a.expire_at AS a_expire,
           a.cluster_timestamp AS a_ts
    FROM pin_changes pc
    JOIN pin_versions b ON b.cid_id = pc.cid_id AND b.digest = pc.before_digest
    LEFT JOIN pin_versions a ON a.cid_id = pc.cid_id AND a.digest = pc.after_digest
),
fields AS (
    SELECT ch.*, 'metadata.' || j.key AS field, j.value AS before_value,
           (SELECT nullif(v.value, '') FROM json_each(ch.a_metadata) v WHERE v.key = j.key) AS after_value
    FROM ch, json_each(ch.b_metadata) j
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
),
lost AS (
    SELECT f.*,
           CASE WHEN f.after_digest IS NOT NULL THEN coalesce(
               (SELECT max(r.id) FROM repins r
                 WHERE r.cid_id = f.cid_id AND r.before_digest = f.before_digest
                   AND r.after_digest = f.after_digest AND r.status = 'sent'),
               (SELECT max(r.id) FROM repins r
                 JOIN snapshots s1 ON s1.id = f.last_had JOIN snapshots s2 ON s2.id = f.first_lacking
                 WHERE r.cid_id = f.cid_id AND r.status = 'sent' AND r.after_digest IS NULL
                   AND r.requested_at >= s1.started_at AND r.requested_at <= s2.finished_at)
           ) END AS repin_id
    FROM fields f
    WHERE f.before_value IS NOT NULL AND f.before_value <> '' AND f.after_value IS NOT f.before_value
)
SELECT x.cid, se.cluster, se.peer, l.last_had,
       s1.started_at AS last_had_at, l.first_lacking, s2.started_at AS first_lacking_at,
       l.field, l.before_value, l.after_value,
       CASE
           WHEN l.after_digest IS NULL THEN 'unpinned'
           WHEN l.repin_id IS NOT NULL THEN 'ours'
           WHEN l.a_ts IS NOT l.b_ts THEN 'outside'
           ELSE 'cluster'
       END AS attribution,
       l.repin_id, r.run_id, r.pass, r.query,
       l.b_ts AS timestamp_before, l.a_ts AS timestamp_after,
       lower(hex(l.before_digest)) AS before_digest, lower(hex(l.after_digest)) AS after_digest
FROM lost l
JOIN cids x ON x.id = l.cid_id
JOIN series se ON se.id = l.series_id
JOIN snapshots s1 ON s1.id = l.last_had
JOIN snapshots s2 ON s2.id = l.first_lacking
LEFT JOIN repins r ON r.id = l.repin_id;

-- Per peer, the pins of its latest complete snapshot by owner (`org` NULL: unowned).
CREATE VIEW owners AS
SELECT se.cluster, se.peer,
       (SELECT max(s.id) FROM snapshots s WHERE s.series_id = se.id AND s.state = 'complete') AS snapshot_id,
       v.org, count(*) AS pins
FROM observations o
JOIN series se ON se.id = o.series_id
JOIN pin_versions v ON v.cid_id = o.cid_id AND v.digest = o.digest
WHERE o.last_snapshot IS NULL
GROUP BY se.id, v.org;

-- Pins whose owner changed between two consecutive complete snapshots of a peer (unpinning is not an
-- owner change).
CREATE VIEW org_changes AS
SELECT x.cid, se.cluster, se.peer, pc.last_had, pc.first_lacking AS changed_in,
       s.started_at AS changed_at, b.org AS from_org, a.org AS to_org
FROM pin_changes pc
JOIN cids x ON x.id = pc.cid_id
JOIN series se ON se.id = pc.series_id
JOIN snapshots s ON s.id = pc.first_lacking
JOIN pin_versions b ON b.cid_id = pc.cid_id AND b.digest = pc.before_digest
JOIN pin_versions a ON a.cid_id = pc.cid_id AND a.digest = pc.after_digest
WHERE a.org IS NOT b.org;

-- The convergence samples of every tag run: tagged targets per peer, seconds after the run started.
CREATE VIEW convergence AS
SELECT p.run_id AS run, r.org, p.pass, p.peer, p.at, p.seconds, p.targets, p.tagged,
       CASE WHEN p.targets > 0 THEN round(100.0 * p.tagged / p.targets, 2) ELSE 100.0 END AS percent
FROM probes p
JOIN runs r ON r.id = p.run_id;
