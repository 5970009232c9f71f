-- LeaseCounts: the leased entries of every namespace, split by the
-- database's clock into leases still held and leases that ran out (not yet
-- taken over). Every namespace is listed, with zeros when it has no lease,
-- so that a gauge falls to zero instead of vanishing.
--
-- The leased entries are read through the partial index entries_leased_idx
-- (migrations/00005), not the whole table.
SELECT n.name AS namespace,
       count(e.key) FILTER (WHERE e.lease_expires_at > now())  AS held,
       count(e.key) FILTER (WHERE e.lease_expires_at <= now()) AS expired
FROM namespaces n
LEFT JOIN entries e ON e.namespace = n.name AND e.state = 'leased'
GROUP BY n.name
