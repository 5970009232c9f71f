-- Reserve of a key whose lease expired on its last allowed attempt (the
-- namespace's max_attempts): instead of a takeover, the key fails for good,
-- with its 'failed' event. Like the takeover, a compare-and-set on the
-- token read a moment ago.
--
-- In a namespace with a stored-bytes quota, the change of the entry's
-- stored bytes (the ledger's error message) is added to the usage, refused
-- over the quota, as complete.sql does; an entry whose size changed
-- meanwhile is not changed (the caller reads again).
--
-- $1 namespace, $2 key, $3 the token read, $4 error message, $5 retention
-- in ms, $6 caller
WITH counted AS (
    SELECT entry_stored_bytes(key, owner, fingerprint, metadata, checkpoint, result, error_code, error_message) AS bytes
    FROM entries
    WHERE namespace = $1 AND key = $2 AND EXISTS (SELECT FROM namespace_usage WHERE namespace = $1)
), exhausted AS (
    UPDATE entries e
    SET state = 'failed',
        error_code = 'attempts_exhausted',
        error_message = $4,
        lease_expires_at = NULL,
        finished_at = now(),
        expires_at = now() + $5::bigint * interval '1 millisecond',
        waiters = false, -- the waiters are woken (see migrations/00002)
        updated_at = now()
    WHERE namespace = $1 AND key = $2 AND fencing_token = $3
      AND state = 'leased' AND lease_expires_at <= now()
      AND ((SELECT bytes FROM counted) IS NULL
           OR (SELECT bytes FROM counted) = entry_stored_bytes(e.key, e.owner, e.fingerprint, e.metadata, e.checkpoint,
                                                               e.result, e.error_code, e.error_message))
    RETURNING *
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT namespace, key, 'failed', fencing_token, owner, attempts, $6,
           jsonb_build_object('retryable', false, 'code', 'attempts_exhausted', 'message', $4::text,
                              'attempts_exhausted', true, 'lease_expired', true)
    FROM exhausted
), usage AS (
    UPDATE namespace_usage u
    SET stored_bytes = namespace_usage_add(u.namespace, u.stored_bytes, d.bytes - c.bytes)
    FROM (SELECT entry_stored_bytes(key, owner, fingerprint, metadata, checkpoint, result, error_code, error_message) AS bytes
          FROM exhausted WHERE EXISTS (SELECT FROM counted)) d, counted c
    WHERE u.namespace = $1 AND d.bytes <> c.bytes
)
SELECT namespace, key, state, owner, fencing_token, lease_expires_at,
       false AS lease_expired, 0::bigint AS lease_remaining_ms,
       attempts, fingerprint, result, error_code, error_message, checkpoint, metadata,
       created_at, updated_at, finished_at, expires_at
FROM exhausted
