-- Reserve by the owner that holds a current lease (a retry after a lost
-- response): extend the lease and keep the fencing token. Not a state
-- change, so no event.
--
-- $1 namespace, $2 key, $3 owner, $4 lease TTL in ms, $5 metadata (NULL
-- keeps the stored metadata), $6 the token read
UPDATE entries
SET lease_expires_at = now() + $4::bigint * interval '1 millisecond',
    metadata = coalesce($5::jsonb, metadata),
    updated_at = now()
WHERE namespace = $1 AND key = $2 AND fencing_token = $6
  AND state = 'leased' AND owner = $3 AND lease_expires_at > now()
RETURNING namespace, key, state, owner, fencing_token, lease_expires_at,
          false AS lease_expired,
          (extract(epoch FROM lease_expires_at - now()) * 1000)::bigint AS lease_remaining_ms,
          attempts, fingerprint, result, error_code, error_message, checkpoint, metadata,
          created_at, updated_at, finished_at, expires_at
