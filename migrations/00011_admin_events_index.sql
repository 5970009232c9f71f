-- The events that record admin actions, by namespace and time: what the
-- audit listing (ledger/queries/list_events_admin.sql) reads when every kind
-- it asks for is an admin kind ("every force release of this namespace").
-- Without it, such a listing walks events (namespace, at, id) and filters
-- the kinds: when they are rare, it reads every event of the time range, a
-- sequential scan of events on a big ledger.
--
-- Its predicate is the exact complement of events_retention_idx's
-- (migration 00009): the kinds, and their order, are those of
-- ledger/queries/delete_events.sql, and list_events_admin.sql repeats this
-- one word for word, so that the planner can prove the index applies
-- whatever the statement's parameters. Only admin actions (rare) pay for an
-- entry in it; every other event insert only evaluates the predicate.
--
-- Additive: an older ledgerd runs beside it (ledgerd_schema_compat is left
-- as it is). Building it reads the whole events table and holds a lock
-- that blocks event inserts meanwhile, so every call that writes an event
-- (Reserve, Complete, ...) waits for the build. On 21 M events (a 2.5 GB
-- table) it took 1.5 to 2.6 s with the table in the operating system's
-- cache; from a cold disk, add the time to read the table. The index
-- itself stays small: it held the 5 admin events of those 21 M in 16 kB.
-- The migrator runs each migration in a transaction, so it cannot build
-- CONCURRENTLY: on a large ledger, run `ledgerd migrate` off-peak, or build
-- the index first with CREATE INDEX CONCURRENTLY, this name and this
-- definition; the migration then keeps it (IF NOT EXISTS). A concurrent
-- build that failed leaves an INVALID index of that name: drop it, or the
-- migration keeps an index the planner never uses.

-- +goose Up
CREATE INDEX IF NOT EXISTS events_admin_idx ON events (namespace, at, id)
    WHERE kind IN ('force_released', 'reset', 'namespace_changed', 'namespace_created');

-- +goose Down
DROP INDEX events_admin_idx;
