"""`klingbot simulator`: serve the Runware simulator so a bot, or Runware's own SDK, can use it."""

from __future__ import annotations

import argparse

from bot.errors import InvalidInput


def cmd_simulator(args: argparse.Namespace) -> int:
    if args.speed <= 0:
        raise InvalidInput("--speed", args.speed, "a number above 0 (a divisor of generation times)")
    if not 0 <= args.fail_rate <= 1:
        raise InvalidInput("--fail-rate", args.fail_rate, "a share from 0 to 1")
    from bot.simulator.server import serve

    # serve() prints the URL once the server listens (with --port 0, the port it got).
    serve(args.host, args.port, args.api_key, args.speed, args.fail_rate)
    return 0
