-- A Reserve that waits: flag the key so that the next change of its lease
-- notifies (see migrations/00002), and tell whether the lease read a moment
-- ago, under this token, still holds. If it does not, the waiter reads
-- again at once instead of sleeping. Only the first waiter of a lease
-- writes; later ones find the flag set.
--
-- $1 namespace, $2 key, $3 the token read
WITH flagged AS (
    UPDATE entries
    SET waiters = true
    WHERE namespace = $1 AND key = $2 AND fencing_token = $3
      AND state = 'leased' AND NOT waiters
    RETURNING 1
)
SELECT EXISTS (SELECT FROM flagged)
    OR EXISTS (SELECT FROM entries
               WHERE namespace = $1 AND key = $2 AND fencing_token = $3
                 AND state = 'leased' AND waiters) AS still_held
