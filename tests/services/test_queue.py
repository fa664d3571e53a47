"""The fair queue (SPEC 3.6) on a real SQLite file: round-robin by member, max_in_flight, claims."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from zoneinfo import ZoneInfo

import pytest

from bot.config import LimitsConfig
from bot.db import open_database
from bot.db.jobs import at_runware_jobs, get_job
from bot.db.money import ledger_for_job
from bot.services import queue
from bot.services.clock import FixedClock
from bot.services.jobs import JobStore
from bot.services.quotas import Member, Quotas

UTC_ZONE = ZoneInfo("UTC")
START = datetime(2024, 3, 10, 12, 0, tzinfo=UTC).timestamp()
HEAVY, LIGHT_A, LIGHT_B = Member(1, 1), Member(1, 2), Member(2, 3)
_uuids = count()


@pytest.fixture
async def env(tmp_path):
    db = await open_database(tmp_path / "queue.sqlite3")
    clock = FixedClock(START)
    quotas = Quotas(db, LimitsConfig(daily_videos=None, max_concurrent=None, monthly_usd=None,
                                     guild_monthly_usd=None, global_daily_usd=None), UTC_ZONE, clock)
    store = JobStore(db, quotas, clock, UTC_ZONE)
    yield db, store, clock
    await db.close()


async def make(store: JobStore, member: Member) -> int:
    job = await store.create(member, channel_id=1, model_key="kling-2.5-turbo-pro", params={},
                             task_uuid=f"q-{next(_uuids)}", duration_s=5, variations=1,
                             estimate_micro=350_000)
    return job.id


async def test_heavy_user_does_not_starve_light_users(env):
    db, store, clock = env
    heavy = [await make(store, HEAVY) for _ in range(10)]  # queued first
    a = [await make(store, LIGHT_A) for _ in range(2)]
    b = [await make(store, LIGHT_B)]
    assert await queue.queue_position(db, a[0]) == 2  # second in line despite 10 older jobs
    assert await queue.queue_position(db, b[0]) == 3
    ticks = []
    while True:
        clock.advance(5)
        picked = await store.next_to_submit(2)
        if not picked:
            break
        ticks.append([job.id for job in picked])
        for job in picked:  # submitted, then done, freeing the slots for the next tick
            await store.mark_submitted(job.id, clock.now())
            await store.finish(job.id, "succeeded", None, 300_000)
    assert ticks[:3] == [[heavy[0], a[0]], [b[0], heavy[1]], [a[1], heavy[2]]]
    assert [i for tick in ticks[3:] for i in tick] == heavy[3:]
    assert await queue.queue_positions(db) == {}


async def test_max_in_flight_and_claims(env):
    db, store, clock = env
    jobs = [await make(store, Member(1, n)) for n in range(3)]
    first = await store.next_to_submit(2)
    assert [j.id for j in first] == jobs[:2]
    assert all(j.claimed_by == queue.RUN_ID for j in first)
    assert await store.next_to_submit(2) == []  # claimed ones count as in flight
    await store.mark_submitted(jobs[0], START)
    assert await store.next_to_submit(2) == []  # still 2 in flight
    await store.unclaim(jobs[1])  # its submit failed for now: back in the queue, behind a newcomer
    assert [j.id for j in await store.next_to_submit(2)] == [jobs[2]]
    assert [j.id for j in await store.next_to_submit(3)] == [jobs[1]]
    # Claims forgotten by their taker go stale and are taken again.
    clock.advance(queue.CLAIM_TTL_S + 1)
    assert [j.id for j in await store.next_to_submit(3)] == [jobs[1], jobs[2]]
    # Another process's claims (a dead run) do not block a new one.
    other = JobStore(db, store.quotas, clock, UTC_ZONE, run_id="new")
    assert [j.id for j in await other.next_to_submit(10)] == [jobs[1], jobs[2]]


async def test_cancelled_jobs_leave_the_queue(env):
    db, store, clock = env
    keep, drop, claimed = [await make(store, Member(1, n)) for n in range(3)]
    await store.request_cancel(drop, "user:1")
    assert await queue.queue_positions(db) == {keep: 1, claimed: 2}
    [job] = await store.next_to_submit(1)
    assert job.id == keep
    await store.mark_submitted(keep, START)
    [job] = await store.next_to_submit(2)
    assert job.id == claimed
    assert await store.begin_submit(claimed)
    await store.request_cancel(claimed, "user:2")  # while its submit is in flight: requested only
    assert (await get_job(store.db, claimed)).state == "queued"
    # The taker never came back: once the claim is stale the job is cancelled, but the submit may
    # have reached Runware, so its reserve stays open and it is polled for a cost.
    clock.advance(queue.CLAIM_TTL_S + 1)
    assert await store.next_to_submit(5) == []
    assert (await get_job(store.db, claimed)).state == "cancelled"
    assert [r.kind for r in await ledger_for_job(store.db, claimed)] == ["reserve"]
    assert [j.id for j in await at_runware_jobs(store.db, 100)] == [keep, claimed]
    # Claimed but not sent yet: the cancel is free at once, and the submit never goes out.
    late = await make(store, Member(1, 9))
    [job] = await store.next_to_submit(5)
    assert job.id == late
    assert (await store.request_cancel(late, "user:9")).state == "cancelled"
    assert [r.kind for r in await ledger_for_job(store.db, late)] == ["reserve", "release"]
    assert not await store.begin_submit(late)


async def test_queue_survives_restart(tmp_path):
    path = tmp_path / "restart.sqlite3"
    db = await open_database(path)
    clock = FixedClock(START)
    store = JobStore(db, Quotas(db, LimitsConfig(max_concurrent=None, daily_videos=None), UTC_ZONE, clock),
                     clock, UTC_ZONE)
    ids = [await make(store, HEAVY), await make(store, HEAVY), await make(store, LIGHT_A)]
    before = await queue.queue_positions(db)
    await db.close()
    db = await open_database(path)
    assert await queue.queue_positions(db) == before == {ids[0]: 1, ids[2]: 2, ids[1]: 3}
    await db.close()
