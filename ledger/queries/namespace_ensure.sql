-- Create a namespace with the server's default settings on first use, or
-- read the settings it has. Returns no row if a concurrent statement created
-- it after this one's snapshot; the caller runs it again.
--
-- $1 name, $2 default lease TTL in ms, $3 maximum lease TTL in ms,
-- $4 maximum result bytes, $5 retention in ms
WITH inserted AS (
    INSERT INTO namespaces (name, default_lease_ttl_ms, max_lease_ttl_ms, max_result_bytes, retention_ms)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (name) DO NOTHING
    RETURNING default_lease_ttl_ms, max_lease_ttl_ms, max_result_bytes, retention_ms
)
SELECT default_lease_ttl_ms, max_lease_ttl_ms, max_result_bytes, retention_ms FROM inserted
UNION ALL
SELECT default_lease_ttl_ms, max_lease_ttl_ms, max_result_bytes, retention_ms
FROM namespaces
WHERE name = $1 AND NOT EXISTS (SELECT FROM inserted)
