-- Record when tokens were last used: one statement for every token a
-- replica saw since its last flush. The time only moves forward, so that a
-- replica whose flush arrives late cannot move it back.
--
-- $1 token ids, $2 the last use of each (same order)
UPDATE api_tokens AS t
SET last_used_at = greatest(t.last_used_at, u.at)
FROM unnest($1::text[], $2::timestamptz[]) AS u (id, at)
WHERE t.id = u.id
