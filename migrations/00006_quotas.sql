-- Per-namespace quotas (docs/operations.md, "Quotas").
--
-- max_held_leases bounds the unexpired leases a namespace holds at once: a
-- grant over it is rolled back. It is counted, when a grant is made, over
-- entries_leased_idx, under a per-namespace advisory lock that serializes
-- the grants of that namespace only (ledger/quota.go).
--
-- max_stored_bytes bounds the bytes of the results a namespace stores. Those
-- are counted in namespace_usage, which has a row only for the namespaces
-- with this quota: Complete adds to it, and a purge or a reset subtracts,
-- in the statement that changes the entry. The row is created, with a
-- recount, when the quota is set, and deleted when it is unset, so that the
-- namespaces without a quota never touch it.

-- +goose Up
ALTER TABLE namespaces
    ADD COLUMN max_held_leases  bigint NOT NULL DEFAULT 0 CHECK (max_held_leases >= 0),
    ADD COLUMN max_stored_bytes bigint NOT NULL DEFAULT 0 CHECK (max_stored_bytes >= 0);

CREATE TABLE namespace_usage (
    namespace    text   PRIMARY KEY REFERENCES namespaces (name),
    stored_bytes bigint NOT NULL CHECK (stored_bytes >= 0)
);

-- +goose Down
DROP TABLE namespace_usage;
ALTER TABLE namespaces DROP COLUMN max_stored_bytes, DROP COLUMN max_held_leases;
