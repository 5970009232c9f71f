-- The leases of one namespace for GetNamespace's usage, split by the
-- database's clock: held (unexpired; what max_held_leases bounds) and
-- expired (ran out, not yet taken over: the stuck keys).
--
-- Read through the partial index entries_leased_idx (migrations/00005), as
-- quota_held_leases.sql and ListEntries' stuck filter
-- (list_entries_leased.sql) are: the cost follows the namespace's leased
-- entries, not its size.
--
-- $1 namespace
SELECT count(*) FILTER (WHERE lease_expires_at > now())  AS held,
       count(*) FILTER (WHERE lease_expires_at <= now()) AS expired
FROM entries
WHERE namespace = $1 AND state = 'leased'
