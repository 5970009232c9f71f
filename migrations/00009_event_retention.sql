-- Event retention keeps the events that record admin actions (see
-- ledger.Config.AdminEventRetention) longer than the namespace's own
-- event_retention. The sweeper deletes a namespace's other events, oldest
-- first, through this partial index, which leaves the admin events out: a
-- batch then never reads the kept admin events again, however many a
-- namespace's admin made (a reset of a million keys, say). The kinds must
-- match those of ledger/queries/delete_events.sql, whose predicate is this
-- one, word for word, so that the planner can use it.
--
-- Events are never updated, so the index costs only at insert. Building it
-- locks the events table against writes for the time of the build: on a
-- large table, run `ledgerd migrate` off-peak.

-- +goose Up
CREATE INDEX events_retention_idx ON events (namespace, at, id)
    WHERE kind NOT IN ('force_released', 'reset', 'namespace_changed', 'namespace_created');

-- +goose Down
DROP INDEX events_retention_idx;
