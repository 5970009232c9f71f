-- Reserve of a key whose lease expired on its last allowed attempt (the
-- namespace's max_attempts): instead of a takeover, the key fails for good,
-- with its 'failed' event. Like the takeover, a compare-and-set on the
-- token read a moment ago.
--
-- $1 namespace, $2 key, $3 the token read, $4 error message, $5 retention
-- in ms, $6 caller
WITH exhausted AS (
    UPDATE entries
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
    RETURNING *
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT namespace, key, 'failed', fencing_token, owner, attempts, $6,
           jsonb_build_object('retryable', false, 'code', 'attempts_exhausted', 'message', $4::text,
                              'attempts_exhausted', true, 'lease_expired', true)
    FROM exhausted
)
SELECT namespace, key, state, owner, fencing_token, lease_expires_at,
       false AS lease_expired, 0::bigint AS lease_remaining_ms,
       attempts, fingerprint, result, error_code, error_message, checkpoint, metadata,
       created_at, updated_at, finished_at, expires_at
FROM exhausted
