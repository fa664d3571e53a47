"""Two `klingbot run` processes (shards 0 and 1 of 2) on one PostgreSQL database, against the fake
Discord and the Runware simulator; the first is killed with SIGKILL while its jobs are at Runware.
The other finishes them: every job is delivered once (one final message, its video attached) and
billed once (one reserve, one settle, one task at Runware).

The bots run as real processes (tests/crash_bot_runner.py); the fake Discord routes each guild's
interactions to the session of the shard the guild is on, as Discord does."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from bot.db import open_database
from bot.db.jobs import jobs_by_state, results_for_job
from bot.db.money import ledger_rows
from bot.simulator.server import run_simulator
from tests.crash_bot_runner import BotProcess
from tests.fakes.configs import loopback_config
from tests.fakes.discord import FakeDiscord
from tests.fakes.world import eventually

KEY = "takeover-key"
PRICE_5S = 350_000
JOBS_PER_SHARD = 3
GENERATION_S = 6.0  # long enough that the first bot is killed with its jobs still at Runware
SHARD_GUILDS = {0: 1_330_000_000_000_000_000, 1: 1_330_000_000_000_000_000 + (1 << 22)}  # (id >> 22) % 2


def write_config(path: Path, fake: FakeDiscord, api_url: str, shard: int) -> Path:
    return loopback_config(path, runware_url=api_url, db_path=path.parent / f"shard{shard}" / "unused.sqlite3",
                           discord_url=fake.api_base_url, discord={"shard_count": 2, "shard_ids": [shard]},
                           runware={"poll_interval_s": 0.1})


# The dead bot's poll leases (30 s) may hold every job for a while, and a loaded machine is slow.
@pytest.mark.timeout(300)
async def test_two_shards_on_one_postgres_one_killed_mid_flight(tmp_path, pg_url):
    assert {(g >> 22) % 2 for g in SHARD_GUILDS.values()} == {0, 1}
    env = {"RUNWARE_API_KEY": KEY, "KLINGBOT_DATABASE_URL": pg_url}
    log = tmp_path / "bots.log"
    db = await open_database(pg_url)  # migrated before the bots start
    async with FakeDiscord() as fake, run_simulator(api_key=KEY, base_generation_s=GENERATION_S) as sim:
        members = {}
        for shard, guild_id in SHARD_GUILDS.items():
            fake.add_guild(guild_id, f"Guild on shard {shard}")
            fake.add_channel(guild_id, guild_id + 1, "gen")
            fake.add_member(guild_id, guild_id + 2, f"member{shard}")
            members[shard] = (guild_id, guild_id + 1, guild_id + 2)
        doomed = await BotProcess.start(write_config(tmp_path / "a.toml", fake, sim.url, 0), fake, env=env, log=log)
        survivor = None
        try:
            survivor = await BotProcess.start(write_config(tmp_path / "b.toml", fake, sim.url, 1), fake, env=env,
                                              log=log)
            await fake.wait_for(lambda: len([s for s in fake.sessions if s.live]) == 2, 30)
            for guild_id, channel_id, user_id in members.values():
                for n in range(JOBS_PER_SHARD):
                    await fake.send_slash("video", {"prompt": f"a kite over the dunes, take {n}"},
                                          guild_id=guild_id, channel_id=channel_id, user_id=user_id)

            async def doomed_jobs_at_runware() -> bool:
                jobs = await jobs_by_state(db, None, 100, guild_id=SHARD_GUILDS[0])
                return len(jobs) == JOBS_PER_SHARD and all(j.submitted_at is not None for j in jobs)

            await eventually(doomed_jobs_at_runware, 60)
            doomed.proc.send_signal(signal.SIGKILL)
            assert await doomed.killed() == -signal.SIGKILL
            left = [j for j in await jobs_by_state(db, None, 100, guild_id=SHARD_GUILDS[0]) if j.notified_at is None]
            assert left, "the first bot finished its jobs before it was killed: nothing was taken over"

            async def all_notified() -> bool:
                jobs = await jobs_by_state(db, None, 100)
                return len(jobs) == 2 * JOBS_PER_SHARD and all(j.notified_at is not None for j in jobs)

            await eventually(all_notified, 200)
        finally:
            await doomed.terminate()
            if survivor is not None:
                assert await survivor.terminate() == 0, log.read_text()[-3000:]

        jobs = sorted(await jobs_by_state(db, None, 100), key=lambda j: j.id)
        ledger = await ledger_rows(db)
        for guild_id, channel_id, user_id in members.values():
            finals = [m for m in fake.messages(channel_id) if m.content.startswith(f"<@{user_id}>")]
            mine = [j for j in jobs if j.guild_id == guild_id]
            assert len(mine) == JOBS_PER_SHARD and all(j.state == "succeeded" for j in mine)
            # One final message per job, each the job's own, each with its video.
            assert sorted(m.id for m in finals) == sorted(j.result_message_id for j in mine), log.read_text()[-3000:]
            assert all([a["data"] for a in m.attachments] == [sim.mp4] for m in finals)
        for job in jobs:
            [result] = await results_for_job(db, job.id)
            assert result.delivered_at is not None
            money = Counter(r.kind for r in ledger if r.job_id == job.id)
            assert money == {"reserve": 1, "settle": 1}, (job.id, money)
        assert sorted(sim.stats.tasks) == sorted(j.task_uuid for j in jobs)  # one task each at Runware
        assert sim.stats.billed_micro == PRICE_5S * len(jobs)
        assert sum(r.amount_micro for r in ledger if r.kind == "settle") == sim.stats.billed_micro
    await db.close()
