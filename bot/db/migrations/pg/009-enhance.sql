-- 009 on PostgreSQL: the twin of ../009-enhance.sql (the prompt enhancer's columns on the job).
ALTER TABLE jobs ADD COLUMN enhance_reserve_micro BIGINT CHECK (enhance_reserve_micro >= 0);
ALTER TABLE jobs ADD COLUMN enhance_sent_at DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN enhance_resent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN enhanced_prompt TEXT;
ALTER TABLE jobs ADD COLUMN enhance_cost_micro BIGINT CHECK (enhance_cost_micro >= 0);
