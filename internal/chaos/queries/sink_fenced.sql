-- A fenced write: accepted only when its token is at least the highest the
-- sink has accepted for the key (an equal token is the same worker writing
-- again). An accepted write is logged by the same statement.
--
-- $1 namespace, $2 key, $3 token, $4 value, $5 writer
WITH accepted AS (
    INSERT INTO chaos_sink.fenced AS s (namespace, key, token, value, writer)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (namespace, key) DO UPDATE
        SET token = EXCLUDED.token, value = EXCLUDED.value, writer = EXCLUDED.writer
        WHERE s.token <= EXCLUDED.token
    RETURNING namespace, key, token, value, writer
), logged AS (
    INSERT INTO chaos_sink.fenced_log (namespace, key, token, value, writer)
    SELECT namespace, key, token, value, writer FROM accepted
    RETURNING id
)
SELECT count(*) FROM logged
