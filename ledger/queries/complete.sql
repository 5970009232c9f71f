-- Complete: store the result under the current token (even if the lease
-- time ran out: fencing beats time), with its 'completed' event. When the
-- guard does not match, return the entry's state, token and whether its
-- result equals this one, so that a retry can be told from a conflict.
-- In a namespace with a stored-bytes quota (a namespace_usage row), the
-- result's bytes are added to its usage; ledger/quota.go checks the sum.
--
-- $1 namespace, $2 key, $3 token, $4 result, $5 retention in ms, $6 caller
WITH completed AS (
    UPDATE entries
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
    RETURNING namespace, key, state, fencing_token, owner, attempts, finished_at
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT namespace, key, 'completed', fencing_token, owner, attempts, $6,
           jsonb_build_object('result_bytes', octet_length($4::bytea))
    FROM completed
), usage AS (
    UPDATE namespace_usage u
    SET stored_bytes = u.stored_bytes + octet_length($4::bytea)
    FROM completed c
    WHERE u.namespace = c.namespace
)
SELECT true AS changed, state, fencing_token, finished_at, true AS same
FROM completed
UNION ALL
SELECT false, state, fencing_token, finished_at, result IS NOT DISTINCT FROM $4::bytea
FROM entries
WHERE namespace = $1 AND key = $2 AND NOT EXISTS (SELECT FROM completed)
