"""/genadmin, the moderator console (SPEC 2.3): the root group with its top-level subcommands
(credit, ban, unban, refund; pause, resume, usage, audit), the subgroups from admin_members.py
(quota, role-quota) and admin_guild.py (channels, blocklist, budget, modrole, logchannel, gallery, safety),
and the cog: the run-time moderator check, the replies, the log channel, and the loop that posts
budget warnings.

Discord's ``default_permissions(manage_guild)`` only hides the command: a server may hand it to
anyone. So every handler starts with ``await console.begin(interaction)``, which checks again at run
time (Manage Server, or the guild's moderator role) and gives the guild and the actor for the audit.
"""

# No `from __future__ import annotations`: discord.py reads the callbacks' annotations at runtime.

import asyncio
import io
import logging
from typing import Any

import discord
from discord import app_commands
from discord.app_commands import Choice, Range
from discord.ext import commands, tasks

from bot.db.connection import Database
from bot.discordbot import render_admin
from bot.discordbot.app import KlingBot
from bot.discordbot.cogs.admin_group import WHY, Reason
from bot.discordbot.cogs.admin_guild import SERVER_GROUPS
from bot.discordbot.cogs.admin_members import MEMBER_GROUPS
from bot.discordbot.options import JobId
from bot.discordbot.pacer import ROUTINE
from bot.discordbot.permissions import is_moderator
from bot.errors import NotPermitted
from bot.services.moderation import Moderation
from bot.services.moderation.audit import Change
from bot.services.moderation.money import BudgetWarning, parse_usd_amount
from bot.services.usage import GROUPINGS, PERIODS, Usage

log = logging.getLogger(__name__)

BUDGET_CHECK_S = 30.0
NO_MENTIONS = discord.AllowedMentions.none()
REFUSAL = ("Only moderators can use /genadmin: it needs the Manage Server permission or this "
           "server's moderator role.")
AUDIT_DEFAULT, AUDIT_MAX = 10, 50


class GenAdmin(app_commands.Group, name="genadmin", description="Moderate video generation on this server",
               guild_only=True, default_permissions=discord.Permissions(manage_guild=True)):
    def __init__(self, console: "AdminCog") -> None:
        super().__init__()
        self.console = console
        for group in (*MEMBER_GROUPS, *SERVER_GROUPS):
            group(console, parent=self)

    # ---- members -------------------------------------------------------------------------------

    @app_commands.command(name="credit", description="Add to (or, negative, take from) a member's USD this month")
    @app_commands.describe(user="The member", amount="USD, e.g. 2.50 or -1", reason=WHY)
    async def credit(self, interaction: discord.Interaction, user: discord.User, amount: float,
                     reason: Reason) -> None:
        guild_id, actor = await self.console.begin(interaction)
        micro = parse_usd_amount("amount", str(amount))
        change = await self.console.mod.credit(guild_id, user.id, micro, actor=actor, reason=reason)
        await self.console.done(interaction, change)

    @app_commands.command(name="ban", description="Stop a member from generating videos here")
    @app_commands.describe(user="The member", reason="Why (the member is told)")
    async def ban(self, interaction: discord.Interaction, user: discord.User, reason: Reason) -> None:
        guild_id, actor = await self.console.begin(interaction)
        await self.console.done(interaction, await self.console.mod.ban(guild_id, user.id, actor=actor,
                                                                        reason=reason))

    @app_commands.command(name="unban", description="Let a banned member generate videos again")
    @app_commands.describe(user="The member", reason=WHY)
    async def unban(self, interaction: discord.Interaction, user: discord.User,
                    reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        await self.console.done(interaction, await self.console.mod.unban(guild_id, user.id, actor=actor,
                                                                          reason=reason))

    @app_commands.command(name="refund", description="Give a finished job's cost back to its member's limits")
    @app_commands.describe(job="The job number (#)", reason=WHY)
    async def refund(self, interaction: discord.Interaction, job: JobId,
                     reason: Reason) -> None:
        guild_id, actor = await self.console.begin(interaction)
        change = await self.console.mod.refund(job, actor=actor, reason=reason, guild_id=guild_id)
        await self.console.done(interaction, change)

    # ---- the server ----------------------------------------------------------------------------

    @app_commands.command(name="pause", description="Stop new videos on this server (queued ones still run)")
    @app_commands.describe(reason="Why (members see it)")
    async def pause(self, interaction: discord.Interaction, reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        await self.console.done(interaction, await self.console.mod.pause(guild_id, actor=actor, reason=reason))

    @app_commands.command(name="resume", description="Allow new videos again")
    @app_commands.describe(reason=WHY)
    async def resume(self, interaction: discord.Interaction, reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        await self.console.done(interaction, await self.console.mod.resume(guild_id, actor=actor, reason=reason))

    @app_commands.command(name="usage", description="Videos and spend per member, model or day, with a CSV")
    @app_commands.describe(period="Which jobs (default: this month)", by="One row per (default: member)")
    @app_commands.choices(period=[Choice(name=p, value=p) for p in PERIODS],
                          by=[Choice(name=g, value=g) for g in GROUPINGS])
    async def usage(self, interaction: discord.Interaction, period: str = "month", by: str = "user") -> None:
        console = self.console
        guild_id, actor = await console.begin(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await console.usage.report(guild_id, period, by)
        data = report.csv().encode()
        change = await console.mod.record(guild_id, "usage.export", actor=actor,
                                          after=f"period={period} by={by} rows={len(report.rows)}")
        await interaction.followup.send(embed=render_admin.usage_embed(report), ephemeral=True,
                                        file=discord.File(io.BytesIO(data), filename=report.filename),
                                        allowed_mentions=NO_MENTIONS)
        console.announce_change(change)

    @app_commands.command(name="audit", description="The latest moderator actions")
    @app_commands.describe(count=f"How many (1 to {AUDIT_MAX}, default {AUDIT_DEFAULT})")
    async def audit(self, interaction: discord.Interaction,
                    count: Range[int, 1, AUDIT_MAX] = AUDIT_DEFAULT) -> None:
        guild_id, _ = await self.console.begin(interaction)
        records = await self.console.mod.audit(guild_id, count)
        await self.console.say(interaction, embed=render_admin.audit_embed(records))


class AdminCog(commands.Cog):
    def __init__(self, bot: KlingBot) -> None:
        self.bot = bot
        self._mod: Moderation | None = None
        self._usage: Usage | None = None
        self.group = GenAdmin(self)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.group, override=True)
        if self.bot.db is not None:  # not when only registering commands
            self.budget_loop.start()

    async def cog_unload(self) -> None:
        self.budget_loop.cancel()
        self.bot.tree.remove_command(self.group.name)

    # ---- services --------------------------------------------------------------------------------

    def _db(self) -> Database:
        return self.bot.running().db

    @property
    def mod(self) -> Moderation:
        if self._mod is None:
            self._mod = Moderation(self._db(), self.bot.cfg, self.bot.clock)
        return self._mod

    @property
    def usage(self) -> Usage:
        if self._usage is None:
            self._usage = Usage(self._db(), self.bot.cfg, self.bot.clock)
        return self._usage

    # ---- what every handler does -----------------------------------------------------------------

    async def begin(self, interaction: discord.Interaction) -> tuple[int, str]:
        """The run-time moderator check; (guild id, audit actor) when it passes."""
        db = self._db()
        if interaction.guild_id is None or not await is_moderator(db, interaction):
            log.info("user %s refused /genadmin in guild %s", interaction.user.id, interaction.guild_id)
            raise NotPermitted(REFUSAL)
        return interaction.guild_id, f"discord:{interaction.user.id}"

    async def say(self, interaction: discord.Interaction, content: str | None = None, **kwargs: Any) -> None:
        await interaction.response.send_message(content, ephemeral=True, allowed_mentions=NO_MENTIONS,
                                                **kwargs)

    async def done(self, interaction: discord.Interaction, change: Change) -> None:
        """Confirm to the moderator, then tell the log channel."""
        await self.say(interaction, render_admin.change_reply(change))
        self.announce_change(change)

    def announce_change(self, change: Change) -> None:
        self.announce(change.log_channel_id, render_admin.log_line(change))

    def announce(self, channel_id: int | None, text: str) -> asyncio.Future[Any] | None:
        """Post ``text`` in ``channel_id``, best effort and paced with the bot's other writes there.
        Returns the future of the post (tests wait on the message itself)."""
        if not channel_id:
            return None
        channel = self.bot.get_partial_messageable(channel_id)

        async def send() -> discord.Message:
            return await channel.send(content=text, allowed_mentions=NO_MENTIONS)

        sink = self.bot.sink
        try:
            future = (sink.pacer.submit(channel_id, send, priority=ROUTINE) if sink is not None
                      else asyncio.ensure_future(send()))
        except RuntimeError:  # the pacer closed: the bot is shutting down
            log.info("not posting in log channel %s: shutting down", channel_id)
            return None
        future.add_done_callback(lambda f: _log_post_failure(f, channel_id))
        return future

    # ---- budget warnings -------------------------------------------------------------------------

    async def post_budget_warnings(self) -> list[BudgetWarning]:
        """Check every guild's month spend against its budget; post the 80% / 100% warnings due."""
        warnings = await self.mod.check_budget_warnings()
        for warning in warnings:
            log.info("guild %s reached %d%% of its budget", warning.guild_id, warning.level)
            self.announce(warning.channel_id, render_admin.budget_warning_line(warning))
        return warnings

    @tasks.loop(seconds=BUDGET_CHECK_S)
    async def budget_loop(self) -> None:
        if self.bot.is_closed() or not self.bot.accepting_commands:
            return
        try:
            await self.post_budget_warnings()
        except Exception:  # the loop must survive a bad tick (a locked database, a closing bot)
            log.exception("budget warning check failed; trying again in %.0f s", BUDGET_CHECK_S)

    @budget_loop.before_loop
    async def _before_budget_loop(self) -> None:
        await self.bot.wait_until_ready()


def _log_post_failure(future: "asyncio.Future[Any]", channel_id: int) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        log.warning("could not post in log channel %s: %r", channel_id, exc)


async def setup(bot: KlingBot) -> None:
    await bot.add_cog(AdminCog(bot))
