-- Complete for many keys at once (CompleteBatch, and the coalesced
-- singleton Completes): complete.sql for each item, in one statement and
-- one commit. Returns, for each item (n), what complete.sql returns; an
-- item with no row has no entry.
--
-- In the namespaces with a stored-bytes quota, the changes of the entries'
-- stored bytes are added to the usage, refused over the quota, as
-- complete.sql does: one refused namespace fails the whole statement, and
-- the caller runs the items alone.
--
-- $1 namespaces, $2 keys, $3 tokens, $4 results, $5 retentions in ms,
-- $6 callers: arrays of the same length, keys distinct
--
-- "Leased" is tested as lease_expires_at IS NOT NULL (the same thing, by
-- the entries_check constraint), not as state = 'leased': that predicate
-- lets the planner join the input with a scan of the whole partial index
-- entries_leased_idx, which its statistics call small, but which holds an
-- entry for every lease granted since the last vacuum. Measured: that plan
-- read 5,000 index entries per coalesced Complete after a few seconds of
-- load, and halved the pair rate. Without it the only
-- index is the primary key, probed once per item.
--
-- counted is MATERIALIZED: inlined, the planner joined it to the UPDATE's
-- rows as a subquery run once per item, each run reading every item again.
-- Measured: 213 ms of PostgreSQL time for 1,000 items (a million rows read),
-- 15 ms materialized.
WITH input AS (
    SELECT *
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[], $5::bigint[], $6::text[])
         WITH ORDINALITY AS i (namespace, key, token, result, retention_ms, caller, n)
), counted AS MATERIALIZED (
    SELECT e.namespace, e.key,
           entry_stored_bytes(e.key, e.owner, e.fingerprint, e.metadata, e.checkpoint, e.result,
                              e.error_code, e.error_message) AS bytes
    FROM input i JOIN entries e ON e.namespace = i.namespace AND e.key = i.key
    WHERE i.namespace IN (SELECT namespace FROM namespace_usage)
), completed AS (
    UPDATE entries e
    SET state = 'completed',
        result = i.result,
        error_code = NULL,
        error_message = NULL,
        lease_expires_at = NULL,
        finished_at = now(),
        waiters = false, -- the waiters are woken (see migrations/00002)
        updated_at = now(),
        expires_at = now() + i.retention_ms * interval '1 millisecond'
    FROM input i LEFT JOIN counted c ON c.namespace = i.namespace AND c.key = i.key
    WHERE e.namespace = i.namespace AND e.key = i.key AND e.fencing_token = i.token
      AND e.lease_expires_at IS NOT NULL
      AND (c.bytes IS NULL
           OR c.bytes = entry_stored_bytes(e.key, e.owner, e.fingerprint, e.metadata, e.checkpoint,
                                           e.result, e.error_code, e.error_message))
    RETURNING i.n, i.caller, e.namespace, e.key, e.state, e.fencing_token, e.owner, e.attempts, e.finished_at,
              octet_length(i.result) AS result_bytes, c.bytes AS counted_bytes,
              CASE WHEN c.bytes IS NOT NULL
                   THEN entry_stored_bytes(e.key, e.owner, e.fingerprint, e.metadata, e.checkpoint, e.result,
                                           e.error_code, e.error_message)
              END AS stored_bytes
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT namespace, key, 'completed', fencing_token, owner, attempts, caller,
           jsonb_build_object('result_bytes', result_bytes)
    FROM completed
), usage AS (
    UPDATE namespace_usage u
    SET stored_bytes = namespace_usage_add(u.namespace, u.stored_bytes, d.delta)
    FROM (SELECT namespace, sum(stored_bytes - counted_bytes)::bigint AS delta
          FROM completed
          WHERE counted_bytes IS NOT NULL
          GROUP BY namespace) d
    WHERE u.namespace = d.namespace AND d.delta <> 0
)
SELECT n, true AS changed, state, fencing_token, finished_at, true AS same
FROM completed
UNION ALL
SELECT i.n, false, e.state, e.fencing_token, e.finished_at, e.result IS NOT DISTINCT FROM i.result
FROM input i JOIN entries e ON e.namespace = i.namespace AND e.key = i.key
WHERE NOT EXISTS (SELECT FROM completed c WHERE c.n = i.n)
