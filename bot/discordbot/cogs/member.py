"""Member commands (SPEC 2.3): /quota, /history [count] and /job id.

Answers are ephemeral, except /job re-posting a finished job's videos, which is the point of it.
Errors are raised as UserFacingError / NotPermitted and shown by the shared handler.
"""

# No `from __future__ import annotations`: discord.py reads the callbacks' annotations at runtime.

import logging
import os
from pathlib import Path

import discord
from discord import app_commands
from discord.app_commands import Range
from discord.ext import commands

from bot.db.jobs import member_jobs, results_for_job
from bot.db.money import job_money
from bot.db.records import ACTIVE_STATES, ResultRecord
from bot.discordbot.app import KlingBot
from bot.discordbot.cogs.buttons import components_for, job_here
from bot.discordbot.interactions import member_of
from bot.discordbot.limits import DEFAULT_UPLOAD_LIMIT, MAX_FILES, too_large
from bot.discordbot.options import JobId
from bot.discordbot.permissions import may_manage_job
from bot.discordbot.render_job import model_label
from bot.discordbot.render_member import HISTORY_MAX, RepostItem, history_embed, job_message, quota_embed
from bot.errors import NotPermitted

log = logging.getLogger(__name__)

HISTORY_DEFAULT = 10
IN_FLIGHT_SCAN = 100  # recent jobs looked at for the in-flight list (far above any concurrency limit)
_NO_MENTIONS = discord.AllowedMentions.none()


def refuse_dm(bot: KlingBot, interaction: discord.Interaction) -> None:
    """guild_only only shapes the registration: a DM interaction can still arrive."""
    if interaction.guild_id is None and not bot.cfg.discord.allow_dms:
        raise NotPermitted("This command works in a server channel, not in direct messages.")


# ---- /quota --------------------------------------------------------------------------------------

async def show_quota(bot: KlingBot, interaction: discord.Interaction) -> None:
    refuse_dm(bot, interaction)
    live = bot.running()
    member = member_of(interaction)
    usage = await live.engine.quotas.usage(member)
    recent = await member_jobs(live.db, member.guild_id, member.user_id, IN_FLIGHT_SCAN)
    flying = [j for j in recent if j.state in ACTIVE_STATES and not j.cancel_requested]
    flying.reverse()  # oldest first
    await interaction.response.send_message(embed=quota_embed(usage, flying), ephemeral=True,
                                            allowed_mentions=_NO_MENTIONS)


# ---- /history ------------------------------------------------------------------------------------

async def show_history(bot: KlingBot, interaction: discord.Interaction, count: int) -> None:
    refuse_dm(bot, interaction)
    live = bot.running()
    count = max(1, min(HISTORY_MAX, count))
    member = member_of(interaction)
    jobs = await member_jobs(live.db, member.guild_id, member.user_id, count)
    rows = [(job, await job_money(live.db, job.id)) for job in jobs]
    await interaction.response.send_message(embed=history_embed(rows), ephemeral=True,
                                            allowed_mentions=_NO_MENTIONS)


# ---- /job ----------------------------------------------------------------------------------------

def _file_size(path: str | None) -> int | None:
    """Size of a result still on disk, else None."""
    if not path:
        return None
    try:
        return os.path.getsize(path) if os.path.isfile(path) else None
    except OSError:
        return None


def repost_items(results: list[ResultRecord], *, cap: int, ttl_s: float, fallback_created: float,
                 attach: bool) -> list[RepostItem]:
    """Which results travel as files (on disk, within the upload limit, at most 10) and when the
    others' links expire (Runware keeps outputs ``ttl_s`` after it made them)."""
    items = []
    attached = 0
    for result in results:
        size = _file_size(result.local_path)
        fits = (attach and not result.nsfw and size is not None and size <= cap and attached < MAX_FILES)
        attached += fits
        created = result.created_at or fallback_created
        items.append(RepostItem(result=result, attached=fits, expires_at=created + ttl_s))
    return items


async def show_job(bot: KlingBot, interaction: discord.Interaction, job_id: int) -> None:
    refuse_dm(bot, interaction)
    live = bot.running()
    job = await job_here(bot, interaction, job_id)
    if not await may_manage_job(live.db, interaction, job):
        raise NotPermitted("You can only look at your own jobs; moderators can look at anyone's.")
    results = await results_for_job(live.db, job.id)
    money = await job_money(live.db, job.id)
    repost = job.state == "succeeded" and any(not r.nsfw for r in results)
    # A public re-post of the videos; anything else (still running, failed) is for the asker only.
    await interaction.response.defer(ephemeral=not repost, thinking=True)
    cap = int(interaction.filesize_limit or DEFAULT_UPLOAD_LIMIT)
    ttl = float(bot.cfg.runware.output_ttl_s)
    now = live.engine.clock.now()
    label = model_label(bot.cfg, job)
    view = components_for(job, "result") if repost else None
    items = repost_items(results, cap=cap, ttl_s=ttl, fallback_created=job.created_at, attach=repost)
    if any(i.attached for i in items):
        content, embed = job_message(job, money, label, items, now=now)
        files = [discord.File(path, filename=Path(path).name)
                 for i in items if i.attached and (path := i.result.local_path) is not None]
        try:
            await interaction.edit_original_response(content=content, embed=embed, attachments=files,
                                                     view=view, allowed_mentions=_NO_MENTIONS)
            return
        except discord.HTTPException as exc:
            if not too_large(exc):
                raise
            log.info("job %s: Discord refused the re-posted files as too large; posting links", job.id)
        finally:
            for file in files:
                file.close()
        items = repost_items(results, cap=cap, ttl_s=ttl, fallback_created=job.created_at, attach=False)
    content, embed = job_message(job, money, label, items, now=now)
    await interaction.edit_original_response(content=content, embed=embed, view=view,
                                             allowed_mentions=_NO_MENTIONS)


# ---- the commands --------------------------------------------------------------------------------

def build_member_commands(bot: KlingBot) -> list[app_commands.Command]:
    async def quota(interaction: discord.Interaction) -> None:
        await show_quota(bot, interaction)

    @app_commands.describe(count=f"How many jobs to show, 1 to {HISTORY_MAX} (default {HISTORY_DEFAULT})")
    async def history(interaction: discord.Interaction,
                      count: Range[int, 1, HISTORY_MAX] = HISTORY_DEFAULT) -> None:
        await show_history(bot, interaction, count)

    @app_commands.rename(job_id="id")
    @app_commands.describe(job_id="The job number, e.g. 42 (see /history)")
    async def job(interaction: discord.Interaction, job_id: JobId) -> None:
        await show_job(bot, interaction, job_id)

    built = [
        app_commands.Command(name="quota", callback=quota,
                             description="Your remaining videos today and budget this month"),
        app_commands.Command(name="history", callback=history, description="Your recent video jobs"),
        app_commands.Command(name="job", callback=job,
                             description="Show one job again and re-post its videos"),
    ]
    if not bot.cfg.discord.allow_dms:
        built = [app_commands.guild_only(c) for c in built]
    return built


class MemberCog(commands.Cog, name="Member"):
    def __init__(self, bot: KlingBot) -> None:
        self.bot = bot
        self.commands_ = build_member_commands(bot)

    async def cog_load(self) -> None:
        for command in self.commands_:
            self.bot.tree.add_command(command, override=True)

    async def cog_unload(self) -> None:
        for command in self.commands_:
            self.bot.tree.remove_command(command.name)


async def setup(bot: KlingBot) -> None:
    await bot.add_cog(MemberCog(bot))
