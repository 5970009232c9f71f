-- Complete: store the result under the current token (even if the lease
-- time ran out: fencing beats time), with its 'completed' event. When the
-- guard does not match, return the entry's state, token and whether its
-- result equals this one, so that a retry can be told from a conflict.
--
-- In a namespace with a stored-bytes quota (a namespace_usage row), the
-- change of the entry's stored bytes (the result stored, an earlier error
-- cleared) is added to the usage, refused over the quota (see
-- migrations/00007_stored_bytes.sql). The size is read before the update
-- (counted) and the update only applies if the entry still has that size,
-- so that a concurrent change of the entry (a checkpoint) cannot make the
-- usage drift; the caller then runs the statement again.
--
-- $1 namespace, $2 key, $3 token, $4 result, $5 retention in ms, $6 caller
WITH counted AS (
    SELECT entry_stored_bytes(key, owner, fingerprint, metadata, checkpoint, result, error_code, error_message) AS bytes
    FROM entries
    WHERE namespace = $1 AND key = $2 AND EXISTS (SELECT FROM namespace_usage WHERE namespace = $1)
), completed AS (
    UPDATE entries e
    SET state = 'completed',
        result = $4,
        error_code = NULL,    -- a completed key shows no earlier failure;
        error_message = NULL, -- its events keep them
        lease_expires_at = NULL,
        finished_at = now(),
        waiters = false, -- the waiters are woken (see migrations/00002)
        updated_at = now(),
        expires_at = now() + $5::bigint * interval '1 millisecond'
    WHERE namespace = $1 AND key = $2 AND fencing_token = $3 AND state = 'leased'
      AND ((SELECT bytes FROM counted) IS NULL
           OR (SELECT bytes FROM counted) = entry_stored_bytes(e.key, e.owner, e.fingerprint, e.metadata, e.checkpoint,
                                                               e.result, e.error_code, e.error_message))
    RETURNING namespace, key, state, fencing_token, owner, attempts, finished_at,
              CASE WHEN EXISTS (SELECT FROM counted)
                   THEN entry_stored_bytes(key, owner, fingerprint, metadata, checkpoint, result, error_code, error_message)
              END AS stored_bytes
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT namespace, key, 'completed', fencing_token, owner, attempts, $6,
           jsonb_build_object('result_bytes', octet_length($4::bytea))
    FROM completed
), usage AS (
    UPDATE namespace_usage u
    SET stored_bytes = namespace_usage_add(u.namespace, u.stored_bytes, d.stored_bytes - c.bytes)
    FROM completed d, counted c
    WHERE u.namespace = $1 AND d.stored_bytes <> c.bytes
)
SELECT true AS changed, state, fencing_token, finished_at, true AS same
FROM completed
UNION ALL
SELECT false, state, fencing_token, finished_at, result IS NOT DISTINCT FROM $4::bytea
FROM entries
WHERE namespace = $1 AND key = $2 AND NOT EXISTS (SELECT FROM completed)
