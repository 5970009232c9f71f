-- The audit event of a refused call, with the key's current token, state
-- and owner; nothing when the key has no entry. The refused owner is the
-- caller's (a Reserve), or the one the refused token was granted to.
--
-- $1 namespace, $2 key, $3 kind, $4 operation, $5 the token the call
-- carried (0 for a Reserve), $6 the owner that called (empty if unknown),
-- $7 caller
INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
SELECT e.namespace, e.key, $3, $5::bigint,
       CASE WHEN $6::text <> '' THEN $6::text
            ELSE coalesce((SELECT g.owner FROM events g
                           WHERE g.namespace = $1 AND g.key = $2 AND g.fencing_token = $5::bigint
                             AND g.kind IN ('reserved', 'taken_over', 'reclaimed')
                           ORDER BY g.id DESC LIMIT 1), '') END,
       e.attempts, $7,
       jsonb_build_object('operation', $4::text, 'current_token', e.fencing_token,
                          'current_state', e.state, 'current_owner', e.owner)
FROM entries e
WHERE e.namespace = $1 AND e.key = $2
