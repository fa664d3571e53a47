"""Cost confirmation (SPEC 2.3): a job estimated above the guild's threshold first gets an
ephemeral "This will cost about $X" with Confirm and Cancel, valid 60 s. Nothing is reserved or
uploaded before Confirm; the caller goes on only when ``confirm_cost`` returns True.

The buttons live in memory only: a confirmation is a minute long, and one pending when the bot
restarts is simply not confirmed (nothing was reserved, so nothing is lost).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord

from bot.db.guilds import get_guild_settings
from bot.usd import micro_to_usd

if TYPE_CHECKING:
    from bot.discordbot.app import KlingBot

log = logging.getLogger(__name__)

CONFIRM_S = 60.0


class ConfirmView(discord.ui.View):
    """Confirm / Cancel for one member; the first answer (or the time-out) decides."""

    def __init__(self, user_id: int) -> None:
        super().__init__(timeout=CONFIRM_S)
        self.user_id = user_id
        self.answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.timed_out = False

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.user_id:
            await interaction.response.send_message("This confirmation is not yours.", ephemeral=True)
            return False
        return True

    def _decide(self, value: bool) -> None:
        if not self.answer.done():
            self.answer.set_result(value)
        self.stop()

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.success)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.edit_message(content="Confirmed; starting…", view=None)
        self._decide(True)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.edit_message(content="Cancelled; nothing was charged.", view=None)
        self._decide(False)

    async def on_timeout(self) -> None:
        self.timed_out = True
        self._decide(False)


async def threshold_micro(bot: KlingBot, guild_id: int | None) -> int:
    """The guild's threshold (``/genadmin confirm set``), else ``limits.confirm_above_usd``; 0 = never."""
    default = bot.cfg.limits.confirm_above_micro_usd
    if not guild_id:
        return default
    settings = await bot.running().db.run(get_guild_settings, guild_id)
    return default if settings.confirm_above_micro is None else settings.confirm_above_micro


async def confirm_cost(bot: KlingBot, interaction: discord.Interaction, estimate_micro: int, what: str) -> bool:
    """True when the job may go ahead: under the threshold, or the member pressed Confirm.

    ``interaction`` has been deferred (ephemerally); its reply shows the question, then the outcome."""
    threshold = await threshold_micro(bot, interaction.guild_id)
    if threshold <= 0 or estimate_micro <= threshold:
        return True
    view = ConfirmView(interaction.user.id)
    await interaction.edit_original_response(
        content=(f"This will cost about {micro_to_usd(estimate_micro)} ({what}), above this server's "
                 f"{micro_to_usd(threshold)} confirmation threshold. Confirm within {CONFIRM_S:.0f} s; "
                 "nothing is reserved until you do."),
        view=view, allowed_mentions=discord.AllowedMentions.none())
    confirmed = await view.answer
    if not confirmed and view.timed_out:
        try:
            await interaction.edit_original_response(content="Not confirmed within 60 s; nothing was charged.",
                                                     view=None)
        except discord.HTTPException as exc:
            log.info("could not mark the confirmation expired (%s %s)", exc.status, exc.code)
    return confirmed
