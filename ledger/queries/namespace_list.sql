-- A page of namespaces by name, after the page token's name.
--
-- $1 after name ('' from the start), $2 page size
SELECT name, default_lease_ttl_ms, max_lease_ttl_ms, max_result_bytes, retention_ms,
       max_attempts, event_retention_ms, max_held_leases, max_stored_bytes, created_at, updated_at
FROM namespaces
WHERE name > $1
ORDER BY name
LIMIT $2
