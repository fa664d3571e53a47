"""The Runware simulator: a real aiohttp server speaking Runware's task API (SPEC 9).

Outcomes are drawn from one seeded ``random.Random`` when a task is accepted and revealed when
``clock()`` passes its ready time, so a run with a seed is reproducible.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiohttp
from aiohttp import web

from .enhance import EnhanceLogic
from .media import CONTENT_TYPES, EXTENSIONS, MIB, SMALL, make_small, make_video
from .models import MODELS
from .state import FAULT_STATUSES, Faults, SimTask, Stats
from .tasks import TaskLogic
from .validation import ApiError

log = logging.getLogger(__name__)

_DROP = "drop"
_MALFORMED = "malformed"
_WEBHOOK_RETRIES = 3


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json")


class Simulator(TaskLogic, EnhanceLogic):
    def __init__(self, *, api_key: str = "sandbox", speed: float = 1.0, fail_rate: float = 0.0,
                 seed: int | None = None, clock: Callable[[], float] = time.monotonic,
                 base_generation_s: float = 60.0, video_mb: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        if video_mb is not None and video_mb <= 0:
            raise ValueError("video_mb must be positive")
        self.api_key = api_key
        self.speed = speed
        self.fail_rate = fail_rate
        self.clock = clock
        self.base_generation_s = base_generation_s
        self.rng = random.Random(seed)
        self.faults = Faults()
        self.stats = Stats()
        self.images: dict[str, bytes | str] = {}  # imageUUID -> bytes, or the URL it was given as
        self.videos: dict[str, str] = {}  # videoUUID -> taskUUID
        self.url = ""
        self.base_url = ""
        # None: every result is the small default clip; else results of about this many bytes at
        # the task's size and duration (made once per distinct video, in a thread, then cached).
        self.video_bytes = int(video_mb * MIB) if video_mb else None
        self.mp4 = make_small("MP4")
        self._videos: dict[tuple, asyncio.Future[bytes]] = {}
        self._pending: list[tuple[float, str]] = []  # heap of (ready_at, taskUUID)
        self._webhook_backlog: list[SimTask] = []
        self._background: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._submitted = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._scheduler: asyncio.Task | None = None
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_post("/v1", self._handle_api)
        self.app.router.add_get("/video/{name}", self._handle_video)
        self.app.router.add_get("/image/{image_uuid}", self._handle_image)

    # ---- life cycle ------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._loop = asyncio.get_running_loop()
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_port = self._runner.addresses[0][1]
        url_host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        if ":" in url_host:
            url_host = f"[{url_host}]"
        self.base_url = f"http://{url_host}:{bound_port}"
        self.url = self.base_url + "/v1"
        self._session = aiohttp.ClientSession()
        self._scheduler = asyncio.create_task(self._schedule())
        return self.url

    async def stop(self) -> None:
        tasks = [t for t in (self._scheduler, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        self._scheduler = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- test helpers ----------------------------------------------------------------------------

    def _task_submitted(self) -> None:
        self._submitted.set()
        self._wake_scheduler()

    async def wait_submitted(self, n: int) -> None:
        while self.stats.submits < n:
            self._submitted.clear()
            await self._submitted.wait()

    # ---- the API ---------------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            return await self._answer_api(request)
        finally:
            self.stats.in_flight -= 1

    async def _answer_api(self, request: web.Request) -> web.StreamResponse:
        self.stats.http_requests += 1
        raw = await request.read()
        try:
            tasks = json.loads(raw)
        except ValueError:
            tasks = None
        self._count(tasks)
        if self.faults.hold is not None:
            await self.faults.hold.wait()
        if self.faults.latency_s > 0:
            await asyncio.sleep(self.faults.latency_s)
        fault = self._pick_fault()
        if fault == _DROP:
            return self._drop(request)
        if fault == _MALFORMED:
            return web.Response(status=200, text="<html><body>upstream hiccup</body></html>",
                                content_type="text/html")
        if isinstance(fault, int):
            code, message = FAULT_STATUSES.get(fault, (f"http{fault}", "Unexpected error."))
            return _json(fault, {"errors": [ApiError(code, message, status=fault).item()]})
        if not isinstance(tasks, list):
            error = ApiError("invalidRequestBody", "The request body must be a JSON array of tasks.")
            return _json(400, {"errors": [error.item()]})
        try:
            auth_item = self._authenticate(request, tasks)
        except ApiError as exc:
            return _json(exc.status, {"errors": [exc.item()]})
        if auth_item is not None:
            tasks = tasks[1:]
        status, data, errors = self._process(tasks)
        if auth_item is not None:
            data.insert(0, auth_item)
        if self.faults.drop_after_processing_next > 0:
            self.faults.drop_after_processing_next -= 1
            return self._drop(request)
        body: dict[str, Any] = {}
        if data or not errors:
            only_upload = len(data) == 1 and data[0].get("taskType") == "imageUpload"
            body["data"] = data[0] if only_upload and self.faults.upload_as_object else data
        if errors:
            body["errors"] = errors
        return _json(status, body)

    def _count(self, tasks: Any) -> None:
        if not isinstance(tasks, list):
            return
        kinds = [t.get("taskType") for t in tasks if isinstance(t, dict)]
        polls = kinds.count("getResponse")
        uploads = kinds.count("imageUpload")
        self.stats.get_response_tasks += polls
        self.stats.poll_requests += polls > 0
        self.stats.upload_tasks += uploads
        self.stats.upload_requests += uploads > 0

    def _pick_fault(self) -> str | int | None:
        f = self.faults
        if f.drop_next > 0:
            f.drop_next -= 1
            return _DROP
        if f.next_statuses:
            return f.next_statuses.pop(0)
        if f.malformed_next > 0:
            f.malformed_next -= 1
            return _MALFORMED
        if f.rate_drop and self.rng.random() < f.rate_drop:
            return _DROP
        if f.rate_429 and self.rng.random() < f.rate_429:
            return 429
        if f.rate_5xx and self.rng.random() < f.rate_5xx:
            return self.rng.choice((500, 502, 503))
        return None

    def _drop(self, request: web.Request) -> web.StreamResponse:
        """Close the TCP connection without an answer; the client sees a transport error."""
        self.stats.dropped_connections += 1
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=499)  # never reaches the wire

    def _authenticate(self, request: web.Request, tasks: list[Any]) -> dict[str, Any] | None:
        """Bearer header, or Runware's alternative: an `authentication` task first in the array."""
        header = request.headers.get("Authorization")
        auth_task = tasks[0] if tasks and isinstance(tasks[0], dict) else {}
        key: Any = None
        if header:
            scheme, _, key = header.partition(" ")
            if scheme.lower() != "bearer":
                key = ""
        elif auth_task.get("taskType") == "authentication":
            key = auth_task.get("apiKey")
        if key is None:
            raise ApiError("missingApiKey", "Missing API key. Send 'Authorization: Bearer <key>'.",
                           status=401, parameter="apiKey", task_type="authentication")
        if not isinstance(key, str) or not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
            raise ApiError("invalidApiKey", "Invalid API key.", status=401, parameter="apiKey",
                           task_type="authentication")
        if auth_task.get("taskType") == "authentication":
            return {"taskType": "authentication", "connectionSessionUUID": str(uuid.uuid4())}
        return None

    def _process(self, tasks: list[Any]) -> tuple[int, list[dict], list[dict]]:
        status, data, errors = 200, [], []
        polls = sum(1 for t in tasks if isinstance(t, dict) and t.get("taskType") == "getResponse")
        if self.faults.reject_batches and polls > 1:
            error = ApiError("invalidRequestBody", "Only one getResponse task is allowed per request.",
                             parameter="taskType", task_type="getResponse")
            return 400, [], [error.item()]
        self._sweep()
        for task in tasks:
            try:
                if not isinstance(task, dict):
                    raise ApiError("invalidRequestBody", "Every task must be a JSON object.")
                kind = task.get("taskType")
                if kind == "videoInference":
                    data.append(self._submit(task))
                elif kind == "getResponse":
                    found, failed = self._get_response(task)
                    data += found
                    errors += failed
                elif kind == "imageUpload":
                    data.append(self._upload(task))
                elif kind == "promptEnhance":
                    data += self._enhance(task)
                elif kind == "ping":
                    data.append({"taskType": "ping", "pong": True})
                else:
                    raise ApiError("invalidTaskType", f"Unsupported taskType {kind!r}.", parameter="taskType",
                                   task_uuid=task.get("taskUUID") if isinstance(task.get("taskUUID"), str)
                                   else None,
                                   allowed_values=["videoInference", "getResponse", "imageUpload", "promptEnhance",
                                                   "ping"])
            except ApiError as exc:
                errors.append(exc.item())
                status = max(status, exc.status)
        return status, data, errors

    def _wake_scheduler(self) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _schedule(self) -> None:
        """Reveal tasks at their ready time and send their webhooks."""
        while True:
            self._wake.clear()
            self._sweep()
            backlog, self._webhook_backlog = self._webhook_backlog, []
            for sim in backlog:
                task = asyncio.create_task(self._post_webhooks(sim))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            delay = 1.0  # re-check at least every second, in case `clock` is not real time
            if self._pending:
                delay = min(delay, max(0.0, self._pending[0][0] - self.clock()))
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _post_webhooks(self, sim: SimTask) -> None:
        data, errors = self._split(sim.results)
        bodies = [{"data": [item]} for item in data] + [{"errors": [item]} for item in errors]
        for body in bodies:
            await self._post_webhook(sim.webhook_url or "", body)

    async def _post_webhook(self, url: str, body: dict[str, Any]) -> None:
        assert self._session is not None
        for attempt in range(_WEBHOOK_RETRIES + 1):
            self.stats.webhook_posts += 1
            try:
                timeout = aiohttp.ClientTimeout(total=10)
                async with self._session.post(url, json=body, timeout=timeout) as resp:
                    if 200 <= resp.status < 300:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if attempt < _WEBHOOK_RETRIES:
                await asyncio.sleep(0.05 * 2**attempt)
        log.warning("simulator: webhook to %s gave up after %d attempts", url.split("?")[0],
                    _WEBHOOK_RETRIES + 1)

    # ---- media -----------------------------------------------------------------------------------

    async def _handle_video(self, request: web.Request) -> web.Response:
        if self.faults.latency_s > 0:
            await asyncio.sleep(self.faults.latency_s)
        stem, _, ext = request.match_info["name"].rpartition(".")
        task_uuid = self.videos.get(stem)
        sim = self.stats.tasks.get(task_uuid) if task_uuid else None
        shown = sim is not None and (sim.done or any(i.get("videoUUID") == stem for i in sim.planned[:sim.revealed]))
        if sim is None or not shown or ext != EXTENSIONS[self.output_format(sim.body)]:
            return _json(404, {"errors": [{"code": "notFound", "message": "No such video."}]})
        self.stats.video_downloads += 1
        fmt = self.output_format(sim.body)
        body = self.faults.video_body if self.faults.video_body is not None else await self.video_for(sim)
        return web.Response(body=body, content_type=CONTENT_TYPES[fmt])

    def video_key(self, sim: SimTask) -> tuple:
        fmt = self.output_format(sim.body)
        if self.video_bytes is None:
            return (*SMALL, fmt, None)
        body = sim.body
        fps = MODELS[sim.model_id].fps
        return (int(body["width"]), int(body["height"]), int(body["duration"]), fps, fmt, self.video_bytes)

    def prepare_video(self, sim: SimTask) -> None:
        """Start making the task's video now, so it is ready by the time it is fetched."""
        key = self.video_key(sim)
        if key in self._videos or self._loop is None:
            return
        if key[-1] is None and key[-2] == "MP4":
            future: asyncio.Future[bytes] = self._loop.create_future()
            future.set_result(self.mp4)
        else:
            future = asyncio.ensure_future(asyncio.to_thread(make_video, *key))
        self._videos[key] = future

    async def video_for(self, sim: SimTask) -> bytes:
        self.prepare_video(sim)
        return await asyncio.shield(self._videos[self.video_key(sim)])

    async def _handle_image(self, request: web.Request) -> web.Response:
        stored = self.images.get(request.match_info["image_uuid"])
        if not isinstance(stored, bytes):
            return _json(404, {"errors": [{"code": "notFound", "message": "No such image."}]})
        kind = "png" if stored.startswith(b"\x89PNG") else "jpeg" if stored.startswith(b"\xff\xd8") else (
            "gif" if stored.startswith(b"GIF") else "webp")
        return web.Response(body=stored, content_type=f"image/{kind}")


@asynccontextmanager
async def run_simulator(**kwargs: Any) -> AsyncIterator[Simulator]:
    """A started simulator on 127.0.0.1 and a free port, stopped on exit."""
    sim = Simulator(**kwargs)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def serve(host: str, port: int, api_key: str, speed: float, fail_rate: float, video_mb: float | None = None) -> None:
    """Run until interrupted (`klingbot simulator`)."""

    async def main() -> None:
        sim = Simulator(api_key=api_key, speed=speed, fail_rate=fail_rate, video_mb=video_mb)
        url = await sim.start(host, port)
        stopping = asyncio.Event()
        with suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        print(f"Runware simulator at {url} is listening (Authorization: Bearer <your --api-key>); "
              f"speed x{speed:g}, fail rate {fail_rate:g}, videos "
              f"{f'of about {video_mb:g} MiB' if video_mb else 'small'}. Ctrl+C stops it.", flush=True)
        try:
            await stopping.wait()
        finally:
            await sim.stop()

    with suppress(KeyboardInterrupt):
        asyncio.run(main())
