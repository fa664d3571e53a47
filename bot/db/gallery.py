"""SQL for the gallery: one row per job shared to its guild's gallery channel (migration 008).

The row is claimed in its own transaction BEFORE the post is sent and completed with the message id
once Discord answers. A row without a message id is a post that may or may not have reached Discord:
the retry sends it with the same nonce (bot/discordbot/nonces.py), and Discord hands back the message
it stored instead of creating a second one."""

from __future__ import annotations

from bot.db.connection import Conn, query
from bot.db.records import GalleryPost


@query
def get_gallery_post(c: Conn, job_id: int) -> GalleryPost | None:
    row = c.fetchone("SELECT * FROM gallery_posts WHERE job_id = ?", (job_id,))
    return GalleryPost.from_row(row) if row else None


@query
def claim_gallery_post(c: Conn, *, job_id: int, guild_id: int, channel_id: int, shared_by: int,
                       now: float) -> GalleryPost:
    """The job's row, made now unless it has one (run it in run_tx: the claim and the read are one
    transaction). An existing row is returned as it is, posted or not."""
    c.execute(
        """INSERT INTO gallery_posts (job_id, guild_id, channel_id, shared_by, shared_at)
           VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id) DO NOTHING""",
        (job_id, guild_id, channel_id, shared_by, now),
    )
    post = get_gallery_post(c, job_id)
    assert post is not None
    return post


@query
def record_gallery_post(c: Conn, job_id: int, channel_id: int, message_id: int) -> None:
    """Discord answered: the post is ``message_id`` in ``channel_id``."""
    c.execute("UPDATE gallery_posts SET channel_id = ?, message_id = ? WHERE job_id = ?",
              (channel_id, message_id, job_id))


@query
def reopen_gallery_post(c: Conn, *, job_id: int, gone_message_id: int, shared_by: int,
                        now: float) -> GalleryPost | None:
    """The gallery post ``gone_message_id`` was deleted in Discord: the job may be shared again, as a
    claim that remembers the deleted post (the next post's nonce names it, so it is a new message).
    None when the row no longer names that post (someone reopened or re-shared it first)."""
    row = c.fetchone(
        """UPDATE gallery_posts SET message_id = NULL, replaced_message_id = ?, shared_by = ?, shared_at = ?
           WHERE job_id = ? AND message_id = ? RETURNING *""",
        (gone_message_id, shared_by, now, job_id, gone_message_id),
    )
    return GalleryPost.from_row(row) if row else None
