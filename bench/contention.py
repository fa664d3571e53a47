"""contention: 1,000 concurrent reservations by 200 members through JobStore.create (the reserve:
one BEGIN IMMEDIATE transaction that checks every limit, then writes the job and its ledger row).

Measured two ways on fresh databases:
- the bot's shape: ONE process, ONE connection (as the bot has), 1,000 tasks started at once;
- several processes, each with its own connection, released together by a barrier (SQLite's lock
  is then contended across processes, as with a CLI command running next to the bot).
The limits bind on purpose (a member's monthly USD, each guild's budget, the global daily ceiling),
so "0 overspend" is checked against the ledger: reserved totals per member, guild and day never
exceed their limits, and exactly as many are admitted as the tightest limit allows."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
import zoneinfo
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.common import ScenarioResult
from bot.config import LimitsConfig
from bot.db import open_database
from bot.db.money import ledger_rows
from bot.errors import LimitExceeded
from bot.services.clock import SystemClock
from bot.services.jobs import JobStore
from bot.services.quotas import Member, Quotas

NAME = "contention"
RATE_BAR = 1000.0
ESTIMATE = 350_000  # a 5 s Kling 2.5 Turbo Pro video, in micro-USD
GUILD_BASE = 1_320_000_000_000_000_000
USER_BASE = 1_320_000_000_000_100_000


def plan(total: int, members: int, guilds: int) -> dict[str, Any]:
    """Who reserves what, and limits that bind: a member may have 4 of their 5 videos, a guild
    3/4 of its members' allowance, and the whole bot a bit less than the guilds together."""
    per_member = total // members
    member_cap = max(1, per_member - 1)
    members_per_guild = members // guilds
    guild_cap = max(1, (members_per_guild * member_cap * 3) // 4)
    global_cap = max(1, (guild_cap * guilds * 11) // 12)
    limits = {
        "daily_videos": "unlimited", "max_concurrent": "unlimited", "max_in_flight": 5000,
        "monthly_usd": member_cap * ESTIMATE / 1e6,
        "guild_monthly_usd": guild_cap * ESTIMATE / 1e6,
        "global_daily_usd": global_cap * ESTIMATE / 1e6,
    }
    attempts = [(GUILD_BASE + (m % guilds), USER_BASE + m) for m in range(members) for _ in range(per_member)]
    return {"limits": limits, "attempts": attempts, "caps": {"member": member_cap, "guild": guild_cap,
                                                               "global": global_cap}}


def _store(db: Any, limits: dict[str, Any]) -> JobStore:
    tz = zoneinfo.ZoneInfo("UTC")
    clock = SystemClock()
    return JobStore(db, Quotas(db, LimitsConfig.model_validate(limits), tz, clock), clock, tz)


async def _reserve_all(store: JobStore, attempts: list[list[int]] | list[tuple[int, int]]) -> dict[str, Any]:
    async def one(guild_id: int, user_id: int) -> int | str:
        try:
            job = await store.create(
                Member(guild_id, user_id), channel_id=guild_id + 1, model_key="kling-2.5-turbo-pro",
                params={"prompt": "bench"}, task_uuid=str(uuid.uuid4()), duration_s=5, variations=1,
                estimate_micro=ESTIMATE)
            return job.id
        except LimitExceeded as exc:
            return exc.limit

    started = time.time()
    outcomes = await asyncio.gather(*(one(g, u) for g, u in attempts), return_exceptions=True)
    ended = time.time()
    return {
        "admitted": sum(1 for o in outcomes if isinstance(o, int)),
        "refused": dict(Counter(o for o in outcomes if isinstance(o, str))),
        "errors": [repr(o) for o in outcomes if isinstance(o, BaseException)][:5],
        "started": started, "ended": ended,
    }


async def _ledger_check(db_path: Path | str, caps: dict[str, int]) -> dict[str, Any]:
    """Reserved totals from the ledger against the limits."""
    db = await open_database(db_path)
    try:
        rows = await db.run(ledger_rows, kind="reserve")
    finally:
        await db.close()
    per_user: dict[tuple[int, int], int] = defaultdict(int)
    per_guild: dict[int, int] = defaultdict(int)
    for row in rows:
        per_user[(row.guild_id, row.user_id)] += row.amount_micro
        per_guild[row.guild_id] += row.amount_micro
    total = sum(per_guild.values())
    over = (sum(1 for v in per_user.values() if v > caps["member"] * ESTIMATE)
            + sum(1 for v in per_guild.values() if v > caps["guild"] * ESTIMATE)
            + (1 if total > caps["global"] * ESTIMATE else 0))
    overspend = (sum(max(0, v - caps["member"] * ESTIMATE) for v in per_user.values())
                 + sum(max(0, v - caps["guild"] * ESTIMATE) for v in per_guild.values())
                 + max(0, total - caps["global"] * ESTIMATE))
    return {"reserve_rows": len(rows), "reserved_micro": total, "limits_exceeded": over,
            "overspend_micro": overspend}


async def single_process(tmp: Path, spec: dict[str, Any]) -> dict[str, Any]:
    db_path = tmp / "contention-one.sqlite3"
    db = await open_database(db_path)
    try:
        outcome = await _reserve_all(_store(db, spec["limits"]), spec["attempts"])
    finally:
        await db.close()
    return outcome | await _ledger_check(db_path, spec["caps"])


async def multi_process(tmp: Path, spec: dict[str, Any], processes: int, location: str | None = None
                        ) -> dict[str, Any]:
    """``location``: a database to use (contention-pg's PostgreSQL URL) instead of a new SQLite file."""
    db_path = location or str(tmp / "contention-many.sqlite3")
    await (await open_database(db_path)).close()  # created and migrated before the workers race

    shares = [spec["attempts"][k::processes] for k in range(processes)]
    procs = []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for share in shares:
        worker_spec = json.dumps({"limits": spec["limits"], "attempts": share})
        procs.append(await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.contention", "worker", db_path, worker_spec,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env))
    for proc in procs:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"contention worker did not start: {line!r}")
    for proc in procs:  # the barrier
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
    outcomes = []
    for proc in procs:
        out, _ = await asyncio.wait_for(proc.communicate(), 300)
        outcomes.append(json.loads(out.decode().strip().splitlines()[-1]))
    refused: Counter[str] = Counter()
    for o in outcomes:
        refused.update(o["refused"])
    merged = {
        "admitted": sum(o["admitted"] for o in outcomes), "refused": dict(refused),
        "errors": [e for o in outcomes for e in o["errors"]][:5],
        "started": min(o["started"] for o in outcomes), "ended": max(o["ended"] for o in outcomes),
        "processes": processes,
    }
    return merged | await _ledger_check(db_path, spec["caps"])


async def run(tmp: Path, *, quick: bool = False, total: int | None = None, members: int | None = None,
              processes: int = 4) -> ScenarioResult:
    result = ScenarioResult(NAME)
    total = total or (200 if quick else 1000)
    members = members or (40 if quick else 200)
    spec = plan(total, members, guilds=4)
    expected = min(spec["caps"]["global"], spec["caps"]["guild"] * 4, spec["caps"]["member"] * members)
    one = await single_process(tmp, spec)
    many = await multi_process(tmp, spec, processes)
    rate_one = total / (one["ended"] - one["started"])
    rate_many = total / (many["ended"] - many["started"])
    exact = one["admitted"] == expected and many["admitted"] == expected
    result.add("overspend (1 process / 4 processes)", f"{one['overspend_micro']} / {many['overspend_micro']}",
               "micro-USD", "0", one["overspend_micro"] == 0 and many["overspend_micro"] == 0
               and not one["errors"] and not many["errors"])
    result.add("admitted = what the limits allow",
               f"{one['admitted']} / {many['admitted']} of {expected}", "", f"{expected}", exact)
    result.add("reservations/s, one connection (the bot)", rate_one, "/s", f">= {RATE_BAR:,.0f}/s",
               rate_one >= RATE_BAR)
    result.add(f"reservations/s, {processes} processes", rate_many, "/s")
    result.details = {"attempts": total, "members": members, "guilds": 4, "caps": spec["caps"],
                      "limits": spec["limits"], "expected_admitted": expected,
                      "one_process": one | {"rate_per_s": round(rate_one, 1)},
                      "multi_process": many | {"rate_per_s": round(rate_many, 1)},
                      "measure": "wall time from the first create() to the last answer (admitted or "
                                 "refused), all started at once"}
    return result


async def _worker(db_path: str, spec: dict[str, Any]) -> None:
    db = await open_database(db_path)
    try:
        store = _store(db, spec["limits"])
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        outcome = await _reserve_all(store, spec["attempts"])
        print(json.dumps(outcome), flush=True)
    finally:
        await db.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        asyncio.run(_worker(sys.argv[2], json.loads(sys.argv[3])))
    else:
        raise SystemExit("usage: python -m bench.contention worker DB_PATH SPEC_JSON (run by the bench)")
