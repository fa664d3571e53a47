"""Premium limits (a Member with an active Discord entitlement, README "Premium") on both stores: the
[premium] values apply where they are more generous than the member's own override, best role or the
[limits] default; the guild budget and the global ceiling bind subscribers too; reservations stay exact."""

from __future__ import annotations

import asyncio
from collections import Counter
from zoneinfo import ZoneInfo

import pytest

from bot.config import LimitsConfig, PremiumConfig
from bot.db import Conn, open_database
from bot.db.guilds import set_member_limits, set_role_limits
from bot.db.records import UNLIMITED, LimitOverride
from bot.errors import LimitExceeded
from bot.services.clock import FixedClock
from bot.services.quotas import Member
from tests.services.test_quotas import OPEN, Env, at, new_location, refused

UTC_ZONE = ZoneInfo("UTC")
SKU = 1_300_000_000_000_000_001


@pytest.fixture(params=["sqlite", "postgres"])
async def make(request, tmp_path):
    opened = []

    async def factory(limits: dict | None = None, premium: dict | None = None) -> Env:
        location = new_location(request, tmp_path, f"p{len(opened)}")
        db = await open_database(location)
        opened.append(db)
        env = Env(db, LimitsConfig.model_validate({**OPEN, **(limits or {})}), UTC_ZONE,
                  FixedClock(at(2024, 3, 10, 20, 48)), location)
        env.quotas.premium = PremiumConfig.model_validate({"sku_ids": [SKU], **(premium or {})})
        return env

    yield factory
    for db in opened:
        await db.close()


ALICE = Member(1, 100)
ALICE_PREMIUM = Member(1, 100, premium=True)


def three(lim) -> tuple:
    return lim.daily_videos, lim.monthly_micro, lim.max_concurrent


async def test_premium_raises_the_daily_limit_and_the_ledger_counts_exactly(make):
    env = await make({"daily_videos": 1}, {"daily_videos": 3})
    await env.create(ALICE)
    exc = await refused(env.create(ALICE))
    assert (exc.limit, exc.used, exc.allowed) == ("daily_videos", 1, 1)
    await env.create(ALICE_PREMIUM)  # the same member after subscribing: 2 and 3 of 3
    await env.create(ALICE_PREMIUM)
    exc = await refused(env.create(ALICE_PREMIUM))
    assert (exc.limit, exc.used, exc.allowed) == ("daily_videos", 3, 3)
    assert "you have used 3 of 3 videos today" in exc.message
    assert await env.db.run(Conn.fetchval, "SELECT COUNT(*) FROM ledger WHERE kind = 'reserve'") == 3
    assert await env.db.run(Conn.fetchval, "SELECT SUM(amount_micro) FROM ledger") == 3 * 350_000
    # Once the subscription ends the member is back to 1 a day (already used up).
    assert (await refused(env.create(ALICE))).allowed == 1


async def test_precedence_the_more_generous_of_premium_and_what_applies_anyway(make):
    env = await make({"daily_videos": 1, "monthly_usd": "2.00", "max_concurrent": 1},
                     {"daily_videos": 3, "monthly_usd": "10.00", "max_concurrent": "default"})
    assert three(await env.quotas.effective_limits(ALICE)) == (1, 2_000_000, 1)
    assert three(await env.quotas.effective_limits(ALICE_PREMIUM)) == (3, 10_000_000, 1)  # default: kept

    # A role above premium keeps winning; premium lifts what the role leaves lower.
    await env.db.run(set_role_limits, 1, 11, LimitOverride(daily_videos=5, monthly_micro=4_000_000))
    with_role = Member(1, 100, role_ids=(11,), premium=True)
    assert three(await env.quotas.effective_limits(with_role)) == (5, 10_000_000, 1)

    # A moderator's stricter member override is lifted to premium (never below it); a more generous
    # one, or "unlimited", stays.
    await env.db.run(set_member_limits, 1, 100, LimitOverride(daily_videos=0, max_concurrent=4))
    assert three(await env.quotas.effective_limits(ALICE)) == (0, 2_000_000, 4)
    assert three(await env.quotas.effective_limits(ALICE_PREMIUM)) == (3, 10_000_000, 4)
    await env.db.run(set_member_limits, 1, 100, LimitOverride(daily_videos=7, monthly_micro=UNLIMITED))
    assert three(await env.quotas.effective_limits(ALICE_PREMIUM)) == (7, None, 1)

    # Premium "unlimited" lifts the limit.
    env.quotas.premium = PremiumConfig(sku_ids=[SKU], daily_videos="unlimited")
    assert three(await env.quotas.effective_limits(Member(1, 200, premium=True))) == (None, 2_000_000, 1)


async def test_monthly_allowance_and_concurrency_for_premium(make):
    env = await make({"monthly_usd": "0.50", "max_concurrent": 1},
                     {"monthly_usd": "2.00", "max_concurrent": 2})
    await env.create(ALICE_PREMIUM)
    await env.create(ALICE_PREMIUM)  # 2 in flight, $0.70 of $2.00
    assert (await refused(env.create(ALICE_PREMIUM))).limit == "max_concurrent"
    assert (await refused(env.create(ALICE))).limit == "monthly_usd"
    usage = await env.quotas.usage(ALICE_PREMIUM)
    assert (usage.remaining_micro, usage.remaining_concurrent) == (1_300_000, 0)
    assert usage.member.premium


async def test_the_guild_budget_and_the_global_ceiling_still_bind_premium(make):
    premium = {"daily_videos": "unlimited", "monthly_usd": "unlimited", "max_concurrent": "unlimited"}
    env = await make({"daily_videos": 0, "guild_monthly_usd": "0.50"}, premium)
    lim = await env.quotas.effective_limits(ALICE_PREMIUM)
    assert three(lim) == (None, None, None) and lim.guild_monthly_micro == 500_000
    await env.create(ALICE_PREMIUM)
    exc = await refused(env.create(ALICE_PREMIUM))
    assert (exc.limit, exc.used, exc.allowed) == ("guild_monthly_usd", 350_000, 500_000)

    env = await make({"global_daily_usd": "0.50"}, premium)
    await env.create(Member(1, 1, premium=True))
    assert (await refused(env.create(Member(2, 1, premium=True)))).limit == "global_daily_usd"


async def test_concurrent_premium_reservations_admit_exactly_the_premium_limit(make):
    env = await make({"daily_videos": 1}, {"daily_videos": 3})
    others = [await open_database(env.location) for _ in range(3)]
    try:
        stores = [env] + [Env(db, env.quotas.limits, env.tz, env.clock) for db in others]
        for store in stores[1:]:
            store.quotas.premium = env.quotas.premium

        async def attempt(i: int):
            try:
                return await stores[i % 4].create(ALICE_PREMIUM)
            except LimitExceeded as exc:
                return exc.limit

        outcomes = await asyncio.gather(*(attempt(i) for i in range(40)))
    finally:
        for db in others:
            await db.close()
    assert Counter(o if isinstance(o, str) else "ok" for o in outcomes) == {"ok": 3, "daily_videos": 37}
    assert await env.db.run(Conn.fetchval, "SELECT COUNT(*) FROM ledger WHERE kind = 'reserve'") == 3
