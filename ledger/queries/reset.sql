-- ResetKey: forget a key's result, error and lease so that its work runs
-- again: the key becomes released with attempts back to 0, and its fencing
-- token moves on, so that a holder of the old lease is refused with
-- LEASE_LOST and the next grant gets a higher token still (at least the
-- fencing epoch's floor, like every grant). The fingerprint
-- is kept. Writes the 'reset' event with the reason and previous state,
-- which the caller read with the row locked, in the same transaction.
-- The forgotten result, error and checkpoint leave the namespace's usage
-- (stored-bytes quota, see migrations/00007_stored_bytes.sql); the caller
-- locked the row, so the size read here is the size the reset changes.
--
-- $1 namespace, $2 key, $3 reason, $4 caller, $5 previous state,
-- $6 previous owner
WITH previous AS (
    SELECT coalesce(octet_length(result), 0) + coalesce(octet_length(checkpoint), 0)
           + coalesce(octet_length(error_code), 0) + coalesce(octet_length(error_message), 0) AS freed_bytes
    FROM entries
    WHERE namespace = $1 AND key = $2
), reset AS (
    UPDATE entries
    SET state = 'released',
        fencing_token = greatest(fencing_token + 1, (SELECT f.epoch << 38 FROM fencing_epoch f)),
        lease_expires_at = NULL,
        result = NULL,
        error_code = NULL,
        error_message = NULL,
        checkpoint = NULL,
        attempts = 0,
        finished_at = NULL,
        expires_at = NULL,
        heartbeat_event_at = NULL,
        waiters = false, -- the waiters are woken (see migrations/00002)
        updated_at = now()
    WHERE namespace = $1 AND key = $2
    RETURNING *
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT namespace, key, 'reset', fencing_token, owner, attempts, $4,
           jsonb_build_object('reason', $3::text, 'previous_state', $5::text, 'previous_owner', $6::text)
    FROM reset
), usage AS (
    UPDATE namespace_usage u
    SET stored_bytes = u.stored_bytes - p.freed_bytes
    FROM previous p
    WHERE u.namespace = $1 AND EXISTS (SELECT FROM reset)
)
SELECT namespace, key, state, owner, fencing_token, lease_expires_at,
       false AS lease_expired, 0::bigint AS lease_remaining_ms,
       attempts, fingerprint, result, error_code, error_message, checkpoint, metadata,
       created_at, updated_at, finished_at, expires_at
FROM reset
