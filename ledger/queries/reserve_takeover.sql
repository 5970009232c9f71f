-- Reserve, takeover: grant a new lease (fencing token + 1) on a released key
-- or on a key whose lease ran out by the database's clock, with its
-- 'taken_over' event (released key) or 'reclaimed' event (expired lease). The
-- guard on the token read a moment ago makes this a
-- compare-and-set: if anyone changed the key since, no row is returned and
-- the caller reads again.
--
-- The new token is also at least the fencing epoch's floor (epoch << 38),
-- so that after `ledgerd restore-fence` a key restored with an old token
-- jumps above every token granted before the restore (see
-- migrations/00010_fencing_epoch.sql).
--
-- In a namespace with a stored-bytes quota, the change of the entry's
-- stored bytes (the new owner and labels) is added to the usage, refused
-- over the quota, as complete.sql does; an entry whose size changed
-- meanwhile is not taken over (the caller reads again).
--
-- $1 namespace, $2 key, $3 owner, $4 lease TTL in ms, $5 metadata (NULL
-- keeps the stored metadata), $6 the token read, $7 caller,
-- $8 previous owner, $9 previous state
WITH counted AS (
    SELECT entry_stored_bytes(key, owner, fingerprint, metadata, checkpoint, result, error_code, error_message) AS bytes
    FROM entries
    WHERE namespace = $1 AND key = $2 AND EXISTS (SELECT FROM namespace_usage WHERE namespace = $1)
), taken AS (
    UPDATE entries e
    SET state = 'leased',
        owner = $3,
        fencing_token = greatest(fencing_token + 1, (SELECT f.epoch << 38 FROM fencing_epoch f)),
        lease_expires_at = now() + $4::bigint * interval '1 millisecond',
        attempts = attempts + 1,
        metadata = coalesce($5::jsonb, metadata),
        heartbeat_event_at = NULL,
        waiters = false, -- the waiters are woken (see migrations/00002)
        updated_at = now()
    WHERE namespace = $1 AND key = $2 AND fencing_token = $6
      AND (state = 'released' OR (state = 'leased' AND lease_expires_at <= now()))
      AND ((SELECT bytes FROM counted) IS NULL
           OR (SELECT bytes FROM counted) = entry_stored_bytes(e.key, e.owner, e.fingerprint, e.metadata, e.checkpoint,
                                                               e.result, e.error_code, e.error_message))
    RETURNING *
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT namespace, key, CASE WHEN $9::text = 'leased' THEN 'reclaimed' ELSE 'taken_over' END,
           fencing_token, owner, attempts, $7,
           jsonb_build_object('previous_owner', $8::text, 'previous_token', $6::bigint,
                              'previous_state', $9::text)
    FROM taken
), usage AS (
    UPDATE namespace_usage u
    SET stored_bytes = namespace_usage_add(u.namespace, u.stored_bytes, d.bytes - c.bytes)
    FROM (SELECT entry_stored_bytes(key, owner, fingerprint, metadata, checkpoint, result, error_code, error_message) AS bytes
          FROM taken WHERE EXISTS (SELECT FROM counted)) d, counted c
    WHERE u.namespace = $1 AND d.bytes <> c.bytes
)
SELECT namespace, key, state, owner, fencing_token, lease_expires_at,
       false AS lease_expired,
       (extract(epoch FROM lease_expires_at - now()) * 1000)::bigint AS lease_remaining_ms,
       attempts, fingerprint, result, error_code, error_message, checkpoint, metadata,
       created_at, updated_at, finished_at, expires_at
FROM taken
