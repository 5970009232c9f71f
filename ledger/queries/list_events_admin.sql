-- ListEvents when every kind asked for records an admin action: the
-- statement of list_events.sql (read it for the settling of the end), over
-- the partial index events_admin_idx (migration 00011) instead of
-- events (namespace, at, id). Admin actions are rare among a namespace's
-- events: list_events.sql would read every event of the range to find
-- them, and this reads only them.
--
-- The kind condition below is the index's predicate, word for word: with
-- it, the planner proves the index applies whatever the parameters (a
-- generic plan included). ledger/listing.go sends here only kinds within
-- it, so it changes nothing the statement returns.
--
-- $1 namespace, $2 start (inclusive), $3 end (exclusive), $4 after at,
-- $5 after id (with $4; NULL $4: from the start), $6 kinds (admin kinds
-- only, not NULL), $7 page size
SELECT id, namespace, key, kind, fencing_token, owner, attempt, caller, detail, at
FROM events
WHERE namespace = $1
  AND kind IN ('force_released', 'reset', 'namespace_changed', 'namespace_created')
  AND at >= $2 AND at < $3
  AND ($4::timestamptz IS NULL OR (at, id) > ($4::timestamptz, $5::bigint))
  AND kind = ANY ($6::text[])
ORDER BY at, id
LIMIT $7
