"""/genadmin subcommands about members: quota set|reset|show, role-quota set|clear, credit, ban,
unban, refund. Each handler: run-time moderator check, one service call (validated, written and
audited in one transaction), an ephemeral reply, a line in the log channel."""

# No `from __future__ import annotations`: discord.py reads the callbacks' annotations at runtime.

import discord
from discord import app_commands
from discord.app_commands import Range

from bot.discordbot import render_admin
from bot.discordbot.options import JobId, user_target
from bot.services.moderation.limits import parse_count_limit, parse_usd_limit
from bot.services.moderation.money import parse_usd_amount
from bot.services.quotas import Member

REASON_MAX = 500
LIMIT_TEXT_MAX = 20
LimitText = Range[str, 1, LIMIT_TEXT_MAX]
Reason = Range[str, 1, REASON_MAX]

LIMIT_HELP = {
    "daily_videos": 'Videos per day: a number, "unlimited", or "default"',
    "monthly_usd": 'USD per month, e.g. 5 or 2.50, "unlimited", or "default"',
    "max_concurrent": 'Jobs at once: a number, "unlimited", or "default"',
    "reason": "Why (goes to the audit log)",
}


def _limits(daily_videos: str | None, monthly_usd: str | None, max_concurrent: str | None) -> dict:
    return {
        "daily_videos": parse_count_limit("daily_videos", daily_videos),
        "monthly_micro": parse_usd_limit("monthly_usd", monthly_usd),
        "max_concurrent": parse_count_limit("max_concurrent", max_concurrent),
    }


def add_commands(root: app_commands.Group, cog) -> None:
    quota = app_commands.Group(name="quota", description="A member's own limits", parent=root)
    role_quota = app_commands.Group(name="role-quota", description="Limits for everyone with a role",
                                    parent=root)

    @quota.command(name="set", description="Set a member's own limits (they win over role limits)")
    @app_commands.describe(user="The member", **LIMIT_HELP)
    async def quota_set(interaction: discord.Interaction, user: discord.User,
                        daily_videos: LimitText | None = None, monthly_usd: LimitText | None = None,
                        max_concurrent: LimitText | None = None, reason: Reason | None = None) -> None:
        guild_id, actor = await cog.begin(interaction)
        limits = _limits(daily_videos, monthly_usd, max_concurrent)
        change = await cog.mod.set_member_limits(guild_id, user.id, **limits, actor=actor, reason=reason)
        await cog.done(interaction, change)

    @quota.command(name="reset", description="Remove a member's own limits (role limits or defaults apply)")
    @app_commands.describe(user="The member", reason=LIMIT_HELP["reason"])
    async def quota_reset(interaction: discord.Interaction, user: discord.User,
                          reason: Reason | None = None) -> None:
        guild_id, actor = await cog.begin(interaction)
        await cog.done(interaction, await cog.mod.reset_member_limits(guild_id, user.id, actor=actor,
                                                                      reason=reason))

    @quota.command(name="show", description="A member's limits, usage, credit and ban")
    @app_commands.describe(user="The member")
    async def quota_show(interaction: discord.Interaction, user: discord.User) -> None:
        guild_id, _ = await cog.begin(interaction)
        user_id, roles = user_target(user)
        report = await cog.mod.show_member(Member(guild_id, user_id, roles))
        await cog.say(interaction, embed=render_admin.member_embed(report))

    @role_quota.command(name="set", description="Set limits for a role (members get their best role)")
    @app_commands.describe(role="The role", **LIMIT_HELP)
    async def role_quota_set(interaction: discord.Interaction, role: discord.Role,
                             daily_videos: LimitText | None = None, monthly_usd: LimitText | None = None,
                             max_concurrent: LimitText | None = None, reason: Reason | None = None) -> None:
        guild_id, actor = await cog.begin(interaction)
        limits = _limits(daily_videos, monthly_usd, max_concurrent)
        change = await cog.mod.set_role_limits(guild_id, role.id, **limits, actor=actor, reason=reason)
        await cog.done(interaction, change)

    @role_quota.command(name="clear", description="Remove a role's limits")
    @app_commands.describe(role="The role", reason=LIMIT_HELP["reason"])
    async def role_quota_clear(interaction: discord.Interaction, role: discord.Role,
                               reason: Reason | None = None) -> None:
        guild_id, actor = await cog.begin(interaction)
        await cog.done(interaction, await cog.mod.clear_role_limits(guild_id, role.id, actor=actor,
                                                                    reason=reason))

    @root.command(name="credit", description="Add to (or, negative, take from) a member's USD this month")
    @app_commands.describe(user="The member", amount="USD, e.g. 2.50 or -1", reason=LIMIT_HELP["reason"])
    async def credit(interaction: discord.Interaction, user: discord.User, amount: float,
                     reason: Reason) -> None:
        guild_id, actor = await cog.begin(interaction)
        micro = parse_usd_amount("amount", str(amount))
        change = await cog.mod.credit(guild_id, user.id, micro, actor=actor, reason=reason)
        await cog.done(interaction, change)

    @root.command(name="ban", description="Stop a member from generating videos here")
    @app_commands.describe(user="The member", reason="Why (the member is told)")
    async def ban(interaction: discord.Interaction, user: discord.User, reason: Reason) -> None:
        guild_id, actor = await cog.begin(interaction)
        await cog.done(interaction, await cog.mod.ban(guild_id, user.id, actor=actor, reason=reason))

    @root.command(name="unban", description="Let a banned member generate videos again")
    @app_commands.describe(user="The member", reason=LIMIT_HELP["reason"])
    async def unban(interaction: discord.Interaction, user: discord.User,
                    reason: Reason | None = None) -> None:
        guild_id, actor = await cog.begin(interaction)
        await cog.done(interaction, await cog.mod.unban(guild_id, user.id, actor=actor, reason=reason))

    @root.command(name="refund", description="Give a finished job's cost back to its member's limits")
    @app_commands.describe(job="The job number (#)", reason=LIMIT_HELP["reason"])
    async def refund(interaction: discord.Interaction, job: JobId,
                     reason: Reason) -> None:
        guild_id, actor = await cog.begin(interaction)
        change = await cog.mod.refund(job, actor=actor, reason=reason, guild_id=guild_id)
        await cog.done(interaction, change)
