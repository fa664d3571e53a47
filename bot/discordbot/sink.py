"""The engine's JobSink for Discord: one progress message per job, edited in place, and a new
final message per job (SPEC 3.4).

Everything goes out with the bot token to ordinary channel messages (never the interaction token,
which dies after 15 minutes), and every channel write goes through the per-channel pacer. The sink works
from the job record alone, so after a restart it edits the progress message it posted before. Progress
never blocks the engine: renders are queued, coalesced per job, and written when the message's minimum
edit interval and the channel's pace allow."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import discord

from bot.db.jobs import set_progress_message
from bot.db.records import JobRecord
from bot.discordbot import render_job
from bot.discordbot.final_post import post_final
from bot.discordbot.limits import DEFAULT_UPLOAD_LIMIT, TOO_MANY_OLD_EDITS, UNKNOWN_MESSAGE, is_lost_channel
from bot.discordbot.nonces import lost_channel_nonce, progress_nonce
from bot.discordbot.pacer import CREATE, EDIT, ROUTINE, URGENT, ChannelPacer
from bot.download import prune_old_files
from bot.services.sink import DeliveryFailed, Outcome, ProgressUpdate

if TYPE_CHECKING:
    from bot.discordbot.app import KlingBot

PRUNE_EVERY_S = 3600.0  # how often old downloaded videos are removed
log = logging.getLogger(__name__)
REFUSALS_BEFORE_DM = 3  # 400s on a final post (a locked or archived thread...) before it goes by DM
# Network trouble between us and Discord: worth another try later.
_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)

# (job, stage) -> the components for that message, or None for none. Stages: "progress" (while the
# job runs), "result" (a delivered job), "failure" (the failure notice). Set by a cog (buttons).
ComponentsFor = Callable[[JobRecord, str], "discord.ui.View | None"]


@dataclass
class _Track:
    """What the sink remembers of one job's progress message (memory only; the record has the id)."""

    channel_id: int
    message_id: int | None
    wanted: ProgressUpdate | None = None
    shown: str | None = None
    last_write: float = -math.inf
    finished: bool = False
    muted: bool = False  # the channel is gone or closed to the bot: no more progress there
    replacing: int | None = None  # a deleted progress message the next one stands in for (its nonce)
    frozen: bool = False  # Discord refused more edits of the message (30046): it stays as it is
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    posted: asyncio.Event = field(default_factory=asyncio.Event)


class DiscordSink:
    def __init__(self, bot: KlingBot, *, pacer: ChannelPacer | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bot = bot
        self.cfg = bot.cfg
        self.pacer = pacer or ChannelPacer()
        self._clock = clock
        self._tracks: dict[int, _Track] = {}
        self._refusals: Counter[int] = Counter()  # job id -> 400s on its final post (memory only)
        # The last 10,000 jobs delivered: a progress update read before one finished must not post again.
        self._finished: OrderedDict[int, None] = OrderedDict()
        self.components_for: ComponentsFor | None = None
        self._pruned_at = -PRUNE_EVERY_S

    # ---- JobSink: files ------------------------------------------------------------------------

    def handles(self, job: JobRecord) -> bool:
        """Jobs from Discord (they have a channel); `klingbot generate` shows its own (channel 0)."""
        return job.channel_id != 0

    def download_cap(self, job: JobRecord) -> int:
        """The interaction's upload limit, else the guild's, else Discord's default for bots."""
        if job.upload_limit:
            return int(job.upload_limit)
        guild = self.bot.get_guild(job.guild_id) if job.guild_id > 0 else None
        if guild is not None and guild.filesize_limit:
            return int(guild.filesize_limit)
        return DEFAULT_UPLOAD_LIMIT

    def fit_limit(self, job: JobRecord) -> int | None:  # a video over the upload limit is fitted to it
        return self.download_cap(job) if self.cfg.delivery.fit_to_limit else None

    @property
    def downloads(self) -> Path:
        """One folder beside the database for every job's downloaded videos."""
        return Path(self.cfg.storage.path).resolve().parent / "downloads"

    def download_dir(self, job: JobRecord) -> Path:
        return self.downloads

    async def prune_downloads(self, now: float | None = None) -> int:
        """Delete downloaded videos older than Runware's ttl (then /job reports the link expired
        rather than attaching a stale copy), at most once an hour. Returns how many were removed."""
        now = time.time() if now is None else now
        if now - self._pruned_at < PRUNE_EVERY_S:
            return 0
        self._pruned_at = now
        return await asyncio.to_thread(prune_old_files, self.downloads, "job*", now - self.cfg.runware.output_ttl_s)

    # ---- helpers -------------------------------------------------------------------------------

    def _components(self, job: JobRecord, stage: str) -> dict[str, Any]:
        if self.components_for is None:
            return {}
        try:
            return {"view": self.components_for(job, stage)}
        except Exception:
            log.exception("job %s: building the %s components failed", job.id, stage)
            return {}

    def _channel(self, job: JobRecord) -> discord.PartialMessageable:
        return self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id if job.guild_id > 0 else None)

    def _track(self, job: JobRecord) -> _Track:
        track = self._tracks.get(job.id)
        if track is None:
            track = _Track(job.channel_id, job.progress_message_id)
            if track.message_id:
                track.posted.set()
            self._tracks[job.id] = track
        return track

    async def _store_progress_id(self, job_id: int, message_id: int) -> None:
        if self.bot.db is None:
            return
        try:
            await set_progress_message(self.bot.db, job_id, message_id)
        except Exception:
            log.exception("job %s: could not store the progress message id", job_id)

    async def dm(self, user_id: int, **kwargs: Any) -> discord.Message | None:
        """Send a DM; None when the member does not take DMs (or Discord fails)."""
        try:
            channel = await self.bot.create_dm(discord.Object(id=user_id))
            return await channel.send(**kwargs)
        except (discord.HTTPException, *_TRANSPORT_ERRORS) as exc:
            log.info("could not DM user %s: %s", user_id, exc)
            return None

    async def wait_progress_message(self, job_id: int, timeout: float) -> int | None:
        """The job's progress message id once posted (for the /video reply's link)."""
        track = self._tracks.get(job_id)
        if track is None:
            track = self._tracks.setdefault(job_id, _Track(0, None))
        try:
            await asyncio.wait_for(track.posted.wait(), timeout)
        except TimeoutError:
            return None
        return track.message_id

    # ---- JobSink: progress -----------------------------------------------------------------------

    async def progress(self, update: ProgressUpdate) -> int | None:
        job = update.job
        if job.id in self._finished:
            return None
        track = self._track(job)
        if track.channel_id == 0:  # created by wait_progress_message before the first update
            track.channel_id = job.channel_id
            track.message_id = track.message_id or job.progress_message_id
        if track.finished or track.muted:
            return None
        track.wanted = update
        label = render_job.model_label(self.cfg, job)
        if render_job.render_key(render_job.progress_embed(update, label)) != track.shown:
            interval = self.cfg.progress.min_edit_interval_s
            not_before = track.last_write + interval if track.message_id else None
            self._schedule_flush(job, not_before)
        # Tell the engine about a message posted since its record was read (it stores it too).
        if track.message_id and track.message_id != job.progress_message_id:
            return track.message_id
        return None

    def _schedule_flush(self, job: JobRecord, not_before: float | None) -> None:
        track = self._tracks.get(job.id)
        kind = EDIT if track is not None and track.message_id else CREATE
        try:
            future = self.pacer.submit(job.channel_id, lambda: self._flush(job.id), key=("progress", job.id),
                                       priority=ROUTINE, not_before=not_before, kind=kind)
        except RuntimeError:  # the pacer is closed: the bot is shutting down
            return
        future.add_done_callback(_log_failure(job.id, "progress"))

    async def _flush(self, job_id: int) -> None:
        track = self._tracks.get(job_id)
        if track is None:
            return
        async with track.lock:
            update = track.wanted
            if track.finished or track.muted or track.frozen or update is None:
                return
            job = update.job
            embed = render_job.progress_embed(update, render_job.model_label(self.cfg, job))
            key = render_job.render_key(embed)
            if key == track.shown:
                return
            due = track.last_write + self.cfg.progress.min_edit_interval_s
            if track.message_id is not None and self._clock() < due:
                # Queued while the previous edit was still on its way (discord.py may sit out a 429
                # inside it): one edit per interval per message, so this one waits its turn.
                self._schedule_flush(job, due)
                return
            extra = self._components(job, "progress")
            channel = self._channel(job)
            try:
                if track.message_id is not None:
                    try:
                        message = channel.get_partial_message(track.message_id)
                        await message.edit(content=None, embed=embed, **extra)
                    except discord.NotFound as exc:
                        if exc.code != UNKNOWN_MESSAGE:
                            raise
                        log.info("job %s: progress message %s was deleted; posting a new one", job.id,
                                 track.message_id)
                        track.replacing, track.message_id = track.message_id, None
                if track.message_id is None:
                    nonce = progress_nonce(job.id, track.replacing)
                    message = await channel.send(embed=embed, nonce=nonce, **extra)
                    track.message_id = message.id
                    await self._store_progress_id(job.id, message.id)
                    track.posted.set()
            except discord.HTTPException as exc:
                if is_lost_channel(exc):
                    await self._lost_channel(job, track, exc)
                    return
                if exc.code == TOO_MANY_OLD_EDITS:
                    # Only this message is affected: the job goes on and its result is a new message.
                    log.info("job %s: Discord takes no more edits of progress message %s (30046); it stays "
                             "as it is", job.id, track.message_id)
                    track.frozen = True
                    return
                log.warning("job %s: progress write failed (%s %s); the next update retries", job.id,
                            exc.status, exc.code)
                return
            track.shown = key
            track.last_write = self._clock()

    async def _lost_channel(self, job: JobRecord, track: _Track, exc: discord.HTTPException) -> None:
        track.muted = True
        track.posted.set()
        log.info("job %s: channel %s is closed to the bot (%s %s); telling the member by DM",
                 job.id, job.channel_id, exc.status, exc.code)
        await self.dm(job.user_id, content=render_job.lost_permission_dm(job), nonce=lost_channel_nonce(job.id))

    # ---- JobSink: delivery -----------------------------------------------------------------------

    async def deliver(self, outcome: Outcome) -> int | None:
        await self.prune_downloads()
        job = outcome.job
        track = self._track(job)
        track.finished = True  # queued progress renders for this job are dropped from now on
        # Finished before its progress message was created: it gets none (the result comes first).
        self.pacer.discard(job.channel_id, ("progress", job.id), CREATE)
        if job.state == "cancelled":
            # The member asked for it: the progress message says so; no new message pings them.
            self._finish_progress(job, track, None)
            self._forget(job.id)
            return None
        if outcome.already_posted:
            # Killed after posting it, before recording the notice: never post (and ping) twice.
            self._finish_progress(job, track, None)
            self._forget(job.id)
            return job.result_message_id
        mentions = discord.AllowedMentions(everyone=False, roles=False, replied_user=False,
                                           users=[discord.Object(id=job.user_id)])
        stage = "result" if job.state == "succeeded" else "failure"
        extra = self._components(job, stage)

        async def post(target: discord.abc.Messageable, attach: bool) -> discord.Message:
            return await post_final(target, outcome, label=render_job.model_label(self.cfg, job),
                                    cap=self.download_cap(job),
                                    attach=attach, mentions=mentions, extra=extra)

        try:
            # Tried even when progress found the channel closed: permissions may be back by now.
            message = await self.pacer.run(job.channel_id, lambda: post(self._channel(job), True),
                                           priority=URGENT)
        except discord.HTTPException as exc:
            refused = not is_lost_channel(exc) and self._refused_for_good(job, exc)
            if not is_lost_channel(exc) and not refused:
                raise DeliveryFailed(f"Discord answered {exc.status} ({exc.code})") from exc
            log.info("job %s: channel %s does not take the result (%s %s); delivering by DM", job.id,
                     job.channel_id, exc.status, exc.code)
            track.muted = True
            dm_message = await self._deliver_dm(job, post)
            self._forget(job.id)
            if refused:
                del self._refusals[job.id]
                await self.alert(render_job.refused_post_alert(job, REFUSALS_BEFORE_DM, exc.code, bool(dm_message)))
            return dm_message.id if dm_message else None
        except _TRANSPORT_ERRORS as exc:
            raise DeliveryFailed(f"network error talking to Discord ({type(exc).__name__})") from exc
        self._finish_progress(job, track, message)
        self._forget(job.id)
        return message.id

    def _refused_for_good(self, job: JobRecord, exc: discord.HTTPException) -> bool:
        """Counts a 400 on this job's final post: True once it reached REFUSALS_BEFORE_DM."""
        self._refusals[job.id] += exc.status == 400
        return exc.status == 400 and self._refusals[job.id] >= REFUSALS_BEFORE_DM

    def _forget(self, job_id: int) -> None:
        self._tracks.pop(job_id, None)
        self._finished[job_id] = None
        if len(self._finished) > 10_000:
            self._finished.popitem(last=False)

    async def _deliver_dm(self, job: JobRecord, post: Callable[..., Any]) -> discord.Message | None:
        try:
            channel = await self.bot.create_dm(discord.Object(id=job.user_id))
            return await post(channel, True)
        except (discord.HTTPException, *_TRANSPORT_ERRORS) as exc:
            # Nowhere left to say it: the job still counts as notified, so it is not retried forever.
            log.warning("job %s: could not deliver by DM either (%s); giving up", job.id, exc)
            return None

    def _finish_progress(self, job: JobRecord, track: _Track, final: discord.Message | None) -> None:
        """Edit the progress message to one line pointing at the final message (in the background:
        the engine need not wait for the channel's pace)."""
        # A create on its way (it holds the lock) is waited for: its message gets the line too.
        if track.muted or track.frozen or not (track.message_id or job.progress_message_id or track.lock.locked()):
            return
        url = render_job.jump_url(job.guild_id, job.channel_id, final.id) if final is not None else None
        line = render_job.finished_line(job, url)

        async def edit() -> None:
            try:
                async with track.lock:
                    message_id = track.message_id or job.progress_message_id
                    if not message_id:
                        return
                    await self._channel(job).get_partial_message(message_id).edit(content=line, embed=None,
                                                                                  view=None)
            except discord.HTTPException as exc:
                log.info("job %s: could not mark the progress message finished (%s %s)", job.id, exc.status,
                         exc.code)

        future = self.pacer.submit(job.channel_id, edit, key=("progress", job.id), priority=URGENT, kind=EDIT)
        future.add_done_callback(_log_failure(job.id, "finished line"))

    # ---- operator alerts ---------------------------------------------------------------------------

    async def alert(self, text: str) -> None:
        """Tell the operator (``discord.ops_channel_id``); always logged."""
        log.warning("operator alert: %s", text)
        channel_id = self.cfg.discord.ops_channel_id
        if not channel_id:
            return
        try:
            await self.pacer.run(channel_id, lambda: self.bot.get_partial_messageable(channel_id).send(
                content=f"⚠️ {text}", allowed_mentions=discord.AllowedMentions.none()), priority=URGENT)
        except (discord.HTTPException, *_TRANSPORT_ERRORS) as exc:
            log.warning("could not post the alert in the ops channel: %s", exc)

    async def close(self) -> None:
        await self.pacer.close()


def _log_failure(job_id: int, what: str) -> Callable[[asyncio.Future[Any]], None]:
    def done(future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            log.warning("job %s: %s failed: %r", job_id, what, exc)

    return done
