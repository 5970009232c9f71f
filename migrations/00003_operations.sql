-- What operations need: namespace settings for attempts and event
-- retention, sampled heartbeat events, resettable attempts, and the indexes
-- of the sweeper and the audit listings.

-- +goose Up

-- Keys are opaque identifiers: order them by their bytes ("C"), so that a
-- key-prefix listing is an index range scan, whatever the database's
-- default collation. (This rewrites the tables; they are young.)
ALTER TABLE entries ALTER COLUMN key TYPE text COLLATE "C";
ALTER TABLE events ALTER COLUMN key TYPE text COLLATE "C";
ALTER TABLE namespaces
    ADD COLUMN max_attempts       integer NOT NULL DEFAULT 0 CHECK (max_attempts >= 0),
    ADD COLUMN event_retention_ms bigint  NOT NULL DEFAULT 2592000000 CHECK (event_retention_ms > 0);

-- When the last heartbeat event of the current lease was written (heartbeat
-- events are sampled). Not indexed, so heartbeats stay HOT updates.
ALTER TABLE entries ADD COLUMN heartbeat_event_at timestamptz;

-- A reset sets attempts back to 0 (the next grant is attempt 1 again).
ALTER TABLE entries DROP CONSTRAINT entries_attempts_check;
ALTER TABLE entries ADD CONSTRAINT entries_attempts_check CHECK (attempts >= 0);

-- The sweeper finds expired entries through this index. expires_at is set
-- once, when a key completes or fails for good: that one update per key is
-- not HOT; heartbeats and every other update leave it alone and stay HOT.
CREATE INDEX entries_expires_at_idx ON entries (expires_at) WHERE expires_at IS NOT NULL;

-- A namespace's events by time: audit export (ListEvents) and event
-- retention. Events are never updated, so this costs only at insert.
CREATE INDEX events_namespace_at_idx ON events (namespace, at, id);

-- +goose Down
DROP INDEX events_namespace_at_idx;
DROP INDEX entries_expires_at_idx;
ALTER TABLE entries DROP CONSTRAINT entries_attempts_check;
ALTER TABLE entries ADD CONSTRAINT entries_attempts_check CHECK (attempts > 0);
ALTER TABLE entries DROP COLUMN heartbeat_event_at;
ALTER TABLE namespaces DROP COLUMN event_retention_ms, DROP COLUMN max_attempts;
ALTER TABLE events ALTER COLUMN key TYPE text COLLATE "default";
ALTER TABLE entries ALTER COLUMN key TYPE text COLLATE "default";
