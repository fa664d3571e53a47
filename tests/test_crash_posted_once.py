"""Posted once (SPEC 3.4): Discord stored the bot's post, the process died before it heard the answer
(the fake stores the message, SIGKILLs the bot, and drops the connection). After the restart the bot
sends the same post with the same nonce, Discord hands back the message it has, and the member sees
exactly one progress message and one final message per job: for the progress message, the results and
the failure notice, in one channel and with several channels delivering side by side.

The real bot runs in a process of its own (tests/crash_bot_runner.py); the fake Discord and the Runware
simulator live in this test process."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from bot.db import open_database
from bot.db.jobs import jobs_by_state
from bot.simulator.server import run_simulator
from tests.crash_bot_runner import BotProcess, write_config
from tests.fakes.discord import FakeDiscord, Message
from tests.fakes.world import eventually

KEY = "posted-once-key"
START_TIMEOUT_S = 30.0
EXTRA_CHANNELS = (1_100_000_000_000_000_201, 1_100_000_000_000_000_202)


def is_final(message: Message) -> bool:
    return message.content.startswith("<@")


def is_kind(message: Message, kind: str) -> bool:
    if kind == "progress":
        return not is_final(message)
    failed = "did not produce a video" in message.content
    return is_final(message) and (failed if kind == "failure" else not failed)


async def jobs_of(path: Path) -> list:
    db = await open_database(path)
    try:
        return sorted(await jobs_by_state(db, None, 100), key=lambda j: j.id)
    finally:
        await db.close()


@pytest.mark.parametrize("channels", [1, 3], ids=["one_channel", "three_channels"])
@pytest.mark.parametrize("kind", ["progress", "result", "failure"])
async def test_posted_once_after_a_kill_between_discord_storing_and_the_bot_recording(
        tmp_path: Path, kind: str, channels: int) -> None:
    db_path, log = tmp_path / "klingbot.sqlite3", tmp_path / "bot.log"
    prompt = "a lighthouse in a storm" + (" FAIL_PROVIDER" if kind == "failure" else "")
    async with FakeDiscord() as fake, run_simulator(api_key=KEY, base_generation_s=3600.0) as sim:
        seed = fake.seed_default()
        where = [seed.channel_id, *EXTRA_CHANNELS[:channels - 1]]
        for channel_id in where[1:]:
            fake.add_channel(seed.guild_id, channel_id, f"gen-{channel_id % 1000}")
        config = write_config(tmp_path, fake, sim.url)
        env = {"RUNWARE_API_KEY": KEY}
        first = await BotProcess.start(config, fake, env=env, log=log)
        target = where[len(where) // 2]  # the middle channel: the others deliver around it

        async def kill(message: Message) -> None:
            first.proc.send_signal(signal.SIGKILL)
            await first.killed()

        stored = fake.stop_after_storing(lambda m: m.channel_id == target and is_kind(m, kind), then=kill)
        try:
            # The other channels' jobs are under way (queued, their progress out) when the target's post is
            # made; for the progress case the target's /video comes last, so every job exists at the kill.
            for channel_id in [c for c in where if c != target] + [target]:
                iid = await fake.send_slash("video", {"prompt": prompt}, channel_id=channel_id)
                if channel_id != target or kind != "progress":
                    await queued_reply(fake, iid)
            if kind != "progress":
                await asyncio.wait_for(sim.wait_submitted(len(where)), START_TIMEOUT_S)
                sim.finish_all()
            killed = await fake.wait_for(lambda: stored.done() and stored.result(), START_TIMEOUT_S)
            assert await first.killed() == -signal.SIGKILL
        finally:
            await first.terminate()
        [job_before] = [j for j in await jobs_of(db_path) if j.channel_id == target]
        # The window under test: Discord has the post, the database does not know it.
        if kind == "progress":
            assert job_before.progress_message_id is None
        else:
            assert job_before.notified_at is None and job_before.result_message_id is None

        second = await BotProcess.start(config, fake, env=env, log=log)
        try:
            await asyncio.wait_for(sim.wait_submitted(len(where)), START_TIMEOUT_S)
            if kind == "progress":
                # The restarted bot shows the job's progress (getting the stored message back) before the
                # video is done, as for any job that takes more than a moment at Runware.
                await eventually(lambda: _progress_recorded(db_path, target, killed.id), START_TIMEOUT_S)
            sim.finish_all()
            await eventually(lambda: _all_notified(db_path, len(where)), START_TIMEOUT_S)
            await fake.wait_for(lambda: all(
                any(is_final(m) for m in fake.messages(c)) for c in where), START_TIMEOUT_S)
        finally:
            assert await second.terminate() == 0, log.read_text()[-3000:]

        jobs = await jobs_of(db_path)
        for channel_id in where:
            messages = [m for m in fake.messages(channel_id) if not m.deleted]
            [job] = [j for j in jobs if j.channel_id == channel_id]
            progress = [m for m in messages if is_kind(m, "progress")]
            finals = [m for m in messages if is_final(m)]
            assert len(progress) == 1 and len(finals) == 1, [(m.id, m.content[:40]) for m in messages]
            assert job.progress_message_id == progress[0].id and job.result_message_id == finals[0].id
            assert finals[0].notified_user_ids == [seed.user_id]
            assert is_kind(finals[0], "failure" if kind == "failure" else "result")
            assert finals[0].nonce == f"kb-j{job.id}-{'f' if kind == 'failure' else 'r'}"
            assert progress[0].nonce == f"kb-j{job.id}-p"
        assert killed.id in {m.id for c in where for m in fake.messages(c)}
        assert fake.nonce_hits >= 1  # the restart's post got the stored message back
        assert sim.stats.submits == len(where)


async def queued_reply(fake: FakeDiscord, iid: str) -> None:
    """The /video reply says the job is queued (it is reserved, and its progress message is out)."""
    await fake.wait_for(lambda: any("Queued as job" in ((r.data or {}).get("content") or "")
                                    for r in fake.interaction_responses(iid) if r.kind == "edit_original"),
                        START_TIMEOUT_S)


async def _progress_recorded(path: Path, channel_id: int, message_id: int) -> bool:
    return any(j.channel_id == channel_id and j.progress_message_id == message_id for j in await jobs_of(path))


async def _all_notified(path: Path, count: int) -> bool:
    jobs = await jobs_of(path)
    return len(jobs) == count and all(j.notified_at is not None for j in jobs)
