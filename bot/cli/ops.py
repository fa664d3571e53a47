"""The operator's terminal commands: `klingbot jobs`, `backup`, `quota`, `usage` (`health` is in
health.py and uses the helpers here).

They work on the same database as a running bot (WAL lets them read while it writes) and through
the same services as the moderator commands; changes made here are audited with the actor
``cli:<os user>``. Commands that only read refuse to run without a database instead of creating one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import SecretStr

from bot.config import Config, load_config
from bot.db import Database, open_database
from bot.db.jobs import jobs_by_state
from bot.db.money import job_money
from bot.db.records import ALL_STATES, JobMoney, JobRecord
from bot.errors import InvalidInput, UserFacingError
from bot.services.clock import Clock, describe_reset
from bot.services.moderation import Moderation
from bot.services.moderation.audit import Change
from bot.services.moderation.limits import limits_text, parse_count_limit, parse_usd_limit
from bot.services.moderation.members import MemberReport
from bot.services.moderation.money import parse_usd_amount
from bot.services.quotas import DM_SCOPE, Member, Quotas, scope_name
from bot.services.usage import MONEY_COLUMNS, Usage, UsageLine, UsageReport
from bot.usd import micro_to_usd

# ---- shared helpers ----------------------------------------------------------------------------


@dataclass
class Ops:
    cfg: Config
    db: Database
    clock: Clock
    quotas: Quotas
    moderation: Moderation
    usage: Usage


def operator_actor() -> str:
    """Who is at the terminal, for the audit log."""
    try:
        name = getpass.getuser()
    except Exception:  # no user name in the environment or the passwd database (containers)
        name = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"cli:{name}"


def on_postgres(cfg: Config) -> bool:
    return isinstance(cfg.database, SecretStr)  # a URL (kept secret), else the SQLite path


def db_path(cfg: Config) -> Path:
    return Path(cfg.storage.path)


def require_db(cfg: Config) -> Path | None:
    """The SQLite file, which must exist (None on PostgreSQL: the server tells when connecting)."""
    if on_postgres(cfg):
        return None
    path = db_path(cfg)
    if not path.is_file():
        raise UserFacingError(f"no database at {path} (storage.path in {cfg.source})")
    return path


@contextlib.asynccontextmanager
async def opened(cfg: Config, *, must_exist: bool = True) -> AsyncIterator[Ops]:
    if must_exist:
        require_db(cfg)
    db = await open_database(cfg.database)
    try:
        clock = Clock()
        tz = cfg.progress.tz
        quotas = Quotas(db, cfg.limits, tz, clock)
        yield Ops(cfg, db, clock, quotas, Moderation(db, cfg, clock), Usage(db, cfg, clock))
    finally:
        await db.close()


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()) -> str:
    """A plain aligned text table; columns whose index is in ``right`` are right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        pairs = enumerate(zip(row, widths, strict=True))
        parts = [v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in pairs]
        return "  ".join(parts).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells[1:])
    return "\n".join(out)


def local_time(ts: float | None, cfg: Config) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, cfg.progress.tz).strftime("%Y-%m-%d %H:%M:%S")


# ---- jobs --------------------------------------------------------------------------------------


def cost_text(money: JobMoney) -> str:
    if money.refunded is not None:
        return f"{micro_to_usd(money.settled or 0)} (refunded)"
    if money.settled is not None:
        return micro_to_usd(money.settled)
    if money.released is not None:
        return "$0 (released)"
    return f"~{micro_to_usd(money.reserved)} (reserved)"


def job_rows(jobs: Sequence[JobRecord], money: dict[int, JobMoney], cfg: Config) -> list[list[object]]:
    return [
        [job.id, job.guild_id, job.user_id,
         job.state + (" (cancel requested)" if job.cancel_requested else ""),
         job.model_key, local_time(job.created_at, cfg), cost_text(money[job.id])]
        for job in jobs
    ]


async def _jobs(cfg: Config, state: str | None, limit: int, guild_id: int | None) -> str:
    async with opened(cfg) as ops:
        jobs = await jobs_by_state(ops.db, state, limit, guild_id)
        money = {job.id: await job_money(ops.db, job.id) for job in jobs}
    if not jobs:
        return "no jobs" + (f" in state {state}" if state else "")
    return table(["id", "guild", "user", "state", "model", "created", "cost"], job_rows(jobs, money, cfg),
                 right=(0, 1, 2))


def cmd_jobs(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    state = args.state.strip().lower() if args.state else None
    if state is not None and state not in ALL_STATES:
        raise InvalidInput("--state", args.state, "one of " + ", ".join(ALL_STATES))
    if args.limit < 1:
        raise InvalidInput("--limit", args.limit, "a whole number of at least 1")
    print(asyncio.run(_jobs(cfg, state, args.limit, parse_scope(getattr(args, "guild", None)))))
    return 0


# ---- backup ------------------------------------------------------------------------------------


async def _backup(cfg: Config, target: Path) -> None:
    async with opened(cfg) as ops:
        await ops.db.backup(target)


def cmd_backup(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if on_postgres(cfg):
        print("error: the database is PostgreSQL (storage.url or KLINGBOT_DATABASE_URL): back it up with "
              "pg_dump, e.g. pg_dump --format=custom --file=klingbot.dump DBNAME", file=sys.stderr)
        return 1
    source = require_db(cfg)
    target = Path(args.path)
    if target.exists():
        print(f"error: {target} already exists; backup never overwrites a file: give a new path",
              file=sys.stderr)
        return 2
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Claim the name atomically, so a file created meanwhile is not overwritten either.
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        print(f"error: {target} already exists; backup never overwrites a file", file=sys.stderr)
        return 2
    try:
        asyncio.run(_backup(cfg, target))
    except BaseException:
        target.unlink(missing_ok=True)  # no half-written backup left behind
        raise
    print(f"backed up {source} to {target} ({target.stat().st_size} bytes)")
    return 0


# ---- quota -------------------------------------------------------------------------------------


def _limit(value: int | None, money: bool) -> str:
    if value is None:
        return "unlimited"
    return micro_to_usd(value) if money else str(value)


def _left(value: int | None, money: bool) -> str:
    return "no limit" if value is None else f"{_limit(value, money)} left"


def report_text(r: MemberReport, now: float) -> str:
    u, lim = r.usage, r.usage.limits
    m = u.member
    who = scope_name(m.guild_id)
    allowance = _limit(lim.monthly_micro, True)
    if u.credit_month_micro and lim.monthly_micro is not None:
        sign = "+" if u.credit_month_micro > 0 else "-"
        allowance = (f"{micro_to_usd(lim.monthly_micro + u.credit_month_micro)} ({allowance} {sign} "
                     f"{micro_to_usd(abs(u.credit_month_micro))} credit)")
    pending = f" ({micro_to_usd(u.pending_month_micro)} still reserved)" if u.pending_month_micro else ""
    return "\n".join([
        f"user {m.user_id} in {who}",
        f"  own overrides: {limits_text(r.override)}" if r.override else "  own overrides: none",
        f"  today ({u.day}): {u.videos_today} of {_limit(lim.daily_videos, False)} videos, "
        f"{_left(u.remaining_videos, False)}; resets {describe_reset(u.day_resets_at, now)}",
        f"  this month ({u.month}): {micro_to_usd(u.spent_month_micro)} spent{pending} of "
        f"{allowance}, {_left(u.remaining_micro, True)}; "
        f"resets {describe_reset(u.month_resets_at, now)}",
        f"  in flight: {u.in_flight} of {_limit(lim.max_concurrent, False)}",
        f"  guild this month: {micro_to_usd(u.guild_spent_month_micro)} of "
        f"{_limit(lim.guild_monthly_micro, True)} budget",
        f"  banned: {r.ban.reason or 'yes'}" if r.ban else "  not banned",
    ] + ([] if m.guild_id <= 0 else
         ["  (role overrides are not applied here: the terminal does not know the member's roles)"]))


def change_text(c: Change) -> str:
    reason = f" ({c.reason})" if c.reason else ""
    return (f"{c.action} {c.target} in guild {c.guild_id}: {c.before} -> {c.after}{reason} "
            f"[audit #{c.audit_id}]")


async def _quota(cfg: Config, args: argparse.Namespace) -> str:
    actor = operator_actor()
    async with opened(cfg, must_exist=args.action == "show") as ops:
        mod = ops.moderation
        if args.action == "show":
            return report_text(await mod.show_member(Member(args.guild, args.user)), ops.clock.now())
        if args.action == "set":
            change = await mod.set_member_limits(
                args.guild, args.user,
                daily_videos=parse_count_limit("--daily-videos", args.daily_videos),
                monthly_micro=parse_usd_limit("--monthly-usd", args.monthly_usd),
                max_concurrent=parse_count_limit("--max-concurrent", args.max_concurrent),
                actor=actor, reason=args.reason)
        elif args.action == "reset":
            change = await mod.reset_member_limits(args.guild, args.user, actor=actor, reason=args.reason)
        else:
            change = await mod.credit(args.guild, args.user, parse_usd_amount("--amount", args.amount),
                                      actor=actor, reason=args.reason)
        return change_text(change)


def parse_scope(text: str | int | None) -> int | None:
    """``--guild``: a Discord guild id, 0 for the terminal, or ``dm`` for direct messages."""
    if text is None:
        return None
    word = str(text).strip().lower()
    if word == "dm":
        return DM_SCOPE
    if not word.isdigit():
        raise InvalidInput("--guild", text, "a Discord guild id, 0 for the terminal, or dm for direct messages")
    return int(word)


def _check_quota_args(args: argparse.Namespace) -> None:
    args.guild = parse_scope(args.guild)
    if args.user < 0:
        raise InvalidInput("--user", args.user, "a Discord id, or 0 for the terminal")
    limit_flags = {"--daily-videos": args.daily_videos, "--monthly-usd": args.monthly_usd,
                   "--max-concurrent": args.max_concurrent}
    given = [flag for flag, value in limit_flags.items() if value is not None]
    if args.action == "set" and not given:
        raise InvalidInput("--daily-videos/--monthly-usd/--max-concurrent", "nothing",
                           'at least one of them: a number, "unlimited" or "default"',
                           problem="no limit was given")
    if args.action != "set" and given:
        raise InvalidInput(given[0], limit_flags[given[0]], f"no limit flags with `quota {args.action}`; "
                           "use `quota set`")
    if args.action == "credit":
        if args.amount is None:
            raise InvalidInput("--amount", "nothing", "an amount in USD such as 2.50, or -1.00 to take away",
                               problem="is required")
        if not (args.reason or "").strip():
            raise InvalidInput("--reason", "", "a short reason (it goes to the audit log)")
    elif args.amount is not None:
        raise InvalidInput("--amount", args.amount, "only with `quota credit`")


def cmd_quota(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    _check_quota_args(args)
    print(asyncio.run(_quota(cfg, args)))
    return 0


# ---- usage -------------------------------------------------------------------------------------


def usage_table(report: UsageReport) -> str:
    def cells(line: UsageLine) -> list[object]:
        money = [micro_to_usd(getattr(line, f"{name}_micro")) for name in MONEY_COLUMNS]
        return [line.key, line.jobs, line.videos, *money]

    rows = [cells(r) for r in report.rows]
    rows.append(cells(report.total))
    headers = [report.by, "jobs", "videos", *MONEY_COLUMNS]
    where = "all guilds" if report.guild_id is None else scope_name(report.guild_id)
    since = f"since {report.since_day}" if report.since_day else "all time"
    title = f"usage by {report.by}, {where}, {report.period} ({since}), USD"
    return title + "\n" + table(headers, rows, right=range(1, len(headers)))


async def _usage(cfg: Config, args: argparse.Namespace) -> UsageReport:
    async with opened(cfg) as ops:
        return await ops.usage.report(args.guild, args.period, args.by)


def cmd_usage(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    args.guild = parse_scope(args.guild)
    report = asyncio.run(_usage(cfg, args))
    if args.csv == "-":
        sys.stdout.write(report.csv())
        return 0
    print(usage_table(report))
    if args.csv:
        path = Path(args.csv)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(report.csv(), encoding="utf-8", newline="")
        except OSError as exc:
            raise UserFacingError(f"cannot write {path}: {exc.strerror}") from None
        print(f"wrote {len(report.rows)} row(s) to {path}")
    return 0
