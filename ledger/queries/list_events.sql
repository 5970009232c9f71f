-- ListEvents: a page of a namespace's events in a time range, in (at, id)
-- order, after the page token's (at, id) (index events (namespace, at, id)).
--
-- An event's at is its transaction's start, and it becomes visible only at
-- commit: a page read now could miss an event that commits later with an
-- earlier at. So, unless the caller asks for the unsettled events, the end
-- is at most the settling delay before the database's now (longer than any
-- ledgerd statement may run; ledger/listing.go reads it first): an export
-- that follows the log with page tokens never skips an event.
--
-- $1 namespace, $2 start (inclusive), $3 end (exclusive), $4 after at,
-- $5 after id (with $4; NULL $4: from the start), $6 kinds (NULL: any),
-- $7 page size
SELECT id, namespace, key, kind, fencing_token, owner, attempt, caller, detail, at
FROM events
WHERE namespace = $1
  AND at >= $2 AND at < $3
  AND ($4::timestamptz IS NULL OR (at, id) > ($4::timestamptz, $5::bigint))
  AND ($6::text[] IS NULL OR kind = ANY ($6::text[]))
ORDER BY at, id
LIMIT $7
