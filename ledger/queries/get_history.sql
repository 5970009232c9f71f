-- GetHistory: a page of one key's events, oldest first, after the page
-- token's id (index events (namespace, key, id)).
--
-- $1 namespace, $2 key, $3 after id (0: from the start), $4 page size
SELECT id, namespace, key, kind, fencing_token, owner, attempt, caller, detail, at
FROM events
WHERE namespace = $1 AND key = $2 AND id > $3
ORDER BY id
LIMIT $4
