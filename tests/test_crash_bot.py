"""The Discord bot killed with SIGKILL at every failpoint of SPEC 3.1, in a process of its own
(tests/crash_bot_runner.py), then started again without it: the member's job ends delivered once, or
failed with the member told, settled once, never billed, delivered or announced twice.

The fake Discord and the Runware simulator live in this test process; the bot reaches both over
loopback through its config file."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from bot import failpoints
from bot.db import open_database
from bot.db.jobs import jobs_by_state
from bot.simulator.server import Simulator, run_simulator
from tests.crash_bot_runner import KEY, PRICE_5S, BotProcess, read_db, write_config
from tests.fakes.discord import FakeDiscord, Message, Seed
from tests.fakes.world import eventually, image_bytes

pytestmark = pytest.mark.asyncio(loop_scope="module")

START_TIMEOUT_S = 30.0  # generous for a loaded machine; normally ~1 s
PARALLEL = 3  # scenarios at once (two bot processes each, one after the other)


async def wait_notified(path: Path, timeout: float = 30.0) -> None:
    db = await open_database(path)
    try:
        async def done() -> bool:
            jobs = await jobs_by_state(db, None, 100)
            return bool(jobs) and all(j.notified_at is not None for j in jobs)
        await eventually(done, timeout)
    finally:
        await db.close()


@dataclass
class Scenario:
    killed_code: int
    seed: Seed
    messages: list[Message]
    sim: Simulator
    db: tuple


async def run_scenario(base: Path, failpoint: str, slots: asyncio.Semaphore) -> Scenario:
    """/video to a bot that dies at ``failpoint``; a new bot; what the member saw and the database."""
    db_path, log = base / "klingbot.sqlite3", base / "bot.log"
    env = {"RUNWARE_API_KEY": KEY}
    async with slots, FakeDiscord() as fake, run_simulator(api_key=KEY, base_generation_s=0.05) as sim:
        seed = fake.seed_default()
        config = write_config(base, fake, sim.url)
        first = await BotProcess.start(config, fake, env=env, failpoint=failpoint, log=log)
        try:
            frame = fake.host_attachment("first.png", image_bytes(640, 360), "image/png")
            await fake.send_slash("video", {"prompt": "a kite over the dunes @everyone <@&42>"},
                                  attachments={"first_frame": frame})
            code = await first.killed()
        finally:
            await first.terminate()

        def mentioning() -> list[Message]:
            return [m for m in fake.messages(seed.channel_id) if m.content.startswith(f"<@{seed.user_id}>")]

        second = await BotProcess.start(config, fake, env=env, log=log)
        try:
            await fake.wait_for(mentioning, START_TIMEOUT_S)
            await wait_notified(db_path)
        finally:
            assert await second.terminate() == 0, log.read_text()[-3000:]
        return Scenario(code, seed, mentioning(), sim, await read_db(db_path))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def scenarios(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scenario | Exception]:
    """Every failpoint scenario, run side by side once; each test below checks one of them."""
    slots = asyncio.Semaphore(PARALLEL)
    runs = await asyncio.gather(*(run_scenario(tmp_path_factory.mktemp(name), name, slots)
                                  for name in failpoints.NAMES), return_exceptions=True)
    return dict(zip(failpoints.NAMES, runs, strict=True))


@pytest.mark.parametrize("failpoint", failpoints.NAMES)
async def test_bot_killed_at_a_failpoint_then_restarted(scenarios, failpoint: str) -> None:
    run = scenarios[failpoint]
    if isinstance(run, BaseException):
        raise run
    assert run.killed_code == -signal.SIGKILL, f"not killed at {failpoint} (exit {run.killed_code})"
    seed, messages, sim = run.seed, run.messages, run.sim
    jobs, ledger, results = run.db

    [job] = jobs
    # Exactly one final message, pinging the member and no one else (the prompt's mentions are inert).
    [final] = messages
    assert final.notified_user_ids == [seed.user_id]
    assert not final.notified_everyone and final.notified_role_ids == []
    assert job.notified_at is not None and job.result_message_id == final.id
    kinds = Counter(r.kind for r in ledger)
    assert kinds["reserve"] == 1 and kinds["settle"] + kinds["release"] == 1, kinds
    # Every cent Runware billed is settled in the ledger, and nothing it did not bill.
    assert sum(r.amount_micro for r in ledger if r.kind == "settle") == sim.stats.billed_micro

    if failpoint == "after_reserve":
        # The frame lived only in the dead process: the member is told, nothing is charged.
        assert job.state == "failed" and "did not produce a video" in final.content
        assert "restarted before your images were uploaded" in final.embeds[0]["description"]
        assert [(r.kind, r.amount_micro) for r in ledger] == [("reserve", PRICE_5S), ("release", PRICE_5S)]
        assert sim.stats.submits == 0 and sim.stats.upload_tasks == 0
        return
    assert job.state == "succeeded"
    assert [a["data"] for a in final.attachments] == [sim.mp4]
    [result] = results[job.id]
    assert result.delivered_at is not None
    # One task at Runware, billed once; one upload; settled to exactly what was billed.
    assert sim.stats.submits == 1 and list(sim.stats.tasks) == [job.task_uuid]
    assert sim.stats.upload_tasks == 1
    assert [(r.kind, r.amount_micro) for r in ledger] == [("reserve", PRICE_5S), ("settle", PRICE_5S)]
    assert sim.stats.billed_micro == PRICE_5S
