-- The ledger's three tables. See docs/design.md, "Storage".

-- +goose Up

-- namespaces holds each namespace's settings. A row is created with the
-- server's defaults on the first Reserve in a namespace.
CREATE TABLE namespaces (
    name                 text        PRIMARY KEY,
    default_lease_ttl_ms bigint      NOT NULL CHECK (default_lease_ttl_ms > 0),
    max_lease_ttl_ms     bigint      NOT NULL CHECK (max_lease_ttl_ms >= default_lease_ttl_ms),
    max_result_bytes     integer     NOT NULL CHECK (max_result_bytes >= 0),
    retention_ms         bigint      NOT NULL CHECK (retention_ms > 0),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- entries holds one row per (namespace, key). Its rows are hot: every
-- Heartbeat and Complete rewrites one. The only index is the primary key, on
-- columns that never change, so that those updates stay HOT (heap-only
-- tuples); fillfactor 70 leaves room on each page for the new versions.
--
-- There is deliberately no foreign key to namespaces: checking it would take
-- a KEY SHARE lock on the namespace row on every insert, one hot row shared
-- by a whole tenant.
CREATE TABLE entries (
    namespace        text        NOT NULL,
    key              text        NOT NULL,
    state            text        NOT NULL CHECK (state IN ('leased', 'completed', 'failed', 'released')),
    owner            text        NOT NULL,
    fencing_token    bigint      NOT NULL CHECK (fencing_token > 0),
    lease_expires_at timestamptz CHECK ((state = 'leased') = (lease_expires_at IS NOT NULL)),
    attempts         integer     NOT NULL CHECK (attempts > 0),
    fingerprint      bytea       NOT NULL,
    result           bytea       CHECK ((state = 'completed') = (result IS NOT NULL)),
    error_code       text,
    error_message    text,
    checkpoint       bytea,
    metadata         jsonb       NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    finished_at      timestamptz CHECK ((state IN ('completed', 'failed')) = (finished_at IS NOT NULL)),
    expires_at       timestamptz,
    PRIMARY KEY (namespace, key)
) WITH (fillfactor = 70);

-- events is the append-only audit trail: one row per state change, written by
-- the same statement as the change. Only its own retention deletes rows, and
-- a trigger refuses every UPDATE.
CREATE TABLE events (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace     text        NOT NULL,
    key           text        NOT NULL,
    kind          text        NOT NULL,
    fencing_token bigint      NOT NULL,
    owner         text        NOT NULL,
    attempt       integer     NOT NULL,
    caller        text        NOT NULL,
    detail        jsonb       NOT NULL DEFAULT '{}',
    at            timestamptz NOT NULL DEFAULT now()
);

-- A key's history, oldest first.
CREATE INDEX events_namespace_key_id_idx ON events (namespace, key, id);

-- +goose StatementBegin
CREATE FUNCTION events_refuse_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledgerd: events are append-only (UPDATE refused)'
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER events_append_only
    BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_update();

-- +goose Down
DROP TABLE events;
DROP FUNCTION events_refuse_update();
DROP TABLE entries;
DROP TABLE namespaces;
