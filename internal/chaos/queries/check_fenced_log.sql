-- Every write the fenced sink accepted, in the order it accepted them per
-- key. $1 namespace
SELECT key, token
FROM chaos_sink.fenced_log
WHERE namespace = $1
ORDER BY key, id
