"""What /video does once the interaction is deferred (SPEC 3.2 order): refuse DMs when not allowed,
validate the fields, fetch and check the attachments, check the bot's own permissions in the channel,
then let the engine reserve (one transaction) and queue the job. Anything wrong raises a
UserFacingError, which the error handler shows in the deferred ephemeral reply.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord

from bot.db.jobs import get_job
from bot.discordbot import render_job
from bot.discordbot.confirm import confirm_cost
from bot.discordbot.options import role_ids_of
from bot.discordbot.premium import is_premium, premium_config
from bot.download import fetch_bytes
from bot.errors import InvalidInput, NotPermitted, UserFacingError
from bot.images import MAX_IMAGE_BYTES, CheckedImage, check_frame_pair, check_image_async
from bot.requests import ResolvedRequest, resolve_request
from bot.services.quotas import DM_SCOPE, Member

if TYPE_CHECKING:
    from bot.discordbot.app import KlingBot

log = logging.getLogger(__name__)

PROGRESS_LINK_WAIT_S = 3.0
# A stand-in frame size for the first validation pass, before any download: only whether a first
# frame exists matters there; the real size picks the default aspect in the second pass.
_PLACEHOLDER_SIZE = (1280, 720)
REQUIRED_PERMISSIONS = (
    ("send_messages", "Send Messages"),
    ("embed_links", "Embed Links"),
    ("attach_files", "Attach Files"),
)


@dataclass(frozen=True)
class VideoOptions:
    prompt: str
    model: str | None = None
    first_frame: discord.Attachment | None = None
    last_frame: discord.Attachment | None = None
    duration: int | None = None
    aspect: str | None = None
    negative_prompt: str | None = None
    cfg_scale: float | None = None
    variations: int | None = None
    format: str | None = None
    quality: int | None = None
    loop: bool = False
    enhance: bool = False


def resolve(bot: KlingBot, opts: VideoOptions, first: CheckedImage | None, has_first: bool,
            has_last: bool) -> ResolvedRequest:
    size = (first.width, first.height) if first else (_PLACEHOLDER_SIZE if has_first else None)
    return resolve_request(
        bot.cfg,
        prompt=opts.prompt,
        model=opts.model,
        duration=opts.duration,
        aspect=opts.aspect,
        negative_prompt=opts.negative_prompt,
        cfg_scale=opts.cfg_scale,
        variations=opts.variations,
        output_format=opts.format,
        quality=opts.quality,
        first_frame_size=size,
        has_last_frame=has_last,
        loop=opts.loop,
        enhance=opts.enhance,
    )


def member_of(interaction: discord.Interaction) -> Member:
    user = interaction.user
    guild_id = DM_SCOPE if interaction.guild_id is None else interaction.guild_id
    return Member(guild_id=guild_id, user_id=user.id, role_ids=role_ids_of(user),
                  premium=is_premium(interaction, premium_config(interaction)))


def missing_permissions(interaction: discord.Interaction) -> list[str]:
    """The permissions the bot needs in this channel to post progress and results, by name."""
    return missing_from(interaction.app_permissions, in_thread=isinstance(interaction.channel, discord.Thread))


def missing_from(perms: discord.Permissions, *, in_thread: bool) -> list[str]:
    """Which of REQUIRED_PERMISSIONS ``perms`` lacks, by name (in a thread, sending is its own permission)."""
    missing = []
    for attr, name in REQUIRED_PERMISSIONS:
        if attr == "send_messages" and in_thread:
            attr, name = "send_messages_in_threads", "Send Messages in Threads"
        if not getattr(perms, attr):
            missing.append(name)
    return missing


def check_channel(bot: KlingBot, interaction: discord.Interaction, what: str) -> None:
    """A new job may start here: a server channel (or DMs when allowed) the bot can post in."""
    if interaction.guild_id is None and not bot.cfg.discord.allow_dms:
        raise NotPermitted(f"{what} works in a server channel, not in direct messages.")
    if interaction.channel_id is None:
        raise UserFacingError("This channel cannot be used for videos.")
    if interaction.guild_id is not None:
        missing = missing_permissions(interaction)
        if missing:
            raise NotPermitted(f"I cannot post a video in this channel: I am missing the "
                               f"{', '.join(missing)} permission(s) here.")


async def fetch_frame(bot: KlingBot, attachment: discord.Attachment, field: str) -> CheckedImage:
    """Download (only from the attachment hosts, size-capped) and check one frame image."""
    if attachment.size and attachment.size > MAX_IMAGE_BYTES:
        limit = f"an image of at most {MAX_IMAGE_BYTES // (1024 * 1024)} MB"
        raise InvalidInput(field, attachment.filename, limit,
                           problem=f"{attachment.filename} is {attachment.size / (1024 * 1024):.1f} MB")
    data = await fetch_bytes(bot.running().web, attachment.url, allowed_hosts=list(bot.cfg.discord.attachment_hosts),
                             max_bytes=MAX_IMAGE_BYTES, what=field)
    return await check_image_async(data, field=field)


async def handle_video(bot: KlingBot, interaction: discord.Interaction, opts: VideoOptions) -> None:
    live = bot.running()
    if interaction.guild_id is None and not bot.cfg.discord.allow_dms:
        raise NotPermitted("/video works in a server channel, not in direct messages.")
    if interaction.channel_id is None:
        raise UserFacingError("This channel cannot be used for videos.")

    has_first, has_last = opts.first_frame is not None, opts.last_frame is not None
    # Every field first: nothing is downloaded for a bad one.
    draft = resolve(bot, opts, None, has_first, has_last)

    if interaction.guild_id is not None:
        missing = missing_permissions(interaction)
        if missing:
            raise NotPermitted(
                f"I cannot post your video in this channel: I am missing the {', '.join(missing)} "
                "permission(s) here. Ask a moderator to grant them, or use another channel."
            )

    member = member_of(interaction)
    # Ban, pause, channels, blocklist and limits before any download (checked again when reserving).
    await live.engine.store.precheck(
        member,
        channel_id=interaction.channel_id,
        blocklist_text="\n".join(filter(None, [draft.prompt, draft.negative_prompt])),
        estimate_micro=draft.estimate_micro,
        variations=draft.variations,
    )

    first = await fetch_frame(bot, opts.first_frame, "first_frame") if opts.first_frame else None
    last = await fetch_frame(bot, opts.last_frame, "last_frame") if opts.last_frame else None
    if first and last:
        check_frame_pair(first, last)
    request = resolve(bot, opts, first, has_first, has_last)
    # Nothing is reserved or uploaded until a costly job is confirmed.
    if not await confirm_cost(bot, interaction, request.estimate_micro, "this video"):
        return

    job = await live.engine.create_job(
        member,
        request,
        channel_id=interaction.channel_id,
        first=first,
        last=last,
        upload_limit=interaction.filesize_limit or None,
    )
    log.info("job %s queued for user %s in channel %s", job.id, job.user_id, job.channel_id)
    await tell_queued(bot, interaction, job.id)


async def tell_queued(bot: KlingBot, interaction: discord.Interaction, job_id: int) -> None:
    """Edit the ephemeral reply to say the job is queued, linking the progress message once the
    sink has posted it (or the channel, if that takes longer than a moment)."""
    live = bot.running()
    message_id = await live.sink.wait_progress_message(job_id, PROGRESS_LINK_WAIT_S)
    job = await get_job(live.db, job_id)
    if job is None:  # pragma: no cover - a job row is never deleted
        return
    message_id = message_id or job.progress_message_id
    url = render_job.jump_url(job.guild_id, job.channel_id, message_id) if message_id else None
    position = await live.engine.queue_position(job_id) if job.state == "queued" else None
    try:
        await interaction.edit_original_response(content=render_job.queued_reply(job, progress_url=url,
                                                                            position=position))
    except discord.HTTPException as exc:
        # An expired token (50027) only costs the member this confirmation; the job goes on.
        log.info("job %s: could not edit the /video reply (%s %s)", job_id, exc.status, exc.code)
