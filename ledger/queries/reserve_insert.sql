-- Reserve, first statement: insert a fresh entry holding the first lease,
-- with its 'reserved' event, or else read the existing entry.
-- ON CONFLICT DO NOTHING writes nothing when the key exists, so a replay of a
-- finished key costs one read and no WAL.
-- If a concurrent Reserve inserted the key after this statement's snapshot
-- was taken, the statement returns no row and the caller runs it again.
--
-- A key that retention purged starts again above the token it had (found in
-- its purged event), so that a worker from before the purge still gets
-- LEASE_LOST: fencing tokens never repeat while the key's events are kept.
-- And every token is at least the fencing epoch's floor (epoch << 38, read
-- here, in the statement, so that it costs no round trip and a replica
-- never grants from a stale copy of it; see migrations/00010_fencing_epoch.sql
-- and `ledgerd restore-fence`).
--
-- In a namespace with a stored-bytes quota, the new entry's stored bytes
-- (key, owner, fingerprint, labels) are added to the usage, refused over
-- the quota (see migrations/00007_stored_bytes.sql).
--
-- $1 namespace, $2 key, $3 owner, $4 lease TTL in ms, $5 fingerprint,
-- $6 metadata, $7 caller
WITH inserted AS (
    INSERT INTO entries AS e (namespace, key, state, owner, fencing_token, lease_expires_at,
                              attempts, fingerprint, metadata, created_at, updated_at)
    VALUES ($1, $2, 'leased', $3,
            greatest(1 + coalesce((SELECT p.fencing_token FROM events p
                                   WHERE p.namespace = $1 AND p.key = $2 AND p.kind = 'purged'
                                   ORDER BY p.id DESC LIMIT 1), 0),
                     (SELECT f.epoch << 38 FROM fencing_epoch f)),
            now() + $4::bigint * interval '1 millisecond',
            1, $5, $6, now(), now())
    ON CONFLICT (namespace, key) DO NOTHING
    RETURNING e.*
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller)
    SELECT namespace, key, 'reserved', fencing_token, owner, attempts, $7
    FROM inserted
), usage AS (
    UPDATE namespace_usage u
    SET stored_bytes = namespace_usage_add(u.namespace, u.stored_bytes,
                                           entry_stored_bytes(i.key, i.owner, i.fingerprint, i.metadata, i.checkpoint,
                                                              i.result, i.error_code, i.error_message))
    FROM inserted i
    WHERE u.namespace = i.namespace
)
SELECT true AS inserted,
       namespace, key, state, owner, fencing_token, lease_expires_at,
       coalesce(lease_expires_at <= now(), false) AS lease_expired,
       coalesce(greatest(0, extract(epoch FROM lease_expires_at - now()) * 1000), 0)::bigint AS lease_remaining_ms,
       attempts, fingerprint, result, error_code, error_message, checkpoint, metadata,
       created_at, updated_at, finished_at, expires_at
FROM inserted
UNION ALL
SELECT false AS inserted,
       namespace, key, state, owner, fencing_token, lease_expires_at,
       coalesce(lease_expires_at <= now(), false) AS lease_expired,
       coalesce(greatest(0, extract(epoch FROM lease_expires_at - now()) * 1000), 0)::bigint AS lease_remaining_ms,
       attempts, fingerprint, result, error_code, error_message, checkpoint, metadata,
       created_at, updated_at, finished_at, expires_at
FROM entries
WHERE namespace = $1 AND key = $2 AND NOT EXISTS (SELECT FROM inserted)
