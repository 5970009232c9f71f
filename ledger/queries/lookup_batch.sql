-- Lookup of many keys of a namespace: the entries found, each with its
-- position (n) among the keys.
--
-- $1 namespace, $2 keys
SELECT i.n, e.namespace, e.key, e.state, e.owner, e.fencing_token, e.lease_expires_at,
       coalesce(e.lease_expires_at <= now(), false) AS lease_expired,
       coalesce(greatest(0, extract(epoch FROM e.lease_expires_at - now()) * 1000), 0)::bigint AS lease_remaining_ms,
       e.attempts, e.fingerprint, e.result, e.error_code, e.error_message, e.checkpoint, e.metadata,
       e.created_at, e.updated_at, e.finished_at, e.expires_at
FROM unnest($2::text[]) WITH ORDINALITY AS i (key, n)
JOIN entries e ON e.namespace = $1 AND e.key = i.key
