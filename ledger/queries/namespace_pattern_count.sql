-- The namespaces a binding pattern's prefix matches, for
-- Config.MaxNamespacesPerPattern. namespaces holds one row per tenant
-- namespace (thousands, not millions), and creations are rare: a scan is
-- cheap, and starts_with needs no escaping of LIKE's '_'.
--
-- $1 prefix (the pattern without its '*'; empty for '*')
SELECT count(*) FROM namespaces WHERE starts_with(name, $1)
