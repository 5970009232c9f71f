-- UpdateNamespace: write the new settings and the 'namespace_changed' event
-- (with the previous settings). The caller read the row FOR UPDATE in the
-- same transaction.
--
-- $1 name, $2-$9 settings (see namespace_ensure.sql), $10 reason, $11 caller
WITH previous AS (
    SELECT to_jsonb(n) - 'name' - 'created_at' - 'updated_at' AS settings FROM namespaces n WHERE name = $1
), updated AS (
    UPDATE namespaces AS n
    SET default_lease_ttl_ms = $2, max_lease_ttl_ms = $3, max_result_bytes = $4,
        retention_ms = $5, max_attempts = $6, event_retention_ms = $7,
        max_held_leases = $8, max_stored_bytes = $9, updated_at = now()
    WHERE name = $1
    RETURNING n.*
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT u.name, '', 'namespace_changed', 0, '', 0, $11,
           jsonb_build_object('reason', $10::text, 'created', false, 'previous', p.settings, 'settings',
                              to_jsonb(u) - 'name' - 'created_at' - 'updated_at')
    FROM updated u, previous p
)
SELECT name, default_lease_ttl_ms, max_lease_ttl_ms, max_result_bytes, retention_ms,
       max_attempts, event_retention_ms, max_held_leases, max_stored_bytes, created_at, updated_at
FROM updated
