-- ForceRelease: end the current lease of a key (or only the grant with the
-- given token), with its 'force_released' event carrying the reason. The
-- fencing token moves on, so that every later call of the old holder is
-- refused with LEASE_LOST (and audited). When nothing changed, return the
-- entry's state and token so that the caller can tell a retry, a lost lease
-- and a key that is not leased apart.
--
-- The token moves by exactly one (the caller tells a retry by it), and
-- needs no fencing epoch floor: `ledgerd restore-fence` ends every lease
-- granted before it, so a lease held now was granted in the current epoch,
-- above its floor.
--
-- $1 namespace, $2 key, $3 token (0: whatever lease is held), $4 reason,
-- $5 caller
WITH released AS (
    UPDATE entries
    SET state = 'released',
        fencing_token = fencing_token + 1,
        lease_expires_at = NULL,
        waiters = false, -- the waiters are woken (see migrations/00002)
        updated_at = now()
    WHERE namespace = $1 AND key = $2 AND state = 'leased'
      AND ($3::bigint = 0 OR fencing_token = $3::bigint)
    RETURNING namespace, key, state, fencing_token, owner, attempts, finished_at
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT namespace, key, 'force_released', fencing_token, owner, attempts, $5,
           jsonb_build_object('reason', $4::text, 'previous_owner', owner, 'previous_token', fencing_token - 1)
    FROM released
)
SELECT true AS changed, state, fencing_token, finished_at, true AS same FROM released
UNION ALL
SELECT false, state, fencing_token, finished_at, true
FROM entries
WHERE namespace = $1 AND key = $2 AND NOT EXISTS (SELECT FROM released)
