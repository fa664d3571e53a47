"""/video (SPEC 2.3). The command is built when the cog loads, because its choices come from the
model registry in the config. The work after the deferral lives in bot/discordbot/interactions.py."""

# No `from __future__ import annotations`: discord.py reads the callback's annotations at runtime.

import logging

import discord
from discord import app_commands
from discord.app_commands import Choice, Range
from discord.ext import commands

from bot.config import ASPECTS, OUTPUT_FORMATS
from bot.discordbot.app import KlingBot
from bot.discordbot.interactions import VideoOptions, handle_video
from bot.requests import (
    CFG_MAX,
    CFG_MIN,
    PROMPT_MAX,
    PROMPT_MIN,
    QUALITY_MAX,
    QUALITY_MIN,
    VARIATIONS_MAX,
    VARIATIONS_MIN,
)

log = logging.getLogger(__name__)

DESCRIPTIONS = {
    "prompt": "What happens in the video",
    "model": "Which Kling model (default Kling 2.5 Turbo Pro)",
    "first_frame": "Image the video starts from (PNG, JPEG or WEBP)",
    "last_frame": "Image the video ends on (needs a first frame)",
    "duration": "Length in seconds",
    "aspect": "Shape of the video (default: from the first frame, else 16:9)",
    "negative_prompt": "What to avoid",
    "cfg_scale": "How closely to follow the prompt, 0 to 1 (default 0.5)",
    "variations": "How many videos to make, 1 to 4 (each is charged)",
    "format": "File format (default MP4)",
    "quality": "Output quality, 20 to 99",
    "loop": "End on the first frame: a seamless loop (needs a first frame)",
    "enhance": "Let Runware's prompt enhancer rewrite the prompt first",
}


def build_video_command(bot: KlingBot) -> app_commands.Command:
    cfg = bot.cfg
    model_choices = [Choice(name=spec.label[:100], value=key) for key, spec in cfg.models.items()][:25]
    durations = sorted({d for spec in cfg.models.values() for d in spec.durations})[:25]

    async def video(
        interaction: discord.Interaction,
        prompt: Range[str, PROMPT_MIN, PROMPT_MAX],
        model: str | None = None,
        first_frame: discord.Attachment | None = None,
        last_frame: discord.Attachment | None = None,
        duration: int | None = None,
        aspect: str | None = None,
        negative_prompt: Range[str, PROMPT_MIN, PROMPT_MAX] | None = None,
        cfg_scale: Range[float, CFG_MIN, CFG_MAX] | None = None,
        variations: Range[int, VARIATIONS_MIN, VARIATIONS_MAX] | None = None,
        format: str | None = None,  # noqa: A002 - the option's public name (SPEC 2.3)
        quality: Range[int, QUALITY_MIN, QUALITY_MAX] | None = None,
        loop: bool | None = None,
        enhance: bool | None = None,
    ) -> None:
        # First, at once: Discord wants an answer within 3 s, and downloads take longer.
        await interaction.response.defer(ephemeral=True, thinking=True)
        options = VideoOptions(
            prompt=prompt, model=model, first_frame=first_frame, last_frame=last_frame, duration=duration,
            aspect=aspect, negative_prompt=negative_prompt, cfg_scale=cfg_scale, variations=variations,
            format=format, quality=quality, loop=bool(loop), enhance=bool(enhance),
        )
        await handle_video(bot, interaction, options)

    video = app_commands.choices(
        model=model_choices,
        duration=[Choice(name=f"{d} seconds", value=d) for d in durations],
        aspect=[Choice(name=a, value=a) for a in ASPECTS],
        format=[Choice(name=f, value=f) for f in OUTPUT_FORMATS],
    )(video)
    video = app_commands.describe(**DESCRIPTIONS)(video)
    command = app_commands.Command(name="video", description="Make a short video with Kling", callback=video)
    if not cfg.discord.allow_dms:
        command = app_commands.guild_only(command)
    return command


class VideoCog(commands.Cog):
    def __init__(self, bot: KlingBot) -> None:
        self.bot = bot
        self.command = build_video_command(bot)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.command, override=True)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.command.name)


async def setup(bot: KlingBot) -> None:
    await bot.add_cog(VideoCog(bot))
