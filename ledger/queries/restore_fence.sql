-- `ledgerd restore-fence`: after a backup is restored, raise the fencing
-- epoch so that every token granted from now on is above every token
-- granted before, by this database or by the one it replaces (which granted
-- tokens after the backup that this one never saw), and end every lease the
-- backup holds, so that no holder from before the restore keeps a token of
-- the old epoch (its calls get LEASE_LOST). See
-- migrations/00010_fencing_epoch.sql and docs/operations.md, "Backup and
-- restore".
--
-- The new epoch is the largest of: the current one + 1; one above the epoch
-- of the highest token an entry holds (in case one ever outgrew its epoch);
-- and the minutes since 2025-01-01 UTC by the database's clock. The clock
-- term is what keeps two restores of the same backup apart: each raises the
-- epoch from the same stored value, but not to the same minute.
--
-- The caller runs it in a transaction that has locked fencing_epoch (ACCESS
-- EXCLUSIVE), so that no grant reading the old epoch commits after it.
--
-- Returns the backup's high-water marks (its last event, its highest
-- token), which the 'restore_fenced' event records too: the keys completed
-- after them are not in this database, and run again.
--
-- $1 reason, $2 caller
WITH before AS (
    SELECT f.epoch AS previous_epoch,
           (SELECT max(fencing_token) FROM entries) AS max_token,
           (SELECT id FROM events ORDER BY id DESC LIMIT 1) AS last_event_id,
           (SELECT at FROM events ORDER BY id DESC LIMIT 1) AS last_event_at
    FROM fencing_epoch f
), chosen AS (
    SELECT greatest(b.previous_epoch + 1,
                    coalesce(b.max_token >> 38, 0) + 1,
                    floor(extract(epoch FROM now() - timestamptz '2025-01-01 00:00:00+00') / 60)::bigint) AS epoch
    FROM before b
), bumped AS (
    UPDATE fencing_epoch f
    SET epoch = c.epoch, updated_at = now()
    FROM chosen c
    RETURNING f.epoch, f.epoch << 38 AS floor
), held AS (
    SELECT namespace, key, fencing_token, owner
    FROM entries
    WHERE state = 'leased'
    FOR UPDATE
), ended AS (
    UPDATE entries e
    SET state = 'released',
        fencing_token = (SELECT floor FROM bumped),
        lease_expires_at = NULL,
        heartbeat_event_at = NULL,
        waiters = false, -- the waiters are woken (see migrations/00002)
        updated_at = now()
    FROM held h
    WHERE e.namespace = h.namespace AND e.key = h.key
    RETURNING e.namespace, e.key, e.fencing_token, e.owner, e.attempts, h.fencing_token AS previous_token
), ended_events AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT namespace, key, 'force_released', fencing_token, owner, attempts, $2,
           jsonb_build_object('reason', 'restore-fence: ' || $1::text, 'previous_owner', owner,
                              'previous_token', previous_token)
    FROM ended
), fenced AS (
    INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
    SELECT '', '', 'restore_fenced', a.floor, '', 0, $2,
           jsonb_build_object('reason', $1::text, 'previous_epoch', b.previous_epoch, 'epoch', a.epoch,
                              'token_floor', a.floor, 'leases_ended', (SELECT count(*) FROM ended),
                              'backup_last_event_id', b.last_event_id, 'backup_last_event_at', b.last_event_at,
                              'backup_max_token', b.max_token)
    FROM before b, bumped a
    RETURNING at
)
SELECT b.previous_epoch, a.epoch, a.floor AS token_floor,
       (SELECT count(*) FROM ended) AS leases_ended,
       coalesce(b.last_event_id, 0) AS backup_last_event_id, b.last_event_at AS backup_last_event_at,
       coalesce(b.max_token, 0) AS backup_max_token,
       (SELECT at FROM fenced) AS fenced_at
FROM before b, bumped a
