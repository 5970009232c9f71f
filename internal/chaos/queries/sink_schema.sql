-- The sinks the chaos workers write their work's effect to, in a schema of
-- their own beside the ledger's tables.
--
-- fenced holds one row per key: the value written with the highest fencing
-- token seen so far. fenced_log records every write it accepted, in the
-- order it accepted them (the row lock on fenced serializes the writes of a
-- key, and the log's identity is drawn inside that lock).
--
-- control is the unfenced control sink: every write is appended, whatever
-- its token. It shows what the effects would be without fencing.
CREATE SCHEMA IF NOT EXISTS chaos_sink;

CREATE TABLE IF NOT EXISTS chaos_sink.fenced (
    namespace text   NOT NULL,
    key       text   NOT NULL,
    token     bigint NOT NULL,
    value     text   NOT NULL,
    writer    text   NOT NULL,
    PRIMARY KEY (namespace, key)
);

CREATE TABLE IF NOT EXISTS chaos_sink.fenced_log (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace text        NOT NULL,
    key       text        NOT NULL,
    token     bigint      NOT NULL,
    value     text        NOT NULL,
    writer    text        NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS fenced_log_namespace_key_idx ON chaos_sink.fenced_log (namespace, key, id);

CREATE TABLE IF NOT EXISTS chaos_sink.control (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace text        NOT NULL,
    key       text        NOT NULL,
    token     bigint      NOT NULL,
    value     text        NOT NULL,
    writer    text        NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS control_namespace_key_idx ON chaos_sink.control (namespace, key, id);
