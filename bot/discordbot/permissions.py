"""The facts of the permission rule as Discord gives them (Manage Server in this channel, the
member's roles); the rule itself is bot/services/moderation/permissions.py. Checked at run time on
every moderator action, not only through Discord's default permissions (a server can loosen those
for anyone)."""

from __future__ import annotations

import discord

from bot.db.connection import Database
from bot.db.guilds import get_guild_settings
from bot.db.records import JobRecord
from bot.discordbot.interactions import member_of
from bot.services.moderation import permissions as rule


async def is_moderator(db: Database, interaction: discord.Interaction) -> bool:
    """Manage Server in this channel, or the guild's moderator role (set by /genadmin modrole)."""
    if interaction.guild_id is None:
        return False
    perms = interaction.permissions
    settings = await get_guild_settings(db, interaction.guild_id)
    return rule.is_moderator(member_of(interaction), settings,
                             manages_guild=perms.manage_guild or perms.administrator)


async def may_manage_job(db: Database, interaction: discord.Interaction, job: JobRecord) -> bool:
    """The job's owner or a moderator (False for anyone else)."""
    member = member_of(interaction)
    if rule.may_manage_job(job, member, moderator=False):
        return True  # the owner: no need to read the guild's settings
    return rule.may_manage_job(job, member, moderator=await is_moderator(db, interaction))
