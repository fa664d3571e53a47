-- 009: Runware's prompt enhancer (an option of /video). The job keeps its share of the reserve, the
-- window of its enhancement call (written before the call, as submit_sent_at is for the submit) and
-- the answer: the enhanced text and what Runware reported for it. See bot/services/enhance.py for
-- how these decide what the enhancement costs the member.
BEGIN IMMEDIATE;

ALTER TABLE jobs ADD COLUMN enhance_reserve_micro INTEGER CHECK (enhance_reserve_micro >= 0);  -- NULL: no enhancement
ALTER TABLE jobs ADD COLUMN enhance_sent_at REAL;       -- a call is out, not answered yet (NULL once refused)
ALTER TABLE jobs ADD COLUMN enhance_resent INTEGER NOT NULL DEFAULT 0;  -- a call went out while one was unanswered
ALTER TABLE jobs ADD COLUMN enhanced_prompt TEXT;
ALTER TABLE jobs ADD COLUMN enhance_cost_micro INTEGER CHECK (enhance_cost_micro >= 0);

PRAGMA user_version = 9;
COMMIT;
