-- Every namespace's event retentions, for the sweeper: its own, raised to
-- the server's floor and to its entries' retention (a value stored before
-- those bounds existed must not erase events: a purged key's fencing
-- tokens continue from its purged event), and the admin events' (at least
-- the platform's admin event retention). Then the platform's events (empty
-- namespace), kept for the admin event retention.
--
-- $1 floor in ms (Limits.MinEventRetention), $2 admin event retention in ms
SELECT name,
       greatest(event_retention_ms, retention_ms, $1::bigint) AS event_retention_ms,
       greatest(event_retention_ms, retention_ms, $1::bigint, $2::bigint) AS admin_event_retention_ms
FROM namespaces
UNION ALL
SELECT '', $2::bigint, $2::bigint
ORDER BY name
