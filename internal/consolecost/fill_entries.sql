-- consolecost: entries g = $2 .. $3 of the namespace $1, keys
-- order-000000001 ..., in the shares of a ledger that has run for a month:
-- per 1,000 keys, 1 leased (every other one of them stuck: its lease ran
-- out 10 minutes ago), 10 failed, 10 released and 979 completed with a
-- 40-byte result; 500 owners; updated_at spread over the last 30 days.
INSERT INTO entries (namespace, key, state, owner, fencing_token, lease_expires_at, attempts,
                     fingerprint, result, error_code, error_message, metadata,
                     created_at, updated_at, finished_at, expires_at)
SELECT $1::text, 'order-' || lpad(g::text, 9, '0'), s.state, 'worker-' || (g % 500), 1 + g % 3,
       CASE WHEN s.state = 'leased' THEN now() + CASE WHEN g % 2000 = 0 THEN interval '-10 minutes' ELSE interval '10 minutes' END END,
       1 + g % 3, '\x0123456789abcdef'::bytea,
       CASE WHEN s.state = 'completed' THEN convert_to('{"receipt":"r-' || lpad(g::text, 12, '0') || '","ok":true}', 'UTF8') END,
       CASE WHEN s.state = 'failed' THEN 'CARD_DECLINED' END,
       CASE WHEN s.state = 'failed' THEN 'the card was declined' END,
       '{"pipeline":"checkout"}'::jsonb,
       t.at - interval '30 seconds', t.at,
       CASE WHEN s.state IN ('completed', 'failed') THEN t.at END,
       CASE WHEN s.state IN ('completed', 'failed') THEN t.at + interval '60 days' END
FROM generate_series($2::bigint, $3::bigint) AS g
CROSS JOIN LATERAL (SELECT CASE WHEN g % 1000 = 0 THEN 'leased'
                                WHEN g % 1000 <= 10 THEN 'failed'
                                WHEN g % 1000 <= 20 THEN 'released'
                                ELSE 'completed' END AS state) AS s
CROSS JOIN LATERAL (SELECT now() - interval '1 minute' - (g * 7919 % 2592000) * interval '1 second' AS at) AS t
