"""`klingbot run` (the bot) and `klingbot sync` (register the slash commands, then exit)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.config import load_config
from bot.discordbot.app import run_bot, sync_commands


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if cfg.secrets.discord_token is None:
        print("error: DISCORD_TOKEN is not set: put the bot's token in the environment.", file=sys.stderr)
        return 1
    if not args.sandbox and cfg.secrets.runware_api_key is None:
        print("error: RUNWARE_API_KEY is not set: put the Runware API key in the environment, "
              "or run with --sandbox.", file=sys.stderr)
        return 1
    asyncio.run(run_bot(cfg, sandbox=bool(args.sandbox)))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    guild_id = args.guild if args.guild is not None else (cfg.discord.dev_guild_id or None)
    names = asyncio.run(sync_commands(cfg, guild_id))
    where = f"guild {guild_id}" if guild_id else "globally (may take up to an hour to show everywhere)"
    print(f"Registered {len(names)} command(s) {where}: " + ", ".join(f"/{n}" for n in names))
    return 0
