-- Serialize the namespace creations authorized by one binding pattern
-- ("team-a-*") until the end of the transaction, so that each one counts
-- the pattern's namespaces with every earlier creation committed, on any
-- replica. The class (first key) keeps these locks apart from the quota
-- locks of quota_lock.sql; the schema keeps ledgers that share a database
-- apart.
--
-- $1 pattern
SELECT pg_advisory_xact_lock(1279544400, hashtext(current_schema() || '/' || $1))
