-- Lookup of a key without an entry: its last purged event, if still kept.
--
-- $1 namespace, $2 key
SELECT at, fencing_token, owner, attempt
FROM events
WHERE namespace = $1 AND key = $2 AND kind = 'purged'
ORDER BY id DESC
LIMIT 1
