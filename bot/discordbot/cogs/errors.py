"""The one error handler for slash commands (and a helper buttons and other cogs reuse).

A UserFacingError's message is what the member needs (it names the field or the limit); a failed
check gets a plain refusal; anything else is a bug: logged with its traceback under a short error id
that the member sees too, so a report can be matched to the log line.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discordbot.premium import upsell_view
from bot.errors import UserFacingError

if TYPE_CHECKING:
    from bot.discordbot.app import KlingBot

log = logging.getLogger(__name__)

# Interaction tokens that no longer work: the member has gone, nothing to answer.
_DEAD_INTERACTION = {50027, 10062, 10015}


def unwrap(error: BaseException) -> BaseException:
    """The exception a command really raised, under discord.py's wrappers."""
    seen = 0
    while seen < 10:
        seen += 1
        if isinstance(error, (app_commands.CommandInvokeError, commands.CommandInvokeError)):
            error = error.original
        elif isinstance(error, app_commands.TransformerError) and error.__cause__ is not None:
            error = error.__cause__
        else:
            break
    return error


def _perm_names(names: list[str]) -> str:
    return ", ".join(name.replace("_", " ").replace("guild", "server").title() for name in names)


def describe(error: BaseException) -> tuple[str, bool]:
    """(the text the member sees, whether it is a bug that must be logged with a traceback)."""
    original = unwrap(error)
    if isinstance(original, UserFacingError):
        return original.message, False
    if isinstance(original, app_commands.MissingPermissions):
        return f"You need the {_perm_names(original.missing_permissions)} permission to do that.", False
    if isinstance(original, app_commands.BotMissingPermissions):
        return (f"I am missing the {_perm_names(original.missing_permissions)} permission here; "
                "ask a moderator to grant it."), False
    if isinstance(original, app_commands.NoPrivateMessage):
        return "This command works in a server channel, not in direct messages.", False
    if isinstance(original, app_commands.CommandOnCooldown):
        return f"Slow down: try again in {original.retry_after:.0f} s.", False
    if isinstance(original, app_commands.CheckFailure):
        return "You are not allowed to use this command here.", False
    return "", True


async def reply(interaction: discord.Interaction, text: str, view: discord.ui.View | None = None) -> None:
    """Answer ephemerally: edit the deferred "thinking" reply, else send one, else a followup."""
    mentions = discord.AllowedMentions.none()
    extra = {"view": view} if view is not None else {}
    try:
        response = interaction.response
        if not response.is_done():
            await response.send_message(text, ephemeral=True, allowed_mentions=mentions, **extra)
        elif response.type == discord.InteractionResponseType.deferred_channel_message:
            await interaction.edit_original_response(content=text, embed=None, view=view,
                                                     allowed_mentions=mentions)
        else:
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=mentions, **extra)
    except discord.HTTPException as exc:
        if exc.code in _DEAD_INTERACTION:
            log.info("interaction %s: token no longer valid (%s); reply not shown", interaction.id, exc.code)
        else:
            log.warning("interaction %s: could not show the error reply: %s", interaction.id, exc)


async def report_error(interaction: discord.Interaction, error: BaseException) -> None:
    """Show ``error`` to the member who triggered ``interaction`` (commands, buttons, modals)."""
    original = unwrap(error)
    if isinstance(original, discord.HTTPException) and original.code in _DEAD_INTERACTION:
        log.info("interaction %s: token expired (%s)", interaction.id, original.code)
        return
    text, is_bug = describe(error)
    if is_bug:
        error_id = secrets.token_hex(4)
        name = interaction.command.qualified_name if interaction.command else "interaction"
        log.error("error id %s in /%s (user %s, guild %s)", error_id, name, interaction.user.id,
                  interaction.guild_id, exc_info=original)
        text = f"Something went wrong (error id {error_id}); the team can look it up in the logs."
    # A quota refusal that a subscription would lift carries Discord's premium button.
    await reply(interaction, text, upsell_view(original, interaction))


class ErrorsCog(commands.Cog):
    def __init__(self, bot: KlingBot) -> None:
        self.bot = bot
        self._previous = bot.tree.on_error

    async def cog_load(self) -> None:
        self.bot.tree.error(report_error)

    async def cog_unload(self) -> None:
        self.bot.tree.error(self._previous)


async def setup(bot: KlingBot) -> None:
    await bot.add_cog(ErrorsCog(bot))
