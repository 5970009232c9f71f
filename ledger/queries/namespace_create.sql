-- CreateNamespace: insert the namespace and its 'namespace_changed' event;
-- no row if it exists.
--
-- $1 name, $2-$9 settings (see namespace_ensure.sql), $10 reason, $11 caller
WITH created AS (
    INSERT INTO namespaces AS n (name, default_lease_ttl_ms, max_lease_ttl_ms, max_result_bytes,
                                 retention_ms, max_attempts, event_retention_ms, max_held_leases,
                                 max_stored_bytes)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (name) DO NOTHING
    RETURNING n.*
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT name, '', 'namespace_changed', 0, '', 0, $11,
           jsonb_build_object('reason', $10::text, 'created', true, 'settings',
                              to_jsonb(created) - 'name' - 'created_at' - 'updated_at')
    FROM created
), usage AS (
    -- A new namespace stores nothing yet; see migrations/00006_quotas.sql.
    INSERT INTO namespace_usage (namespace, stored_bytes)
    SELECT name, 0 FROM created WHERE max_stored_bytes > 0
)
SELECT name, default_lease_ttl_ms, max_lease_ttl_ms, max_result_bytes, retention_ms,
       max_attempts, event_retention_ms, max_held_leases, max_stored_bytes, created_at, updated_at
FROM created
