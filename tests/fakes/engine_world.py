"""A real Engine without Discord, driven tick by tick on a manual clock: the simulator on loopback
as Runware (nothing finishes until the test says so), a SQLite file, and a terminal-like sink that
records every final message. The fixtures are in tests/services/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from pydantic import SecretStr

from bot.cli.generate_run import TerminalSink
from bot.config import Config, Secrets
from bot.db import open_database
from bot.runware.client import RunwareClient
from bot.services.clock import FixedClock
from bot.services.engine import Engine
from bot.services.quotas import Member
from bot.services.sink import Outcome
from bot.simulator.server import Simulator

SIM_KEY = "engine-world-key"
HOUR = 3600.0
DEADLINE = 100.0          # runware.job_deadline_s
TERMINAL = Member(0, 7)   # the member `klingbot generate` acts as


class RecordingSink(TerminalSink):
    """Every final message the engine hands over, in order, per job."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(out_dir, show_bar=False)
        self.messages: dict[int, list[Outcome]] = {}

    async def deliver(self, outcome: Outcome) -> int | None:
        self.messages.setdefault(outcome.job.id, []).append(outcome)
        return await super().deliver(outcome)


@asynccontextmanager
async def manual_simulator() -> AsyncIterator[Simulator]:
    simulator = Simulator(api_key=SIM_KEY, base_generation_s=HOUR)  # finishes only on sim.finish()
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@asynccontextmanager
async def engine_world(tmp_path: Path, sim: Simulator) -> AsyncIterator[tuple[Engine, FixedClock, RecordingSink]]:
    clock = FixedClock(1_700_000_000.0)
    cfg = Config.model_validate({
        "runware": {"api_url": sim.url, "first_poll_after_s": 1, "poll_interval_s": 10,
                    "job_deadline_s": DEADLINE, "late_result_window_s": 1000,
                    "download_hosts": ["127.0.0.1"], "max_retries": 0},
        "storage": {"path": str(tmp_path / "engine.sqlite3")},
        "limits": {"daily_videos": "unlimited", "monthly_usd": "unlimited", "max_concurrent": "unlimited",
                   "guild_monthly_usd": "unlimited", "global_daily_usd": "unlimited", "max_in_flight": 1},
        "secrets": Secrets(runware_api_key=SecretStr(SIM_KEY)),
    })
    db = await open_database(cfg.storage.path)
    client = RunwareClient(api_url=sim.url, api_key=SecretStr(SIM_KEY), max_retries=0)
    try:
        async with httpx.AsyncClient() as http:
            sink = RecordingSink(tmp_path / "videos")
            yield Engine(cfg=cfg, db=db, client=client, sink=sink, clock=clock, http=http), clock, sink
    finally:
        await client.aclose()
        await db.close()
