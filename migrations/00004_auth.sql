-- Authentication and authorization: bearer tokens (stored as hashes only)
-- and role bindings of principals to namespace patterns.

-- +goose Up
CREATE TABLE api_tokens (
    id          text        PRIMARY KEY,         -- public: the token's first part
    principal   text        NOT NULL,
    secret_hash bytea       NOT NULL,            -- SHA-256 of the secret part
    description text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    expires_at  timestamptz,
    revoked_at  timestamptz,
    revoked_by  text
);

CREATE TABLE role_bindings (
    principal         text        NOT NULL,
    namespace_pattern text        NOT NULL,      -- a name, "prefix*", or "*"
    role              text        NOT NULL CHECK (role IN ('worker', 'reader', 'admin', 'platform-admin')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text        NOT NULL,
    PRIMARY KEY (principal, namespace_pattern, role),
    CHECK (role <> 'platform-admin' OR namespace_pattern = '*')
);

-- +goose Down
DROP TABLE role_bindings;
DROP TABLE api_tokens;
