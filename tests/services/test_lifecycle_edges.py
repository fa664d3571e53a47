"""Edges of the job lifecycle and money (SPEC 3.1, 3.3, 3.5), on a real Engine driven tick by tick
(tests/fakes/engine_world.py): late windows, partial results, refused submits, cancels, refunds."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bot.db.audit import list_audit
from bot.db.jobs import at_runware_jobs, get_job, results_for_job
from bot.db.money import job_money, ledger_for_job
from bot.requests import resolve_request
from bot.runware.models import TaskStatus, parse_video_item
from bot.services.engine import Engine
from tests.fakes.engine_world import DEADLINE, TERMINAL

PRICE_5S = 350_000  # one 5 s video of the default model
WORKER = Path(__file__).resolve().parents[1] / "quota_worker.py"


async def create(engine: Engine, variations: int = 1, prompt: str = "a red fox running through fresh snow") -> Any:
    request = resolve_request(engine.cfg, prompt=prompt, variations=variations)
    return await engine.create_job(TERMINAL, request, channel_id=0)


async def kinds(engine: Engine, job_id: int) -> Counter[str]:
    return Counter(row.kind for row in await ledger_for_job(engine.db, job_id))


async def test_late_window_counts_from_the_time_out_not_from_creation(engine_world, manual_sim):
    """A job that waited in the queue longer than late_result_window_s still gets its late window
    after it times out: its late result is settled and delivered, not dropped at the next poll."""
    engine, clock, sink = engine_world
    first = await create(engine)
    await engine.tick()                      # first takes the only slot
    waiting = await create(engine)
    await engine.tick()
    assert (await get_job(engine.db, waiting.id)).state == "queued"
    clock.advance(1100)                      # longer than the late window, still queued
    await engine.tick()                      # first times out (frees the slot)
    await engine.tick()                      # waiting is submitted now
    assert (await get_job(engine.db, waiting.id)).state == "submitted"

    clock.advance(DEADLINE + 1)
    await engine.tick()                      # polled: still processing, past its deadline
    job = await get_job(engine.db, waiting.id)
    assert job.state == "timed_out"
    assert [o.job.state for o in sink.messages[waiting.id]] == ["timed_out"]  # told at the deadline

    clock.advance(10)
    await engine.tick()                      # still at Runware, well inside its late window
    assert await kinds(engine, waiting.id) == {"reserve": 1}

    manual_sim.finish(waiting.task_uuid)
    clock.advance(10)
    await engine.tick()
    job = await get_job(engine.db, waiting.id)
    assert job.state == "succeeded"
    assert await kinds(engine, waiting.id) == {"reserve": 1, "settle": 1}
    assert (await job_money(engine.db, waiting.id)).settled == manual_sim.stats.tasks[waiting.task_uuid].billed_micro
    late = sink.messages[waiting.id][-1]
    assert late.job.state == "succeeded" and [f.path is not None for f in late.files] == [True]
    assert first.id != waiting.id


async def test_partial_results_before_a_time_out_are_posted_with_the_late_ones(engine_world, manual_sim):
    """Runware reported one of two variations, then the deadline passed: the time-out notice must
    not mark that video delivered, or the late results message counts as already posted and the
    Discord sink never posts it."""
    engine, clock, sink = engine_world
    job = await create(engine, variations=2)
    await engine.tick()
    clock.advance(2)
    planned = manual_sim.stats.tasks[job.task_uuid].planned
    early = TaskStatus(task_uuid=job.task_uuid, results=[parse_video_item(planned[0])], processing=True)
    job = await get_job(engine.db, job.id)
    assert not await engine.poller.apply(job, early, clock.now())  # one video in, one still running

    clock.advance(DEADLINE)
    await engine.tick()
    assert (await get_job(engine.db, job.id)).state == "timed_out"
    assert [o.job.state for o in sink.messages[job.id]] == ["timed_out"]
    assert [r.delivered_at for r in await results_for_job(engine.db, job.id)] == [None]  # nothing was posted

    manual_sim.finish(job.task_uuid)
    clock.advance(10)
    await engine.tick()
    late = sink.messages[job.id][-1]
    assert late.job.state == "succeeded"
    assert not late.already_posted  # a posting sink posts it
    assert len(late.files) == 2 and all(f.path is not None for f in late.files)
    assert all(r.delivered_at is not None for r in await results_for_job(engine.db, job.id))
    assert await kinds(engine, job.id) == {"reserve": 1, "settle": 1}


async def test_a_submit_refused_for_good_fails_the_job_instead_of_retrying_forever(engine_world, manual_sim):
    """SPEC 3.5: 403 is not retried. Runware refusing the task itself (no permission, a content
    check on the prompt) fails the job and releases its reserve; the member is told why."""
    engine, clock, sink = engine_world
    manual_sim.faults.next_statuses = [403, 403, 403]
    job = await create(engine)
    await engine.tick()
    job = await get_job(engine.db, job.id)
    assert job.state == "failed"
    assert await kinds(engine, job.id) == {"reserve": 1, "release": 1}
    [notice] = sink.messages[job.id]
    assert notice.job.error == "Runware does not allow the bot's account to make this request."
    await engine.tick()
    assert manual_sim.faults.next_statuses == [403, 403]  # asked once, not again on the next tick
    assert manual_sim.stats.submits == 0



async def test_a_cancel_while_waiting_for_a_submit_slot_is_never_sent(engine_world, manual_sim):
    """Taken from the queue (claimed), then cancelled before its submit went out (submits wait for
    one another when Runware is slow): it must not reach Runware, and it costs nothing."""
    engine, clock, sink = engine_world
    job = await create(engine)
    [claimed] = await engine.store.next_to_submit(1)
    cancel = await engine.cancel(job.id, TERMINAL, is_moderator=False)
    assert cancel.job.state == "cancelled" and "nothing was charged" in cancel.message
    await engine.submitter._submit(claimed)  # its turn comes
    assert manual_sim.stats.submits == 0
    assert (await get_job(engine.db, job.id)).state == "cancelled"
    assert await kinds(engine, job.id) == {"reserve": 1, "release": 1}


async def test_a_timed_out_job_without_a_cost_is_released_when_its_late_window_closes(engine_world, manual_sim):
    """The poller keeps asking quietly for late_result_window_s after the time-out, then releases
    the reserve and stops polling."""
    engine, clock, sink = engine_world
    job = await create(engine)
    await engine.tick()
    clock.advance(DEADLINE + 1)
    await engine.tick()
    assert (await get_job(engine.db, job.id)).state == "timed_out"
    clock.advance(999)                        # inside the 1000 s window: still open
    await engine.tick()
    assert await kinds(engine, job.id) == {"reserve": 1}
    clock.advance(10)                         # past it, and due for its next poll
    await engine.tick()
    assert await kinds(engine, job.id) == {"reserve": 1, "release": 1}
    assert await at_runware_jobs(engine.db, 10_000) == []


async def test_a_late_window_closing_with_one_of_three_videos_in(engine_world, manual_sim):
    """Timed out, then one of three videos came late and the late window closed on the other two:
    Runware billed that one, so it settles at its reported cost, the rest of the reserve goes back,
    and the member gets the video that came with a word on the two that did not."""
    engine, clock, sink = engine_world
    job = await create(engine, variations=3)
    await engine.tick()
    clock.advance(DEADLINE + 1)
    await engine.tick()
    assert (await get_job(engine.db, job.id)).state == "timed_out"
    assert [o.job.state for o in sink.messages[job.id]] == ["timed_out"]

    manual_sim.reveal(job.task_uuid, 1)  # one video made; the other two never are
    clock.advance(10)
    await engine.tick()
    assert len(await results_for_job(engine.db, job.id)) == 1
    assert await kinds(engine, job.id) == {"reserve": 1}  # the window is still open
    clock.advance(1000)
    await engine.tick()  # the window closes

    job = await get_job(engine.db, job.id)
    assert (job.state, job.failed_variations) == ("succeeded", 2)
    rows = await ledger_for_job(engine.db, job.id)
    assert [(r.kind, r.amount_micro) for r in rows] == [("reserve", 3 * PRICE_5S), ("settle", PRICE_5S)]
    assert manual_sim.stats.billed_micro == PRICE_5S  # what Runware billed, to the micro-dollar
    late = sink.messages[job.id][-1]
    assert late.job.state == "succeeded" and len(late.files) == 1 and late.files[0].path is not None
    assert late.files[0].path.read_bytes() == manual_sim.mp4
    assert late.failures == ["Only 1 video of 3 came: Runware did not finish the other 2 in time, "
                             "and they cost nothing."]
    assert all(r.delivered_at is not None for r in await results_for_job(engine.db, job.id))
    assert (await get_job(engine.db, job.id)).notified_at is not None
    clock.advance(10)
    await engine.tick()
    assert len(sink.messages[job.id]) == 2  # told once more, not again
    assert await at_runware_jobs(engine.db, 10) == []


async def test_two_moderators_refunding_a_partial_success_at_once_refund_it_once(engine_world, manual_sim):
    """Two of three videos made (the third failed at Runware): the job settles what the two cost.
    Two moderators refund it at the same moment, each from a process of its own: one refund row,
    of exactly the settled cost; the other moderator is told it was already refunded."""
    engine, clock, sink = engine_world
    job = await create(engine, variations=3, prompt="three foxes FAIL_PARTIAL")
    await engine.tick()
    manual_sim.finish(job.task_uuid)
    clock.advance(10)
    await engine.tick()
    job = await get_job(engine.db, job.id)
    assert (job.state, job.failed_variations, job.notified_at is not None) == ("succeeded", 1, True)
    [posted] = sink.messages[job.id]
    assert len(posted.files) == 2
    settled = (await job_money(engine.db, job.id)).settled
    assert settled == 2 * PRICE_5S == manual_sim.stats.billed_micro

    spec = {"mode": "refund", "now": clock.now(), "limits": {}, "guild_id": 0, "user_id": 0, "job_id": job.id}
    workers = [subprocess.Popen([sys.executable, str(WORKER), str(engine.db.path),
                                 json.dumps({**spec, "actor": f"discord:{900 + n}"})],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for n in range(2)]
    try:
        for proc in workers:  # both have their connection open...
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in workers:  # ...then they go together
            proc.stdin.write("go\n")
            proc.stdin.flush()
        answers = []
        for proc in workers:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            answers.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
    refunded = [a["refunded"] for a in answers if "refunded" in a]
    refused = [a["refused"] for a in answers if "refused" in a]
    assert refunded == [settled] and len(refused) == 1 and "already refunded" in refused[0], answers
    rows = await ledger_for_job(engine.db, job.id)
    assert [(r.kind, r.amount_micro) for r in rows] == [("reserve", 3 * PRICE_5S), ("settle", settled),
                                                        ("refund", settled)]
    audit = await list_audit(engine.db, TERMINAL.guild_id, 100)
    assert [(a.action, a.target) for a in audit] == [("refund", f"job:{job.id}")]
