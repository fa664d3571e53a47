"""App-command option types shared by the cogs: a channel option limited to channels that take
messages, and a user option's id with the roles Discord sent along."""

# No `from __future__ import annotations`: discord.py reads the annotations at runtime.

from typing import Any

import discord
from discord import app_commands

# Discord's largest integer option value (2^53 - 1: a larger max_value makes it refuse the whole
# command registration, 400 50035).
INTEGER_OPTION_MAX = 2**53 - 1
JobId = app_commands.Range[int, 1, INTEGER_OPTION_MAX]

# Where messages can be posted: text, voice and stage chats, announcement channels, threads.
POSTABLE_CHANNELS = [discord.ChannelType.text, discord.ChannelType.news, discord.ChannelType.voice,
                     discord.ChannelType.stage_voice, discord.ChannelType.public_thread,
                     discord.ChannelType.private_thread, discord.ChannelType.news_thread]


class PostableChannel(app_commands.Transformer):
    """A channel option limited to channels that take messages; gives the raw resolved channel
    (AppCommandChannel / AppCommandThread), so no cache is needed."""

    @property
    def type(self) -> discord.AppCommandOptionType:
        return discord.AppCommandOptionType.channel

    @property
    def channel_types(self) -> list[discord.ChannelType]:
        return POSTABLE_CHANNELS

    async def transform(self, interaction: discord.Interaction, value: Any) -> Any:
        return value


Channel = app_commands.Transform[app_commands.AppCommandChannel, PostableChannel]


def role_ids_of(user: discord.abc.User) -> tuple[int, ...]:
    """The role ids as Discord sent them with the interaction (none for a plain user): Member.roles
    would drop any role missing from the cache, and with it that role's quota override."""
    return tuple(int(r) for r in getattr(user, "_roles", ()) or ())


def user_target(user: discord.abc.User) -> tuple[int, tuple[int, ...]]:
    """A user option's id and, when Discord sent them as a member, their role ids."""
    return user.id, role_ids_of(user)
