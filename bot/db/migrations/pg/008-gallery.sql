-- 008 on PostgreSQL: the twin of ../008-gallery.sql (the gallery channel and the posts shared there).
ALTER TABLE guild_settings ADD COLUMN gallery_channel_id BIGINT;

CREATE TABLE gallery_posts (
    job_id              BIGINT PRIMARY KEY REFERENCES jobs(id),
    guild_id            BIGINT NOT NULL,
    channel_id          BIGINT NOT NULL,
    message_id          BIGINT,
    replaced_message_id BIGINT,
    shared_by           BIGINT NOT NULL,
    shared_at           DOUBLE PRECISION NOT NULL
);
