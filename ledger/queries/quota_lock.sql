-- Serialize the grants of one namespace with a held-leases quota until the
-- end of the transaction, so that each one counts the leases held with
-- every earlier grant committed. The class (first key) keeps these locks
-- apart from any other advisory lock; the schema keeps ledgers that share a
-- database apart.
--
-- $1 namespace
SELECT pg_advisory_xact_lock(1279543121, hashtext(current_schema() || '/' || $1))
