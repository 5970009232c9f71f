-- Heartbeat: extend the lease held with the current token, even if its time
-- ran out (fencing beats time), and optionally replace the checkpoint. A
-- 'heartbeat' event is written at most once per lease per sampling
-- interval, so that the events table does not grow with every heartbeat.
--
-- $1 namespace, $2 key, $3 token, $4 lease TTL in ms, $5 whether to replace
-- the checkpoint, $6 the checkpoint, $7 the sampling interval in ms (0:
-- every heartbeat; negative: none), $8 caller
WITH beat AS (
    UPDATE entries
    SET lease_expires_at = now() + $4::bigint * interval '1 millisecond',
        checkpoint = CASE WHEN $5::boolean THEN $6::bytea ELSE checkpoint END,
        heartbeat_event_at = CASE
            WHEN $7::bigint >= 0 AND (heartbeat_event_at IS NULL
                                      OR heartbeat_event_at <= now() - $7::bigint * interval '1 millisecond')
            THEN now() ELSE heartbeat_event_at END,
        updated_at = now()
    WHERE namespace = $1 AND key = $2 AND fencing_token = $3 AND state = 'leased'
    RETURNING namespace, key, fencing_token, owner, attempts, lease_expires_at,
              heartbeat_event_at = now() AS sampled
), event AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT namespace, key, 'heartbeat', fencing_token, owner, attempts, $8,
           jsonb_build_object('lease_expires_at', lease_expires_at, 'checkpoint_bytes', octet_length($6::bytea))
    FROM beat
    WHERE sampled
)
SELECT lease_expires_at FROM beat
