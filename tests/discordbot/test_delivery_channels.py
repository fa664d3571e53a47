"""Deliveries run per channel side by side: a channel whose posts are slow (Discord paces 5 writes per
5 s per channel) does not hold up another channel's results."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from pydantic import SecretStr

from bot.config import Config
from bot.db import open_database
from bot.db.jobs import get_job
from bot.requests import resolve_request
from bot.runware.client import RunwareClient
from bot.services.clock import FixedClock
from bot.services.engine import Engine
from bot.services.quotas import Member
from bot.simulator.server import Simulator

SLOW, FAST = 101, 202


class GatedSink:
    """Posts to the SLOW channel wait for a gate; every post is recorded."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.gate = asyncio.Event()
        self.posted: list[int] = []
        self.fast_posted = asyncio.Event()

    def handles(self, job):
        return True

    def download_cap(self, job):
        return 50 * 1024 * 1024

    def fit_limit(self, job):
        return None

    def download_dir(self, job):
        return self.folder

    async def progress(self, update):
        return None

    async def deliver(self, outcome):
        if outcome.job.channel_id == SLOW:
            await self.gate.wait()
        self.posted.append(outcome.job.channel_id)
        if outcome.job.channel_id == FAST:
            self.fast_posted.set()
        return 1000 + outcome.job.id

    async def alert(self, text):
        raise AssertionError(f"unexpected operator alert: {text}")


async def test_a_slow_channel_does_not_hold_up_another(tmp_path):
    sim = Simulator(api_key="k", base_generation_s=3600)
    await sim.start()
    cfg = Config.model_validate({
        "runware": {"api_url": sim.url, "first_poll_after_s": 0, "poll_interval_s": 1,
                    "download_hosts": ["127.0.0.1"], "max_retries": 0},
        "storage": {"path": str(tmp_path / "db.sqlite3")},
    })
    db = await open_database(cfg.storage.path)
    client = RunwareClient(api_url=sim.url, api_key=SecretStr("k"), max_retries=0)
    sink = GatedSink(tmp_path / "videos")
    try:
        async with httpx.AsyncClient() as http:
            engine = Engine(cfg=cfg, db=db, client=client, sink=sink, clock=FixedClock(1_700_000_000), http=http)
            request = resolve_request(cfg, prompt="a fox in the snow")
            slow = await engine.create_job(Member(1, 11), request, channel_id=SLOW)
            fast = await engine.create_job(Member(1, 22), request, channel_id=FAST)
            await engine.tick()                  # both submitted
            sim.finish_all()
            await engine.poller.tick(now=engine.clock.now() + 1)   # both finished and settled
            delivering = asyncio.create_task(engine.deliverer.tick())
            await asyncio.wait_for(sink.fast_posted.wait(), timeout=10)
            assert sink.posted == [FAST]  # while the slow channel's post is still waiting
            assert (await get_job(engine.db, slow.id)).notified_at is None
            sink.gate.set()
            assert await asyncio.wait_for(delivering, timeout=10) == 2
            assert sink.posted == [FAST, SLOW]
            for job in (fast, slow):
                assert (await get_job(engine.db, job.id)).notified_at is not None
    finally:
        await client.aclose()
        await db.close()
        await sim.stop()
