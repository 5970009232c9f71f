-- One batch of event retention: delete up to $2 of a namespace's events
-- older than its event retention (index events (namespace, at, id)). The
-- only statement that deletes events.
--
-- The rows are not locked first (FOR UPDATE SKIP LOCKED): that needs the
-- UPDATE privilege, which ledgerd's role does not have on events (see the
-- least-privilege roles in docs/operations.md). Concurrent sweepers stay
-- correct: one that picks rows another is deleting waits for it to commit,
-- then skips them (deleted), and its short batch ends the namespace's pass.
--
-- $1 namespace, $2 batch size, $3 event retention in ms
DELETE FROM events
WHERE id IN (
    SELECT id FROM events
    WHERE namespace = $1 AND at < now() - $3::bigint * interval '1 millisecond'
    ORDER BY at, id
    LIMIT $2
)
