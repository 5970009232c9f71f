-- CreateNamespace: insert the namespace and its 'namespace_changed' event;
-- no row if it exists.
--
-- $1 name, $2-$7 settings (see namespace_ensure.sql), $8 reason, $9 caller
WITH created AS (
    INSERT INTO namespaces AS n (name, default_lease_ttl_ms, max_lease_ttl_ms, max_result_bytes,
                                 retention_ms, max_attempts, event_retention_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (name) DO NOTHING
    RETURNING n.*
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT name, '', 'namespace_changed', 0, '', 0, $9,
           jsonb_build_object('reason', $8::text, 'created', true, 'settings',
                              to_jsonb(created) - 'name' - 'created_at' - 'updated_at')
    FROM created
)
SELECT name, default_lease_ttl_ms, max_lease_ttl_ms, max_result_bytes, retention_ms,
       max_attempts, event_retention_ms, created_at, updated_at
FROM created
