-- Platform audit events (namespace and key empty) for revoked or expired
-- tokens presented with their right secret: one statement for every
-- refusal a replica queued since its last write. The caller and the owner
-- are the token's principal, so that the principal's events show them. The
-- event's time is its transaction's, like every other event's (ListEvents
-- relies on it); refused_at is when the call was refused, a moment before.
--
-- $1 token ids, $2 principals, $3 reasons (revoked, expired), $4 source
-- addresses, $5 when each was refused, $6 the refusals of the token that
-- the event stands for (the first, and those after it that were not
-- recorded)
INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, detail)
SELECT '', '', 'credential_refused', 0, r.principal, 0, r.principal,
       jsonb_build_object('token_id', r.id, 'principal', r.principal, 'reason', r.reason,
                          'source', r.source, 'refused_at', r.at, 'refusals', r.refusals)
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::bigint[])
    AS r (id, principal, reason, source, at, refusals)
