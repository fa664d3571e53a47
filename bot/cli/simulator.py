"""`klingbot simulator`: serve the Runware simulator so a bot, or Runware's own SDK, can use it."""

from __future__ import annotations

import argparse

from bot.errors import InvalidInput

MAX_VIDEO_MB = 500  # the simulator holds each distinct video in memory


def cmd_simulator(args: argparse.Namespace) -> int:
    if args.speed <= 0:
        raise InvalidInput("--speed", args.speed, "a number above 0 (a divisor of generation times)")
    if not 0 <= args.fail_rate <= 1:
        raise InvalidInput("--fail-rate", args.fail_rate, "a share from 0 to 1")
    if args.video_mb is not None and not 0 < args.video_mb <= MAX_VIDEO_MB:
        raise InvalidInput("--video-mb", args.video_mb, f"a size in MiB above 0 and at most {MAX_VIDEO_MB}")
    from bot.simulator.server import serve

    # serve() prints the URL once the server listens (with --port 0, the port it got).
    serve(args.host, args.port, args.api_key, args.speed, args.fail_rate, args.video_mb)
    return 0
