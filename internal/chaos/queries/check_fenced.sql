-- The fenced sink's final value per key. $1 namespace
SELECT key, token, value
FROM chaos_sink.fenced
WHERE namespace = $1
