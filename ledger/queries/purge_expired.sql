-- One batch of retention: delete up to $2 entries whose retention has
-- elapsed (of one namespace, or of all when $1 is NULL), each with its
-- 'purged' event. SKIP LOCKED lets several sweepers (replicas, or an admin's
-- PurgeExpired) run at once without waiting on or double-deleting the same
-- rows; the small batch keeps every lock short. The purged entries' stored
-- bytes leave the usage of the namespaces with a stored-bytes quota (see
-- migrations/00007_stored_bytes.sql); the others' are not computed.
--
-- $1 namespace (NULL: all), $2 batch size, $3 caller, $4 reason (NULL for
-- the sweeper)
WITH doomed AS (
    SELECT namespace, key
    FROM entries
    WHERE expires_at < now() AND ($1::text IS NULL OR namespace = $1::text)
    ORDER BY expires_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), purged AS (
    DELETE FROM entries e
    USING doomed d
    WHERE e.namespace = d.namespace AND e.key = d.key
    RETURNING e.namespace, e.key, e.state, e.fencing_token, e.owner, e.attempts, e.finished_at,
              CASE WHEN EXISTS (SELECT FROM namespace_usage u WHERE u.namespace = e.namespace)
                   THEN entry_stored_bytes(e.key, e.owner, e.fingerprint, e.metadata, e.checkpoint, e.result,
                                           e.error_code, e.error_message)
              END AS stored_bytes
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT namespace, key, 'purged', fencing_token, owner, attempts, $3,
           jsonb_strip_nulls(jsonb_build_object('state', state, 'finished_at', finished_at, 'reason', $4::text))
    FROM purged
), usage AS (
    UPDATE namespace_usage u
    SET stored_bytes = u.stored_bytes - freed.bytes
    FROM (SELECT namespace, sum(stored_bytes)::bigint AS bytes FROM purged WHERE stored_bytes IS NOT NULL GROUP BY namespace) freed
    WHERE u.namespace = freed.namespace
)
SELECT namespace, count(*) AS purged FROM purged GROUP BY namespace
