"""/genadmin groups about the whole server: channels add|remove|list, blocklist add|remove|list,
budget set, modrole set|clear, logchannel set|clear, gallery set|clear, safety mode, confirm set. The
server commands at the top level (pause, resume, usage, audit) are methods of the root group in admin.py."""

# No `from __future__ import annotations`: discord.py reads the callbacks' annotations at runtime.

import discord
from discord import app_commands
from discord.app_commands import Choice, Range

from bot.config import SAFETY_MODES
from bot.discordbot import render_admin, render_gallery
from bot.discordbot.cogs.admin_group import WHY, ConsoleGroup, Reason
from bot.discordbot.options import Channel
from bot.discordbot.permissions import bot_missing_in
from bot.errors import NotPermitted
from bot.services.moderation.guild import MAX_TERM
from bot.services.moderation.limits import parse_usd_limit


class Channels(ConsoleGroup, name="channels", description="Where /video may be used"):
    @app_commands.command(name="add", description="Allow /video in a channel (once any is set, only there)")
    @app_commands.describe(channel="The channel", reason=WHY)
    async def add(self, interaction: discord.Interaction, channel: Channel, reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        change = await self.console.mod.add_channel(guild_id, channel.id, actor=actor, reason=reason)
        await self.console.done(interaction, change)

    @app_commands.command(name="remove", description="Stop allowing /video in a channel")
    @app_commands.describe(channel="The channel", reason=WHY)
    async def remove(self, interaction: discord.Interaction, channel: Channel,
                     reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        change = await self.console.mod.remove_channel(guild_id, channel.id, actor=actor, reason=reason)
        await self.console.done(interaction, change)

    @app_commands.command(name="list", description="The channels where /video may be used")
    async def list_(self, interaction: discord.Interaction) -> None:
        guild_id, _ = await self.console.begin(interaction)
        channels = await self.console.mod.list_channels(guild_id)
        await self.console.say(interaction, render_admin.channels_text(channels))


class Blocklist(ConsoleGroup, name="blocklist", description="Terms refused in prompts"):
    @app_commands.command(name="add", description="Refuse prompts containing a word or phrase (* = any ending)")
    @app_commands.describe(term="A word or phrase", reason=WHY)
    async def add(self, interaction: discord.Interaction, term: Range[str, 1, MAX_TERM],
                  reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        change = await self.console.mod.add_blocked_term(guild_id, term, actor=actor, reason=reason)
        await self.console.done(interaction, change)

    @app_commands.command(name="remove", description="Stop refusing a word or phrase")
    @app_commands.describe(term="The blocked word or phrase", reason=WHY)
    async def remove(self, interaction: discord.Interaction, term: Range[str, 1, MAX_TERM],
                     reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        change = await self.console.mod.remove_blocked_term(guild_id, term, actor=actor, reason=reason)
        await self.console.done(interaction, change)

    @app_commands.command(name="list", description="The blocked words and phrases")
    async def list_(self, interaction: discord.Interaction) -> None:
        guild_id, _ = await self.console.begin(interaction)
        terms = await self.console.mod.list_blocklist(guild_id)
        await self.console.say(interaction, render_admin.blocklist_text(terms))


class Budget(ConsoleGroup, name="budget", description="This server's monthly budget"):
    @app_commands.command(name="set", description="This server's monthly budget in USD")
    @app_commands.describe(amount='USD, e.g. 50, "unlimited", or "default"', reason=WHY)
    async def set_budget(self, interaction: discord.Interaction, amount: Range[str, 1, 20],
                         reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        change = await self.console.mod.set_budget(guild_id, parse_usd_limit("amount", amount), actor=actor,
                                                   reason=reason)
        await self.console.done(interaction, change)


class ModRole(ConsoleGroup, name="modrole", description="The role that may use /genadmin"):
    @app_commands.command(name="set", description="Members with this role may use /genadmin")
    @app_commands.describe(role="The moderator role", reason=WHY)
    async def set_role(self, interaction: discord.Interaction, role: discord.Role,
                       reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        change = await self.console.mod.set_modrole(guild_id, role.id, actor=actor, reason=reason)
        await self.console.done(interaction, change)

    @app_commands.command(name="clear", description="Only Manage Server may use /genadmin")
    @app_commands.describe(reason=WHY)
    async def clear(self, interaction: discord.Interaction, reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        change = await self.console.mod.set_modrole(guild_id, None, actor=actor, reason=reason)
        await self.console.done(interaction, change)


class LogChannel(ConsoleGroup, name="logchannel", description="Where moderator actions are posted"):
    @app_commands.command(name="set", description="Post moderator actions and budget warnings in a channel")
    @app_commands.describe(channel="The log channel", reason=WHY)
    async def set_channel(self, interaction: discord.Interaction, channel: Channel,
                          reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        change = await self.console.mod.set_logchannel(guild_id, channel.id, actor=actor, reason=reason)
        await self.console.done(interaction, change)

    @app_commands.command(name="clear", description="Stop posting moderator actions")
    @app_commands.describe(reason=WHY)
    async def clear(self, interaction: discord.Interaction, reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        change = await self.console.mod.set_logchannel(guild_id, None, actor=actor, reason=reason)
        await self.console.done(interaction, change)


class Gallery(ConsoleGroup, name="gallery", description="Where members share their best videos"):
    @app_commands.command(name="set", description="Post the results members share (their Share button) in a channel")
    @app_commands.describe(channel="The gallery channel", reason=WHY)
    async def set_channel(self, interaction: discord.Interaction, channel: Channel,
                          reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        # Refused before anything is written: a gallery the bot cannot post in would fail every share.
        missing = await bot_missing_in(interaction.client, guild_id, channel.id)
        if missing is None or missing:
            raise NotPermitted(render_gallery.unusable_channel(channel.id, missing))
        change = await self.console.mod.set_gallery(guild_id, channel.id, actor=actor, reason=reason)
        await self.console.done(interaction, change)

    @app_commands.command(name="clear", description="Turn the gallery off (its posts stay)")
    @app_commands.describe(reason=WHY)
    async def clear(self, interaction: discord.Interaction, reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        change = await self.console.mod.set_gallery(guild_id, None, actor=actor, reason=reason)
        await self.console.done(interaction, change)


class Safety(ConsoleGroup, name="safety", description="The content check on videos"):
    @app_commands.command(name="mode", description="The content check on videos (never weaker than the bot's)")
    @app_commands.describe(mode="none, fast (key frames) or full (every frame)", reason=WHY)
    @app_commands.choices(mode=[Choice(name=m, value=m) for m in SAFETY_MODES])
    async def mode(self, interaction: discord.Interaction, mode: str, reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        change = await self.console.mod.set_safety_mode(guild_id, mode, actor=actor, reason=reason)
        await self.console.done(interaction, change)


class Confirm(ConsoleGroup, name="confirm", description="When members confirm a job's cost first"):
    @app_commands.command(name="set", description="Ask members to confirm jobs estimated above this (USD; 0 = never)")
    @app_commands.describe(amount="USD, e.g. 2.50 (0 = never ask)", reason=WHY)
    async def set_threshold(self, interaction: discord.Interaction, amount: Range[str, 1, 20],
                            reason: Reason | None = None) -> None:
        guild_id, actor = await self.console.begin(interaction)
        change = await self.console.mod.set_confirm_threshold(guild_id, amount, actor=actor, reason=reason)
        await self.console.done(interaction, change)


SERVER_GROUPS = (Channels, Blocklist, Budget, ModRole, LogChannel, Gallery, Safety, Confirm)
