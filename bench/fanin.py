"""fan-in: many concurrent jobs through the real engine (Engine + RunwareClient + JobStore on SQLite)
against the simulator, with a terminal-like sink. In the same run a per-job baseline polls the same
tasks the way Runware's public SDK does: one getResponse per HTTP request, every 3 s.

Time is compressed: each generation takes between 30 and 60 s of simulated time (a uniform draw
per task, so results become ready at any phase of a poll), and every interval of the bot and of the
baseline is divided by the same speed. The baseline starts polling a task after the same first-poll
delay as the bot, so the ratio counts only what batching saves. The simulator notes when each side
was first answered with a finished task."""

from __future__ import annotations

import asyncio
import io
import itertools
import time
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image
from pydantic import SecretStr

from bench.common import (
    BASELINE,
    BOT,
    SIM_KEY,
    BenchSimulator,
    ScenarioResult,
    config_data,
    make_config,
    percentile,
)
from bench.lag import LagMonitor
from bot.db import open_database
from bot.db.records import JobRecord
from bot.images import check_image
from bot.requests import resolve_request
from bot.runware.client import RunwareClient
from bot.services.engine import Engine
from bot.services.quotas import Member
from bot.services.sink import Outcome, ProgressUpdate

NAME = "fan-in"
GENERATION_S = (30.0, 60.0)  # simulated seconds, drawn per task
SDK_INTERVAL_S = 3.0        # Runware's SDK polls each task on its own (SPEC 6: every 3 s)
RATIO_BAR = 20.0


class CollectSink:
    """A terminal-like sink: no pacing, records every delivery."""

    def __init__(self, downloads: Path) -> None:
        self.downloads = downloads
        self.delivered: dict[int, float] = {}
        self.progress_calls = 0
        self.files = 0
        self.all_delivered = asyncio.Event()
        self.expected = 0
        self._ids = itertools.count(1)
        self.alerts: list[str] = []

    def handles(self, job: JobRecord) -> bool:
        return True

    def download_cap(self, job: JobRecord) -> int:
        return 10 * 1024 * 1024

    def fit_limit(self, job: JobRecord) -> int | None:
        return None

    def download_dir(self, job: JobRecord) -> Path:
        return self.downloads

    async def progress(self, update: ProgressUpdate) -> int | None:
        self.progress_calls += 1
        return None

    async def deliver(self, outcome: Outcome) -> int | None:
        self.delivered.setdefault(outcome.job.id, time.time())
        self.files += sum(1 for f in outcome.files if f.path is not None)
        if self.expected and len(self.delivered) >= self.expected:
            self.all_delivered.set()
        return next(self._ids)

    async def alert(self, text: str) -> None:
        self.alerts.append(text)


class Baseline:
    """One coroutine per task: getResponse alone in its request, on a fixed period, until done."""

    def __init__(self, url: str, first_after_s: float, interval_s: float) -> None:
        self.url = url
        self.first_after_s = first_after_s
        self.interval_s = interval_s
        self.requests = 0
        self.finished = 0
        self.errors = 0
        self.all_finished = asyncio.Event()
        self.expected = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Baseline:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200),
                                              headers={"Authorization": f"Bearer {SIM_KEY}"})
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        assert self._session is not None
        await self._session.close()

    def track(self, task_uuid: str, accepted_at: float) -> None:
        task = asyncio.get_running_loop().create_task(self._poll(task_uuid, accepted_at))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll(self, task_uuid: str, accepted_at: float) -> None:
        assert self._session is not None
        due = accepted_at + self.first_after_s
        body = [{"taskType": "getResponse", "taskUUID": task_uuid}]
        while True:
            await asyncio.sleep(max(0.0, due - time.time()))
            self.requests += 1
            try:
                async with self._session.post(self.url, json=body) as response:
                    answer = await response.json()
            except (aiohttp.ClientError, ValueError):
                self.errors += 1
                answer = {}
            items = answer.get("data") or []
            if answer.get("errors") or any(i.get("status") in ("success", "error") for i in items):
                break
            due += self.interval_s
        self.finished += 1
        if self.expected and self.finished >= self.expected:
            self.all_finished.set()


def _frame() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1280, 720), (200, 80, 40)).save(out, "PNG")
    return out.getvalue()


async def run(tmp: Path, *, quick: bool = False, jobs: int | None = None, speed: float | None = None
              ) -> ScenarioResult:
    result = ScenarioResult(NAME)
    n = jobs or (60 if quick else 500)
    speed = speed or (12.0 if quick else 2.0)
    interval = SDK_INTERVAL_S / speed
    first_after = 10.0 / speed
    sim = BenchSimulator(speed=speed, generation_s=GENERATION_S, seed=6)
    await sim.start()
    data = config_data(sim_url=sim.url, db_path=tmp / "fanin.sqlite3",
                       runware={"poll_interval_s": interval, "first_poll_after_s": first_after},
                       progress={"min_edit_interval_s": 8.0 / speed})
    cfg = make_config(data)
    db = await open_database(cfg.storage.path)
    client = RunwareClient(api_url=sim.url, api_key=SecretStr(SIM_KEY),
                           poll_batch_size=cfg.runware.poll_batch_size,
                           max_retries=cfg.runware.max_retries, timeout_s=cfg.runware.request_timeout_s)
    sink = CollectSink(tmp / "downloads")
    sink.expected = n
    engine = Engine(cfg=cfg, db=db, client=client, sink=sink)
    monitor = LagMonitor()
    lag_task = asyncio.create_task(monitor.run())
    started = time.time()
    try:
        async with Baseline(sim.baseline_url, first_after, interval) as baseline:
            baseline.expected = n
            sim.on_submit = lambda t: baseline.track(t.task_uuid, t.accepted_at)
            await engine.start()
            frame = check_image(_frame(), field="first_frame")
            requests = []
            for i in range(n):
                with_frame = i % 10 == 9  # a tenth start from an image: their uploads are counted apart
                requests.append(resolve_request(
                    cfg, prompt=f"bench fan-in {i}: a red fox running through fresh snow",
                    duration=5 if i % 2 == 0 else 10,
                    first_frame_size=(frame.width, frame.height) if with_frame else None))
            created = await asyncio.gather(*(
                engine.create_job(Member(guild_id=1, user_id=1000 + i % 50), request, channel_id=10 + i % 20,
                                  first=frame if i % 10 == 9 else None)
                for i, request in enumerate(requests)))
            timeout = 60.0 / speed * 2 + first_after + 120.0
            await asyncio.wait_for(asyncio.gather(sink.all_delivered.wait(), baseline.all_finished.wait()),
                                   timeout)
            elapsed = time.time() - started
            baseline_requests = baseline.requests
    finally:
        lag_task.cancel()
        sim.on_submit = None
        await engine.stop()
        await client.aclose()
        await db.close()
        await sim.stop()

    uuids = [job.task_uuid for job in created]
    bot_polls, base_polls = sim.polls[BOT], sim.polls[BASELINE]
    ratio = base_polls / bot_polls if bot_polls else float("inf")
    late = _lateness(sim, uuids, BOT)
    late_base = _lateness(sim, uuids, BASELINE)
    poller_seen = engine.poller.seen_ready
    seen = [poller_seen[u] - sim.stats.tasks[u].ready_at for u in uuids if u in poller_seen]
    over = sum(1 for x in late if x > interval)
    delivered = len(sink.delivered)
    result.add("jobs delivered", f"{delivered}/{n}", bar=f"{n}/{n}", passed=delivered == n)
    result.add("poll requests per job, bot", bot_polls / n)
    result.add("poll requests per job, baseline", base_polls / n)
    result.add("fewer poll requests than baseline", ratio, "x", f">= {RATIO_BAR:.0f}x", ratio >= RATIO_BAR)
    result.add("max(seen - ready) / poll interval", max(late) / interval if late else float("nan"), "",
               "<= 1.00", bool(late) and len(late) == n and over == 0)
    result.add("results seen later than one interval", over, "jobs", "0", over == 0)
    result.add("submits / upload requests (apart)", f"{sim.stats.submits} / {sim.stats.upload_requests}")
    lag = monitor.summary()
    result.add("event loop lag p99 / max", f"{lag['p99_ms']} / {lag['max_ms']}", "ms")
    result.details = {
        "jobs": n, "speed": speed, "poll_interval_s": interval, "first_poll_after_s": first_after,
        "sdk_interval_s_unscaled": SDK_INTERVAL_S, "poll_batch_size": cfg.runware.poll_batch_size,
        "generation_s_simulated": list(GENERATION_S),
        "poll_requests": {"bot": bot_polls, "baseline": base_polls,
                          "baseline_counted_by_client": baseline_requests},
        "get_response_tasks": dict(sim.poll_tasks),
        "submits": sim.stats.submits, "upload_requests": sim.stats.upload_requests,
        "bot_http_requests": client.http_requests, "ratio": ratio,
        "lateness_s": _stats(late), "lateness_over_interval": over,
        "lateness_poll_start_s": _stats(seen),
        "baseline_lateness_s": _stats(late_base),
        "deliveries": len(sink.delivered), "files": sink.files, "wall_s": round(elapsed, 2),
        "event_loop_lag": lag,
        "measure": "lateness = simulator time of its first answer to the bot that carried the finished "
                   "task, minus the task's ready time; poll_start = the poller's own tick time of that poll",
    }
    return result


def _lateness(sim: BenchSimulator, uuids: list[str], origin: str) -> list[float]:
    seen = sim.first_done[origin]
    return [seen[u] - sim.stats.tasks[u].ready_at for u in uuids if u in seen]


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(percentile(values, 50), 4),
            "p99": round(percentile(values, 99), 4),
            "max": round(max(values), 4), "min": round(min(values), 4)}
