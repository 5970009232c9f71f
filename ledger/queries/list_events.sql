-- ListEvents: a page of a namespace's events in a time range, in (at, id)
-- order, after the page token's (at, id) (index events (namespace, at, id)).
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
