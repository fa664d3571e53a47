-- 005 on PostgreSQL: the twin of ../005-confirm-threshold.sql (a guild's cost-confirmation threshold).
ALTER TABLE guild_settings ADD COLUMN confirm_above_micro BIGINT CHECK (confirm_above_micro >= 0);
