"""The submit window (SPEC 3.1, 3.3): the bot killed with SIGKILL while its submit is out (written as
being sent, or acknowledged by Runware but not yet recorded as 'submitted'), and the member's cancel
coming before or while a new bot starts. Whatever the order, the ledger ends equal to what the
simulator billed, to the micro-dollar, and the cancelled job is never posted.

The fake Discord and the simulator live in this test process; the bots are child processes
(tests/crash_bot_runner.py). The cancel "from elsewhere" is the job state machine on a connection of
this process, a run of its own, exactly what a second process's cancel does."""

from __future__ import annotations

import signal
import zoneinfo
from pathlib import Path

import pytest

from bot.config import LimitsConfig
from bot.db import open_database
from bot.db.jobs import jobs_by_state
from bot.db.money import job_money
from bot.services.clock import SystemClock
from bot.services.jobs import JobStore
from bot.services.quotas import Quotas
from bot.simulator.server import run_simulator
from tests.crash_bot_runner import KEY, PRICE_5S, BotProcess, read_db, write_config
from tests.fakes.discord import FakeDiscord
from tests.fakes.world import eventually

pytestmark = pytest.mark.asyncio

GENERATION_S = 2.0  # long enough for a cancel to land while the video is still being made


async def cancel_from_another_process(db_path: Path, job_id: int, actor: str) -> None:
    db = await open_database(db_path)
    try:
        clock, tz = SystemClock(), zoneinfo.ZoneInfo("UTC")
        store = JobStore(db, Quotas(db, LimitsConfig(), tz, clock), clock, tz, run_id="another-process")
        job = await store.request_cancel(job_id, actor)
        assert job is not None and job.state in ("cancelled", "queued"), job
    finally:
        await db.close()


async def wait_final(db_path: Path, timeout: float = 40.0) -> None:
    """Until the one job is notified and its reserve settled or released."""
    db = await open_database(db_path)
    try:
        async def done() -> bool:
            jobs = await jobs_by_state(db, None, 10)
            money = [await job_money(db, j.id) for j in jobs]
            return bool(jobs) and all(j.notified_at is not None for j in jobs) and all(m.finalized for m in money)
        await eventually(done, timeout)
    finally:
        await db.close()


@pytest.mark.parametrize(("failpoint", "cancel"), [
    ("submit_acknowledged", "before_restart"),
    ("submit_acknowledged", "racing_restart"),
    ("before_submit", "before_restart"),
])
async def test_killed_in_the_submit_window_then_cancelled(tmp_path: Path, failpoint: str, cancel: str) -> None:
    db_path, log = tmp_path / "klingbot.sqlite3", tmp_path / "bot.log"
    env = {"RUNWARE_API_KEY": KEY}
    async with FakeDiscord() as fake, run_simulator(api_key=KEY, base_generation_s=GENERATION_S) as sim:
        seed = fake.seed_default()
        config = write_config(tmp_path, fake, sim.url)
        # A sent job Runware never got is released when its late window closes: short, but longer
        # than a generation (a cancelled video still being made must get its cost in).
        config.write_text(config.read_text().replace("[runware]\n", "[runware]\nlate_result_window_s = 6.0\n"))
        first = await BotProcess.start(config, fake, env=env, failpoint=failpoint, log=log)
        try:
            await fake.send_slash("video", {"prompt": "a heron lifting off a misty lake"})
            assert await first.killed() == -signal.SIGKILL, log.read_text()[-3000:]
        finally:
            await first.terminate()
        [job], _, _ = await read_db(db_path)
        assert job.state == "queued" and job.submit_sent_at is not None  # sent, never marked submitted
        assert sim.stats.submits == (1 if failpoint == "submit_acknowledged" else 0)

        actor = f"discord:{seed.user_id}"
        if cancel == "before_restart":  # within the dead bot's claim time
            await cancel_from_another_process(db_path, job.id, actor)
        second = await BotProcess.start(config, fake, env=env, log=log)
        try:
            if cancel == "racing_restart":
                def progress() -> list:
                    return [m for m in fake.messages(seed.channel_id) if m.author_id == fake.bot_user_id
                            and not m.content.startswith(f"<@{seed.user_id}>")]
                [message, *_] = await fake.wait_for(progress, 30)
                await fake.click_button(message, f"klingbot:cancel:{job.id}", user_id=seed.user_id, check=False)
            await wait_final(db_path)
            sim.finish_all()  # whatever Runware still runs is billed now, before the count
        finally:
            assert await second.terminate() == 0, log.read_text()[-3000:]
        jobs, ledger, results = await read_db(db_path)

    [job] = jobs
    kinds = sorted(r.kind for r in ledger)
    assert kinds in (["reserve", "settle"], ["release", "reserve"]), kinds
    settled = sum(r.amount_micro for r in ledger if r.kind == "settle")
    assert settled == sim.stats.billed_micro  # every cent Runware billed is in the ledger, once
    assert sim.stats.submits == len(sim.stats.tasks) <= 1  # never a second task for one job
    if failpoint == "submit_acknowledged":
        assert settled == PRICE_5S  # Runware had it: billed, so settled, though cancelled
    else:
        assert settled == 0 and sim.stats.submits == 0  # never reached Runware: free
    if cancel == "before_restart":
        assert job.state == "cancelled" and job.cancelled_by == actor
        # Cancelled: never posted to the member (no message mentions them).
        assert not [m for m in fake.messages(seed.channel_id) if m.content.startswith(f"<@{seed.user_id}>")]
