-- 005: a guild's cost-confirmation threshold (/genadmin confirm set), micro-USD; NULL = the config's
-- limits.confirm_above_usd, 0 = never ask.
BEGIN IMMEDIATE;

ALTER TABLE guild_settings ADD COLUMN confirm_above_micro INTEGER CHECK (confirm_above_micro >= 0);

PRAGMA user_version = 5;
COMMIT;
