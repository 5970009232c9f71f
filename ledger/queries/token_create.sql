-- A new API token (its secret as a SHA-256 hash), with its audit event
-- (namespace and key empty: a platform event).
--
-- $1 id, $2 principal, $3 secret hash, $4 description, $5 caller,
-- $6 lifetime in ms (NULL: until revoked), $7 reason
WITH created AS (
    INSERT INTO api_tokens AS t (id, principal, secret_hash, description, created_by, expires_at)
    VALUES ($1, $2, $3, $4, $5, now() + $6::bigint * interval '1 millisecond')
    RETURNING t.*
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT '', '', 'token_created', 0, principal, 0, $5,
           jsonb_build_object('reason', $7::text, 'token_id', id, 'principal', principal, 'expires_at', expires_at)
    FROM created
)
SELECT id, principal, secret_hash, description, created_at, created_by, expires_at, revoked_at, revoked_by, last_used_at
FROM created
