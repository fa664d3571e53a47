"""`klingbot generate`: one generation from the terminal through the bot's own validation,
quota, client and poller code."""

from __future__ import annotations

import argparse

from bot.cli.generate_request import dry_run
from bot.cli.generate_run import run_generation
from bot.config import load_config


def cmd_generate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.dry_run:
        return dry_run(cfg, args)
    return run_generation(cfg, args)
