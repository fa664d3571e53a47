"""The prompt enhancer's money rule (bot/services/enhance.py) in the job state machine, on both stores:
the enhancement settles with the videos in the job's one settle row, alone when the videos cost
nothing, at its reserve when a call went unanswered, released when it was refused; a cancel while
the call is out settles at the reserve and the late answer is not recorded."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from zoneinfo import ZoneInfo

import pytest

from bot.config import LimitsConfig
from bot.db import open_database
from bot.db.jobs import get_job
from bot.db.money import ledger_for_job
from bot.runware.models import VideoResult
from bot.services.clock import FixedClock
from bot.services.enhance import enhance_task_uuid, enhancement_charge
from bot.services.jobs import JobStore
from bot.services.quotas import Member, Quotas

START = datetime(2024, 3, 10, 12, 0, tzinfo=UTC).timestamp()
VIDEO = 700_000
RESERVE = 10_000
ALICE = Member(1, 100)
_uuids = count()


@pytest.fixture
async def env(store):
    db = await open_database(store)
    clock = FixedClock(START)
    limits = LimitsConfig.model_validate({"daily_videos": "unlimited", "max_concurrent": "unlimited",
                                          "monthly_usd": "unlimited", "guild_monthly_usd": "unlimited",
                                          "global_daily_usd": "unlimited"})
    store_ = JobStore(db, Quotas(db, limits, ZoneInfo("UTC"), clock), clock, ZoneInfo("UTC"))
    yield db, store_
    await db.close()


async def create(store: JobStore, reserve: int | None = RESERVE):
    return await store.create(
        ALICE, channel_id=10, model_key="kling-2.5-turbo-pro", params={"prompt": "a fox", "enhance": True},
        task_uuid=f"task-{next(_uuids)}", duration_s=5, variations=1,
        estimate_micro=VIDEO + (reserve or 0), enhance_reserve_micro=reserve,
    )


async def rows(db, job_id: int) -> list[tuple[str, int]]:
    return [(r.kind, r.amount_micro) for r in await ledger_for_job(db, job_id)]


async def enhanced(store: JobStore, job_id: int, cost: int | None = 300) -> None:
    await store.next_to_submit(100)
    assert await store.begin_enhance(job_id)
    assert await store.record_enhancement(job_id, "a fox, highly detailed", cost)


async def submitted(store: JobStore, job_id: int) -> None:
    assert await store.begin_submit(job_id)
    assert await store.mark_submitted(job_id, START + 10)


async def test_video_and_enhancement_settle_together_once(env) -> None:
    db, store = env
    job = await create(store)
    assert (job.enhance_reserve_micro, job.video_estimate_micro) == (RESERVE, VIDEO)
    await enhanced(store, job.id)
    assert not await store.begin_enhance(job.id)  # recorded: never sent again
    await submitted(store, job.id)
    await store.record_result(job.id, VideoResult(task_uuid="t", video_uuid="v1", video_url=None, cost_micro=650_000))
    assert await store.finish(job.id, "succeeded", None, 650_000)
    assert not await store.finish(job.id, "succeeded", None, 650_000)
    assert await rows(db, job.id) == [("reserve", VIDEO + RESERVE), ("settle", 650_300)]


async def test_a_video_billed_nothing_settles_the_enhancement_alone(env) -> None:
    db, store = env
    job = await create(store)
    await enhanced(store, job.id)
    await submitted(store, job.id)
    assert await store.finish(job.id, "failed", "provider failed", 0)
    assert await rows(db, job.id) == [("reserve", VIDEO + RESERVE), ("settle", 300)]
    # A submit Runware rejected (abandon: no cost) settles it too.
    other = await create(store)
    await enhanced(store, other.id, cost=450)
    assert await store.abandon(other.id, "Runware did not accept the prompt.")
    assert await rows(db, other.id) == [("reserve", VIDEO + RESERVE), ("settle", 450)]


async def test_a_refusal_releases_and_a_job_without_enhancement_is_unchanged(env) -> None:
    db, store = env
    job = await create(store)
    await store.next_to_submit(100)
    assert await store.begin_enhance(job.id)
    assert await store.enhance_refused(job.id, "Runware's prompt enhancer refused the prompt: no.")
    final = await get_job(db, job.id)
    assert (final.state, final.enhance_sent_at) == ("failed", None)
    assert await rows(db, job.id) == [("reserve", VIDEO + RESERVE), ("release", VIDEO + RESERVE)]
    plain = await create(store, reserve=None)
    assert not await store.begin_enhance(plain.id) and enhancement_charge(plain) == 0


async def test_an_unanswered_call_counts_at_its_reserve_and_is_resent_with_the_same_uuid(env) -> None:
    db, store = env
    job = await create(store)
    await store.next_to_submit(100)
    assert await store.begin_enhance(job.id)  # ... and the answer was lost (killed, transport error)
    first = await get_job(db, job.id)
    assert (first.enhance_resent, enhancement_charge(first)) == (False, RESERVE)
    assert await store.begin_enhance(job.id)  # the next round sends it again
    again = await get_job(db, job.id)
    assert again.enhance_resent and enhance_task_uuid(again.task_uuid) == enhance_task_uuid(job.task_uuid)
    assert await store.record_enhancement(job.id, "a fox, highly detailed", 300)
    await submitted(store, job.id)
    assert await store.finish(job.id, "succeeded", None, 650_000)
    assert await rows(db, job.id) == [("reserve", VIDEO + RESERVE), ("settle", 650_000 + RESERVE)]
    # Reported above the reserve: the reported cost (never less than Runware said).
    over = await create(store)
    await store.next_to_submit(100)
    assert await store.begin_enhance(over.id) and await store.begin_enhance(over.id)
    assert await store.record_enhancement(over.id, "text", RESERVE + 5)
    assert enhancement_charge(await get_job(db, over.id)) == RESERVE + 5


async def test_answered_4xx_bills_nothing_so_the_next_call_is_no_resend(env) -> None:
    db, store = env
    job = await create(store)
    await store.next_to_submit(100)
    assert await store.begin_enhance(job.id)
    await store.enhance_not_billed(job.id)  # 429
    assert await store.begin_enhance(job.id)
    assert await store.record_enhancement(job.id, "text", 300)
    assert enhancement_charge(await get_job(db, job.id)) == 300


async def test_a_cancel_while_the_call_is_out_settles_the_reserve_and_drops_the_answer(env) -> None:
    db, store = env
    job = await create(store)
    await store.next_to_submit(100)
    assert await store.begin_enhance(job.id)
    cancelled = await store.request_cancel(job.id, "discord:100")
    assert cancelled.state == "cancelled"
    assert not await store.record_enhancement(job.id, "late", 300)
    assert not await store.begin_submit(job.id)
    assert await rows(db, job.id) == [("reserve", VIDEO + RESERVE), ("settle", RESERVE)]
    # A 4xx answering that call afterwards changes nothing: the job agrees with its ledger.
    await store.enhance_not_billed(job.id)
    assert enhancement_charge(await get_job(db, job.id)) == RESERVE
    # Cancelled after a recorded enhancement, before the video was sent: its reported cost.
    other = await create(store)
    await enhanced(store, other.id)
    assert (await store.request_cancel(other.id, "discord:100")).state == "cancelled"
    assert await rows(db, other.id) == [("reserve", VIDEO + RESERVE), ("settle", 300)]


async def test_the_late_window_closing_settles_the_enhancement(env) -> None:
    db, store = env
    job = await create(store)
    await enhanced(store, job.id)
    await submitted(store, job.id)
    assert await store.time_out(job.id, "too slow")
    assert await store.expire(job.id)
    assert await rows(db, job.id) == [("reserve", VIDEO + RESERVE), ("settle", 300)]
    assert (await get_job(db, job.id)).state == "timed_out"
