-- ListEntries of leased entries only (stuck keys, held leases): the same as
-- list_entries.sql, through the partial index entries_leased_idx, so that
-- on-call listings read the leases, not the whole namespace.
--
-- $1 namespace, $2 after key (exclusive; NULL: from the start), $3 range
-- start (inclusive; '' for none), $4 range end (exclusive; NULL for none),
-- $5 states (NULL: any), $6 owner ('' for any), $7 updated at or after
-- (NULL: any), $8 updated before (NULL: any), $9 stuck only, $10 page size
SELECT namespace, key, state, owner, fencing_token, lease_expires_at,
       coalesce(lease_expires_at <= now(), false) AS lease_expired,
       coalesce(greatest(0, extract(epoch FROM lease_expires_at - now()) * 1000), 0)::bigint AS lease_remaining_ms,
       attempts, fingerprint, NULL::bytea AS result, error_code, error_message, checkpoint, metadata,
       created_at, updated_at, finished_at, expires_at
FROM entries
WHERE namespace = $1 AND state = 'leased'
  AND ($2::text IS NULL OR key > $2::text)
  AND key >= $3::text
  AND ($4::text IS NULL OR key < $4::text)
  AND ($5::text[] IS NULL OR state = ANY ($5::text[]))
  AND ($6::text = '' OR owner = $6::text)
  AND ($7::timestamptz IS NULL OR updated_at >= $7::timestamptz)
  AND ($8::timestamptz IS NULL OR updated_at < $8::timestamptz)
  AND (NOT $9::boolean OR (state = 'leased' AND lease_expires_at <= now()))
ORDER BY key
LIMIT $10
