-- A namespace's settings.
--
-- $1 name
SELECT default_lease_ttl_ms, max_lease_ttl_ms, max_result_bytes, retention_ms
FROM namespaces
WHERE name = $1
