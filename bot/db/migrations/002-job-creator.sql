-- 002: which process created a job ("host:pid:run"). A job that needs frames but has none yet is
-- being uploaded by its creator while that process lives; only when it is dead were the frames lost.
BEGIN IMMEDIATE;

ALTER TABLE jobs ADD COLUMN created_by TEXT;

PRAGMA user_version = 2;
COMMIT;
