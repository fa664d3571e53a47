"""/genadmin subcommands about the whole server: pause, resume, channels add|remove|list, blocklist
add|remove|list, budget set, modrole set|clear, logchannel set|clear, safety mode, usage, audit."""

# No `from __future__ import annotations`: discord.py reads the callbacks' annotations at runtime.

import io

import discord
from discord import app_commands
from discord.app_commands import Choice, Range

from bot.config import SAFETY_MODES
from bot.discordbot import render_admin
from bot.discordbot.options import Channel
from bot.services.moderation.limits import parse_usd_limit
from bot.services.usage import GROUPINGS, PERIODS

REASON_MAX = 500
TERM_MAX = 100
AUDIT_DEFAULT, AUDIT_MAX = 10, 50
Reason = Range[str, 1, REASON_MAX]
WHY = "Why (goes to the audit log)"


def add_commands(root: app_commands.Group, cog) -> None:
    channels = app_commands.Group(name="channels", description="Where /video may be used", parent=root)
    blocklist = app_commands.Group(name="blocklist", description="Terms refused in prompts", parent=root)
    budget = app_commands.Group(name="budget", description="This server's monthly budget", parent=root)
    modrole = app_commands.Group(name="modrole", description="The role that may use /genadmin", parent=root)
    logchannel = app_commands.Group(name="logchannel", description="Where moderator actions are posted",
                                    parent=root)
    safety = app_commands.Group(name="safety", description="The content check on videos", parent=root)

    async def act(interaction: discord.Interaction, method: str, *args, **kwargs) -> None:
        guild_id, actor = await cog.begin(interaction)
        change = await getattr(cog.mod, method)(guild_id, *args, actor=actor, **kwargs)
        await cog.done(interaction, change)

    @root.command(name="pause", description="Stop new videos on this server (queued ones still run)")
    @app_commands.describe(reason="Why (members see it)")
    async def pause(interaction: discord.Interaction, reason: Reason | None = None) -> None:
        await act(interaction, "pause", reason=reason)

    @root.command(name="resume", description="Allow new videos again")
    @app_commands.describe(reason=WHY)
    async def resume(interaction: discord.Interaction, reason: Reason | None = None) -> None:
        await act(interaction, "resume", reason=reason)

    @channels.command(name="add", description="Allow /video in a channel (once any is set, only there)")
    @app_commands.describe(channel="The channel", reason=WHY)
    async def channels_add(interaction: discord.Interaction, channel: Channel, reason: Reason | None = None
                           ) -> None:
        await act(interaction, "add_channel", channel.id, reason=reason)

    @channels.command(name="remove", description="Stop allowing /video in a channel")
    @app_commands.describe(channel="The channel", reason=WHY)
    async def channels_remove(interaction: discord.Interaction, channel: Channel,
                              reason: Reason | None = None) -> None:
        await act(interaction, "remove_channel", channel.id, reason=reason)

    @channels.command(name="list", description="The channels where /video may be used")
    async def channels_list(interaction: discord.Interaction) -> None:
        guild_id, _ = await cog.begin(interaction)
        await cog.say(interaction, render_admin.channels_text(await cog.mod.list_channels(guild_id)))

    @blocklist.command(name="add", description="Refuse prompts containing a word or phrase (* = any ending)")
    @app_commands.describe(term="A word or phrase", reason=WHY)
    async def blocklist_add(interaction: discord.Interaction, term: Range[str, 1, TERM_MAX],
                            reason: Reason | None = None) -> None:
        await act(interaction, "add_blocked_term", term, reason=reason)

    @blocklist.command(name="remove", description="Stop refusing a word or phrase")
    @app_commands.describe(term="The blocked word or phrase", reason=WHY)
    async def blocklist_remove(interaction: discord.Interaction, term: Range[str, 1, TERM_MAX],
                               reason: Reason | None = None) -> None:
        await act(interaction, "remove_blocked_term", term, reason=reason)

    @blocklist.command(name="list", description="The blocked words and phrases")
    async def blocklist_list(interaction: discord.Interaction) -> None:
        guild_id, _ = await cog.begin(interaction)
        await cog.say(interaction, render_admin.blocklist_text(await cog.mod.list_blocklist(guild_id)))

    @budget.command(name="set", description="This server's monthly budget in USD")
    @app_commands.describe(amount='USD, e.g. 50, "unlimited", or "default"', reason=WHY)
    async def budget_set(interaction: discord.Interaction, amount: Range[str, 1, 20],
                         reason: Reason | None = None) -> None:
        guild_id, actor = await cog.begin(interaction)
        change = await cog.mod.set_budget(guild_id, parse_usd_limit("amount", amount), actor=actor,
                                          reason=reason)
        await cog.done(interaction, change)

    @modrole.command(name="set", description="Members with this role may use /genadmin")
    @app_commands.describe(role="The moderator role", reason=WHY)
    async def modrole_set(interaction: discord.Interaction, role: discord.Role,
                          reason: Reason | None = None) -> None:
        await act(interaction, "set_modrole", role.id, reason=reason)

    @modrole.command(name="clear", description="Only Manage Server may use /genadmin")
    @app_commands.describe(reason=WHY)
    async def modrole_clear(interaction: discord.Interaction, reason: Reason | None = None) -> None:
        await act(interaction, "set_modrole", None, reason=reason)

    @logchannel.command(name="set", description="Post moderator actions and budget warnings in a channel")
    @app_commands.describe(channel="The log channel", reason=WHY)
    async def logchannel_set(interaction: discord.Interaction, channel: Channel,
                             reason: Reason | None = None) -> None:
        await act(interaction, "set_logchannel", channel.id, reason=reason)

    @logchannel.command(name="clear", description="Stop posting moderator actions")
    @app_commands.describe(reason=WHY)
    async def logchannel_clear(interaction: discord.Interaction, reason: Reason | None = None) -> None:
        await act(interaction, "set_logchannel", None, reason=reason)

    @safety.command(name="mode", description="The content check on videos (never weaker than the bot's)")
    @app_commands.describe(mode="none, fast (key frames) or full (every frame)", reason=WHY)
    @app_commands.choices(mode=[Choice(name=m, value=m) for m in SAFETY_MODES])
    async def safety_mode(interaction: discord.Interaction, mode: str, reason: Reason | None = None) -> None:
        await act(interaction, "set_safety_mode", mode, reason=reason)

    @root.command(name="usage", description="Videos and spend per member, model or day, with a CSV")
    @app_commands.describe(period="Which jobs (default: this month)", by="One row per (default: member)")
    @app_commands.choices(period=[Choice(name=p, value=p) for p in PERIODS],
                          by=[Choice(name=g, value=g) for g in GROUPINGS])
    async def usage(interaction: discord.Interaction, period: str = "month", by: str = "user") -> None:
        guild_id, actor = await cog.begin(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await cog.usage.report(guild_id, period, by)
        data = report.csv().encode()
        change = await cog.mod.record(guild_id, "usage.export", actor=actor,
                                      after=f"period={period} by={by} rows={len(report.rows)}")
        await interaction.followup.send(embed=render_admin.usage_embed(report), ephemeral=True,
                                        file=discord.File(io.BytesIO(data), filename=report.filename),
                                        allowed_mentions=discord.AllowedMentions.none())
        cog.announce_change(change)

    @root.command(name="audit", description="The latest moderator actions")
    @app_commands.describe(count=f"How many (1 to {AUDIT_MAX}, default {AUDIT_DEFAULT})")
    async def audit(interaction: discord.Interaction,
                    count: Range[int, 1, AUDIT_MAX] = AUDIT_DEFAULT) -> None:
        guild_id, _ = await cog.begin(interaction)
        records = await cog.mod.audit(guild_id, count)
        await cog.say(interaction, embed=render_admin.audit_embed(records))
