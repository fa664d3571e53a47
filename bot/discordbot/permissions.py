"""Who may moderate: checked at run time on every moderator action, not only through Discord's
default permissions (a server can loosen those for anyone)."""

from __future__ import annotations

import discord

from bot.db.connection import Database
from bot.db.guilds import get_guild_settings
from bot.discordbot.interactions import member_of


async def is_moderator(db: Database, interaction: discord.Interaction) -> bool:
    """Manage Server in this channel, or the guild's moderator role (set by /genadmin modrole)."""
    if interaction.guild_id is None:
        return False
    if interaction.permissions.manage_guild or interaction.permissions.administrator:
        return True
    settings = await get_guild_settings(db, interaction.guild_id)
    return settings.mod_role_id is not None and settings.mod_role_id in member_of(interaction).role_ids
