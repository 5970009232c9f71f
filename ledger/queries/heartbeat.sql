-- Heartbeat: extend the lease held with the current token, even if its time
-- ran out (fencing beats time), and optionally replace the checkpoint.
--
-- $1 namespace, $2 key, $3 token, $4 lease TTL in ms, $5 whether to replace
-- the checkpoint, $6 the checkpoint
UPDATE entries
SET lease_expires_at = now() + $4::bigint * interval '1 millisecond',
    checkpoint = CASE WHEN $5::boolean THEN $6::bytea ELSE checkpoint END,
    updated_at = now()
WHERE namespace = $1 AND key = $2 AND fencing_token = $3 AND state = 'leased'
RETURNING lease_expires_at
