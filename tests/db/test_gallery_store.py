"""The gallery's rows (migration 008) on both stores, from an empty database: the guild's gallery
channel, and a job's gallery post claimed once, completed with its message, reopened when the post
was deleted in Discord."""

from __future__ import annotations

import pytest

from bot.db import Conn, IntegrityError, open_database
from bot.db.connection import load_migrations
from bot.db.gallery import claim_gallery_post, get_gallery_post, record_gallery_post, reopen_gallery_post
from bot.db.guilds import get_guild_settings, update_guild_settings
from bot.db.jobs import insert_job
from bot.db.records import GalleryPost
from tests.db.migrations import migrations_before

GUILD, GALLERY, OTHER = 11, 900, 901
OWNER, MOD = 3, 4


async def _job(db, task_uuid: str = "t-1") -> int:
    return await insert_job(
        db, guild_id=GUILD, channel_id=2, user_id=OWNER, model_key="m", params={"prompt": "x"}, task_uuid=task_uuid,
        duration_s=5, variations=1, estimate_micro=350_000, created_at=1.0, day="2024-01-01",
        month="2024-01", upload_limit=None, parent_job_id=None,
    )


async def test_the_gallery_channel_is_a_guild_setting(store):
    db = await open_database(store)
    try:
        assert await db.user_version() == load_migrations()[-1].version
        assert (await get_guild_settings(db, GUILD)).gallery_channel_id is None
        settings = await update_guild_settings(db, GUILD, gallery_channel_id=GALLERY, log_channel_id=5)
        assert (settings.gallery_channel_id, settings.log_channel_id) == (GALLERY, 5)
        assert (await update_guild_settings(db, GUILD, gallery_channel_id=None)).gallery_channel_id is None
        assert (await get_guild_settings(db, GUILD)).log_channel_id == 5
    finally:
        await db.close()


async def test_a_post_is_claimed_once_recorded_and_reopened(store):
    db = await open_database(store)
    try:
        job_id = await _job(db)
        assert await get_gallery_post(db, job_id) is None
        first = await db.run_tx(claim_gallery_post, job_id=job_id, guild_id=GUILD, channel_id=GALLERY,
                                shared_by=OWNER, now=10.0)
        assert first == GalleryPost(job_id, GUILD, GALLERY, None, None, OWNER, 10.0)
        # A second claim (a retry, another presser) gets the same row: one post per job.
        again = await db.run_tx(claim_gallery_post, job_id=job_id, guild_id=GUILD, channel_id=OTHER,
                                shared_by=MOD, now=20.0)
        assert again == first

        await record_gallery_post(db, job_id, GALLERY, 5000)
        posted = await get_gallery_post(db, job_id)
        assert (posted.channel_id, posted.message_id) == (GALLERY, 5000)

        # Deleted in Discord: reopened once, remembering the deleted post (its replacement's nonce).
        reopened = await reopen_gallery_post(db, job_id=job_id, gone_message_id=5000, shared_by=MOD, now=30.0)
        assert reopened == GalleryPost(job_id, GUILD, GALLERY, None, 5000, MOD, 30.0)
        assert await reopen_gallery_post(db, job_id=job_id, gone_message_id=5000, shared_by=OWNER, now=31.0) is None
        assert await db.run_tx(claim_gallery_post, job_id=job_id, guild_id=GUILD, channel_id=GALLERY,
                               shared_by=OWNER, now=40.0) == reopened
        await record_gallery_post(db, job_id, OTHER, 6000)  # the gallery moved before the retry
        assert await get_gallery_post(db, job_id) == GalleryPost(job_id, GUILD, OTHER, 6000, 5000, MOD, 30.0)
    finally:
        await db.close()


async def test_a_post_belongs_to_a_job(store):
    db = await open_database(store)
    try:
        with pytest.raises(IntegrityError):  # no such job
            await db.run_tx(claim_gallery_post, job_id=404, guild_id=GUILD, channel_id=GALLERY, shared_by=OWNER,
                            now=1.0)
        assert await get_gallery_post(db, 404) is None
    finally:
        await db.close()


async def test_an_older_database_keeps_its_settings_and_gets_no_gallery(store, tmp_path):
    """Migration 008 over a database at 007 on both stores: the guild's settings stay, with no gallery."""
    db = await open_database(store, migrations_dir=migrations_before(tmp_path, 8))
    try:
        assert await db.user_version() == 7
        await db.run(Conn.execute, "INSERT INTO guild_settings (guild_id, log_channel_id) VALUES (?, ?)", (GUILD, 5))
    finally:
        await db.close()
    db = await open_database(store)
    try:
        assert await db.user_version() >= 8
        settings = await get_guild_settings(db, GUILD)
        assert (settings.log_channel_id, settings.gallery_channel_id) == (5, None)
        assert await get_gallery_post(db, 1) is None
    finally:
        await db.close()
