"""The engine's loops are independent (SPEC 3.5): a delivery that hangs, or a submit Runware holds,
never holds up a poll round; and a poll round that hangs stops the run recording finished rounds, so
`klingbot health` fails, naming the run, while the other loops (the lease's too) go on. A real Engine,
the simulator on loopback (holding requests open on demand), a SQLite file in tmp_path; every wait is
on observable state."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from pydantic import SecretStr

from bot.config import Config
from bot.db import open_database
from bot.db.jobs import get_job, results_for_job
from bot.requests import resolve_request
from bot.runware.client import RunwareClient
from bot.services.engine import Engine
from bot.services.ownership import HOST
from bot.services.quotas import Member
from bot.services.sink import Outcome, ProgressUpdate
from bot.simulator.server import Simulator

KEY = "loops-key"
WAIT_S = 20.0
MEMBER = Member(1, 11)


class HoldingSimulator(Simulator):
    """Holds every request carrying a task of a type in ``held_types`` open until ``release``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(api_key=KEY, base_generation_s=3600.0, **kwargs)
        self.held_types: set[str] = set()
        self.holding = 0
        self.released = asyncio.Event()
        self._changed = asyncio.Condition()

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        try:
            kinds = {t.get("taskType") for t in json.loads(await request.read()) if isinstance(t, dict)}
        except (ValueError, TypeError, AttributeError):
            kinds = set()
        if kinds & self.held_types:
            async with self._changed:
                self.holding += 1
                self._changed.notify_all()
            await self.released.wait()
        return await super()._handle_api(request)

    async def wait_holding(self, n: int = 1) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.holding >= n), WAIT_S)

    def release(self) -> None:
        self.held_types.clear()
        self.released.set()


class GateSink:
    """Counts progress updates; a delivery of a job in ``gated`` waits for ``gate``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.gate = asyncio.Event()
        self.gated: set[int] = set()
        self.delivering: set[int] = set()
        self.delivered: list[int] = []
        self.progress_calls = 0
        self.alerts: list[str] = []
        self.changed = asyncio.Condition()

    def handles(self, job):
        return True

    def download_cap(self, job):
        return 50 * 1024 * 1024

    def download_dir(self, job):
        return self.folder

    def fit_limit(self, job):
        return None

    async def progress(self, update: ProgressUpdate) -> int | None:
        async with self.changed:
            self.progress_calls += 1
            self.changed.notify_all()
        return None

    async def deliver(self, outcome: Outcome) -> int | None:
        job_id = outcome.job.id
        async with self.changed:
            self.delivering.add(job_id)
            self.changed.notify_all()
        if job_id in self.gated:
            await self.gate.wait()
        async with self.changed:
            self.delivered.append(job_id)
            self.changed.notify_all()
        return 1000 + job_id

    async def alert(self, text: str) -> None:
        self.alerts.append(text)

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), WAIT_S)


async def eventually(check: Callable[[], Awaitable[Any]]) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        value = await check()
        if value:
            return value
        assert loop.time() < deadline, f"{check} not met within {WAIT_S} s"
        await asyncio.sleep(0.02)


class Loops:
    def __init__(self, tmp_path: Path, sim: HoldingSimulator) -> None:
        self.tmp_path = tmp_path
        self.sim = sim
        self.config_path = tmp_path / "config.toml"
        db_path = tmp_path / "loops.sqlite3"
        self.config_path.write_text(
            f'[runware]\napi_url = "{sim.url}"\ndownload_hosts = ["127.0.0.1"]\nfirst_poll_after_s = 0\n'
            f'poll_interval_s = 0.2\nmax_retries = 0\nrequest_timeout_s = 60\n[storage]\npath = "{db_path}"\n')
        self.cfg = Config.model_validate({
            "runware": {"api_url": sim.url, "download_hosts": ["127.0.0.1"], "first_poll_after_s": 0,
                        "poll_interval_s": 0.2, "max_retries": 0, "request_timeout_s": 60},
            "storage": {"path": str(db_path)},
            "limits": {"daily_videos": "unlimited", "monthly_usd": "unlimited", "max_concurrent": "unlimited"},
        })
        self.sink = GateSink(tmp_path / "videos")

    async def __aenter__(self) -> Loops:
        self.db = await open_database(self.cfg.storage.path)
        self.client = RunwareClient(api_url=self.sim.url, api_key=SecretStr(KEY), max_retries=0, timeout_s=60)
        self.http = httpx.AsyncClient()
        self.engine = Engine(cfg=self.cfg, db=self.db, client=self.client, sink=self.sink, http=self.http)
        await self.engine.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sim.release()
        self.sink.gate.set()
        await self.engine.stop()
        await self.http.aclose()
        await self.client.aclose()
        await self.db.close()

    async def create(self, prompt: str = "a fox in the snow", channel_id: int = 5) -> int:
        job = await self.engine.create_job(MEMBER, resolve_request(self.cfg, prompt=prompt), channel_id=channel_id)
        return job.id

    async def task_uuid(self, job_id: int) -> str:
        job = await get_job(self.db, job_id)
        assert job is not None
        return job.task_uuid

    async def state(self, job_id: int) -> str:
        job = await get_job(self.db, job_id)
        assert job is not None
        return job.state

    async def rounds_after(self, n: int) -> None:
        start = self.engine.poll_rounds
        await eventually(lambda: _value(self.engine.poll_rounds >= start + n))

    async def health(self, *args: str) -> tuple[int, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWARE_", "DISCORD_", "KLINGBOT_"))}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "health", "--config", str(self.config_path), *args, cwd=self.tmp_path,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode()


async def _value(value: Any) -> Any:
    return value


async def test_a_stalled_poll_round_fails_health_while_the_other_loops_go_on(tmp_path: Path) -> None:
    sim = HoldingSimulator()
    await sim.start()
    try:
        async with Loops(tmp_path, sim) as w:
            first = await w.create()
            await eventually(lambda: _value(sim.stats.poll_requests >= 1))
            code, out = await w.health("--max-age", "5")
            assert code == 0, out

            sim.held_types.add("getResponse")  # Runware stops answering polls; nothing times out yet
            await sim.wait_holding()
            rounds = w.engine.poll_rounds
            # Health turns unhealthy with the loop stuck in its round (a timer would keep it fresh).
            async def unhealthy() -> str | None:
                code, out = await w.health("--max-age", "1")
                return out if code == 1 else None
            out = await eventually(unhealthy)
            assert out.startswith(f"unhealthy: bot run pid {os.getpid()} on {HOST}: last poll round finished "), out
            assert out.rstrip().endswith("(allowed 1 s)") and len(out.splitlines()) == 1, out
            # Meanwhile submitting and progress reporting went on: a new job is at Runware and shown.
            second = await w.create("a second fox")
            await eventually(lambda: _async_eq(w.state(second), "submitted"))
            shown = w.sink.progress_calls
            await w.sink.until(lambda: w.sink.progress_calls > shown)
            assert w.engine.poll_rounds == rounds  # still the same, stuck round

            sim.release()
            sim.finish_all()
            await w.sink.until(lambda: {first, second} <= set(w.sink.delivered))
            code, out = await w.health("--max-age", "5")
            assert code == 0 and out.startswith("healthy"), out
    finally:
        await sim.stop()


async def _async_eq(value: Awaitable[Any], expected: Any) -> bool:
    return (await value) == expected


async def test_a_hanging_delivery_or_submit_never_holds_up_polling(tmp_path: Path) -> None:
    sim = HoldingSimulator()
    await sim.start()
    try:
        async with Loops(tmp_path, sim) as w:
            stuck = await w.create("posted slowly", channel_id=5)
            other = await w.create("posted at once", channel_id=6)
            await eventually(lambda: _async_eq(w.state(other), "submitted"))
            w.sink.gated.add(stuck)  # its delivery hangs (a paced channel, a slow upload)
            sim.finish(await w.task_uuid(stuck))
            await w.sink.until(lambda: stuck in w.sink.delivering)

            # Runware now holds every submit open: a new job's submit hangs as a retrying one would.
            sim.held_types.add("videoInference")
            waiting = await w.create("its submit hangs")
            await sim.wait_holding()
            assert await w.state(waiting) == "queued"

            # Polling goes on: the other job's result is fetched and it is delivered, while the first
            # delivery and the third job's submit are both still hanging.
            await w.rounds_after(3)
            sim.finish_all()
            await eventually(lambda: _async_len(results_for_job(w.db, other)))
            await w.sink.until(lambda: other in w.sink.delivered)
            assert stuck not in w.sink.delivered and await w.state(waiting) == "queued"

            w.sink.gate.set()
            sim.release()
            await w.sink.until(lambda: stuck in w.sink.delivered)
            await eventually(lambda: _async_eq(w.state(waiting), "submitted"))
    finally:
        await sim.stop()


async def _async_len(value: Awaitable[Any]) -> int:
    return len(await value)
