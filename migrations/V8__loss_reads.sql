-- V8: `ledger lost` reads a recorded loss from its own row and a few index lookups instead of
-- gathering it from five tables. Each loss keeps what follows from its two versions and does not
-- change: the cluster timestamps of both versions and the values it lost (`fields`, which replaces
-- the loss_fields table); and the series that saw it, in the order they first saw it
-- (`sighting_series`, kept up to date as sightings are added). Re-pins are indexed by pin, status
-- and versions, so the re-pin that made a loss is found in the index alone, and loss_attribution
-- looks it up once per sighting. The rules are V7's.

ALTER TABLE losses ADD COLUMN timestamp_before TEXT;
ALTER TABLE losses ADD COLUMN timestamp_after TEXT;
-- JSON: [[field, value before, value after or null], …] ordered by field.
ALTER TABLE losses ADD COLUMN fields TEXT NOT NULL DEFAULT '[]';
-- JSON: the ids of the series whose snapshots saw the loss, ordered by the first snapshot of each.
ALTER TABLE losses ADD COLUMN sighting_series TEXT NOT NULL DEFAULT '[]';

UPDATE losses SET
    timestamp_before = (SELECT v.cluster_timestamp FROM pin_versions v
                         WHERE v.cid_id = losses.cid_id AND v.digest = losses.before_digest),
    timestamp_after = (SELECT v.cluster_timestamp FROM pin_versions v
                        WHERE v.cid_id = losses.cid_id AND v.digest = losses.after_digest),
    fields = (SELECT json_group_array(json_array(f.field, f.before_value, f.after_value)
                                      ORDER BY f.field)
                FROM loss_fields f WHERE f.loss_id = losses.id),
    sighting_series = (SELECT json_group_array(g.series_id ORDER BY g.first)
                         FROM (SELECT series_id, min(first_lacking) AS first FROM loss_sightings
                                WHERE loss_id = losses.id GROUP BY series_id) g);

DROP VIEW lost_metadata;
DROP VIEW loss_attribution;
DROP TABLE loss_fields;

DROP INDEX repins_cid;
CREATE INDEX repins_cid ON repins (cid_id, status, after_digest, before_digest, requested_at);

-- As V7's: who made each sighting of a loss. `repin_id` (and its run_id, pass, query): the re-pin of
-- ledger's whose recorded answer turned the one version into the other, or else one whose result
-- was never read back, sent between the two snapshots; `attribution`: 'ours' (that re-pin),
-- 'outside' (the pin's cluster timestamp moved: someone re-pinned it), 'cluster' (it changed with
-- the same timestamp, e.g. a re-allocation) or 'unpinned'.
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
LEFT JOIN repins r ON l.after_digest IS NOT NULL AND r.id = coalesce(
    (SELECT max(p.id) FROM repins p
      WHERE p.cid_id = l.cid_id AND p.status = 'sent' AND p.after_digest = l.after_digest
        AND p.before_digest = l.before_digest),
    (SELECT max(p.id) FROM repins p
      WHERE p.cid_id = l.cid_id AND p.status = 'sent' AND p.after_digest IS NULL
        AND p.requested_at >= s1.started_at AND p.requested_at <= s2.finished_at));

-- V7's lost_metadata (one row per peer that saw a loss and value it lost), the values now read from
-- the loss's fields.
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
