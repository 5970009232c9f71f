-- A namespace and its settings.
--
-- $1 name
SELECT name, default_lease_ttl_ms, max_lease_ttl_ms, max_result_bytes, retention_ms,
       max_attempts, event_retention_ms, max_held_leases, max_stored_bytes, created_at, updated_at
FROM namespaces
WHERE name = $1
