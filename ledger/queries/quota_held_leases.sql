-- The unexpired leases a namespace holds, over entries_leased_idx.
--
-- $1 namespace
SELECT count(*) FROM entries WHERE namespace = $1 AND state = 'leased' AND lease_expires_at > now()
