-- Reserve, first statement, for many keys at once (ReserveBatch, and the
-- coalesced singleton Reserves): reserve_insert.sql for each item, in one
-- statement and one commit. Returns, for each item (n, its position in the
-- arrays), the inserted entry or the existing one; an item with no row was
-- inserted concurrently after this statement's snapshot and is run again.
--
-- Every token is at least the fencing epoch's floor, as in
-- reserve_insert.sql.
--
-- The items are inserted in (namespace, key) order, so that two batches
-- that share keys wait for each other instead of deadlocking. The keys of
-- one batch are distinct (the caller ensures it).
--
-- In a namespace with a stored-bytes quota, the new entries' stored bytes
-- are added to the usage, refused over the quota, as reserve_insert.sql
-- does: one refused namespace fails the whole statement, and the caller
-- runs the items alone.
--
-- $1 namespaces, $2 keys, $3 owners, $4 lease TTLs in ms, $5 fingerprints,
-- $6 metadata, $7 callers: arrays of the same length
WITH input AS (
    SELECT *
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[], $6::jsonb[], $7::text[])
         WITH ORDINALITY AS i (namespace, key, owner, ttl_ms, fingerprint, metadata, caller, n)
), inserted AS (
    INSERT INTO entries AS e (namespace, key, state, owner, fencing_token, lease_expires_at,
                              attempts, fingerprint, metadata, created_at, updated_at)
    SELECT i.namespace, i.key, 'leased', i.owner,
           greatest(1 + coalesce((SELECT p.fencing_token FROM events p
                                  WHERE p.namespace = i.namespace AND p.key = i.key AND p.kind = 'purged'
                                  ORDER BY p.id DESC LIMIT 1), 0),
                    (SELECT f.epoch << 38 FROM fencing_epoch f)),
           now() + i.ttl_ms * interval '1 millisecond',
           1, i.fingerprint, i.metadata, now(), now()
    FROM input i
    ORDER BY i.namespace, i.key
    ON CONFLICT (namespace, key) DO NOTHING
    RETURNING e.*
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller)
    SELECT ins.namespace, ins.key, 'reserved', ins.fencing_token, ins.owner, ins.attempts, i.caller
    FROM inserted ins JOIN input i ON i.namespace = ins.namespace AND i.key = ins.key
), usage AS (
    UPDATE namespace_usage u
    SET stored_bytes = namespace_usage_add(u.namespace, u.stored_bytes, added.bytes)
    FROM (SELECT namespace,
                 sum(entry_stored_bytes(key, owner, fingerprint, metadata, checkpoint, result, error_code, error_message))::bigint AS bytes
          FROM inserted
          WHERE namespace IN (SELECT namespace FROM namespace_usage)
          GROUP BY namespace) added
    WHERE u.namespace = added.namespace
)
SELECT i.n, true AS inserted,
       ins.namespace, ins.key, ins.state, ins.owner, ins.fencing_token, ins.lease_expires_at,
       false AS lease_expired,
       greatest(0, extract(epoch FROM ins.lease_expires_at - now()) * 1000)::bigint AS lease_remaining_ms,
       ins.attempts, ins.fingerprint, ins.result, ins.error_code, ins.error_message, ins.checkpoint, ins.metadata,
       ins.created_at, ins.updated_at, ins.finished_at, ins.expires_at
FROM inserted ins JOIN input i ON i.namespace = ins.namespace AND i.key = ins.key
UNION ALL
SELECT i.n, false AS inserted,
       e.namespace, e.key, e.state, e.owner, e.fencing_token, e.lease_expires_at,
       coalesce(e.lease_expires_at <= now(), false) AS lease_expired,
       coalesce(greatest(0, extract(epoch FROM e.lease_expires_at - now()) * 1000), 0)::bigint AS lease_remaining_ms,
       e.attempts, e.fingerprint, e.result, e.error_code, e.error_message, e.checkpoint, e.metadata,
       e.created_at, e.updated_at, e.finished_at, e.expires_at
FROM input i JOIN entries e ON e.namespace = i.namespace AND e.key = i.key
WHERE NOT EXISTS (SELECT FROM inserted ins WHERE ins.namespace = i.namespace AND ins.key = i.key)
