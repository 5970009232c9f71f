-- Remove a role binding, with its audit event.
--
-- $1 principal, $2 namespace pattern, $3 role, $4 caller, $5 reason
WITH revoked AS (
    DELETE FROM role_bindings
    WHERE principal = $1 AND namespace_pattern = $2 AND role = $3
    RETURNING principal, namespace_pattern, role
)
INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
SELECT '', '', 'role_revoked', 0, principal, 0, $4,
       jsonb_build_object('reason', $5::text, 'principal', principal, 'namespace_pattern', namespace_pattern, 'role', role)
FROM revoked
