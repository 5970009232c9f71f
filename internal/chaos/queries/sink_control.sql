-- An unfenced write: always accepted.
--
-- $1 namespace, $2 key, $3 token, $4 value, $5 writer
INSERT INTO chaos_sink.control (namespace, key, token, value, writer)
VALUES ($1, $2, $3, $4, $5)
