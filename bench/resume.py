"""resume: a database with 1,000 jobs at Runware (made by a first engine in the bench's process,
which submits them all and stops), then a NEW bot process started on it. Measured: from just before
the new process is spawned to the moment the simulator has answered a getResponse about every one
of the 1,000 tasks (the simulator notes each task's first answer per origin)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pydantic import SecretStr

from bench.common import BOT, SIM_KEY, ScenarioResult, config_data, make_config
from bench.fanin import CollectSink
from bench.procworld import GUILD_ID, ProcWorld
from bot.db import open_database
from bot.db.jobs import at_runware_jobs
from bot.requests import resolve_request
from bot.runware.client import RunwareClient
from bot.services.engine import Engine
from bot.services.quotas import Member

NAME = "resume"
BAR_S = 3.0


async def fill(world: ProcWorld, n: int) -> None:
    """The first life: n jobs reserved, submitted and marked at Runware, then the engine stops."""
    cfg = make_config(config_data(sim_url=world.sim.url, db_path=world.db_path))
    db = await open_database(world.db_path)
    client = RunwareClient(api_url=world.sim.url, api_key=SecretStr(SIM_KEY))
    engine = Engine(cfg=cfg, db=db, client=client, sink=CollectSink(world.tmp / "downloads"))
    try:
        await engine.start()
        request = resolve_request(cfg, prompt="bench resume: a red fox running through fresh snow")
        for start in range(0, n, 100):
            await asyncio.gather(*(
                engine.create_job(Member(GUILD_ID, world.user_ids[i % len(world.user_ids)]), request,
                                  channel_id=world.channel_ids[i % len(world.channel_ids)])
                for i in range(start, min(n, start + 100))))
        await asyncio.wait_for(world.sim.wait_submitted(n), 120)
        deadline = time.time() + 60
        while len(await at_runware_jobs(engine.db, 10_000)) < n:  # marked submitted after Runware's answer
            if time.time() > deadline:
                raise TimeoutError("the first engine did not mark every job submitted")
            await asyncio.sleep(0.05)
    finally:
        await engine.stop()
        await client.aclose()
        await db.close()


async def run(tmp: Path, *, quick: bool = False, jobs: int | None = None) -> ScenarioResult:
    result = ScenarioResult(NAME)
    n = jobs or (100 if quick else 1000)
    async with ProcWorld(tmp, channels=max(1, n // 10), members=max(1, n // 5)) as world:
        await fill(world, n)
        world.sim.reset_seen()
        seen = world.sim.first_answer[BOT]
        started = await world.start_bot(wait_ready=False)
        deadline = started + 60
        while len(seen) < n and time.time() < deadline:
            if world.proc is not None and world.proc.returncode is not None:
                raise RuntimeError("the bot's process exited:\n" + world.log_tail())
            await asyncio.sleep(0.002)
        all_polled = max(seen.values()) - started if len(seen) >= n else float("inf")
        first_poll = min(seen.values()) - started if seen else float("inf")
        polls = world.sim.polls[BOT]
        await world.wait_ready()
        report = await world.stop_bot()
    marks = report.get("marks", {})
    result.add(f"all {n} polled again after process start", all_polled, "s", f"<= {BAR_S:.0f} s",
               all_polled <= BAR_S)
    result.add("first poll after process start", first_poll, "s")
    result.details = {
        "jobs": n, "all_polled_s": round(all_polled, 3), "first_poll_s": round(first_poll, 3),
        "poll_requests_until_all": polls,
        "process_marks_s": {k: round(v - started, 3) for k, v in marks.items()},
        "measure": "wall time before spawning the process (python -m bench.botproc, the klingbot run path) "
                   "to the simulator's first answer about the last of the jobs",
    }
    return result
