-- 004 on PostgreSQL: the twin of ../004-dm-scope.sql (DM jobs move from guild 0 to their own scope,
-- -1, with their ledger rows; the append-only guard is lifted for that one statement).
UPDATE jobs SET guild_id = -1 WHERE guild_id = 0 AND channel_id <> 0;
ALTER TABLE ledger DISABLE TRIGGER ledger_no_update;
UPDATE ledger SET guild_id = -1 WHERE job_id IN (SELECT id FROM jobs WHERE guild_id = -1);
ALTER TABLE ledger ENABLE TRIGGER ledger_no_update;
