-- Create a namespace with the server's default settings on first use, with
-- its 'namespace_created' event (not 'namespace_changed', which records an
-- admin's action), or read the settings it has. Returns no row if a concurrent statement created
-- it after this one's snapshot; the caller runs it again.
--
-- $1 name, $2 default lease TTL in ms, $3 maximum lease TTL in ms,
-- $4 maximum result bytes, $5 retention in ms, $6 maximum attempts,
-- $7 event retention in ms, $8 maximum held leases, $9 maximum stored
-- bytes, $10 caller
WITH inserted AS (
    INSERT INTO namespaces AS n (name, default_lease_ttl_ms, max_lease_ttl_ms, max_result_bytes,
                                 retention_ms, max_attempts, event_retention_ms, max_held_leases,
                                 max_stored_bytes)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (name) DO NOTHING
    RETURNING n.*
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT name, '', 'namespace_created', 0, '', 0, $10,
           jsonb_build_object('settings', to_jsonb(inserted) - 'name' - 'created_at' - 'updated_at')
    FROM inserted
), usage AS (
    -- A new namespace stores nothing yet; see migrations/00006_quotas.sql.
    INSERT INTO namespace_usage (namespace, stored_bytes)
    SELECT name, 0 FROM inserted WHERE max_stored_bytes > 0
)
SELECT name, default_lease_ttl_ms, max_lease_ttl_ms, max_result_bytes, retention_ms,
       max_attempts, event_retention_ms, max_held_leases, max_stored_bytes, created_at, updated_at
FROM inserted
UNION ALL
SELECT name, default_lease_ttl_ms, max_lease_ttl_ms, max_result_bytes, retention_ms,
       max_attempts, event_retention_ms, max_held_leases, max_stored_bytes, created_at, updated_at
FROM namespaces
WHERE name = $1 AND NOT EXISTS (SELECT FROM inserted)
