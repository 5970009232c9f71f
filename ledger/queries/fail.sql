-- Fail: record the error under the current token, with its 'failed' event.
-- A retryable failure frees the key (state released, attempts and checkpoint
-- kept), unless the key has had the namespace's maximum attempts: then, as
-- a permanent one, it finishes the key. When the guard does not match,
-- return the entry's state, token and whether its error equals this one.
--
-- In a namespace with a stored-bytes quota, the change of the entry's
-- stored bytes (the new error replaces the last) is added to the usage,
-- refused over the quota, as complete.sql does.
--
-- $1 namespace, $2 key, $3 token, $4 error code, $5 error message,
-- $6 retryable, $7 retention in ms, $8 caller, $9 maximum attempts (0: none)
WITH counted AS (
    SELECT entry_stored_bytes(key, owner, fingerprint, metadata, checkpoint, result, error_code, error_message) AS bytes
    FROM entries
    WHERE namespace = $1 AND key = $2 AND EXISTS (SELECT FROM namespace_usage WHERE namespace = $1)
), failed AS (
    UPDATE entries e
    SET state = CASE WHEN $6::boolean AND NOT ($9::integer > 0 AND attempts >= $9::integer)
                     THEN 'released' ELSE 'failed' END,
        error_code = $4,
        error_message = $5,
        lease_expires_at = NULL,
        finished_at = CASE WHEN $6::boolean AND NOT ($9::integer > 0 AND attempts >= $9::integer)
                           THEN NULL ELSE now() END,
        expires_at = CASE WHEN $6::boolean AND NOT ($9::integer > 0 AND attempts >= $9::integer)
                          THEN NULL ELSE now() + $7::bigint * interval '1 millisecond' END,
        waiters = false, -- the waiters are woken (see migrations/00002)
        updated_at = now()
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
    SELECT namespace, key, 'failed', fencing_token, owner, attempts, $8,
           jsonb_build_object('retryable', $6::boolean, 'code', $4::text, 'message', $5::text,
                              'attempts_exhausted', $6::boolean AND state = 'failed')
    FROM failed
), usage AS (
    UPDATE namespace_usage u
    SET stored_bytes = namespace_usage_add(u.namespace, u.stored_bytes, d.stored_bytes - c.bytes)
    FROM failed d, counted c
    WHERE u.namespace = $1 AND d.stored_bytes <> c.bytes
)
SELECT true AS changed, state, fencing_token, finished_at, true AS same
FROM failed
UNION ALL
SELECT false, state, fencing_token, finished_at,
       error_code IS NOT DISTINCT FROM $4::text AND error_message IS NOT DISTINCT FROM $5::text
FROM entries
WHERE namespace = $1 AND key = $2 AND NOT EXISTS (SELECT FROM failed)
