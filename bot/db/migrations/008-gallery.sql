-- 008: the gallery (/genadmin gallery set, the Share button on results). A guild's gallery channel, and
-- one row per job shared there: claimed (message_id NULL) before the post is sent with the row's
-- deterministic nonce, completed with the message id once Discord answers, so a retry after a crash
-- gets Discord's stored post back instead of a second one.
BEGIN IMMEDIATE;

ALTER TABLE guild_settings ADD COLUMN gallery_channel_id INTEGER;  -- NULL: no gallery

CREATE TABLE gallery_posts (
    job_id              INTEGER PRIMARY KEY REFERENCES jobs(id),
    guild_id            INTEGER NOT NULL,
    channel_id          INTEGER NOT NULL,  -- the gallery channel it was (or is being) posted in
    message_id          INTEGER,           -- NULL until Discord's answer is recorded
    replaced_message_id INTEGER,           -- a deleted gallery post this one stands in for (its nonce)
    shared_by           INTEGER NOT NULL,  -- the member (or moderator) who pressed Share
    shared_at           REAL NOT NULL
);

PRAGMA user_version = 8;
COMMIT;
