-- The fencing epoch, and the oldest ledgerd that may serve this schema.
--
-- fencing_epoch: every token granted is at least epoch << 38 (the grant
-- statements read it: ledger/queries/reserve_*.sql). `ledgerd restore-fence`
-- raises it once a backup is restored, so that every token granted after the
-- restore is above every token granted before it, the ones the restored
-- database never saw included (see docs/operations.md, "Backup and
-- restore"). Per-key tokens are bigint counters that grow by one per grant:
-- a key would need 2^38 (about 2.7 * 10^11) grants within one epoch to reach
-- the next epoch's floor. The epoch is below 2^25, so that the largest
-- token, (2^25 - 1) << 38 plus a key's grants, stays below 2^63. Epoch 0,
-- the start, changes no token.
--
-- ledgerd_schema_compat: a ledgerd that knows migrations up to K serves a
-- database migrated further (a rolling upgrade, or a rollback of the
-- binary) only if K >= min_binary_schema. A migration that an older ledgerd
-- cannot run beside (it drops or renames what the older one uses, adds a
-- constraint the older one would break, or a rule the older one would not
-- follow) raises it to its own version; an additive one leaves it. This one
-- raises it: a ledgerd that does not read the epoch would grant below it.

-- +goose Up
CREATE TABLE fencing_epoch (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch      bigint      NOT NULL DEFAULT 0 CHECK (epoch >= 0 AND epoch < 33554432), -- 2^25
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO fencing_epoch DEFAULT VALUES;

CREATE TABLE ledgerd_schema_compat (
    singleton         boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    min_binary_schema bigint  NOT NULL CHECK (min_binary_schema > 0)
);
INSERT INTO ledgerd_schema_compat (min_binary_schema) VALUES (10);

-- +goose Down
DROP TABLE ledgerd_schema_compat;
DROP TABLE fencing_epoch;
