"""`klingbot health`: exit 0 when every live bot run checked finished a poll round recently (SPEC 3.5).

Each engine is a run (bot/db/runs) and records when it last finished a poll round; with several bot
processes on one store, each is judged by its own, so one whose poll loop is stuck shows even while
another polls on. By default only this host's runs are checked (under Docker the hostname is the
container's, so the image's HEALTHCHECK judges its own container); ``--all-hosts`` checks every host's,
for a monitor sharing the PostgreSQL store. Never creates a database; prints one line per finding."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass

from bot.cli.ops import db_path, on_postgres, opened
from bot.config import Config, load_config
from bot.db.connection import describe_location
from bot.db.records import RunRecord
from bot.db.runs import live_runs
from bot.errors import InvalidInput
from bot.services.ownership import BOT_KIND, HOST, process_gone

HEALTH_ROUNDS = 3        # poll intervals without a finished round before a bot run counts as stuck
HEALTH_MARGIN_S = 30.0


def health_max_age(cfg: Config) -> float:
    """How long a bot run may go without finishing a poll round: it records one at most once a
    second, well inside the margin, so a run that has not for 3 poll intervals + 30 s is stuck."""
    return HEALTH_ROUNDS * cfg.runware.poll_interval_s + HEALTH_MARGIN_S


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    lines: list[str]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def judge(runs: list[RunRecord], now: float, max_age: float, host: str | None) -> Verdict:
    """``runs``: the live runs of every kind and host; ``host``: check only its bot runs (None: all)."""
    # A run on this host whose process is certainly dead is gone, whatever its lease still says.
    bots = [r for r in runs if r.kind == BOT_KIND and not process_gone(r.host, r.pid)]
    checked = sorted((r for r in bots if host is None or r.host == host), key=lambda r: (r.host, r.pid))
    if not checked:
        if host is None:
            return Verdict(False, ["unhealthy: no live bot run on any host (is `klingbot run` running?)"])
        elsewhere = len(bots)
        if elsewhere:
            return Verdict(False, [f"unhealthy: no live bot run on this host ({host}); "
                                   f"{elsewhere} on other hosts (--all-hosts checks those)"])
        return Verdict(False, [f"unhealthy: no live bot run on this host ({host}) (is `klingbot run` running?)"])
    stale: list[str] = []
    ages = []
    for run in checked:
        age = max(now - (run.polled_at if run.polled_at is not None else run.started_at), 0.0)
        ages.append(age)
        if age > max_age:
            what = ("last poll round finished" if run.polled_at is not None
                    else "no poll round finished since it started")
            stale.append(f"unhealthy: bot run pid {run.pid} on {run.host}: {what} {age:.0f} s ago "
                         f"(allowed {max_age:g} s)")
    if stale:
        return Verdict(False, stale)
    where = f"host {host}" if host is not None else _plural(len({r.host for r in checked}), "host")
    oldest = "last poll round" if len(checked) == 1 else "the oldest last poll round"
    return Verdict(True, [f"healthy: {_plural(len(checked), 'bot run')} on {where}, {oldest} {max(ages):.1f} s ago "
                          f"(allowed {max_age:g} s)"])


async def _live_runs(cfg: Config) -> tuple[float, list[RunRecord]]:
    async with opened(cfg) as ops:
        now = ops.clock.now()
        return now, await live_runs(ops.db, now)


def cmd_health(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    path = describe_location(cfg.database)
    if not on_postgres(cfg) and not db_path(cfg).is_file():  # a healthcheck must not invent a database
        print(f"unhealthy: no database at {path}")
        return 1
    max_age = args.max_age if getattr(args, "max_age", None) is not None else health_max_age(cfg)
    if max_age <= 0:
        raise InvalidInput("--max-age", max_age, "a number of seconds above 0")
    try:
        now, runs = asyncio.run(_live_runs(cfg))
    except Exception as exc:  # a broken or locked file is unhealthy, not a crash with a traceback
        print(f"unhealthy: cannot read {path}: {type(exc).__name__}: {exc}")
        return 1
    verdict = judge(runs, now, max_age, None if getattr(args, "all_hosts", False) else HOST)
    print("\n".join(verdict.lines))
    return 0 if verdict.healthy else 1
