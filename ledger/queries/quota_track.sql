-- Start counting a namespace's stored bytes (its stored-bytes quota was just
-- set): sum the stored bytes of its entries (see
-- migrations/00007_stored_bytes.sql). The caller first locks entries in SHARE
-- mode, in the same transaction: that waits for the transactions writing
-- entries to end and holds new ones back until commit, so that no write
-- is missed by the sum and also missed the row (the writes add to the row
-- from then on, see complete.sql).
--
-- $1 namespace
INSERT INTO namespace_usage (namespace, stored_bytes)
SELECT $1, coalesce(sum(entry_stored_bytes(key, owner, fingerprint, metadata, checkpoint, result,
                                           error_code, error_message)), 0)
FROM entries
WHERE namespace = $1
ON CONFLICT (namespace) DO UPDATE SET stored_bytes = EXCLUDED.stored_bytes
