-- One batch of event retention: delete up to $2 of a namespace's events
-- older than its event retention (index events (namespace, at, id)). The
-- only statement that deletes events.
--
-- $1 namespace, $2 batch size, $3 event retention in ms
DELETE FROM events
WHERE id IN (
    SELECT id FROM events
    WHERE namespace = $1 AND at < now() - $3::bigint * interval '1 millisecond'
    ORDER BY at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED -- concurrent sweepers take different rows
)
