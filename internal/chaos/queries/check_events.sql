-- The grants and completions of a scenario's namespace, in the order they
-- committed per key (a key's events are written under its row lock, so
-- their ids follow the commits). $1 namespace
SELECT key, kind, fencing_token
FROM events
WHERE namespace = $1 AND kind IN ('reserved', 'taken_over', 'reclaimed', 'completed')
ORDER BY key, id
