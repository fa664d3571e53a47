-- 003: when the bot began sending a job to Runware. From that moment Runware may have it (the
-- answer can be lost, the process killed before 'submitted' is written), so a cancel no longer
-- frees it: it is polled and settles to what Runware bills. submitted_at stays the acknowledgement.
BEGIN IMMEDIATE;

ALTER TABLE jobs ADD COLUMN submit_sent_at REAL;
UPDATE jobs SET submit_sent_at = submitted_at WHERE submitted_at IS NOT NULL;

PRAGMA user_version = 3;
COMMIT;
