"""The buttons on job messages (SPEC 2.3): Re-roll, Details and Delete on a finished job, Cancel
while it is queued or running (and Extend, Remix and Share, handled by their own cogs).

They are persistent with no state in memory: each button is a ``DynamicItem`` whose custom id
carries the action and the job id (``klingbot:reroll:42``), registered once when the cog loads, so
a button on a message posted by an earlier process works the same. A click goes to the cog that
declared its action in ``KlingBot.button_handlers`` (this one; NextSteps for Extend and Remix, Gallery
for Share). The only memory is the re-roll debounce, which is UX, not correctness (the reserve
transaction guards the quotas).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import discord
from discord.ext import commands

from bot.db.jobs import get_job, results_for_job
from bot.db.money import job_money
from bot.db.records import ACTIVE_STATES, JobRecord
from bot.discordbot import render_job
from bot.discordbot.app import KlingBot
from bot.discordbot.cogs.errors import report_error
from bot.discordbot.confirm import confirm_cost
from bot.discordbot.interactions import PROGRESS_LINK_WAIT_S, check_channel, member_of
from bot.discordbot.permissions import is_moderator, may_manage_job
from bot.discordbot.render_member import details_embed
from bot.errors import NotPermitted, UserFacingError
from bot.services.moderation import permissions as rule
from bot.services.sink import ProgressUpdate, phase_of
from bot.usd import micro_to_usd

log = logging.getLogger(__name__)

COG_NAME = "Buttons"
TEMPLATE = r"klingbot:(?P<action>reroll|extend|remix|share|details|delete|cancel):(?P<job>[0-9]{1,19})"
DEBOUNCE_S = 5.0  # a second Re-roll click by the same member on the same job within this does nothing
_DEBOUNCE_KEEP = 1000  # entries kept before old ones are swept

# action -> (label, style, emoji)
BUTTONS: dict[str, tuple[str, discord.ButtonStyle, str]] = {
    "reroll": ("Re-roll", discord.ButtonStyle.primary, "🔁"),
    "extend": ("Extend", discord.ButtonStyle.secondary, "⏩"),
    "remix": ("Remix", discord.ButtonStyle.secondary, "🎛️"),
    "share": ("Share", discord.ButtonStyle.success, "🖼️"),
    "details": ("Details", discord.ButtonStyle.secondary, "ℹ️"),
    "delete": ("Delete", discord.ButtonStyle.danger, "🗑️"),
    "cancel": ("Cancel", discord.ButtonStyle.danger, "✖️"),
}
# The buttons of each stage's message, one tuple per action row: Discord takes at most 5 buttons in a
# row (and 5 rows), so a result has what makes another video on the first and what concerns this one
# on the second.
LAYOUT: dict[str, tuple[tuple[str, ...], ...]] = {
    "progress": (("cancel",),),
    "result": (("reroll", "extend", "remix"), ("share", "details", "delete")),
    "failure": (("reroll", "details", "delete"),),
}
# Shown only on jobs made in a server: the gallery is a server's.
GUILD_ONLY = frozenset({"share"})


def custom_id(action: str, job_id: int) -> str:
    return f"klingbot:{action}:{job_id}"


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=TEMPLATE):
    """One button of one job; rebuilt from its custom id on every click."""

    def __init__(self, action: str, job_id: int, row: int | None = None) -> None:
        label, style, emoji = BUTTONS[action]
        super().__init__(discord.ui.Button(label=label, style=style, emoji=emoji,
                                           custom_id=custom_id(action, job_id)), row=row)
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> JobButton:
        return cls(match["action"], int(match["job"]))

    async def callback(self, interaction: discord.Interaction[KlingBot]) -> None:
        await press(interaction, self.action, self.job_id)


async def press(interaction: discord.Interaction[KlingBot], action: str, job_id: int) -> None:
    """Hand a press to the cog that handles ``action`` (RESTARTING while none is loaded); every
    failure is shown to the member."""
    try:
        await interaction.client.button_handler(action).handle(action, interaction, job_id)
    except Exception as exc:  # noqa: BLE001 - every failure is shown to the member (or logged as a bug)
        await report_error(interaction, exc)


def components_for(job: JobRecord, stage: str) -> discord.ui.View | None:
    """The sink's hook: the buttons a job's message carries at ``stage``."""
    rows = LAYOUT.get(stage, ())
    if stage == "progress" and (job.cancel_requested or job.state not in ACTIVE_STATES):
        rows = ()  # a cancel is under way (or over): nothing left to press
    in_guild = job.guild_id > 0
    rows = tuple(kept for row in rows if (kept := tuple(a for a in row if in_guild or a not in GUILD_ONLY)))
    if not rows:
        return None
    view = discord.ui.View(timeout=None)
    for index, row in enumerate(rows):
        for action in row:
            view.add_item(JobButton(action, job.id, row=index))
    return view


# ---- helpers the member commands share -------------------------------------------------------------

async def job_here(bot: KlingBot, interaction: discord.Interaction, job_id: int) -> JobRecord:
    """The job, when it belongs to this server (in DMs: to this member)."""
    job = await get_job(bot.running().db, job_id)
    if job is not None:
        if interaction.guild_id is not None and job.guild_id == interaction.guild_id:
            return job
        if interaction.guild_id is None and job.user_id == interaction.user.id:
            return job
    raise UserFacingError(f"There is no job #{job_id} here.")


def _ephemeral_text(interaction: discord.Interaction, text: str) -> Any:
    return interaction.edit_original_response(content=text, allowed_mentions=discord.AllowedMentions.none())


class ButtonsCog(commands.Cog, name=COG_NAME):
    def __init__(self, bot: KlingBot) -> None:
        self.bot = bot
        self._clicks: dict[tuple[int, int], float] = {}  # (user, job) -> monotonic time of a re-roll
        self._handlers = {"reroll": self.reroll, "details": self.details, "delete": self.delete,
                          "cancel": self.cancel}

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(JobButton)
        self.bot.components_for = components_for
        self.bot.add_button_handlers(self._handlers, self)

    async def cog_unload(self) -> None:
        self.bot.drop_button_handlers(self._handlers)
        self.bot.remove_dynamic_items(JobButton)
        self.bot.components_for = None

    async def handle(self, action: str, interaction: discord.Interaction, job_id: int) -> None:
        await self._handlers[action](interaction, job_id)

    # ---- Re-roll ---------------------------------------------------------------------------------

    def _debounced(self, user_id: int, job_id: int) -> bool:
        """True when this member clicked Re-roll on this job moments ago; records the click
        otherwise. No await in here: two clicks handled concurrently cannot both pass."""
        now = time.monotonic()
        key = (user_id, job_id)
        last = self._clicks.get(key)
        if last is not None and now - last < DEBOUNCE_S:
            return True
        self._clicks[key] = now
        if len(self._clicks) > _DEBOUNCE_KEEP:
            self._clicks = {k: t for k, t in self._clicks.items() if now - t < DEBOUNCE_S}
        return False

    async def reroll(self, interaction: discord.Interaction, job_id: int) -> None:
        bot = self.bot
        if self._debounced(interaction.user.id, job_id):
            await interaction.response.defer()  # acknowledged, nothing else happens
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        live = bot.running()
        check_channel(bot, interaction, "Re-roll")
        source = await job_here(bot, interaction, job_id)
        if not await confirm_cost(bot, interaction, source.video_estimate_micro, f"a re-roll of job #{job_id}"):
            return
        job = await live.engine.reroll(job_id, member_of(interaction), channel_id=interaction.channel_id,
                                       upload_limit=interaction.filesize_limit or None)
        log.info("job %s re-rolled as job %s by user %s", job_id, job.id, interaction.user.id)
        message_id = await live.sink.wait_progress_message(job.id, PROGRESS_LINK_WAIT_S)
        where = (f"Progress: {render_job.jump_url(job.guild_id, job.channel_id, message_id)}" if message_id
                 else f"Progress will appear in <#{job.channel_id}>.")
        await _ephemeral_text(interaction, (
            f"Re-rolling job #{job_id} as job #{job.id}. {where}\n"
            f"Reserved {micro_to_usd(job.estimate_micro)} of your quota; "
            "the cost settles to what Runware reports."))

    # ---- Details ---------------------------------------------------------------------------------

    async def details(self, interaction: discord.Interaction, job_id: int) -> None:
        bot = self.bot
        db = bot.running().db
        job = await job_here(bot, interaction, job_id)
        results, money = await results_for_job(db, job.id), await job_money(db, job.id)
        embed = details_embed(job, results, money, render_job.model_label(bot.cfg, job))
        await interaction.response.send_message(embed=embed, ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())

    # ---- Delete ----------------------------------------------------------------------------------

    async def delete(self, interaction: discord.Interaction, job_id: int) -> None:
        bot = self.bot
        job = await job_here(bot, interaction, job_id)
        if not await may_manage_job(bot.running().db, interaction, job):
            raise NotPermitted(f"Only <@{job.user_id}>, who made job #{job.id}, or a moderator can "
                               "delete it.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        message = interaction.message
        if message is not None:
            try:
                await message.delete()
            except discord.NotFound:
                pass  # someone deleted it first
        log.info("job %s: message %s deleted by user %s", job.id, message.id if message else None,
                 interaction.user.id)
        await _ephemeral_text(interaction, f"Deleted the message of job #{job.id}.")

    # ---- Cancel ----------------------------------------------------------------------------------

    async def cancel(self, interaction: discord.Interaction, job_id: int) -> None:
        bot = self.bot
        live = bot.running()
        job = await job_here(bot, interaction, job_id)
        member = member_of(interaction)
        moderator = await is_moderator(live.db, interaction)
        if not rule.may_manage_job(job, member, moderator=moderator):
            raise NotPermitted(f"Only <@{job.user_id}>, who started job #{job.id}, or a moderator can "
                               "cancel it.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        outcome = await live.engine.cancel(job_id, member, is_moderator=moderator)
        log.info("job %s: cancel asked by user %s (now %s)", job_id, interaction.user.id, outcome.job.state)
        updated = outcome.job
        phase = phase_of(updated.state)
        if phase is not None:
            # At Runware: the progress message says "Cancelling…" (and loses its button) now rather
            # than at the engine's next progress round; the final line comes when the cost settles.
            await live.sink.progress(ProgressUpdate(job=updated, phase=phase, elapsed_s=0.0))
        await _ephemeral_text(interaction, outcome.message)


async def setup(bot: KlingBot) -> None:
    await bot.add_cog(ButtonsCog(bot))
