-- When each API token was last used to authenticate a call.
--
-- Each replica remembers the last use of every token in memory and writes
-- them in one statement per credential refresh (--auth-refresh-interval,
-- 5s), never one write per call: last_used_at is as precise as that
-- interval, and it only moves forward (greatest), whichever replica writes
-- last. NULL: not used since this column was added.

-- +goose Up
ALTER TABLE api_tokens ADD COLUMN last_used_at timestamptz;

-- +goose Down
ALTER TABLE api_tokens DROP COLUMN last_used_at;
