-- Revoke a token (keeping the first revocation's time and author), with its
-- audit event.
--
-- $1 id, $2 caller, $3 reason
WITH revoked AS (
    UPDATE api_tokens AS t
    SET revoked_at = coalesce(revoked_at, now()), revoked_by = coalesce(revoked_by, $2)
    WHERE id = $1
    RETURNING t.*
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT '', '', 'token_revoked', 0, principal, 0, $2,
           jsonb_build_object('reason', $3::text, 'token_id', id, 'principal', principal)
    FROM revoked
)
SELECT id, principal, secret_hash, description, created_at, created_by, expires_at, revoked_at, revoked_by, last_used_at
FROM revoked
