"""The gallery (SPEC 8): the Share button on a result posts it as a NEW message in the server's gallery
channel (/genadmin gallery set): the prompt, who made it, the model, duration and size, a link to the
original, and the videos re-attached (read from the result message's attachments through discord.py's
own session) or the links the result carried.

Posted once, across crashes (the database first, then the call, de-duplicated where Discord offers it):
the job's gallery row is claimed in one transaction, the post goes out with the row's nonce
(``kb-j<id>-g``) and ``enforce_nonce``, then its message id is recorded. A press that finds a recorded
post links to it and posts nothing; one that finds a claim without a message (a crash or a lost answer
in between) sends the same post again, and Discord hands back the message it stored. Discord keeps
nonces for a few minutes: a retry long after a lost answer may post a second copy.

A gallery post a moderator deleted is noticed when Share is pressed again (the recorded message answers
404): the row is reopened and the job may be shared again, under a nonce of its own.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import weakref
from dataclasses import dataclass

import aiohttp
import discord
from discord.ext import commands

from bot.db.gallery import claim_gallery_post, get_gallery_post, record_gallery_post, reopen_gallery_post
from bot.db.guilds import get_guild_settings
from bot.db.jobs import results_for_job
from bot.db.records import GalleryPost, JobRecord
from bot.discordbot import render_gallery
from bot.discordbot.app import RESTARTING, KlingBot
from bot.discordbot.cogs.buttons import job_here
from bot.discordbot.limits import MAX_FILES, is_lost_channel, too_large
from bot.discordbot.nonces import gallery_nonce
from bot.discordbot.pacer import ROUTINE
from bot.discordbot.permissions import bot_missing_in, may_manage_job
from bot.discordbot.render_job import jump_url, model_label
from bot.errors import NotPermitted, UserFacingError

log = logging.getLogger(__name__)

COG_NAME = "Gallery"
ACTIONS = ("share",)  # the presses this cog handles
NO_MENTIONS = discord.AllowedMentions.none()
_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


@dataclass(frozen=True)
class Source:
    """What the gallery post carries from the result."""

    url: str                          # the message the videos come from
    videos: list[tuple[str, bytes]]   # (filename, data) re-attached
    lines: list[str]                  # the videos the result posted as links


class GalleryCog(commands.Cog, name=COG_NAME):
    def __init__(self, bot: KlingBot) -> None:
        self.bot = bot
        # One share of a job at a time in this process (a press answered while another posts would
        # find a claim without a message); the nonce covers other processes.
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    async def cog_load(self) -> None:
        self.bot.add_button_handlers(ACTIONS, self)

    async def cog_unload(self) -> None:
        self.bot.drop_button_handlers(ACTIONS)

    async def handle(self, action: str, interaction: discord.Interaction, job_id: int) -> None:
        await self.share(interaction, job_id)

    # ---- Share -----------------------------------------------------------------------------------

    async def share(self, interaction: discord.Interaction, job_id: int) -> None:
        bot = self.bot
        live = bot.running()
        if interaction.guild_id is None:
            raise NotPermitted("Share works in the server where the video was made, not in direct messages.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        job = await job_here(bot, interaction, job_id)
        gallery_id = (await get_guild_settings(live.db, job.guild_id)).gallery_channel_id
        if not gallery_id:
            raise UserFacingError(render_gallery.NO_GALLERY)
        lock = self._locks.get(job.id)
        if lock is None:
            lock = self._locks[job.id] = asyncio.Lock()
        async with lock:
            text = await self._share(interaction, job, gallery_id)
        await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)

    async def _share(self, interaction: discord.Interaction, job: JobRecord, gallery_id: int) -> str:
        live = self.bot.running()
        db = live.db
        post = await get_gallery_post(db, job.id)
        if post is not None and post.message_id is not None and await self._still_posted(post):
            return render_gallery.already_shared(job, _post_url(post))  # for anyone who presses
        if not await may_manage_job(db, interaction, job):
            raise NotPermitted(render_gallery.not_yours(job))
        if job.state != "succeeded":
            raise UserFacingError(render_gallery.nothing_to_share(job))
        missing = await bot_missing_in(self.bot, job.guild_id, gallery_id)
        if missing is None or missing:
            raise NotPermitted(render_gallery.gallery_unusable(gallery_id, missing))
        source = await self._source(interaction, job)

        now = live.engine.clock.now()
        if post is not None and post.message_id is not None:
            log.info("job %s: gallery post %s was deleted; sharing it again", job.id, post.message_id)
            await reopen_gallery_post(db, job_id=job.id, gone_message_id=post.message_id,
                                      shared_by=interaction.user.id, now=now)
        post = await db.run_tx(claim_gallery_post, job_id=job.id, guild_id=job.guild_id, channel_id=gallery_id,
                               shared_by=interaction.user.id, now=now)
        if post.message_id is not None:  # another process shared it since
            return render_gallery.already_shared(job, _post_url(post))
        message = await self._post(job, post, gallery_id, source)
        await record_gallery_post(db, job.id, gallery_id, message.id)
        log.info("job %s shared to gallery %s as message %s by user %s", job.id, gallery_id, message.id,
                 interaction.user.id)
        return render_gallery.shared(job, gallery_id, jump_url(job.guild_id, gallery_id, message.id))

    async def _still_posted(self, post: GalleryPost) -> bool:
        """The recorded gallery post is still there (a moderator may have deleted it, or its channel)."""
        assert post.message_id is not None
        channel = self.bot.get_partial_messageable(post.channel_id, guild_id=post.guild_id)
        try:
            await channel.fetch_message(post.message_id)
        except discord.NotFound:
            return False
        except (discord.HTTPException, *_TRANSPORT_ERRORS) as exc:
            # No access, or Discord in trouble: the recorded post stands (never a second one on a guess).
            log.info("gallery post %s: could not check it (%r); taking it as there", post.message_id, exc)
        return True

    # ---- what is shared --------------------------------------------------------------------------

    async def _result_message(self, interaction: discord.Interaction, job: JobRecord) -> discord.Message:
        """The job's result message, fetched now (Discord signs its attachment URLs afresh). A /job
        re-post the member pressed Share on stands in for an original that is gone."""
        pressed = interaction.message
        if job.result_message_id:
            channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
            try:
                return await channel.fetch_message(job.result_message_id)
            except discord.NotFound:
                log.info("job %s: result message %s is gone", job.id, job.result_message_id)
                if pressed is not None and pressed.id == job.result_message_id:
                    pressed = None  # deleted while the press was on its way
            except discord.Forbidden:
                pass  # the bot may no longer read that channel: the pressed message is the same one
        if pressed is None:
            raise UserFacingError(render_gallery.video_gone(job))
        return pressed

    async def _source(self, interaction: discord.Interaction, job: JobRecord) -> Source:
        live = self.bot.running()
        results = [r for r in await results_for_job(live.db, job.id) if not r.nsfw]
        if not results:  # every video was withheld by the content check
            raise UserFacingError(render_gallery.nothing_to_share(job))
        message = await self._result_message(interaction, job)
        videos: list[tuple[str, bytes]] = []
        for attachment in message.attachments[:MAX_FILES]:
            try:
                videos.append((attachment.filename, await attachment.read()))
            except (discord.HTTPException, *_TRANSPORT_ERRORS) as exc:
                log.info("job %s: could not read attachment %s (%r)", job.id, attachment.filename, exc)
        # The videos that travel as links: every result (the content check's withheld ones aside) not
        # attached, named by the video UUID in the attached files' names, while Runware's link lives.
        attached = " ".join(name for name, _ in videos)
        ttl, now = float(self.bot.cfg.runware.output_ttl_s), live.engine.clock.now()
        lines = [render_gallery.link_line(index, r.video_url, r.created_at + ttl)
                 for index, r in enumerate(results, start=1)
                 if r.video_url and r.video_uuid not in attached and r.created_at + ttl > now]
        if not videos and not lines:
            raise UserFacingError(render_gallery.videos_unavailable(job))
        return Source(jump_url(job.guild_id, message.channel.id, message.id), videos, lines)

    # ---- the post --------------------------------------------------------------------------------

    async def _post(self, job: JobRecord, post: GalleryPost, gallery_id: int, source: Source) -> discord.Message:
        """Send the gallery post, paced with the bot's other writes in that channel. A file Discord
        refuses as too large (40005) stays in the original: the post links to it instead."""
        pacer = self.bot.running().sink.pacer
        channel = self.bot.get_partial_messageable(gallery_id, guild_id=job.guild_id)
        label = model_label(self.bot.cfg, job)
        videos, lines = list(source.videos), list(source.lines)
        while True:
            content, embed = render_gallery.gallery_post(job, label, source_url=source.url, shared_by=post.shared_by,
                                                         lines=lines)
            # Fresh readers on every attempt: a refused send has read the last ones.
            files = [discord.File(io.BytesIO(data), filename=name) for name, data in videos]
            send = functools.partial(channel.send, content=content, embed=embed, files=files,
                                     nonce=gallery_nonce(job.id, post.replaced_message_id),
                                     allowed_mentions=NO_MENTIONS)
            try:
                future = pacer.submit(gallery_id, send, priority=ROUTINE)
            except RuntimeError:  # the pacer closed: the bot is shutting down
                raise UserFacingError(RESTARTING) from None
            try:
                return await future
            except discord.HTTPException as exc:
                if too_large(exc) and videos:
                    largest = max(videos, key=lambda video: len(video[1]))
                    videos.remove(largest)
                    lines.append(render_gallery.too_large_line(largest[0], source.url))
                    log.info("job %s: Discord refused %s in the gallery as too large; linking it", job.id,
                             largest[0])
                    continue
                if is_lost_channel(exc):
                    raise NotPermitted(render_gallery.gallery_refused(gallery_id, exc.status)) from None
                raise
            except _TRANSPORT_ERRORS as exc:
                # Discord may have stored it: the claim stays, and the next press's nonce finds it.
                log.warning("job %s: no answer to the gallery post (%r)", job.id, exc)
                raise UserFacingError(render_gallery.unreachable(job)) from None


def _post_url(post: GalleryPost) -> str:
    assert post.message_id is not None
    return jump_url(post.guild_id, post.channel_id, post.message_id)


async def setup(bot: KlingBot) -> None:
    await bot.add_cog(GalleryCog(bot))
