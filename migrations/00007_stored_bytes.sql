-- Every stored byte counted (docs/security.md, "Quotas").
--
-- max_stored_bytes used to count the results only. An entry's stored bytes
-- are now the bytes of every field a caller writes into it, all kept until
-- the entry is reset or purged: its key, owner, fingerprint, labels
-- (metadata: keys and values, as max_metadata_bytes counts them),
-- checkpoint, result, and error code and message. entry_stored_bytes is
-- that definition, the one every statement and the recount use.
--
-- namespace_usage keeps, for the namespaces with the quota only, the sum
-- over their entries. Every statement that changes one of those fields
-- adds the change in the same statement, through namespace_usage_add,
-- which refuses a change that would grow the sum over the quota: the
-- statement fails with SQLSTATE LQ001 and changes nothing (ledger/quota.go
-- turns it into a *QuotaError). A change that does not grow the sum is
-- never refused, so that a namespace over its quota (the quota was lowered)
-- can still shrink.
--
-- The upgrade recounts the namespaces that have the quota under the new
-- definition, with entries locked in SHARE mode as setting the quota does
-- (ledger/quota.go), so that an upgraded ledger is exact.

-- +goose Up

-- +goose StatementBegin
CREATE FUNCTION entry_stored_bytes(key text, owner text, fingerprint bytea, metadata jsonb,
                                   checkpoint bytea, result bytea, error_code text, error_message text)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT octet_length(key)::bigint + octet_length(owner) + octet_length(fingerprint)
         + coalesce((SELECT sum(octet_length(k) + octet_length(v)) FROM jsonb_each_text(metadata) AS m (k, v)), 0)
         + coalesce(octet_length(checkpoint), 0) + coalesce(octet_length(result), 0)
         + coalesce(octet_length(error_code), 0) + coalesce(octet_length(error_message), 0)
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION namespace_usage_add(namespace text, stored_bytes bigint, delta bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    quota bigint;
BEGIN
    IF delta > 0 THEN
        SELECT n.max_stored_bytes INTO quota FROM namespaces n WHERE n.name = namespace;
        IF quota > 0 AND stored_bytes + delta > quota THEN
            RAISE EXCEPTION 'ledgerd: namespace % is at its max_stored_bytes quota', namespace
                USING ERRCODE = 'LQ001',
                      DETAIL = json_build_object('namespace', namespace, 'limit', quota,
                                                 'usage', stored_bytes + delta)::text;
        END IF;
    END IF;
    RETURN stored_bytes + delta;
END;
$$;
-- +goose StatementEnd

LOCK TABLE entries IN SHARE MODE;
UPDATE namespace_usage u
SET stored_bytes = (SELECT coalesce(sum(entry_stored_bytes(e.key, e.owner, e.fingerprint, e.metadata, e.checkpoint,
                                                           e.result, e.error_code, e.error_message)), 0)
                    FROM entries e WHERE e.namespace = u.namespace);

-- +goose Down
LOCK TABLE entries IN SHARE MODE;
UPDATE namespace_usage u
SET stored_bytes = (SELECT coalesce(sum(octet_length(e.result)), 0) FROM entries e WHERE e.namespace = u.namespace);
DROP FUNCTION namespace_usage_add(text, bigint, bigint);
DROP FUNCTION entry_stored_bytes(text, text, bytea, jsonb, bytea, bytea, text, text);
