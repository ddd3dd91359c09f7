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

-- Every change of a pin on a peer between two consecutive complete snapshots of that peer: the version
-- last seen (last_had) and what the next complete snapshot (first_lacking) saw instead, NULL when it did
-- not see the pin at all (unpinned). Incomplete snapshots never open or close an interval, so they
-- never appear here as evidence.
CREATE VIEW pin_changes AS
WITH closed AS (
    SELECT o.cid_id, o.series_id, o.last_snapshot AS last_had, o.digest AS before_digest,
           (SELECT min(n.id) FROM snapshots n
             WHERE n.series_id = o.series_id AND n.state = 'complete' AND n.id > o.last_snapshot) AS first_lacking
    FROM observations o
    WHERE o.last_snapshot IS NOT NULL
)
SELECT c.cid_id, c.series_id, c.last_had, c.first_lacking, c.before_digest,
       (SELECT o2.digest FROM observations o2
         WHERE o2.cid_id = c.cid_id AND o2.series_id = c.series_id AND o2.first_snapshot = c.first_lacking) AS after_digest
FROM closed c
WHERE c.first_lacking IS NOT NULL;

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
CREATE VIEW lost_metadata AS
WITH ch AS (
    SELECT pc.*, x.cid, se.cluster, se.peer,
           b.name AS b_name, b.metadata AS b_metadata, b.allocations AS b_allocations,
           b.replication_min AS b_rmin, b.replication_max AS b_rmax, b.expire_at AS b_expire,
           b.cluster_timestamp AS b_ts,
           a.name AS a_name, a.metadata AS a_metadata, a.allocations AS a_allocations,
           a.replication_min AS a_rmin, a.replication_max AS a_rmax, a.expire_at AS a_expire,
           a.cluster_timestamp AS a_ts
    FROM pin_changes pc
    JOIN cids x ON x.id = pc.cid_id
    JOIN series se ON se.id = pc.series_id
    JOIN pin_versions b ON b.cid_id = pc.cid_id AND b.digest = pc.before_digest
    LEFT JOIN pin_versions a ON a.cid_id = pc.cid_id AND a.digest = pc.after_digest
),
fields AS (
    SELECT ch.*, 'metadata.' || j.key AS field, j.value AS before_value,
           (SELECT nullif(aj.value, '') FROM json_each(ch.a_metadata) aj WHERE aj.key = j.key) AS after_value
    FROM ch, json_each(ch.b_metadata) j
    WHERE j.value <> ''
    UNION ALL
    SELECT ch.*, 'name', b_name, nullif(a_name, '') FROM ch WHERE b_name <> ''
    UNION ALL
    SELECT ch.*, 'allocations', b_allocations, nullif(a_allocations, '[]') FROM ch WHERE b_allocations <> '[]'
    UNION ALL
    SELECT ch.*, 'replication_min', CAST(b_rmin AS TEXT), CAST(a_rmin AS TEXT) FROM ch WHERE b_rmin <> -1
    UNION ALL
    SELECT ch.*, 'replication_max', CAST(b_rmax AS TEXT), CAST(a_rmax AS TEXT) FROM ch WHERE b_rmax <> -1
    UNION ALL
    SELECT ch.*, 'expire_at', b_expire, a_expire FROM ch WHERE b_expire IS NOT NULL
),
ours AS (
    SELECT ch.cid_id, ch.series_id, ch.last_had,
           coalesce(
               (SELECT max(r.id) FROM repins r
                 WHERE r.cid_id = ch.cid_id AND r.before_digest = ch.before_digest
                   AND r.after_digest IS ch.after_digest AND r.status = 'sent'),
               (SELECT max(r.id) FROM repins r
                 JOIN snapshots s1 ON s1.id = ch.last_had JOIN snapshots s2 ON s2.id = ch.first_lacking
                 WHERE r.cid_id = ch.cid_id AND r.status = 'sent' AND r.after_digest IS NULL
                   AND r.requested_at >= s1.started_at AND r.requested_at <= s2.finished_at)
           ) AS repin_id
    FROM ch
)
SELECT f.cid, f.cluster, f.peer, f.last_had,
       s1.started_at AS last_had_at, f.first_lacking, s2.started_at AS first_lacking_at,
       f.field, f.before_value, f.after_value,
       CASE
           WHEN f.after_digest IS NULL THEN 'unpinned'
           WHEN ours.repin_id IS NOT NULL THEN 'ours'
           WHEN f.a_ts IS NOT f.b_ts THEN 'outside'
           ELSE 'cluster'
       END AS attribution,
       CASE WHEN f.after_digest IS NULL THEN NULL ELSE ours.repin_id END AS repin_id,
       r.run_id, r.pass, r.query,
       f.b_ts AS timestamp_before, f.a_ts AS timestamp_after,
       lower(hex(f.before_digest)) AS before_digest, lower(hex(f.after_digest)) AS after_digest
FROM fields f
JOIN ours ON ours.cid_id = f.cid_id AND ours.series_id = f.series_id AND ours.last_had = f.last_had
JOIN snapshots s1 ON s1.id = f.last_had
JOIN snapshots s2 ON s2.id = f.first_lacking
LEFT JOIN repins r ON r.id = ours.repin_id AND f.after_digest IS NOT NULL
WHERE f.after_value IS NOT f.before_value;

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
