-- Reserve can wait for the holder of a key (ReserveRequest.wait_timeout).
-- Waiters are woken by a notification when the key leaves the lease they
-- saw. To keep NOTIFY off the hot path (a notifying transaction takes a
-- global lock at commit), only keys that somebody waits for notify: a
-- waiting Reserve sets entries.waiters, and the statements that change the
-- lease (complete, fail, release, takeover) clear it.

-- +goose Up
ALTER TABLE entries ADD COLUMN waiters boolean NOT NULL DEFAULT false;

-- +goose StatementBegin
CREATE FUNCTION entries_wake_waiters() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    payload text := json_build_array(TG_TABLE_SCHEMA, NEW.namespace, NEW.key)::text;
BEGIN
    -- A payload must stay under 8000 bytes; for a key too long for that,
    -- wake the whole namespace's waiters instead (a null key).
    IF octet_length(payload) > 7900 THEN
        payload := json_build_array(TG_TABLE_SCHEMA, NEW.namespace, NULL)::text;
    END IF;
    PERFORM pg_notify('ledgerd_waiters', payload);
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER entries_wake_waiters
    AFTER UPDATE ON entries
    FOR EACH ROW
    WHEN (OLD.waiters AND (NEW.state <> OLD.state OR NEW.fencing_token <> OLD.fencing_token))
    EXECUTE FUNCTION entries_wake_waiters();

-- +goose Down
DROP TRIGGER entries_wake_waiters ON entries;
DROP FUNCTION entries_wake_waiters();
ALTER TABLE entries DROP COLUMN waiters;
