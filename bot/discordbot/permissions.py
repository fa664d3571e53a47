"""The facts of the permission rule as Discord gives them (Manage Server in this channel, the
member's roles); the rule itself is bot/services/moderation/permissions.py. Checked at run time on
every moderator action, not only through Discord's default permissions (a server can loosen those
for anyone). Also the bot's own permissions in a channel other than the interaction's (the gallery),
computed from the guild cache: the interaction only carries them for its own channel."""

from __future__ import annotations

import discord

from bot.db.connection import Database
from bot.db.guilds import get_guild_settings
from bot.db.records import JobRecord
from bot.discordbot.interactions import member_of, missing_from
from bot.errors import UserFacingError
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


async def bot_missing_in(client: discord.Client, guild_id: int, channel_id: int) -> list[str] | None:
    """What the bot lacks to post embeds and files in ``channel_id`` (View Channel first), by name; None
    when the channel is gone. The roles and overwrites come from the gateway's guild cache (kept current
    by its events); a channel missing from it is fetched once."""
    guild = client.get_guild(guild_id)
    if guild is None:
        raise UserFacingError("I cannot see this server's channels right now; please try again in a minute.")
    channel = guild.get_channel_or_thread(channel_id)
    if channel is None:
        try:
            fetched = await client.fetch_channel(channel_id)
        except discord.NotFound:
            return None
        except discord.Forbidden:
            return ["View Channel"]
        if not isinstance(fetched, (discord.abc.GuildChannel, discord.Thread)) or fetched.guild.id != guild_id:
            return None
        channel = fetched
    me = guild.me
    if me is None:
        raise UserFacingError("I cannot see my own roles on this server right now; please try again in a minute.")
    perms = channel.permissions_for(me)
    missing = [] if perms.view_channel else ["View Channel"]
    return missing + missing_from(perms, in_thread=isinstance(channel, discord.Thread))
