-- On-call listings (stuck keys, held leases) and the lease gauges read the
-- leased entries of a namespace through this partial index instead of the
-- whole namespace. Heartbeats do not change state, so they stay HOT; the
-- grants and the finishing updates that move a key in or out of 'leased'
-- are not HOT (the finishing one already was not: expires_at).

-- +goose Up
CREATE INDEX entries_leased_idx ON entries (namespace, key) WHERE state = 'leased';

-- +goose Down
DROP INDEX entries_leased_idx;
