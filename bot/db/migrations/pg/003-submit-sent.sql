-- 003 on PostgreSQL: the twin of ../003-submit-sent.sql (when the bot began sending a job).
ALTER TABLE jobs ADD COLUMN submit_sent_at DOUBLE PRECISION;
UPDATE jobs SET submit_sent_at = submitted_at WHERE submitted_at IS NOT NULL;
