-- consolecost: the events of the entries $2 ..< $3 (by key) of the
-- namespace $1, as the ledger writes them: reserved when the entry was
-- created, a sampled heartbeat for one key in ten, and the outcome
-- (completed, failed, released) when it was last updated; about 2.1 events
-- per key. They are inserted in key order, not in time order as a live
-- ledger appends them, so that events_namespace_at_idx is as uncorrelated
-- with the table as it can be (the worst case for a time-range listing).
INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail, at)
SELECT e.namespace, e.key, v.kind, e.fencing_token, e.owner, e.attempts, 'pipeline', '{}'::jsonb, v.at
FROM entries e
CROSS JOIN LATERAL (VALUES ('reserved', e.created_at),
                           (CASE WHEN right(e.key, 1) = '7' THEN 'heartbeat' END, e.created_at + interval '10 seconds'),
                           (CASE WHEN e.state <> 'leased' THEN e.state END, e.updated_at)) AS v (kind, at)
WHERE e.namespace = $1 AND e.key >= $2 AND e.key < $3 AND v.kind IS NOT NULL
