"""`klingbot run` (the bot) and `klingbot sync` (register the slash commands, then exit)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import discord

from bot.config import Config, load_config
from bot.errors import UserFacingError

log = logging.getLogger("bot.cli.run")


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if cfg.secrets.discord_token is None:
        print("error: DISCORD_TOKEN is not set: put the bot's token in the environment.", file=sys.stderr)
        return 1
    if not args.sandbox and cfg.secrets.runware_api_key is None:
        print("error: RUNWARE_API_KEY is not set: put the Runware API key in the environment, "
              "or run with --sandbox.", file=sys.stderr)
        return 1
    from bot.app import run_bot

    asyncio.run(run_bot(cfg, sandbox=bool(args.sandbox)))
    return 0


async def sync_commands(cfg: Config, guild_id: int | None) -> list[str]:
    """Log in, build the command tree from the cogs, register it, log out. Returns the names."""
    from bot.app import KlingBot

    token = cfg.secrets.discord_token
    if token is None:
        raise UserFacingError("DISCORD_TOKEN is not set: put the bot's token in the environment.")
    bot = KlingBot(cfg, runware_api_key=cfg.secrets.runware_api_key, commands_only=True)
    try:
        try:
            await bot.login(token.get_secret_value())
        except discord.LoginFailure:
            raise UserFacingError("Discord rejected DISCORD_TOKEN (401): check the bot token.") from None
        guild = discord.Object(id=guild_id) if guild_id else None
        return await bot.sync_commands(guild)
    finally:
        await bot.close()


def cmd_sync(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    guild_id = args.guild if args.guild is not None else (cfg.discord.dev_guild_id or None)
    try:
        names = asyncio.run(sync_commands(cfg, guild_id))
    except discord.HTTPException as exc:
        print(f"error: Discord refused the commands: {exc.status} {exc.text}", file=sys.stderr)
        return 1
    where = f"guild {guild_id}" if guild_id else "globally (may take up to an hour to show everywhere)"
    print(f"Registered {len(names)} command(s) {where}: " + ", ".join(f"/{n}" for n in names))
    return 0
