-- 002 on PostgreSQL: the twin of ../002-job-creator.sql (which process created a job).
ALTER TABLE jobs ADD COLUMN created_by TEXT;
