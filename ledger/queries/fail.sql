-- Fail: record the error under the current token, with its 'failed' event.
-- A retryable failure frees the key (state released, attempts and checkpoint
-- kept), unless the key has had the namespace's maximum attempts: then, as
-- a permanent one, it finishes the key. When the guard does not match,
-- return the entry's state, token and whether its error equals this one.
--
-- $1 namespace, $2 key, $3 token, $4 error code, $5 error message,
-- $6 retryable, $7 retention in ms, $8 caller, $9 maximum attempts (0: none)
WITH failed AS (
    UPDATE entries
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
    RETURNING namespace, key, state, fencing_token, owner, attempts, finished_at
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT namespace, key, 'failed', fencing_token, owner, attempts, $8,
           jsonb_build_object('retryable', $6::boolean, 'code', $4::text, 'message', $5::text,
                              'attempts_exhausted', $6::boolean AND state = 'failed')
    FROM failed
)
SELECT true AS changed, state, fencing_token, finished_at, true AS same
FROM failed
UNION ALL
SELECT false, state, fencing_token, finished_at,
       error_code IS NOT DISTINCT FROM $4::text AND error_message IS NOT DISTINCT FROM $5::text
FROM entries
WHERE namespace = $1 AND key = $2 AND NOT EXISTS (SELECT FROM failed)
