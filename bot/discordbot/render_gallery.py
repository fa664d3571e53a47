"""What the gallery shows and what members are told about it: the gallery post (the prompt, who made
it, the model, duration and size, a link to the original result) and the Share button's replies.
Pure functions of records (no I/O, no clock)."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot.db.records import JobRecord
from bot.discordbot.limits import CONTENT_MAX, DESCRIPTION_MAX
from bot.discordbot.render_job import (
    LOOP_TEXT,
    add_enhanced_from,
    clip,
    discord_time,
    is_loop,
    job_prompt,
    job_title,
    shown_prompt,
    size_text,
)

COLOR_GALLERY = discord.Colour.gold()
SET_HINT = "`/genadmin gallery set channel:#channel`"
NO_GALLERY = ("This server has no gallery channel yet, so there is nowhere to share to. A moderator can "
              f"pick one with {SET_HINT}.")


def permission_names(missing: Sequence[str]) -> str:
    return ", ".join(missing) + (" permission" if len(missing) == 1 else " permissions")


def unusable_channel(channel_id: int, missing: Sequence[str] | None) -> str:
    """/genadmin gallery set refused: the channel is gone, or the bot cannot post there."""
    if missing is None:
        return f"I cannot find the channel <#{channel_id}>; pick another one for the gallery."
    return (f"I cannot use <#{channel_id}> as the gallery: I am missing the {permission_names(missing)} "
            "there. Grant them to me in that channel (or pick another channel) and try again.")


def gallery_unusable(channel_id: int, missing: Sequence[str] | None) -> str:
    """A share refused because the gallery channel is gone or closed to the bot."""
    if missing is None:
        return (f"This server's gallery channel (<#{channel_id}>) no longer exists. A moderator can pick "
                f"another with {SET_HINT}.")
    return (f"I cannot post in the gallery <#{channel_id}>: I am missing the {permission_names(missing)} "
            f"there. A moderator can grant them, or pick another gallery with {SET_HINT}.")


def gallery_refused(channel_id: int, status: int) -> str:
    """Discord refused the gallery post although the permissions looked right (403, or the channel is gone)."""
    return (f"Discord refused my post in the gallery <#{channel_id}> ({status}). A moderator can check my "
            f"permissions there, or pick another gallery with {SET_HINT}.")


def not_yours(job: JobRecord) -> str:
    return f"Only <@{job.user_id}>, who made job #{job.id}, or a moderator can share it to the gallery."


def nothing_to_share(job: JobRecord) -> str:
    return f"Job #{job.id} has no video to share."


def video_gone(job: JobRecord) -> str:
    return (f"The result message of job #{job.id} was deleted, so its video is gone: there is nothing "
            "left to share.")


def videos_unavailable(job: JobRecord) -> str:
    return (f"The videos of job #{job.id} are no longer available (not in its message any more, and Runware's "
            "links have expired): there is nothing left to share.")


def already_shared(job: JobRecord, url: str) -> str:
    return f"Job #{job.id} is already in the gallery: {url}"


def shared(job: JobRecord, channel_id: int, url: str) -> str:
    return f"Shared job #{job.id} to <#{channel_id}>: {url}"


def unreachable(job: JobRecord) -> str:
    return (f"I could not hear back from Discord about the gallery post of job #{job.id}. Press Share again: "
            "it will not be posted twice.")


def link_line(index: int, url: str, expires_at: float | None) -> str:
    """A video of the result that was posted as a link (too large to attach): the same link."""
    expiry = f" (link expires {discord_time(expires_at)})" if expires_at else ""
    return f"Video {index}: {url}{expiry}"


def too_large_line(filename: str, source_url: str) -> str:
    """A video Discord would not take in the gallery (40005): it stays in the original message."""
    return f"{discord.utils.escape_markdown(filename)} is too large to post here again: {source_url}"


def gallery_post(job: JobRecord, label: str, *, source_url: str, shared_by: int, lines: Sequence[str]
                 ) -> tuple[str | None, discord.Embed]:
    """Content (links to the videos that are not attached, else None) and the gallery embed. The maker
    is a mention inside the embed, which never pings."""
    embed = discord.Embed(title=job_title(job, label), url=source_url,
                          description=shown_prompt(job_prompt(job), DESCRIPTION_MAX - 100), colour=COLOR_GALLERY)
    add_enhanced_from(embed, job)
    embed.add_field(name="Made by", value=f"<@{job.user_id}>")
    embed.add_field(name="Model", value=label)
    embed.add_field(name="Duration", value=f"{job.duration_s} s")
    embed.add_field(name="Aspect", value=size_text(job))
    if is_loop(job):
        embed.add_field(name="Loop", value=LOOP_TEXT)
    if shared_by != job.user_id:
        embed.add_field(name="Shared by", value=f"<@{shared_by}>")
    embed.add_field(name="Original", value=f"[the result message]({source_url})", inline=False)
    content = clip("\n".join(lines), CONTENT_MAX) if lines else None
    return content, embed
