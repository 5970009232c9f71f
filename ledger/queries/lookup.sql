-- Lookup: the whole entry, with the lease figures by the database's clock.
--
-- $1 namespace, $2 key
SELECT namespace, key, state, owner, fencing_token, lease_expires_at,
       coalesce(lease_expires_at <= now(), false) AS lease_expired,
       coalesce(greatest(0, extract(epoch FROM lease_expires_at - now()) * 1000), 0)::bigint AS lease_remaining_ms,
       attempts, fingerprint, result, error_code, error_message, checkpoint, metadata,
       created_at, updated_at, finished_at, expires_at
FROM entries
WHERE namespace = $1 AND key = $2
