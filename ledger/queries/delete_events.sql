-- One batch of event retention: delete up to $2 of a namespace's events
-- older than its event retention, except the events that record admin
-- actions, and up to $2 of its events of any kind older than the admin
-- event retention. The only statement that deletes events.
--
-- The first part reads the partial index events_retention_idx (migration
-- 00009), whose predicate is the kind condition below, word for word: the
-- admin events it keeps are not in that index, so no batch reads them
-- again. The second part reads events_namespace_at_idx from the oldest
-- event; once the first part has run, what it finds is all deletable. The
-- ids are gathered into an array first, so that the rows are deleted by
-- primary key, not by a join that could scan the table.
--
-- The rows are not locked first (FOR UPDATE SKIP LOCKED): that needs the
-- UPDATE privilege, which ledgerd's role does not have on events (see the
-- least-privilege roles in docs/security.md). Concurrent sweepers stay
-- correct: one that picks rows another is deleting waits for it to commit,
-- then skips them (deleted), and its short batch ends the namespace's pass.
--
-- $1 namespace ('' for the platform's events), $2 batch size, $3 event
-- retention in ms, $4 admin event retention in ms (at least $3)
WITH ordinary AS (
    SELECT id FROM events
    WHERE namespace = $1 AND at < now() - $3::bigint * interval '1 millisecond'
      AND kind NOT IN ('force_released', 'reset', 'namespace_changed', 'namespace_created')
    ORDER BY at, id
    LIMIT $2
), past_admin_retention AS (
    SELECT id FROM events
    WHERE namespace = $1 AND at < now() - $4::bigint * interval '1 millisecond'
    ORDER BY at, id
    LIMIT $2
)
DELETE FROM events
WHERE id = ANY (ARRAY(SELECT id FROM ordinary UNION SELECT id FROM past_admin_retention))
