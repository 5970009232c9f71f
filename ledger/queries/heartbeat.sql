-- Heartbeat: extend the lease held with the current token, even if its time
-- ran out (fencing beats time), and optionally replace the checkpoint. A
-- 'heartbeat' event is written at most once per lease per sampling
-- interval, so that the events table does not grow with every heartbeat.
--
-- In a namespace with a stored-bytes quota, the change of the entry's
-- stored bytes (the checkpoint replaced) is added to the usage, refused over
-- the quota, as complete.sql does. When the lease is still held under the
-- token but the entry changed meanwhile (changed is false), the caller runs
-- the statement again.
--
-- $1 namespace, $2 key, $3 token, $4 lease TTL in ms, $5 whether to replace
-- the checkpoint, $6 the checkpoint, $7 the sampling interval in ms (0:
-- every heartbeat; negative: none), $8 caller
WITH counted AS (
    SELECT entry_stored_bytes(key, owner, fingerprint, metadata, checkpoint, result, error_code, error_message) AS bytes
    FROM entries
    WHERE namespace = $1 AND key = $2 AND $5::boolean
      AND EXISTS (SELECT FROM namespace_usage WHERE namespace = $1)
), beat AS (
    UPDATE entries e
    SET lease_expires_at = now() + $4::bigint * interval '1 millisecond',
        checkpoint = CASE WHEN $5::boolean THEN $6::bytea ELSE checkpoint END,
        heartbeat_event_at = CASE
            WHEN $7::bigint >= 0 AND (heartbeat_event_at IS NULL
                                      OR heartbeat_event_at <= now() - $7::bigint * interval '1 millisecond')
            THEN now() ELSE heartbeat_event_at END,
        updated_at = now()
    WHERE namespace = $1 AND key = $2 AND fencing_token = $3 AND state = 'leased'
      AND ((SELECT bytes FROM counted) IS NULL
           OR (SELECT bytes FROM counted) = entry_stored_bytes(e.key, e.owner, e.fingerprint, e.metadata, e.checkpoint,
                                                               e.result, e.error_code, e.error_message))
    RETURNING namespace, key, fencing_token, owner, attempts, lease_expires_at,
              heartbeat_event_at = now() AS sampled,
              CASE WHEN EXISTS (SELECT FROM counted)
                   THEN entry_stored_bytes(key, owner, fingerprint, metadata, checkpoint, result, error_code, error_message)
              END AS stored_bytes
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT namespace, key, 'heartbeat', fencing_token, owner, attempts, $8,
           jsonb_build_object('lease_expires_at', lease_expires_at, 'checkpoint_bytes', octet_length($6::bytea))
    FROM beat
    WHERE sampled
), usage AS (
    UPDATE namespace_usage u
    SET stored_bytes = namespace_usage_add(u.namespace, u.stored_bytes, d.stored_bytes - c.bytes)
    FROM beat d, counted c
    WHERE u.namespace = $1 AND d.stored_bytes <> c.bytes
)
SELECT true AS changed, lease_expires_at FROM beat
UNION ALL
SELECT false, NULL
FROM entries
WHERE namespace = $1 AND key = $2 AND fencing_token = $3 AND state = 'leased' AND NOT EXISTS (SELECT FROM beat)
