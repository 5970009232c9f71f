-- lookup_purged.sql for many keys of a namespace: the last purged event of
-- each key that has one, with the key's position (n).
--
-- $1 namespace, $2 keys
SELECT i.n, p.at, p.fencing_token, p.owner, p.attempt
FROM unnest($2::text[]) WITH ORDINALITY AS i (key, n)
CROSS JOIN LATERAL (
    SELECT at, fencing_token, owner, attempt
    FROM events
    WHERE namespace = $1 AND key = i.key AND kind = 'purged'
    ORDER BY id DESC
    LIMIT 1
) p
