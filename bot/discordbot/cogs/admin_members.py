"""/genadmin quota set|reset|show and role-quota set|clear: a member's and a role's limits. The
member commands at the top level (credit, ban, unban, refund) are methods of the root group in
admin.py. Each handler: run-time moderator check, one service call (validated, written and audited
in one transaction), an ephemeral reply, a line in the log channel."""

# No `from __future__ import annotations`: discord.py reads the callbacks' annotations at runtime.

import discord
from discord import app_commands
from discord.app_commands import Range

from bot.discordbot import render_admin
from bot.discordbot.cogs.admin_group import WHY, ConsoleGroup, Reason
from bot.discordbot.options import user_target
from bot.services.moderation.limits import Limit, parse_count_limit, parse_usd_limit
from bot.services.quotas import Member

LIMIT_TEXT_MAX = 20
LimitText = Range[str, 1, LIMIT_TEXT_MAX]

LIMIT_HELP = {
    "daily_videos": 'Videos per day: a number, "unlimited", or "default"',
    "monthly_usd": 'USD per month, e.g. 5 or 2.50, "unlimited", or "default"',
    "max_concurrent": 'Jobs at once: a number, "unlimited", or "default"',
    "reason": WHY,
}


def _limits(daily_videos: str | None, monthly_usd: str | None, max_concurrent: str | None) -> dict[str, Limit]:
    return {
        "daily_videos": parse_count_limit("daily_videos", daily_videos),
        "monthly_micro": parse_usd_limit("monthly_usd", monthly_usd),
        "max_concurrent": parse_count_limit("max_concurrent", max_concurrent),
    }


class MemberQuota(ConsoleGroup, name="quota", description="A member's own limits"):
    @app_commands.command(name="set", description="Set a member's own limits (they win over role limits)")
    @app_commands.describe(user="The member", **LIMIT_HELP)
    async def set_limits(self, interaction: discord.Interaction, user: discord.User,
                         daily_videos: LimitText | None = None, monthly_usd: LimitText | None = None,
                         max_concurrent: LimitText | None = None, reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        limits = _limits(daily_videos, monthly_usd, max_concurrent)
        change = await self.console.mod.set_member_limits(guild_id, user.id, **limits, actor=actor, reason=reason)
        await self.console.done(interaction, change)

    @app_commands.command(name="reset", description="Remove a member's own limits (role limits or defaults apply)")
    @app_commands.describe(user="The member", reason=WHY)
    async def reset(self, interaction: discord.Interaction, user: discord.User,
                    reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        change = await self.console.mod.reset_member_limits(guild_id, user.id, actor=actor, reason=reason)
        await self.console.done(interaction, change)

    @app_commands.command(name="show", description="A member's limits, usage, credit and ban")
    @app_commands.describe(user="The member")
    async def show(self, interaction: discord.Interaction, user: discord.User) -> None:
        guild_id, _ = await self.console.begin(interaction)
        user_id, roles = user_target(user)
        report = await self.console.mod.show_member(Member(guild_id, user_id, roles))
        await self.console.say(interaction, embed=render_admin.member_embed(report))


class RoleQuota(ConsoleGroup, name="role-quota", description="Limits for everyone with a role"):
    @app_commands.command(name="set", description="Set limits for a role (members get their best role)")
    @app_commands.describe(role="The role", **LIMIT_HELP)
    async def set_limits(self, interaction: discord.Interaction, role: discord.Role,
                         daily_videos: LimitText | None = None, monthly_usd: LimitText | None = None,
                         max_concurrent: LimitText | None = None, reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        limits = _limits(daily_videos, monthly_usd, max_concurrent)
        change = await self.console.mod.set_role_limits(guild_id, role.id, **limits, actor=actor, reason=reason)
        await self.console.done(interaction, change)

    @app_commands.command(name="clear", description="Remove a role's limits")
    @app_commands.describe(role="The role", reason=WHY)
    async def clear(self, interaction: discord.Interaction, role: discord.Role,
                    reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        change = await self.console.mod.clear_role_limits(guild_id, role.id, actor=actor, reason=reason)
        await self.console.done(interaction, change)


MEMBER_GROUPS = (MemberQuota, RoleQuota)
