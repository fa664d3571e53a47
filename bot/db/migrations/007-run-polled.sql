-- 007: `klingbot health` per process. Each run records when it last finished a poll round, so a
-- process whose poll loop is stuck shows even while another process on the same store polls on; the
-- one shared heartbeat row, which a fresh process kept fresh for a stuck one, goes.
BEGIN IMMEDIATE;

ALTER TABLE runs ADD COLUMN polled_at REAL;  -- NULL until the run's first finished poll round
DROP TABLE heartbeat;

PRAGMA user_version = 7;
COMMIT;
