-- 007 on PostgreSQL: the twin of ../007-run-polled.sql (each run's last finished poll round; the
-- shared heartbeat row goes).
ALTER TABLE runs ADD COLUMN polled_at DOUBLE PRECISION;
DROP TABLE heartbeat;
