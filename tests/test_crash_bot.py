"""The Discord bot killed with SIGKILL at every failpoint of SPEC 3.1, in a process of its own
(tests/crash_bot_runner.py), then started again without it: the member's job ends delivered once, or
failed with the member told, settled once, never billed, delivered or announced twice.

The fake Discord and the Runware simulator live in this test process; the bot reaches both over
loopback through its config file."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from bot import failpoints
from bot.db import open_database
from bot.db import queries as q
from bot.simulator.server import run_simulator
from tests.crash_bot_runner import BotProcess
from tests.discord_harness import eventually, image_bytes
from tests.fakes.discord import FakeDiscord

KEY = "crash-bot-key"
PRICE_5S = 350_000
START_TIMEOUT_S = 30.0  # generous for a loaded machine; normally ~1 s


def write_config(tmp_path: Path, fake: FakeDiscord, api_url: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"""
[discord]
api_base_url = "{fake.api_base_url}"
attachment_hosts = ["127.0.0.1"]

[runware]
api_url = "{api_url}"
download_hosts = ["127.0.0.1"]
first_poll_after_s = 0.05
poll_interval_s = 0.05
request_timeout_s = 10.0
max_retries = 2

[storage]
path = "{(tmp_path / 'klingbot.sqlite3').as_posix()}"

[progress]
min_edit_interval_s = 0.05

[limits]
daily_videos = "unlimited"
monthly_usd = "unlimited"
max_concurrent = "unlimited"
""", encoding="utf-8")
    return path


async def read_db(path: Path):
    db = await open_database(path)
    try:
        jobs = sorted(await q.jobs_by_state(db, None, 100), key=lambda j: j.id)
        ledger = await q.ledger_rows(db)
        results = {job.id: await q.results_for_job(db, job.id) for job in jobs}
    finally:
        await db.close()
    return jobs, ledger, results


async def wait_notified(path: Path, timeout: float = 30.0) -> None:
    db = await open_database(path)
    try:
        async def done() -> bool:
            jobs = await q.jobs_by_state(db, None, 100)
            return bool(jobs) and all(j.notified_at is not None for j in jobs)
        await eventually(done, timeout)
    finally:
        await db.close()


@pytest.mark.parametrize("failpoint", failpoints.NAMES)
async def test_bot_killed_at_a_failpoint_then_restarted(tmp_path: Path, failpoint: str) -> None:
    db_path = tmp_path / "klingbot.sqlite3"
    log = tmp_path / "bot.log"
    async with FakeDiscord() as fake, run_simulator(api_key=KEY, base_generation_s=0.3) as sim:
        seed = fake.seed_default()
        config = write_config(tmp_path, fake, sim.url)
        env = {"RUNWARE_API_KEY": KEY}
        first = await BotProcess.start(config, fake, env=env, failpoint=failpoint, log=log)
        try:
            frame = fake.host_attachment("first.png", image_bytes(640, 360), "image/png")
            await fake.send_slash("video", {"prompt": "a kite over the dunes @everyone <@&42>"},
                                  attachments={"first_frame": frame})
            code = await first.killed()
        finally:
            await first.terminate()
        assert code == -signal.SIGKILL, f"the bot was not killed at {failpoint} (exit {code})"

        second = await BotProcess.start(config, fake, env=env, log=log)
        try:
            mentioning = lambda: [m for m in fake.messages(seed.channel_id)  # noqa: E731
                                  if m.content.startswith(f"<@{seed.user_id}>")]
            await fake.wait_for(mentioning, START_TIMEOUT_S)
            await wait_notified(db_path)
        finally:
            assert await second.terminate() == 0, log.read_text()[-3000:]
        jobs, ledger, results = await read_db(db_path)
        messages = mentioning()

    [job] = jobs
    # Exactly one final message, pinging the member and no one else (the prompt's mentions are inert).
    [final] = messages
    assert final.notified_user_ids == [seed.user_id]
    assert not final.notified_everyone and final.notified_role_ids == []
    assert job.notified_at is not None and job.result_message_id == final.id
    kinds = Counter(r.kind for r in ledger)
    assert kinds["reserve"] == 1 and kinds["settle"] + kinds["release"] == 1, kinds

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
