"""The job state machine (SPEC 3.1) on both stores (a SQLite file, a PostgreSQL database): transitions,
exactly-once money, cancel, time-outs with late costs, resume queries after a restart, and a process
killed at a failpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.config import LimitsConfig
from bot.db import Conn, open_database
from bot.db.guilds import add_blocklist_term, add_gen_channel
from bot.db.jobs import (
    active_jobs,
    at_runware_jobs,
    claim_due_for_poll,
    due_for_poll,
    get_job,
    get_job_by_task,
    jobs_by_state,
    make_all_due,
    mark_polled,
    mark_processing,
    member_jobs,
    queued_jobs,
    results_for_job,
    set_next_poll,
    undelivered_jobs,
    unnotified_jobs,
)
from bot.db.money import job_money, ledger_for_job
from bot.db.runs import live_runs, record_poll_round, register_run
from bot.errors import InvalidInput, NotPermitted
from bot.runware.models import VideoResult
from bot.services.clock import FixedClock
from bot.services.jobs import JobStore
from bot.services.quotas import Member, Quotas, blocked_term
from bot.services.reporter import median_duration

UTC_ZONE = ZoneInfo("UTC")
START = datetime(2024, 3, 10, 12, 0, tzinfo=UTC).timestamp()
EST = 700_000
ALICE = Member(1, 100)
WORKER = Path(__file__).resolve().parents[1] / "quota_worker.py"
_uuids = count()


class Env:
    def __init__(self, db, clock: FixedClock) -> None:
        self.db, self.clock = db, clock
        limits = LimitsConfig.model_validate({"daily_videos": "unlimited", "max_concurrent": "unlimited",
                                              "monthly_usd": "unlimited", "guild_monthly_usd": "unlimited",
                                              "global_daily_usd": "unlimited"})
        self.quotas = Quotas(db, limits, UTC_ZONE, clock)
        self.store = JobStore(db, self.quotas, clock, UTC_ZONE)

    async def create(self, member: Member = ALICE, variations: int = 2, **kw):
        return await self.store.create(
            member, channel_id=kw.pop("channel_id", 10), model_key="kling-2.5-turbo-pro",
            params={"prompt": "a fox", "variations": variations}, task_uuid=f"task-{next(_uuids)}",
            duration_s=5, variations=variations, estimate_micro=EST, **kw,
        )

    async def submit(self, job_id: int) -> None:
        await self.store.next_to_submit(1000)
        assert await self.store.mark_submitted(job_id, self.clock.now() + 10)

    async def kinds(self, job_id: int) -> Counter:
        return Counter(r.kind for r in await ledger_for_job(self.db, job_id))


def video(n: int, cost: int | None = 300_000, nsfw: bool = False) -> VideoResult:
    return VideoResult(task_uuid="t", video_uuid=f"video-{n}", video_url=f"https://vm.runware.ai/{n}.mp4",
                       seed=n, cost_micro=cost, nsfw=nsfw)


@pytest.fixture
async def env(store):  # on both stores: the money's exactly-once holds on each
    db = await open_database(store)
    yield Env(db, FixedClock(START))
    await db.close()


async def test_create_writes_job_and_reserve_together(env):
    job = await env.create(upload_limit=25 * 2**20, parent_job_id=None)
    assert (job.state, job.guild_id, job.user_id, job.channel_id) == ("queued", 1, 100, 10)
    assert (job.day, job.month, job.created_at) == ("2024-03-10", "2024-03", START)
    assert job.params == {"prompt": "a fox", "variations": 2} and job.upload_limit == 25 * 2**20
    [reserve] = await ledger_for_job(env.db, job.id)
    assert (reserve.kind, reserve.amount_micro, reserve.actor) == ("reserve", EST, "user:100")
    await env.store.set_image_uuids(job.id, {"first": "img-1"})
    reroll = await env.create(parent_job_id=job.id)
    assert reroll.parent_job_id == job.id
    assert (await get_job(env.db, job.id)).image_uuids == {"first": "img-1"}
    assert (await get_job_by_task(env.db, job.task_uuid)).id == job.id


async def test_success_path_is_exactly_once(env):
    job = await env.create()
    await env.submit(job.id)
    assert not await env.store.mark_submitted(job.id, 0)  # only from queued
    assert await mark_processing(env.db, job.id)
    assert await env.store.record_result(job.id, video(1))
    assert not await env.store.record_result(job.id, video(1))  # getResponse repeats: de-duplicated
    assert await env.store.record_result(job.id, video(2, cost=350_000))
    assert await env.store.finish(job.id, "succeeded", None, 650_000)
    assert not await env.store.finish(job.id, "succeeded", None, 650_000)
    assert not await env.store.finish(job.id, "failed", "late", 0)
    assert await env.kinds(job.id) == {"reserve": 1, "settle": 1}
    assert (await job_money(env.db, job.id)).settled == 650_000
    results = await results_for_job(env.db, job.id)
    assert [r.video_uuid for r in results] == ["video-1", "video-2"]
    assert [j.id for j in await undelivered_jobs(env.db, 1000)] == [job.id]
    for r in results:
        assert await env.store.mark_delivered(r.id, f"/tmp/{r.video_uuid}.mp4")
        assert not await env.store.mark_delivered(r.id)
    assert await undelivered_jobs(env.db, 1000) == []
    assert await env.store.mark_notified(job.id, result_message_id=555)
    assert not await env.store.mark_notified(job.id, result_message_id=666)
    final = await get_job(env.db, job.id)
    assert (final.state, final.result_message_id, final.notified_at) == ("succeeded", 555, START)


async def test_failure_releases_once_and_billed_failures_settle(env):
    failed = await env.create()
    await env.submit(failed.id)
    assert await env.store.finish(failed.id, "failed", "provider error", None, failed_variations=2)
    assert not await env.store.finish(failed.id, "failed", "provider error", None)
    assert await env.kinds(failed.id) == {"reserve": 1, "release": 1}
    assert (await job_money(env.db, failed.id)).counted == 0
    assert (await env.quotas.usage(ALICE)).videos_today == 0  # released jobs are no videos

    billed_zero = await env.create()
    await env.store.finish(billed_zero.id, "failed", "x", 0)
    assert await env.kinds(billed_zero.id) == {"reserve": 1, "release": 1}

    billed = await env.create()
    await env.store.finish(billed.id, "failed", "x", 120_000)
    assert (await job_money(env.db, billed.id)).settled == 120_000


async def test_success_without_reported_cost_is_never_free(env):
    with_costs = await env.create()
    await env.store.record_result(with_costs.id, video(1, cost=310_000))
    await env.store.finish(with_costs.id, "succeeded", None, None)
    assert (await job_money(env.db, with_costs.id)).settled == 310_000
    without = await env.create()
    await env.store.record_result(without.id, video(2, cost=None))
    await env.store.finish(without.id, "succeeded", None, None)
    assert (await job_money(env.db, without.id)).settled == EST


async def test_cancel_queued_is_free_and_immediate(env):
    job = await env.create()
    cancelled = await env.store.request_cancel(job.id, "user:100")
    assert (cancelled.state, cancelled.cancelled_by) == ("cancelled", "user:100")
    assert await env.kinds(job.id) == {"reserve": 1, "release": 1}
    assert (await env.store.request_cancel(job.id, "user:100")).state == "cancelled"  # no-op
    assert await env.kinds(job.id) == {"reserve": 1, "release": 1}
    assert [j.id for j in await unnotified_jobs(env.db, 1000)] == [job.id]  # the notice is still owed


async def test_cancel_after_submit_polls_quietly_settles_and_never_delivers(env):
    job = await env.create()
    await env.submit(job.id)
    job = await env.store.request_cancel(job.id, "mod:7")
    assert (job.state, job.cancel_requested) == ("submitted", True)
    # Still running (and billed) at Runware: it holds its slot of the member's concurrency until it ends.
    assert (await env.quotas.usage(ALICE)).in_flight == 1
    assert [j.id for j in await due_for_poll(env.db, START + 10, 500)] == [job.id]
    await env.store.record_result(job.id, video(1))
    assert await env.store.finish(job.id, "succeeded", None, 300_000)
    assert (await env.quotas.usage(ALICE)).in_flight == 0
    final = await get_job(env.db, job.id)
    assert final.state == "cancelled" and (await job_money(env.db, job.id)).settled == 300_000
    assert await undelivered_jobs(env.db, 1000) == []
    assert await due_for_poll(env.db, START + 10, 500) == []


async def test_cancel_of_a_claimed_job_not_yet_sent_is_free_and_it_is_never_sent(env):
    job = await env.create()
    [claimed] = await env.store.next_to_submit(10)
    assert claimed.id == job.id
    assert (await env.store.request_cancel(job.id, "user:100")).state == "cancelled"
    assert await env.kinds(job.id) == {"reserve": 1, "release": 1}
    assert not await env.store.begin_submit(job.id)  # its submitter's turn comes: nothing goes out


async def test_cancel_while_the_submit_is_out_waits_for_its_outcome(env):
    job = await env.create()
    await env.store.next_to_submit(10)
    assert await env.store.begin_submit(job.id)  # written before the request goes out
    assert (await env.store.request_cancel(job.id, "user:100")).cancel_requested
    assert await env.kinds(job.id) == {"reserve": 1}
    job = await env.store.unclaim(job.id)  # the answer was lost: Runware may have it
    assert job.state == "cancelled" and job.cancelled_by == "user:100"
    assert await env.kinds(job.id) == {"reserve": 1}  # still reserved, and polled for a cost
    assert [j.id for j in await due_for_poll(env.db, START, 10)] == [job.id]


async def test_cancel_from_another_process_of_a_sent_job_is_polled_not_released(env):
    """Killed between Runware's acknowledgement and mark_submitted, then cancelled by another
    process while the dead one's claim is fresh: Runware has it, so its cost must still settle."""
    job = await env.create()
    dead = JobStore(env.db, env.quotas, env.clock, UTC_ZONE, run_id="dead-process")
    await dead.next_to_submit(10)
    assert await dead.begin_submit(job.id)
    cancelled = await env.store.request_cancel(job.id, "user:100")
    assert (cancelled.state, cancelled.cancelled_by) == ("cancelled", "user:100")
    assert await env.kinds(job.id) == {"reserve": 1}
    assert [j.id for j in await at_runware_jobs(env.db, 10)] == [job.id]
    await env.store.record_result(job.id, video(1))
    assert await env.store.finish(job.id, "succeeded", None, 300_000)  # what Runware billed
    assert (await get_job(env.db, job.id)).state == "cancelled"
    assert await env.kinds(job.id) == {"reserve": 1, "settle": 1}
    assert await undelivered_jobs(env.db, 10) == []


async def test_timeout_keeps_reserve_until_late_cost_or_window(env):
    late = await env.create()
    await env.submit(late.id)
    assert await env.store.time_out(late.id, "Runware did not finish in time.")
    assert not await env.store.time_out(late.id, "again")
    assert (await job_money(env.db, late.id)).finalized is False  # may still be billed: still counted
    assert [j.id for j in await at_runware_jobs(env.db, 10_000)] == [late.id]
    assert await env.store.mark_notified(late.id)  # the member was told it timed out
    await env.store.record_result(late.id, video(1))
    assert await env.store.finish(late.id, "succeeded", None, 300_000)  # the result came late
    job = await get_job(env.db, late.id)
    assert (job.state, job.notified_at) == ("succeeded", None)  # delivered and announced again
    assert await env.kinds(late.id) == {"reserve": 1, "settle": 1}
    assert [j.id for j in await undelivered_jobs(env.db, 1000)] == [late.id]
    assert not await env.store.finish(late.id, "succeeded", None, 300_000)
    assert not await env.store.expire(late.id)  # settled: nothing left to release

    never = await env.create()
    await env.submit(never.id)
    await env.store.time_out(never.id, "too slow")
    assert await env.store.expire(never.id)  # the poller calls this once the late window has passed
    assert not await env.store.expire(never.id)
    assert await env.kinds(never.id) == {"reserve": 1, "release": 1}
    assert await at_runware_jobs(env.db, 10_000) == []

    cost_later = await env.create()
    await env.submit(cost_later.id)
    await env.store.time_out(cost_later.id, "too slow")
    assert await env.store.finish(cost_later.id, "failed", None, 650_000)  # billed, no video
    assert not await env.store.finish(cost_later.id, "failed", None, 650_000)
    assert not await env.store.expire(cost_later.id)
    assert (await job_money(env.db, cost_later.id)).settled == 650_000


async def test_channel_and_blocklist_checked_in_the_reserve(env):
    await env.db.run(add_gen_channel, 1, 10)
    await env.db.run(add_gen_channel, 1, 11)
    with pytest.raises(NotPermitted, match="<#10>, <#11>"):
        await env.create(channel_id=12)
    await env.create(channel_id=11)
    await env.create(Member(2, 5), channel_id=99)  # a guild without generation channels
    await env.db.run(add_blocklist_term, 1, "Gore")
    with pytest.raises(InvalidInput) as info:
        await env.create(blocklist_text="a GORE scene")
    assert info.value.field == "prompt" and "'Gore'" in info.value.message
    await env.create(blocklist_text="gorelike and engorged words pass")  # whole words only
    assert await env.db.run(Conn.fetchval, "SELECT COUNT(*) FROM jobs") == 3  # refused ones wrote nothing
    assert blocked_term("gorelike", ["gore*"]) == "gore*" and blocked_term("gorelike", ["gore"]) is None
    assert blocked_term("a pre-war scene", ["war"]) == "war" and blocked_term("warm", ["war"]) is None
    with pytest.raises(InvalidInput):
        await env.store.precheck(ALICE, channel_id=10, blocklist_text="gore")


async def test_resume_queries_after_restart(tmp_path):
    path = tmp_path / "resume.sqlite3"
    db = await open_database(path)
    env = Env(db, FixedClock(START))
    queued = await env.create()
    submitted = await env.create()
    processing = await env.create()
    cancelling = await env.create()
    undelivered = await env.create()
    unnotified = await env.create()
    timed_out = await env.create()
    done = await env.create()
    for job in (submitted, processing, cancelling, undelivered, unnotified, timed_out, done):
        await env.submit(job.id)
    await env.store.next_to_submit(1000)  # claims `queued`, then the process dies
    await mark_processing(env.db, processing.id)
    await set_next_poll(env.db, processing.id, START + 100)
    await env.store.request_cancel(cancelling.id, "user:100")
    await env.store.record_result(undelivered.id, video(1))
    await env.store.record_result(undelivered.id, video(2, nsfw=True))  # flagged: never posted
    await env.store.finish(undelivered.id, "succeeded", None, 600_000)
    await env.store.record_result(unnotified.id, video(3))
    await env.store.finish(unnotified.id, "succeeded", None, 300_000)
    [r3] = await results_for_job(env.db, unnotified.id)
    await env.store.mark_delivered(r3.id)
    await env.store.time_out(timed_out.id, "slow")
    await env.store.mark_notified(timed_out.id)
    await env.store.finish(done.id, "failed", "x", None)
    await env.store.mark_notified(done.id)
    await register_run(env.db, run_id="old-run", kind="discord", host="h", pid=os.getpid(), now=START - 60,
                       lease_until=START + 30)
    await record_poll_round(env.db, "old-run", START)  # its last finished poll round, for `klingbot health`
    await db.close()

    db = await open_database(path)  # a new process: everything comes from the database
    env = Env(db, FixedClock(START + 20))
    ids = lambda jobs: [j.id for j in jobs]  # noqa: E731
    assert ids(await queued_jobs(env.db, 10_000)) == [queued.id]
    new_run = JobStore(db, env.quotas, env.clock, UTC_ZONE, run_id="new-run")
    assert ids(await new_run.next_to_submit(1000)) == [queued.id]
    assert ids(await at_runware_jobs(env.db, 10_000)) == [submitted.id, processing.id, cancelling.id, timed_out.id]
    now = env.clock.now()
    assert ids(await due_for_poll(env.db, now, 500)) == [submitted.id, cancelling.id, timed_out.id]
    assert await make_all_due(env.db, now) == 4
    assert ids(await due_for_poll(env.db, now, 500)) == [submitted.id, processing.id, cancelling.id, timed_out.id]
    assert ids(await undelivered_jobs(env.db, 1000)) == [undelivered.id]
    assert ids(await unnotified_jobs(env.db, 1000)) == [undelivered.id, unnotified.id]
    assert ids(await active_jobs(env.db, 10_000)) == [queued.id, submitted.id, processing.id, cancelling.id]
    [old_run] = await live_runs(env.db, now)
    assert old_run.run_id == "old-run" and now - old_run.polled_at == 20
    await db.close()


async def test_median_duration_and_history(env):
    assert await median_duration(env.db, "kling-2.5-turbo-pro", 5) is None
    for took in (50, 70, 60):
        job = await env.create()
        await env.submit(job.id)
        env.clock.advance(took)
        await env.store.finish(job.id, "succeeded", None, 300_000)
    assert await median_duration(env.db, "kling-2.5-turbo-pro", 5) == 60
    assert await median_duration(env.db, "kling-2.5-turbo-pro", 10) is None
    history = await member_jobs(env.db, ALICE.guild_id, ALICE.user_id, 2)
    assert len(history) == 2 and history[0].id > history[1].id
    assert len(await jobs_by_state(env.db, "succeeded", 50)) == 3


@pytest.mark.parametrize(("failpoint", "finish"), [("after_reserve", None), ("after_settle", 300_000)])
async def test_killed_at_a_failpoint_loses_nothing(tmp_path, failpoint, finish):
    path = tmp_path / "crash.sqlite3"
    await (await open_database(path)).close()  # migrated before the worker starts
    spec = {"mode": "create-one", "now": START, "limits": {}, "guild_id": 1, "user_id": 100,
            "task_uuid": "crash-1", "estimate_micro": EST, "finish": finish}
    proc = subprocess.run([sys.executable, str(WORKER), str(path), json.dumps(spec)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "KLINGBOT_FAILPOINT": failpoint})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    db = await open_database(path)
    job = await db.run(get_job_by_task, "crash-1")
    kinds = Counter(r.kind for r in await db.run(ledger_for_job, job.id))
    if finish is None:
        assert job.state == "queued" and kinds == {"reserve": 1}
    else:
        assert job.state == "succeeded" and kinds == {"reserve": 1, "settle": 1}
    await db.close()


async def test_a_poll_round_leases_its_jobs_from_other_processes(env, store):
    jobs = [await env.create() for _ in range(3)]
    for job in jobs:
        await env.submit(job.id)
    other = await open_database(store)  # another process's connection to the same database
    try:
        now = START + 10
        mine = await env.db.run_tx(claim_due_for_poll, now, 2, now + 30)
        assert [j.id for j in mine] == [jobs[0].id, jobs[1].id]
        theirs = await other.run_tx(claim_due_for_poll, now, 10, now + 30)
        assert [j.id for j in theirs] == [jobs[2].id]  # the leased ones are not due for it
        await env.db.run_tx(mark_polled, [jobs[0].id], now, now + 3)  # answered: rescheduled at once
        assert [j.id for j in await other.run_tx(claim_due_for_poll, now + 29, 10, now + 59)] == [jobs[0].id]
        # jobs[1]'s round never finished (its process died): due for the others when the lease ends.
        later = await other.run_tx(claim_due_for_poll, now + 30, 10, now + 60)
        assert [j.id for j in later] == [jobs[1].id, jobs[2].id]
        if store.startswith("postgresql://"):
            # Two rounds at the same moment: the second skips the rows the first holds (SKIP LOCKED).
            async with other.transaction() as tx:
                held = await tx.run(claim_due_for_poll, now + 100, 2, now + 130)
                rest = await env.db.run_tx(claim_due_for_poll, now + 100, 10, now + 130)
            assert [j.id for j in held] == [jobs[0].id, jobs[1].id] and [j.id for j in rest] == [jobs[2].id]
    finally:
        await other.close()
