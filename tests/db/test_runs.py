"""Runs and job ownership (migration 006) on both stores: a job is its owner's, else its creator's; a
job whose run is not live is orphaned and goes to exactly one run that takes it over."""

from __future__ import annotations

from bot.db import open_database
from bot.db.jobs import get_job, insert_job, mark_notified
from bot.db.runs import (
    end_run,
    live_runs,
    orphaned_jobs,
    prune_runs,
    register_run,
    renew_run,
    set_deliver_to,
    take_over,
)

NOW = 1_000_000.0


async def _job(db, task_uuid: str, created_by: str | None, deliver_to: str | None = None) -> int:
    job_id = await insert_job(
        db, guild_id=0, channel_id=0, user_id=0, model_key="m", params={"prompt": "x"}, task_uuid=task_uuid,
        duration_s=5, variations=1, estimate_micro=350_000, created_at=NOW, day="2024-01-01", month="2024-01",
        upload_limit=None, parent_job_id=None, created_by=created_by,
    )
    if deliver_to:
        await set_deliver_to(db, job_id, deliver_to)
    return job_id


async def _register(db, run_id: str, lease_until: float) -> None:
    await register_run(db, run_id=run_id, kind="terminal", host="h", pid=1, now=NOW - 60, lease_until=lease_until,
                       deliver_to=f"/out/{run_id}")


async def test_orphaned_jobs_go_to_exactly_one_run_that_takes_them_over(store):
    db = await open_database(store)
    await _register(db, "alive", NOW + 30)
    await _register(db, "lapsed", NOW - 1)
    mine = await _job(db, "t-alive", "alive")
    lost = await _job(db, "t-lapsed", "lapsed", deliver_to="/out/lapsed")
    unknown = await _job(db, "t-old", None)  # created before runs were recorded
    done = await _job(db, "t-done", "lapsed")
    await mark_notified(db, done, NOW, None)

    assert [r.run_id for r in await live_runs(db, NOW)] == ["alive"]
    assert [j.id for j in await orphaned_jobs(db, NOW)] == [lost, unknown]

    await _register(db, "taker", NOW + 30)
    await _register(db, "late", NOW + 30)
    assert await db.run_tx(take_over, [mine, lost, unknown, done], "taker", NOW) == [lost, unknown]
    assert await db.run_tx(take_over, [lost, unknown], "late", NOW) == []  # taken already
    taken = await get_job(db, lost)
    assert taken.owner == "taker" and taken.owned_by == "taker" and taken.created_by == "lapsed"
    assert taken.deliver_to == "/out/lapsed"  # still goes where its creator would have put it
    assert (await get_job(db, mine)).owned_by == "alive"
    assert await orphaned_jobs(db, NOW) == []

    # A run that ends gives its jobs up at once; renewing an ended run is refused.
    await end_run(db, "taker")
    assert not await renew_run(db, "taker", NOW + 60)
    assert [j.id for j in await orphaned_jobs(db, NOW)] == [lost, unknown]
    assert await renew_run(db, "alive", NOW + 90)
    assert [r.run_id for r in await live_runs(db, NOW + 60)] == ["alive"]

    # Only runs past their lease that own no unfinished job are forgotten: "lapsed" (its jobs were
    # taken over or are done), not "taker" (ended, but the jobs it took are still its own).
    assert await prune_runs(db, NOW) == 1
    assert await prune_runs(db, NOW) == 0
    assert [j.id for j in await orphaned_jobs(db, NOW)] == [lost, unknown]
    await db.close()
