"""Quotas and money (SPEC 3.3) on both stores (a real SQLite file, a real PostgreSQL database): every
limit, overrides, time zones, refunds, credits, and exact admission under concurrency (several
connections, several processes)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from datetime import datetime
from itertools import count
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.config import LimitsConfig
from bot.db import Conn, open_database
from bot.db.guilds import add_ban, set_member_limits, set_role_limits, update_guild_settings
from bot.db.kv import kv_delete, kv_set
from bot.db.money import ledger_for_job
from bot.db.records import UNLIMITED, LimitOverride
from bot.errors import InvalidInput, LimitExceeded, RunwareUnavailable, UserFacingError
from bot.services.clock import FixedClock
from bot.services.jobs import JobStore
from bot.services.quotas import RUNWARE_PAUSE_KEY, Member, Quotas

UTC_ZONE = ZoneInfo("UTC")
NY = ZoneInfo("America/New_York")
EST = 350_000  # $0.35: 5 s of Kling 2.5 Turbo Pro
WORKER = Path(__file__).resolve().parents[1] / "quota_worker.py"
_uuids = count()

# Every limit lifted unless a test sets it.
OPEN = {"daily_videos": "unlimited", "monthly_usd": "unlimited", "max_concurrent": "unlimited",
        "guild_monthly_usd": "unlimited", "global_daily_usd": "unlimited"}


def at(*args: int, tz: ZoneInfo = UTC_ZONE) -> float:
    return datetime(*args, tzinfo=tz).timestamp()


class Env:
    def __init__(self, db, limits: LimitsConfig, tz: ZoneInfo, clock: FixedClock, location: str = "") -> None:
        self.db, self.clock, self.tz, self.location = db, clock, tz, location
        self.quotas = Quotas(db, limits, tz, clock)
        self.store = JobStore(db, self.quotas, clock, tz)

    async def create(self, member: Member, estimate: int = EST, variations: int = 1, **kw):
        return await self.store.create(
            member, channel_id=kw.pop("channel_id", 10), model_key="kling-2.5-turbo-pro", params={},
            task_uuid=f"task-{next(_uuids)}", duration_s=5, variations=variations, estimate_micro=estimate,
            **kw,
        )

    async def rows(self, table: str) -> int:
        return int(await self.db.run(Conn.fetchval, f"SELECT COUNT(*) FROM {table}"))


def new_location(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> str:
    """A fresh database on the store the test runs on."""
    if request.param == "sqlite":
        return str(tmp_path / f"{name}.sqlite3")
    return request.getfixturevalue("pg_server").create_database()


@pytest.fixture(params=["sqlite", "postgres"])
async def make(request, tmp_path):
    opened = []

    async def factory(limits: dict | None = None, tz: ZoneInfo = UTC_ZONE, now: float | None = None) -> Env:
        location = new_location(request, tmp_path, f"q{len(opened)}")
        db = await open_database(location)
        opened.append(db)
        clock = FixedClock(at(2024, 3, 10, 20, 48) if now is None else now)
        return Env(db, LimitsConfig.model_validate({**OPEN, **(limits or {})}), tz, clock, location)

    yield factory
    for db in opened:
        await db.close()


ALICE = Member(1, 100)
BOB = Member(1, 200)


async def refused(coro) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as info:
        await coro
    return info.value


# ---- each limit, with its message ------------------------------------------------------------


async def test_daily_videos_refused_with_numbers_and_reset(make):
    env = await make({"daily_videos": 3})
    await env.create(ALICE, variations=2)
    exc = await refused(env.create(ALICE, variations=2))
    assert exc.limit == "daily_videos" and (exc.used, exc.allowed) == (2, 3)
    assert exc.resets_at == datetime(2024, 3, 11, tzinfo=UTC_ZONE)
    assert exc.message == (
        "Daily video limit reached: you have used 2 of 3 videos today; this request needs 2. "
        "It resets at 00:00 UTC (in 3 h 12 min)."
    )
    await env.create(ALICE, variations=1)  # exactly up to the limit is fine
    assert await env.rows("jobs") == 2 and await env.rows("ledger") == 2  # refusals wrote nothing


async def test_released_jobs_do_not_count_as_videos(make):
    env = await make({"daily_videos": 1})
    job = await env.create(ALICE)
    await env.store.request_cancel(job.id, "user:100")  # queued: cancelled and released
    await env.create(ALICE)


async def test_monthly_usd_refused(make):
    env = await make({"monthly_usd": "1.00"})
    await env.create(ALICE)
    await env.create(ALICE)
    exc = await refused(env.create(ALICE))
    assert exc.limit == "monthly_usd" and (exc.used, exc.allowed) == (700_000, 1_000_000)
    assert exc.resets_at == datetime(2024, 4, 1, tzinfo=UTC_ZONE)
    assert "Monthly spending limit reached: you have used $0.70 of $1.00 this month" in exc.message
    assert "costs about $0.35" in exc.message
    assert "resets on 1 Apr at 00:00 UTC (in 21 d 3 h)" in exc.message


async def test_settled_cost_above_estimate_refuses_the_next_request(make):
    env = await make({"monthly_usd": "1.00"})
    job = await env.create(ALICE)
    await env.store.finish(job.id, "succeeded", None, 900_000)
    exc = await refused(env.create(ALICE))
    assert exc.limit == "monthly_usd" and exc.used == 900_000


async def test_concurrency_refused_until_a_job_finishes(make):
    env = await make({"max_concurrent": 1})
    job = await env.create(ALICE)
    exc = await refused(env.create(ALICE))
    assert exc.limit == "max_concurrent" and (exc.used, exc.allowed, exc.resets_at) == (1, 1, None)
    assert "1 of 1 allowed jobs queued or running" in exc.message
    await env.create(BOB)  # another member is not affected
    await env.store.finish(job.id, "failed", "boom", None)
    await env.create(ALICE)


async def test_a_cancelled_job_still_at_runware_counts_until_it_ends(make):
    env = await make({"max_concurrent": 1})
    job = await env.create(ALICE)
    assert await env.store.mark_submitted(job.id, env.clock.now())
    cancelled = await env.store.request_cancel(job.id, "user:100")
    assert cancelled is not None and cancelled.cancel_requested and cancelled.state == "submitted"
    # Runware is still making (and billing) it: it still takes the member's slot.
    exc = await refused(env.create(ALICE))
    assert exc.limit == "max_concurrent" and exc.used == 1
    await env.store.finish(job.id, "cancelled", None, 350_000)
    await env.create(ALICE)


async def test_guild_budget_counts_every_member_and_guild_override(make):
    env = await make({"guild_monthly_usd": "1.00"})
    await env.create(ALICE)
    await env.create(BOB)
    exc = await refused(env.create(Member(1, 300), estimate=400_000))
    assert exc.limit == "guild_monthly_usd" and (exc.used, exc.allowed) == (700_000, 1_000_000)
    assert "This server's monthly video budget is used up: $0.70 of $1.00" in exc.message
    await env.create(Member(2, 300), estimate=400_000)  # another guild has its own budget
    await env.db.run(update_guild_settings, 1, monthly_budget_micro=UNLIMITED)
    await env.create(Member(1, 300), estimate=400_000)
    await env.db.run(update_guild_settings, 1, monthly_budget_micro=1_200_000)
    assert (await refused(env.create(ALICE))).allowed == 1_200_000


async def test_global_daily_ceiling_spans_guilds(make):
    env = await make({"global_daily_usd": "1.00"})
    await env.create(Member(1, 1))
    await env.create(Member(2, 1))
    exc = await refused(env.create(Member(3, 1)))
    assert exc.limit == "global_daily_usd" and (exc.used, exc.allowed) == (700_000, 1_000_000)
    assert exc.resets_at == datetime(2024, 3, 11, tzinfo=UTC_ZONE)
    assert "daily spending ceiling" in exc.message and "across all servers" in exc.message


async def test_ban_pause_and_runware_pause(make):
    env = await make({"daily_videos": 0})  # also over a limit: the ban is named first
    await env.db.run(add_ban, 1, ALICE.user_id, "spam", "mod:9", env.clock.now())
    exc = await refused(env.create(ALICE))
    assert exc.limit == "ban" and "spam" in exc.message
    await env.db.run(update_guild_settings, 1, paused=True, pause_reason="maintenance")
    exc = await refused(env.create(BOB))
    assert exc.limit == "pause" and "paused on this server: maintenance" in exc.message
    await env.db.run(update_guild_settings, 1, paused=False)
    await kv_set(env.db, RUNWARE_PAUSE_KEY, "balance exhausted")
    with pytest.raises(RunwareUnavailable):
        await env.create(BOB)
    await kv_delete(env.db, RUNWARE_PAUSE_KEY)
    assert (await refused(env.create(BOB))).limit == "daily_videos"
    assert await env.rows("jobs") == 0


# ---- overrides ----------------------------------------------------------------------------------


async def test_role_overrides_most_generous_and_member_override_wins(make):
    env = await make({"daily_videos": 1, "monthly_usd": "2.00", "max_concurrent": 2})
    await env.db.run(set_role_limits, 1, 11, LimitOverride(daily_videos=3, monthly_micro=1_000_000))
    await env.db.run(set_role_limits, 1, 12, LimitOverride(daily_videos=5))
    await env.db.run(set_role_limits, 1, 13, LimitOverride(max_concurrent=UNLIMITED))
    member = Member(1, 100, role_ids=(11, 12, 13))
    lim = await env.quotas.effective_limits(member)
    assert (lim.daily_videos, lim.monthly_micro, lim.max_concurrent) == (5, 1_000_000, None)
    assert (await env.quotas.effective_limits(Member(1, 100, (11,)))).daily_videos == 3
    assert (await env.quotas.effective_limits(Member(2, 100, (11, 12)))).daily_videos == 1  # other guild

    await env.db.run(set_member_limits, 1, 100, LimitOverride(daily_videos=2))  # stricter than roles: wins
    lim = await env.quotas.effective_limits(member)
    assert (lim.daily_videos, lim.monthly_micro, lim.max_concurrent) == (2, 1_000_000, None)
    await env.create(member, estimate=100_000)
    await env.create(member, estimate=100_000)
    exc = await refused(env.create(member, estimate=100_000))
    assert (exc.limit, exc.allowed) == ("daily_videos", 2)

    await env.db.run(set_member_limits, 1, 100, LimitOverride(daily_videos=UNLIMITED))
    assert (await env.quotas.effective_limits(member)).daily_videos is None
    await env.create(member, estimate=100_000)


async def test_unlimited_from_config(make):
    env = await make({"daily_videos": "unlimited", "max_concurrent": "unlimited"})
    for _ in range(12):
        await env.create(ALICE)
    usage = await env.quotas.usage(ALICE)
    assert usage.videos_today == 12 and usage.remaining_videos is None and usage.remaining_concurrent is None


# ---- time zones and rollover ---------------------------------------------------------------------


async def test_day_rolls_over_at_local_midnight(make):
    # 23:50 in New York is already the next day in UTC: the bucket must follow the configured zone.
    env = await make({"daily_videos": 1}, tz=NY, now=at(2024, 1, 15, 23, 50, tz=NY))
    job = await env.create(ALICE)
    assert job.day == "2024-01-15" and job.month == "2024-01"
    exc = await refused(env.create(ALICE))
    assert exc.resets_at == datetime(2024, 1, 16, tzinfo=NY)
    assert "It resets at 00:00 EST (in 10 min)." in exc.message
    env.clock.advance(10 * 60)
    assert (await env.create(ALICE)).day == "2024-01-16"


async def test_month_rolls_over_at_local_midnight(make):
    env = await make({"monthly_usd": "0.35"}, tz=NY, now=at(2024, 1, 31, 23, 58, tz=NY))
    await env.create(ALICE)
    exc = await refused(env.create(ALICE))
    assert exc.limit == "monthly_usd" and exc.resets_at == datetime(2024, 2, 1, tzinfo=NY)
    assert "at 00:00 EST (in 2 min)" in exc.message
    env.clock.advance(120)
    assert (await env.create(ALICE)).month == "2024-02"


# ---- refunds and credits ------------------------------------------------------------------------


async def test_refund_once_and_global_ceiling_still_counts_it(make):
    env = await make({"monthly_usd": "1.00", "guild_monthly_usd": "1.00", "global_daily_usd": "1.00"})
    job = await env.create(ALICE)
    await env.store.finish(job.id, "succeeded", None, 900_000)
    assert await env.quotas.refund(job.id, "mod:9", "broken video") == 900_000
    usage = await env.quotas.usage(ALICE)
    assert usage.spent_month_micro == 0 and usage.guild_spent_month_micro == 0
    with pytest.raises(UserFacingError, match="already refunded"):
        await env.quotas.refund(job.id, "mod:9", "again")
    kinds = Counter(r.kind for r in await ledger_for_job(env.db, job.id))
    assert kinds == {"reserve": 1, "settle": 1, "refund": 1}
    # Member and guild have room again, the bot's ceiling does not: the money was spent.
    exc = await refused(env.create(ALICE))
    assert exc.limit == "global_daily_usd" and exc.used == 900_000


async def test_refund_needs_a_settled_job_of_that_guild(make):
    env = await make()
    queued = await env.create(ALICE)
    with pytest.raises(UserFacingError, match="no settled cost"):
        await env.quotas.refund(queued.id, "mod:9", "x")
    failed = await env.create(ALICE)
    await env.store.finish(failed.id, "failed", "boom", None)
    with pytest.raises(UserFacingError, match="no settled cost"):
        await env.quotas.refund(failed.id, "mod:9", "x")
    done = await env.create(ALICE)
    await env.store.finish(done.id, "succeeded", None, 300_000)
    with pytest.raises(UserFacingError, match="no job"):
        await env.quotas.refund(done.id, "mod:9", "x", guild_id=2)
    with pytest.raises(UserFacingError, match="no job"):
        await env.quotas.refund(9999, "mod:9", "x")
    assert await env.quotas.refund(done.id, "mod:9", "x", guild_id=1) == 300_000


async def test_credit_raises_allowance_for_current_month_only(make):
    env = await make({"monthly_usd": "0.35"}, now=at(2024, 1, 20, 12, 0))
    await env.create(ALICE)
    assert (await refused(env.create(ALICE))).allowed == 350_000
    await env.quotas.credit(ALICE, 350_000, "mod:9", "contest winner")
    await env.create(ALICE)
    exc = await refused(env.create(ALICE))
    assert exc.allowed == 700_000 and "(including $0.35 credit)" in exc.message
    env.clock.set(at(2024, 2, 2, 12, 0))  # February: the credit stayed in January
    await env.create(ALICE)
    assert (await refused(env.create(ALICE))).allowed == 350_000
    await env.quotas.credit(ALICE, -350_000, "mod:9", "abuse")
    usage = await env.quotas.usage(ALICE)
    assert usage.credit_month_micro == -350_000 and usage.remaining_micro == 0
    with pytest.raises(InvalidInput):
        await env.quotas.credit(ALICE, 0, "mod:9", "nothing")


async def test_usage_report_for_quota_command(make):
    env = await make({"daily_videos": 5, "monthly_usd": "5.00", "max_concurrent": 3})
    a = await env.create(ALICE, variations=2, estimate=700_000)
    await env.create(ALICE)
    await env.store.finish(a.id, "succeeded", None, 600_000)
    await env.quotas.credit(ALICE, 1_000_000, "mod:9", "thanks")
    usage = await env.quotas.usage(ALICE)
    assert (usage.videos_today, usage.remaining_videos) == (3, 2)
    assert (usage.spent_month_micro, usage.pending_month_micro) == (950_000, 350_000)
    assert usage.remaining_micro == 5_000_000 + 1_000_000 - 950_000
    assert (usage.in_flight, usage.remaining_concurrent) == (1, 2)
    assert usage.day_resets_at == datetime(2024, 3, 11, tzinfo=UTC_ZONE)
    assert usage.month_resets_at == datetime(2024, 4, 1, tzinfo=UTC_ZONE)


async def test_budget_warning_once_per_level(make):
    env = await make({"guild_monthly_usd": "1.00"})
    await env.create(ALICE, estimate=700_000)
    assert await env.quotas.budget_warning(1) is None
    await env.create(BOB, estimate=100_000)
    assert await env.quotas.budget_warning(1) == (80, 800_000, 1_000_000)
    assert await env.quotas.budget_warning(1) is None
    await env.create(BOB, estimate=200_000)
    assert await env.quotas.budget_warning(1) == (100, 1_000_000, 1_000_000)
    assert await env.quotas.budget_warning(1) is None


# ---- no check-then-write races -------------------------------------------------------------------


async def test_100_concurrent_reservations_on_several_connections_admit_3(make, tmp_path):
    env = await make({"max_concurrent": 3})
    others = [await open_database(env.location) for _ in range(3)]
    try:
        stores = [env] + [Env(db, env.quotas.limits, env.tz, env.clock) for db in others]

        async def attempt(i: int):
            try:
                return await stores[i % 4].create(ALICE)
            except LimitExceeded as exc:
                return exc.limit

        outcomes = await asyncio.gather(*(attempt(i) for i in range(100)))
    finally:
        for db in others:
            await db.close()
    assert Counter(o if isinstance(o, str) else "ok" for o in outcomes) == {"ok": 3, "max_concurrent": 97}
    assert await env.rows("jobs") == 3
    assert await env.db.run(Conn.fetchval, "SELECT COUNT(*) FROM ledger WHERE kind = 'reserve'") == 3


@pytest.mark.parametrize(
    ("limits", "members"),
    [
        ({"max_concurrent": 3}, "same"),
        ({"monthly_usd": "1.05"}, "same"),
        ({"global_daily_usd": "1.05"}, "one guild per process"),
    ],
    ids=["max_concurrent", "monthly_usd", "global_daily_usd"],
)
@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
async def test_100_reservations_from_5_processes_admit_exactly_3(request, tmp_path, limits, members, store_kind):
    path = str(tmp_path / "shared.sqlite3") if store_kind == "sqlite" else request.getfixturevalue("pg_url")
    db = await open_database(path)  # migrated once, before the workers race
    processes = []
    try:
        for n in range(5):
            spec = {"mode": "reserve", "now": at(2024, 3, 10, 12, 0), "limits": {**OPEN, **limits},
                    "guild_id": 1 if members == "same" else n + 1, "user_id": 100, "count": 20,
                    "estimate_micro": EST}
            processes.append(subprocess.Popen(
                [sys.executable, str(WORKER), path, json.dumps(spec)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))
        for proc in processes:  # every worker has its connection open...
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in processes:  # ...then all are released together
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = []
        for proc in processes:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.kill()
    assert [r["errors"] for r in reports] == [[]] * 5
    admitted = [job_id for r in reports for job_id in r["admitted"]]
    refusals = sum((Counter(r["refused"]) for r in reports), Counter())
    assert len(admitted) == 3 and refusals == {next(iter(limits)): 97}
    assert await db.run(Conn.fetchval, "SELECT COUNT(*) FROM jobs") == 3
    assert await db.run(Conn.fetchval, "SELECT COUNT(*) FROM ledger WHERE kind = 'reserve'") == 3
    assert await db.run(Conn.fetchval, "SELECT SUM(amount_micro) FROM ledger") == 3 * EST
    await db.close()


def test_clock_buckets_and_resets_across_dst():
    from bot.services.clock import day_of, describe_reset, month_of, next_day_start, next_month_start

    before = at(2024, 3, 9, 12, 0, tz=NY)  # the night clocks spring forward is 23 h long
    assert next_day_start(before, NY) == datetime(2024, 3, 10, tzinfo=NY)
    during = at(2024, 3, 10, 12, 0, tz=NY)
    midnight = next_day_start(during, NY)
    assert midnight == datetime(2024, 3, 11, tzinfo=NY) and midnight.utcoffset().total_seconds() == -4 * 3600
    assert describe_reset(midnight, during) == "at 00:00 EDT (in 12 h)"
    assert next_month_start(at(2024, 12, 31, 23, 0, tz=NY), NY) == datetime(2025, 1, 1, tzinfo=NY)
    late = at(2024, 12, 31, 23, 30, tz=NY)
    assert (day_of(late, NY), month_of(late, NY)) == ("2024-12-31", "2024-12")
    assert (day_of(late, UTC_ZONE), month_of(late, UTC_ZONE)) == ("2025-01-01", "2025-01")
    assert describe_reset(datetime(2024, 4, 1, tzinfo=UTC_ZONE), at(2024, 3, 31, 23, 59, 30)) == (
        "at 00:00 UTC (in less than a minute)")


async def test_a_request_refused_by_the_budget_announces_100_percent_once(make):
    # Reservations stop short of exactly 100% ($0.80 + $0.35 > $1.00): the refusal itself is what
    # tells the moderators the budget is used up.
    env = await make({"guild_monthly_usd": "1.00"})
    await env.create(ALICE, estimate=800_000)
    assert await env.quotas.budget_warning(1) == (80, 800_000, 1_000_000)
    assert (await refused(env.create(BOB, estimate=350_000))).limit == "guild_monthly_usd"
    assert await env.quotas.budget_warning(1) == (100, 800_000, 1_000_000)
    assert await env.quotas.budget_warning(1) is None
    assert await env.quotas.budget_warning(2) is None  # another guild is not affected
