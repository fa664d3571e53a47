"""Parses the command line, loads config once, and calls one function per subcommand."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import re
import sys
from collections.abc import Sequence

from bot.config import ASPECTS, OUTPUT_FORMATS, ConfigError
from bot.errors import UserFacingError

log = logging.getLogger(__name__)

# subcommand -> "module:function"; each function takes the parsed args and returns an exit code.
HANDLERS = {
    "run": "bot.cli.run:cmd_run",
    "generate": "bot.cli.generate:cmd_generate",
    "simulator": "bot.cli.simulator:cmd_simulator",
    "doctor": "bot.cli.doctor:cmd_doctor",
    "health": "bot.cli.health:cmd_health",
    "sync": "bot.cli.run:cmd_sync",
    "quota": "bot.cli.ops:cmd_quota",
    "usage": "bot.cli.ops:cmd_usage",
    "jobs": "bot.cli.ops:cmd_jobs",
    "backup": "bot.cli.ops:cmd_backup",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="klingbot", description="KlingAI videos on Runware, for Discord.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", metavar="PATH", help="config file (default: $KLINGBOT_CONFIG or ./config.toml)")
        return p

    run = with_config(sub.add_parser("run", help="run the Discord bot"))
    run.add_argument("--sandbox", action="store_true", help="use the built-in Runware simulator (no money spent)")

    gen = with_config(sub.add_parser("generate", help="one generation from the terminal"))
    gen.add_argument("prompt")
    gen.add_argument("--model")
    gen.add_argument("--duration", type=int, metavar="SECONDS")
    gen.add_argument("--aspect", help=f"one of {', '.join(ASPECTS)}")
    gen.add_argument("--first-frame", metavar="FILE")
    gen.add_argument("--last-frame", metavar="FILE")
    gen.add_argument("--loop", action="store_true",
                     help="end on the first frame: a seamless loop (needs --first-frame, not --last-frame)")
    gen.add_argument("--enhance", action="store_true",
                     help="let Runware's prompt enhancer rewrite the prompt first (a prompt of at most 300 characters)")
    gen.add_argument("--negative", metavar="TEXT")
    gen.add_argument("--cfg", type=float, metavar="X", help="CFG scale, 0..1 in steps of 0.01")
    gen.add_argument("--variations", type=int, metavar="N", help="1..4")
    gen.add_argument("--format", help=f"one of {', '.join(OUTPUT_FORMATS)}")
    gen.add_argument("--quality", type=int, metavar="Q", help="20..99")
    gen.add_argument("--out", default="./videos", metavar="DIR")
    gen.add_argument("--fit-mb", type=float, metavar="N", help="also write each video fitted to N MiB (H.264 MP4)")
    gen.add_argument("--dry-run", action="store_true", help="validate and print the tasks; send nothing")
    gen.add_argument("--json", action="store_true", help="machine-readable output")
    gen.add_argument("--sandbox", action="store_true", help="use the built-in Runware simulator")
    gen.add_argument("--user", type=int, default=0, metavar="ID", help="member id the job is charged to")

    sim = sub.add_parser("simulator", help="serve the Runware simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8787)
    sim.add_argument("--api-key", default="sandbox")
    sim.add_argument("--speed", type=float, default=1.0, help="divide generation times by X")
    sim.add_argument("--fail-rate", type=float, default=0.0, help="share of tasks that fail (0..1)")
    sim.add_argument("--video-mb", type=float, metavar="N",
                     help="each result a video of about N MiB at the task's size and duration (default: small)")

    with_config(sub.add_parser("doctor", help="check config, database, keys; print the invite URL"))
    health = with_config(sub.add_parser(
        "health", help="exit 0 when every live bot run on this host finished a poll round recently"))
    health.add_argument("--max-age", type=float, metavar="SECONDS",
                        help="longest a bot run may go without finishing a poll round (default: from [runware], "
                             ">= 30)")
    health.add_argument("--all-hosts", action="store_true",
                        help="check the bot runs of every host on the database, not only this host's")
    sync = with_config(sub.add_parser("sync", help="register slash commands"))
    sync.add_argument("--guild", type=int, metavar="ID")

    quota = with_config(sub.add_parser("quota", help="show or change a member's quota"))
    quota.add_argument("action", choices=["show", "set", "reset", "credit"])
    quota.add_argument("--guild", default="0", metavar="ID|dm", help="0 = the terminal, dm = direct messages")
    quota.add_argument("--user", type=int, default=0, metavar="ID")
    quota.add_argument("--daily-videos", metavar="N|unlimited")
    quota.add_argument("--monthly-usd", metavar="USD|unlimited")
    quota.add_argument("--max-concurrent", metavar="N|unlimited")
    quota.add_argument("--amount", metavar="USD", help="for credit (negative takes away)")
    quota.add_argument("--reason", default="")

    usage = with_config(sub.add_parser("usage", help="spend and videos from the ledger"))
    usage.add_argument("--period", choices=["today", "7d", "month", "all"], default="month")
    usage.add_argument("--by", choices=["user", "model", "day"], default="user")
    usage.add_argument("--csv", metavar="FILE")
    usage.add_argument("--guild", metavar="ID|dm", help="0 = the terminal, dm = direct messages")

    jobs = with_config(sub.add_parser("jobs", help="list jobs"))
    jobs.add_argument("--state", help="queued, submitted, processing, succeeded, failed, timed_out, cancelled")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--guild", metavar="ID|dm", help="only this guild's jobs (0 = the terminal, dm = DMs)")

    backup = with_config(sub.add_parser("backup", help="online backup of the database"))
    backup.add_argument("path")
    return parser


# Interaction tokens (15-minute credentials to answer and edit as the bot) in discord.py's debug
# lines: callback and followup URLs, and the INTERACTION_CREATE payload.
_TOKEN_PATTERNS = (
    (re.compile(r"(/(?:interactions|webhooks)/\d+/)[^/\s'\"?]+"), r"\1[redacted]"),
    (re.compile(r"""(['"]token['"]:\s*['"])[^'"]+"""), r"\1[redacted]"),
)


def redact_tokens(record: logging.LogRecord) -> bool:
    """A handler filter: the message with interaction tokens replaced; the record is always kept."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: leave it to the handler's own error path
        return True
    clean = message
    for pattern, replacement in _TOKEN_PATTERNS:
        clean = pattern.sub(replacement, clean)
    if clean != message:
        record.msg, record.args = clean, None
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact_tokens)
    # httpx logs every request at INFO; the poller would drown the useful lines.
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    module_name, func_name = HANDLERS[args.command].split(":")
    module = importlib.import_module(module_name)  # one command's imports only: `health` stays fast
    try:
        return int(getattr(module, func_name)(args) or 0)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except UserFacingError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if getattr(args, "json", False) and not getattr(args, "dry_run", False):
            # Scripts reading the last stdout line get an answer even when nothing ran.
            status = {2: "invalid", 3: "refused"}.get(exc.exit_code, "error")
            print(json.dumps({"job_id": None, "status": status, "task_uuid": None, "model": None,
                              "videos": [], "seeds": [], "cost_usd": 0, "error": exc.message}))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
