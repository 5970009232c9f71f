-- Every namespace's event retention, for the sweeper.
SELECT name, event_retention_ms FROM namespaces ORDER BY name
