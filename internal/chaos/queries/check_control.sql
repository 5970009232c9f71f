-- Every write to the unfenced control sink, in order per key. $1 namespace
SELECT key, token
FROM chaos_sink.control
WHERE namespace = $1
ORDER BY key, id
