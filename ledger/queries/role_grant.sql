-- Grant a role (a no-op if the binding exists), with its audit event.
--
-- $1 principal, $2 namespace pattern, $3 role, $4 caller, $5 reason
WITH granted AS (
    INSERT INTO role_bindings AS b (principal, namespace_pattern, role, created_by)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (principal, namespace_pattern, role) DO NOTHING
    RETURNING b.*
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT '', '', 'role_granted', 0, principal, 0, $4,
           jsonb_build_object('reason', $5::text, 'principal', principal, 'namespace_pattern', namespace_pattern, 'role', role)
    FROM granted
)
SELECT principal, namespace_pattern, role, created_at, created_by FROM granted
UNION ALL
SELECT principal, namespace_pattern, role, created_at, created_by
FROM role_bindings
WHERE principal = $1 AND namespace_pattern = $2 AND role = $3 AND NOT EXISTS (SELECT FROM granted)
