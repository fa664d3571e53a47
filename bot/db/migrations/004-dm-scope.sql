-- 004: direct-message jobs get a scope of their own, guild_id -1 (DM_SCOPE, bot/services/quotas.py).
-- They were stored under guild 0, the terminal's, so DM quotas and usage mixed with the terminal's.
-- A DM job is told apart by its channel: the terminal's jobs have channel 0. Their ledger rows move
-- with them (the append-only guard is lifted for this one statement and put back as it was).
-- Limits, credits and bans recorded for guild 0 stay with the terminal, where they were set.
BEGIN IMMEDIATE;

UPDATE jobs SET guild_id = -1 WHERE guild_id = 0 AND channel_id <> 0;

DROP TRIGGER ledger_no_update;
UPDATE ledger SET guild_id = -1 WHERE job_id IN (SELECT id FROM jobs WHERE guild_id = -1);
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;

PRAGMA user_version = 4;
COMMIT;
