-- Lookup of many keys (LookupBatch, and the coalesced singleton Lookups):
-- the entries found, each with its position (n) among the items.
--
-- $1 namespaces, $2 keys: arrays of the same length
SELECT i.n, e.namespace, e.key, e.state, e.owner, e.fencing_token, e.lease_expires_at,
       coalesce(e.lease_expires_at <= now(), false) AS lease_expired,
       coalesce(greatest(0, extract(epoch FROM e.lease_expires_at - now()) * 1000), 0)::bigint AS lease_remaining_ms,
       e.attempts, e.fingerprint, e.result, e.error_code, e.error_message, e.checkpoint, e.metadata,
       e.created_at, e.updated_at, e.finished_at, e.expires_at
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS i (namespace, key, n)
JOIN entries e ON e.namespace = i.namespace AND e.key = i.key
