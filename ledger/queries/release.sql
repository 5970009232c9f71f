-- Release: give the lease up under the current token, with its 'released'
-- event. When the guard does not match, return the entry's state and token
-- so that a retry can be told from a lost lease.
--
-- $1 namespace, $2 key, $3 token, $4 caller
WITH released AS (
    UPDATE entries
    SET state = 'released',
        lease_expires_at = NULL,
        waiters = false, -- the waiters are woken (see migrations/00002)
        updated_at = now()
    WHERE namespace = $1 AND key = $2 AND fencing_token = $3 AND state = 'leased'
    RETURNING namespace, key, state, fencing_token, owner, attempts, finished_at
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller)
    SELECT namespace, key, 'released', fencing_token, owner, attempts, $4
    FROM released
)
SELECT true AS changed, state, fencing_token, finished_at, true AS same
FROM released
UNION ALL
SELECT false, state, fencing_token, finished_at, true
FROM entries
WHERE namespace = $1 AND key = $2 AND NOT EXISTS (SELECT FROM released)
