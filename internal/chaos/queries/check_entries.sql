-- The final ledger of a scenario's namespace. $1 namespace
SELECT key, state, fencing_token, result
FROM entries
WHERE namespace = $1
