-- Reserve by the owner that holds a current lease (a retry after a lost
-- response): extend the lease and keep the fencing token. Not a state
-- change, so no event.
--
-- In a namespace with a stored-bytes quota, the change of the entry's
-- stored bytes (new labels) is added to the usage, refused over the quota,
-- as complete.sql does; an entry whose size changed meanwhile is not
-- extended (the caller reads again).
--
-- $1 namespace, $2 key, $3 owner, $4 lease TTL in ms, $5 metadata (NULL
-- keeps the stored metadata), $6 the token read
WITH counted AS (
    SELECT entry_stored_bytes(key, owner, fingerprint, metadata, checkpoint, result, error_code, error_message) AS bytes
    FROM entries
    WHERE namespace = $1 AND key = $2 AND $5::jsonb IS NOT NULL
      AND EXISTS (SELECT FROM namespace_usage WHERE namespace = $1)
), extended AS (
    UPDATE entries e
    SET lease_expires_at = now() + $4::bigint * interval '1 millisecond',
        metadata = coalesce($5::jsonb, metadata),
        updated_at = now()
    WHERE namespace = $1 AND key = $2 AND fencing_token = $6
      AND state = 'leased' AND owner = $3 AND lease_expires_at > now()
      AND ((SELECT bytes FROM counted) IS NULL
           OR (SELECT bytes FROM counted) = entry_stored_bytes(e.key, e.owner, e.fingerprint, e.metadata, e.checkpoint,
                                                               e.result, e.error_code, e.error_message))
    RETURNING *
), usage AS (
    UPDATE namespace_usage u
    SET stored_bytes = namespace_usage_add(u.namespace, u.stored_bytes, d.bytes - c.bytes)
    FROM (SELECT entry_stored_bytes(key, owner, fingerprint, metadata, checkpoint, result, error_code, error_message) AS bytes
          FROM extended WHERE EXISTS (SELECT FROM counted)) d, counted c
    WHERE u.namespace = $1 AND d.bytes <> c.bytes
)
SELECT namespace, key, state, owner, fencing_token, lease_expires_at,
       false AS lease_expired,
       (extract(epoch FROM lease_expires_at - now()) * 1000)::bigint AS lease_remaining_ms,
       attempts, fingerprint, result, error_code, error_message, checkpoint, metadata,
       created_at, updated_at, finished_at, expires_at
FROM extended
