"""What members do with a video (SPEC 2.3): the Extend and Remix buttons of a finished job, and the
`Make a video` message context menu.

Extend and Remix are JobButtons (this cog declares their actions in ``KlingBot.button_handlers``,
where the buttons cog finds it), so they are persistent like Re-roll. With several videos, Extend
answers with a select (itself a dynamic item, ``klingbot:extendpick:<job>``, routed the same way)
to pick which. The modals are opened by a click and live only as long as the member has them open.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discordbot.app import KlingBot
from bot.discordbot.cogs.buttons import job_here, press
from bot.discordbot.cogs.errors import report_error
from bot.discordbot.confirm import confirm_cost
from bot.discordbot.interactions import VideoOptions, check_channel, handle_video, member_of, tell_queued
from bot.errors import InvalidInput, UserFacingError
from bot.requests import CFG_MAX, CFG_MIN, PROMPT_MAX, PROMPT_MIN, ResolvedRequest
from bot.services import next_steps
from bot.services.enhance import made_request
from bot.services.next_steps import PlannedJob

log = logging.getLogger(__name__)

COG_NAME = "NextSteps"
MAKE_A_VIDEO = "Make a video"
PICK_TEMPLATE = r"klingbot:extendpick:(?P<job>[0-9]{1,19})"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
ACTIONS = ("extend", "remix", "extendpick")  # the presses this cog handles


class ExtendPick(discord.ui.DynamicItem[discord.ui.Select], template=PICK_TEMPLATE):
    """Which of a job's videos to extend; rebuilt from its custom id on every choice."""

    def __init__(self, job_id: int, count: int = 4) -> None:
        options = [discord.SelectOption(label=f"Video {i}", value=str(i)) for i in range(1, count + 1)]
        super().__init__(discord.ui.Select(custom_id=f"klingbot:extendpick:{job_id}", options=options,
                                           placeholder="Which video to extend"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> ExtendPick:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[KlingBot]) -> None:
        await press(interaction, "extendpick", self.job_id)


class _Modal(discord.ui.Modal):
    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await report_error(interaction, error)


def _text(label: str, default: str | None, *, required: bool, long: bool = True,
          max_length: int = PROMPT_MAX) -> discord.ui.TextInput:
    return discord.ui.TextInput(label=label, default=default or None, required=required,
                                style=discord.TextStyle.paragraph if long else discord.TextStyle.short,
                                min_length=PROMPT_MIN if required else None, max_length=max_length)


def parse_cfg_scale(text: str) -> float | None:
    value = text.strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidInput("cfg_scale", value, f"a number from {CFG_MIN:g} to {CFG_MAX:g} in steps of 0.01") from None


class RemixModal(_Modal):
    def __init__(self, cog: NextStepsCog, job_id: int, source: ResolvedRequest) -> None:
        super().__init__(title=f"Remix job #{job_id}"[:45], timeout=900)
        self.cog = cog
        self.job_id = job_id
        self.prompt = _text("Prompt", source.prompt, required=True)
        self.negative = _text("Negative prompt (optional)", source.negative_prompt, required=False)
        cfg_text = f"{source.cfg_scale:g}" if source.cfg_scale is not None else ""
        self.cfg_scale = _text("CFG scale, 0 to 1 (optional)", cfg_text, required=False, long=False,
                               max_length=10)
        for item in (self.prompt, self.negative, self.cfg_scale):
            self.add_item(item)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        cog = self.cog
        bot = cog.bot
        live = bot.running()
        check_channel(bot, interaction, "Remix")
        job = await job_here(bot, interaction, self.job_id)
        plan = next_steps.plan_remix(live.engine, job, prompt=self.prompt.value,
                                     negative_prompt=self.negative.value or None,
                                     cfg_scale=parse_cfg_scale(self.cfg_scale.value))
        await cog.start(interaction, plan, f"a remix of job #{job.id}")


class MakeVideoModal(_Modal):
    def __init__(self, bot: KlingBot, attachment: discord.Attachment) -> None:
        super().__init__(title="Make a video from this image", timeout=900)
        self.bot = bot
        self.attachment = attachment
        self.prompt = _text("Prompt", None, required=True)
        self.negative = _text("Negative prompt (optional)", None, required=False)
        self.add_item(self.prompt)
        self.add_item(self.negative)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        options = VideoOptions(prompt=self.prompt.value, negative_prompt=self.negative.value or None,
                               first_frame=self.attachment)
        await handle_video(self.bot, interaction, options)


def first_image(message: discord.Message) -> discord.Attachment | None:
    for attachment in message.attachments:
        kind = (attachment.content_type or "").split(";")[0]
        if kind.startswith("image/") or attachment.filename.lower().endswith(IMAGE_EXTENSIONS):
            return attachment
    return None


class NextStepsCog(commands.Cog, name=COG_NAME):
    def __init__(self, bot: KlingBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name=MAKE_A_VIDEO, callback=self.make_video)
        if not bot.cfg.discord.allow_dms:
            self.menu.guild_only = True

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(ExtendPick)
        self.bot.tree.add_command(self.menu, override=True)
        self.bot.add_button_handlers(ACTIONS, self)

    async def cog_unload(self) -> None:
        self.bot.drop_button_handlers(ACTIONS)
        self.bot.remove_dynamic_items(ExtendPick)
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    async def handle(self, action: str, interaction: discord.Interaction, job_id: int) -> None:
        if action == "remix":
            await self.remix(interaction, job_id)
        elif action == "extendpick":
            values = (interaction.data or {}).get("values") or ["1"]  # type: ignore[union-attr]
            await interaction.response.defer(ephemeral=True, thinking=True)
            await self.extend_video(interaction, job_id, int(values[0]))
        else:
            await self.extend(interaction, job_id)

    # ---- Extend ----------------------------------------------------------------------------------

    async def extend(self, interaction: discord.Interaction, job_id: int) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        bot = self.bot
        live = bot.running()
        job = await job_here(bot, interaction, job_id)
        videos = await next_steps.videos_of(live.engine, job)
        if len(videos) > 1:
            view = discord.ui.View(timeout=None)
            view.add_item(ExtendPick(job.id, len(videos)))
            await interaction.edit_original_response(content=f"Which video of job #{job.id} should go on?",
                                                     view=view)
            return
        await self.extend_video(interaction, job_id, 1)

    async def extend_video(self, interaction: discord.Interaction, job_id: int, video: int) -> None:
        bot = self.bot
        live = bot.running()
        check_channel(bot, interaction, "Extend")
        job = await job_here(bot, interaction, job_id)
        plan = await next_steps.plan_extend(live.engine, job, video)
        await self.start(interaction, plan, f"extending job #{job.id}, video {video}")

    # ---- Remix -----------------------------------------------------------------------------------

    async def remix(self, interaction: discord.Interaction, job_id: int) -> None:
        bot = self.bot
        bot.running()
        job = await job_here(bot, interaction, job_id)
        await interaction.response.send_modal(RemixModal(self, job.id, made_request(job)))

    # ---- Make a video ----------------------------------------------------------------------------

    async def make_video(self, interaction: discord.Interaction, message: discord.Message) -> None:
        try:
            image = first_image(message)
            if image is None:
                raise UserFacingError("That message has no image attachment to start a video from.")
            await interaction.response.send_modal(MakeVideoModal(self.bot, image))
        except Exception as exc:  # noqa: BLE001 - every failure is shown to the member (or logged as a bug)
            await report_error(interaction, exc)

    # ---- shared ----------------------------------------------------------------------------------

    async def start(self, interaction: discord.Interaction, plan: PlannedJob, what: str) -> None:
        """Ask first when the cost is high; then reserve, upload and queue, and say so."""
        live = self.bot.running()
        assert interaction.channel_id is not None
        await live.engine.store.precheck(
            member_of(interaction), channel_id=interaction.channel_id,
            blocklist_text="\n".join(filter(None, [plan.request.prompt, plan.request.negative_prompt])),
            estimate_micro=plan.request.estimate_micro, variations=plan.request.variations)
        if not await confirm_cost(self.bot, interaction, plan.request.estimate_micro, what):
            return
        job = await next_steps.start(live.engine, plan, member_of(interaction), channel_id=interaction.channel_id,
                                     upload_limit=interaction.filesize_limit or None)
        log.info("job %s started from job %s (%s) by user %s", job.id, plan.source.id, what, interaction.user.id)
        await tell_queued(self.bot, interaction, job.id)


async def setup(bot: KlingBot) -> None:
    await bot.add_cog(NextStepsCog(bot))
