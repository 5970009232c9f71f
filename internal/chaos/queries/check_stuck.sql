-- ledgerd's sessions that have run one statement for more than 10 seconds:
-- longer than any statement timeout or request deadline allows, so a
-- session stuck after a fault.
SELECT count(*)
FROM pg_stat_activity
WHERE application_name = 'ledgerd' AND state = 'active'
  AND query_start < now() - interval '10 seconds'
