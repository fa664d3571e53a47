"""Runware webhooks (SPEC 5, 9): the simulator POSTs finished items to the receiver that a real
Engine starts on loopback, with a terminal-like sink and a SQLite file in tmp_path. Poll intervals
are an hour unless a test says otherwise, so only a webhook can finish a job; nothing finishes
until the test calls ``sim.finish``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from pydantic import SecretStr

from bot.cli.generate_run import TerminalSink
from bot.config import Config, Secrets
from bot.db import open_database
from bot.db.jobs import get_job, results_for_job, unnotified_jobs
from bot.db.money import ledger_for_job
from bot.errors import UserFacingError
from bot.requests import resolve_request
from bot.runware.client import RunwareClient
from bot.services.engine import Engine
from bot.services.quotas import Member
from bot.services.sink import Outcome, ProgressUpdate
from bot.services.webhooks import MAX_BODY_BYTES, statuses_from_body, webhook_settings
from bot.simulator.server import Simulator
from tests.fakes.processes import free_port

SECRET = "wh-s3cret/Token+8f3a0c1d2e"  # '/' and '+' must survive the URL's query encoding
SIM_KEY = "webhook-test-key"
HOUR = 3600.0
WAIT_S = 20.0
TERMINAL = Member(0, 7)



class CountingSink(TerminalSink):
    """The terminal sink, counting deliveries and remembering the phases it was shown."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(out_dir, show_bar=False)
        self.deliveries: Counter[int] = Counter()
        self.phases: dict[int, list[str]] = {}

    async def progress(self, update: ProgressUpdate) -> int | None:
        async with self.finished:
            self.phases.setdefault(update.job.id, []).append(update.phase)
            self.finished.notify_all()
        return None

    async def deliver(self, outcome: Outcome) -> int | None:
        self.deliveries[outcome.job.id] += 1
        return await super().deliver(outcome)

    async def wait_at_runware(self, job_id: int) -> None:
        """Until the engine has recorded the submit (the progress shows it)."""
        async with self.finished:
            submitted = lambda: any(p != "queued" for p in self.phases.get(job_id, []))  # noqa: E731
            await asyncio.wait_for(self.finished.wait_for(submitted), WAIT_S)

    async def wait_delivered(self, job_id: int) -> Outcome:
        return await asyncio.wait_for(self.wait_for(job_id), WAIT_S)


def make_config(tmp_path: Path, sim: Simulator, port: int, *, webhooks: bool = True,
                secret: str | None = SECRET, **runware: Any) -> Config:
    data = {
        "runware": {
            "api_url": sim.url, "first_poll_after_s": HOUR, "poll_interval_s": HOUR,
            "download_hosts": ["127.0.0.1"], "request_timeout_s": 10.0, "max_retries": 1,
            "webhook_public_url": f"http://127.0.0.1:{port}/runware/hook" if webhooks else "",
            "webhook_listen": f"127.0.0.1:{port}",
            **runware,
        },
        "storage": {"path": str(tmp_path / "webhooks.sqlite3")},
        "limits": {"daily_videos": "unlimited", "monthly_usd": "unlimited", "max_concurrent": "unlimited",
                   "guild_monthly_usd": "unlimited", "global_daily_usd": "unlimited"},
    }
    secrets = Secrets(runware_api_key=SecretStr(SIM_KEY),
                      runware_webhook_secret=SecretStr(secret) if secret else None)
    return Config.model_validate({**data, "secrets": secrets})


class World:
    """A simulator plus, on demand, a real Engine on one database (stop it and start another to
    play a restart)."""

    def __init__(self, tmp_path: Path, sim: Simulator, http: httpx.AsyncClient) -> None:
        self.tmp_path, self.sim, self.http = tmp_path, sim, http
        self.port = free_port()
        self.stack = contextlib.AsyncExitStack()
        self.engine: Engine | None = None
        self.sink = CountingSink(tmp_path / "videos")

    def config(self, **kw: Any) -> Config:
        return make_config(self.tmp_path, self.sim, self.port, **kw)

    async def start(self, cfg: Config | None = None) -> Engine:
        cfg = cfg or self.config()
        db = await open_database(cfg.storage.path)
        self.stack.push_async_callback(db.close)
        client = RunwareClient(api_url=cfg.runware.api_url, api_key=cfg.secrets.runware_api_key,
                               timeout_s=10.0, max_retries=1, poll_batch_size=cfg.runware.poll_batch_size)
        self.stack.push_async_callback(client.aclose)
        # Our own http client: it outlives engine.stop(), so a last tick() can still deliver.
        engine = Engine(cfg=cfg, db=db, client=client, sink=self.sink, http=self.http)
        await engine.start()
        self.engine = engine
        return engine

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.stop()

    async def settle_down(self) -> None:
        """Stop the loop, then run one more tick: anything still owed would be delivered by it."""
        assert self.engine is not None
        await self.engine.stop()
        await self.engine.tick()

    async def create(self, prompt: str = "a red fox running through fresh snow", variations: int = 1):
        assert self.engine is not None
        request = resolve_request(self.engine.cfg, prompt=prompt, variations=variations)
        job = await self.engine.create_job(TERMINAL, request, channel_id=0)
        await self.sink.wait_at_runware(job.id)
        return job

    async def post(self, body: Any, *, token: str | None = SECRET, raw: bytes | None = None,
                   path: str = "/runware/hook") -> tuple[int, str]:
        """POST to the receiver as Runware would (aiohttp: httpx would log the URL, token and all)."""
        params = {"token": token} if token is not None else {}
        data = raw if raw is not None else json.dumps(body).encode()
        async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{self.port}{path}", params=params, data=data,
            headers={"Content-Type": "application/json"},
        ) as resp:
            return resp.status, await resp.text()

    async def close(self) -> None:
        await self.stop()
        await self.stack.aclose()


@pytest.fixture
async def sim():
    simulator = Simulator(api_key=SIM_KEY, speed=1.0, base_generation_s=HOUR)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def world(tmp_path, sim):
    async with httpx.AsyncClient(follow_redirects=False) as http:
        w = World(tmp_path, sim, http)
        try:
            yield w
        finally:
            await w.close()


async def kinds(engine: Engine, job_id: int) -> Counter[str]:
    return Counter(row.kind for row in await ledger_for_job(engine.db, job_id))


async def settled(engine: Engine, job_id: int) -> list[int]:
    return [row.amount_micro for row in await ledger_for_job(engine.db, job_id) if row.kind == "settle"]


def no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text
        assert "wh-s3cret" not in text  # nor a URL-encoded form of it


# ---- the happy path ------------------------------------------------------------------------------


async def test_webhook_alone_finishes_settles_and_delivers_once(world, sim, caplog):
    caplog.set_level(logging.DEBUG)
    engine = await world.start()
    job = await world.create()
    task = sim.stats.tasks[job.task_uuid]
    # What Runware receives: the public URL with the secret as the token.
    sent = task.body["webhookURL"]
    assert sent.startswith(f"http://127.0.0.1:{world.port}/runware/hook?token=")
    assert dict(httpx.URL(sent).params) == {"token": SECRET}

    sim.finish(job.task_uuid)
    outcome = await world.sink.wait_delivered(job.id)
    await world.settle_down()

    assert sim.stats.get_response_tasks == 0  # nobody polled: the webhook did it all
    final = await get_job(engine.db, job.id)
    assert final.state == "succeeded" and final.notified_at is not None
    assert await settled(engine, job.id) == [task.billed_micro] and task.billed_micro > 0
    assert await kinds(engine, job.id) == Counter(reserve=1, settle=1)
    [result] = await results_for_job(engine.db, job.id)
    assert result.video_uuid == task.results[0]["videoUUID"] and result.delivered_at is not None
    assert world.sink.deliveries[job.id] == 1
    assert [f.path.read_bytes() for f in outcome.files] == [sim.mp4]
    assert outcome.cost_micro == task.billed_micro
    assert engine.webhooks.accepted == 1
    no_secret(caplog.text, *(str(r.args) for r in caplog.records))


async def test_several_variations_one_delivery_after_all_webhooks(world, sim):
    engine = await world.start()
    job = await world.create(variations=3)
    task = sim.stats.tasks[job.task_uuid]

    # Two of three variations arrive early (as Runware may push them one by one): recorded, no end yet.
    for item in task.planned[:2]:
        assert await world.post({"data": [item]}) == (200, '{"ok": true}')
    waiting = await get_job(engine.db, job.id)
    assert waiting.state == "processing"
    assert len(await results_for_job(engine.db, job.id)) == 2
    assert await kinds(engine, job.id) == Counter(reserve=1)
    assert world.sink.deliveries[job.id] == 0

    sim.finish(job.task_uuid)  # now the simulator posts all three (two of them again)
    outcome = await world.sink.wait_delivered(job.id)
    await engine.webhooks.wait_accepted(5)
    await world.settle_down()

    assert sim.stats.get_response_tasks == 0
    results = await results_for_job(engine.db, job.id)
    assert sorted(r.video_uuid for r in results) == sorted(i["videoUUID"] for i in task.results)
    assert len(outcome.files) == 3 and all(f.path is not None for f in outcome.files)
    assert world.sink.deliveries[job.id] == 1
    assert await settled(engine, job.id) == [task.billed_micro] == [3 * task.video_micro]


async def test_several_items_in_one_body_are_accepted(world, sim):
    engine = await world.start()
    job = await world.create(variations=2)
    task = sim.stats.tasks[job.task_uuid]
    sim.finish(job.task_uuid)
    # The same two items once more, in one body, possibly before or after the simulator's posts.
    assert (await world.post({"data": task.results}))[0] == 200
    await world.sink.wait_delivered(job.id)
    await engine.webhooks.wait_accepted(3)
    await world.settle_down()
    assert len(await results_for_job(engine.db, job.id)) == 2
    assert await kinds(engine, job.id) == Counter(reserve=1, settle=1)
    assert world.sink.deliveries[job.id] == 1


# ---- a webhook and a poll for the same result ----------------------------------------------------


async def test_webhook_then_poll_and_a_resent_webhook_settle_and_deliver_once(world, sim):
    engine = await world.start()
    job = await world.create(variations=2)
    stale = await get_job(engine.db, job.id)  # what a poller tick that started earlier would hold
    task = sim.stats.tasks[job.task_uuid]
    sim.finish(job.task_uuid)
    await world.sink.wait_delivered(job.id)
    await engine.webhooks.wait_accepted(2)

    # The poll for the same result lands afterwards, through the poller's own path...
    statuses = await engine.client.poll_many([job.task_uuid])
    assert len(statuses[job.task_uuid].results) == 2
    await engine.poller.apply(stale, statuses[job.task_uuid], engine.clock.now())
    # ...and Runware sends a webhook again (our 200 got lost on the way).
    assert (await world.post({"data": [task.results[0]]}))[0] == 200
    await world.settle_down()

    assert await kinds(engine, job.id) == Counter(reserve=1, settle=1)
    assert await settled(engine, job.id) == [task.billed_micro]
    results = await results_for_job(engine.db, job.id)
    assert len(results) == len({r.video_uuid for r in results}) == 2
    assert world.sink.deliveries[job.id] == 1
    assert await unnotified_jobs(engine.db, 1000) == []


async def test_poll_then_webhook_after_a_restart_settle_and_deliver_once(world, sim):
    # Submitted by a bot without webhooks; finished while it was down.
    await world.start(world.config(webhooks=False))
    job = await world.create()
    task = sim.stats.tasks[job.task_uuid]
    assert "webhookURL" not in task.body
    await world.stop()
    sim.finish(job.task_uuid)

    engine = await world.start()  # webhooks on: the resume poll finishes the job first
    await world.sink.wait_delivered(job.id)
    assert sim.stats.get_response_tasks == 1
    # The same result by webhook, late: nothing new happens.
    assert await world.post({"data": task.results}) == (200, '{"ok": true}')
    await world.settle_down()

    assert await kinds(engine, job.id) == Counter(reserve=1, settle=1)
    assert len(await results_for_job(engine.db, job.id)) == 1
    assert world.sink.deliveries[job.id] == 1


async def test_webhooks_racing_a_fast_poller(world, sim):
    """Both paths live at once (poll every 20 ms): every job still settles and delivers once."""
    engine = await world.start(world.config(first_poll_after_s=0.0, poll_interval_s=0.02))
    jobs = [await world.create(variations=n) for n in (1, 2, 3)]
    sim.finish_all()
    for job in jobs:
        await world.sink.wait_delivered(job.id)
    await engine.webhooks.wait_accepted(6)
    await world.settle_down()
    assert sim.stats.get_response_tasks > 0
    for job in jobs:
        task = sim.stats.tasks[job.task_uuid]
        assert await kinds(engine, job.id) == Counter(reserve=1, settle=1)
        assert await settled(engine, job.id) == [task.billed_micro]
        assert len(await results_for_job(engine.db, job.id)) == job.variations
        assert world.sink.deliveries[job.id] == 1


# ---- failures pushed by webhook --------------------------------------------------------------------


async def test_failed_single_video_by_webhook_is_released_and_notified(world, sim):
    engine = await world.start()
    job = await world.create(prompt="FAIL_PROVIDER please")
    sim.finish(job.task_uuid)
    outcome = await world.sink.wait_delivered(job.id)
    await world.settle_down()
    assert sim.stats.get_response_tasks == 0
    final = await get_job(engine.db, job.id)
    assert final.state == "failed" and outcome.files == [] and outcome.failures
    assert await kinds(engine, job.id) == Counter(reserve=1, release=1)
    assert world.sink.deliveries[job.id] == 1


async def test_a_failed_variation_by_webhook_asks_for_a_poll_at_once(world, sim):
    """An error item has no id of its own, so with several variations the full state is polled
    right away (the hour-long poll interval would otherwise hold the job)."""
    engine = await world.start()
    job = await world.create(prompt="FAIL_PARTIAL please", variations=3)
    task = sim.stats.tasks[job.task_uuid]
    sim.finish(job.task_uuid)
    outcome = await world.sink.wait_delivered(job.id)
    await world.settle_down()
    assert sim.stats.get_response_tasks >= 1
    final = await get_job(engine.db, job.id)
    assert (final.state, final.failed_variations) == ("succeeded", 1)
    assert len(outcome.files) == 2 and len(outcome.failures) == 1
    assert await settled(engine, job.id) == [task.billed_micro] == [2 * task.video_micro]
    assert world.sink.deliveries[job.id] == 1


# ---- what the receiver refuses or ignores ------------------------------------------------------------


async def test_missing_or_wrong_token_is_401_and_changes_nothing(world, sim, caplog):
    caplog.set_level(logging.DEBUG)
    engine = await world.start()
    job = await world.create()
    item = sim.stats.tasks[job.task_uuid].planned[0]  # a real, well-formed result
    answers = [
        await world.post({"data": [item]}, token=None),
        await world.post({"data": [item]}, token="wrong"),
        await world.post({"data": [item]}, token=SECRET[:-1]),
        await world.post({"data": [item]}, token=SECRET + "x"),
        await world.post(None, token="wrong", raw=b"not even json"),
    ]
    assert [status for status, _ in answers] == [401] * 5
    no_secret(*(text for _, text in answers))
    assert engine.webhooks.refused == 5 and engine.webhooks.accepted == 0
    assert await results_for_job(engine.db, job.id) == []
    assert (await get_job(engine.db, job.id)).state == "submitted"
    assert await kinds(engine, job.id) == Counter(reserve=1)
    no_secret(caplog.text)


async def test_unknown_task_is_answered_200_and_ignored(world, sim):
    engine = await world.start()
    job = await world.create()
    stranger = {"taskType": "videoInference", "taskUUID": "0b7a1f6e-1111-4222-8333-944455556666",
                "status": "success", "videoUUID": "v-unknown", "videoURL": "https://vm.runware.ai/x.mp4",
                "cost": 0.35}
    assert await world.post({"data": [stranger]}) == (200, '{"ok": true}')
    assert (await world.post({"errors": [{**stranger, "code": "providerError", "message": "no"}]}))[0] == 200
    assert engine.webhooks.unknown == 2
    assert await results_for_job(engine.db, job.id) == []
    assert (await get_job(engine.db, job.id)).state == "submitted"


async def test_malformed_oversized_and_wrong_method_requests(world, sim):
    engine = await world.start()
    assert (await world.post(None, raw=b"{not json"))[0] == 400
    assert (await world.post(None, raw=b"\xff\xfe"))[0] == 400
    assert (await world.post([1, 2]))[0] == 400
    assert (await world.post(None, raw=b"x" * (MAX_BODY_BYTES + 1)))[0] == 413
    assert (await world.post({"data": []}, path="/elsewhere"))[0] == 404
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{world.port}/runware/hook", params={"token": SECRET}) as r:
            assert r.status == 405
    assert engine.webhooks.accepted == 0


# ---- start-up -----------------------------------------------------------------------------------------


async def test_public_url_without_secret_is_a_clear_startup_error(world, tmp_path):
    cfg = world.config(secret=None)
    db = await open_database(tmp_path / "other.sqlite3")
    try:
        async with RunwareClient(api_url=cfg.runware.api_url, api_key=SecretStr(SIM_KEY)) as client:
            with pytest.raises(UserFacingError, match="RUNWARE_WEBHOOK_SECRET"):
                Engine(cfg=cfg, db=db, client=client, sink=world.sink)
    finally:
        await db.close()


async def test_listen_address_in_use_is_a_clear_startup_error(world):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", world.port))
        busy.listen()
        with pytest.raises(UserFacingError, match="webhook_listen") as caught:
            await world.start()
    no_secret(str(caught.value))


def test_settings_and_signed_url(tmp_path):
    sim = Simulator(api_key=SIM_KEY)
    sim.url = "http://127.0.0.1:1/v1"
    assert webhook_settings(make_config(tmp_path, sim, 8788, webhooks=False)) is None
    settings = webhook_settings(make_config(tmp_path, sim, 8788))
    assert (settings.host, settings.port, settings.path) == ("127.0.0.1", 8788, "/runware/hook")
    signed = settings.signed_url()
    no_secret(repr(settings), str(signed), repr(signed))
    assert httpx.URL(signed.get_secret_value()).params["token"] == SECRET
    bad = make_config(tmp_path, sim, 8788).runware.model_copy(update={"webhook_public_url": "ftp://x/hook"})
    with pytest.raises(UserFacingError, match="webhook_public_url"):
        webhook_settings(make_config(tmp_path, sim, 8788).with_overrides(runware=bad))


def test_items_are_grouped_per_task_like_a_poll():
    body = {
        "data": [
            {"taskUUID": "a", "status": "success", "videoUUID": "v1", "videoURL": "u1", "cost": 0.35},
            {"taskUUID": "a", "status": "success", "videoUUID": "v1", "videoURL": "u1", "cost": 0.35},
            {"taskUUID": "b", "status": "error", "code": "providerError", "message": "boom"},
            {"taskUUID": "c", "status": "processing"},
            {"status": "success", "videoUUID": "orphan"},
        ],
        "errors": [{"taskUUID": "a", "code": "timeoutProvider", "message": "slow", "cost": 0}],
    }
    statuses = statuses_from_body(body)
    assert sorted(statuses) == ["a", "b", "c"]
    assert [r.video_uuid for r in statuses["a"].results] == ["v1"]
    assert statuses["a"].results[0].cost_micro == 350_000
    assert [e.code for e in statuses["a"].errors] == ["timeoutProvider"]
    assert [e.code for e in statuses["b"].errors] == ["providerError"]
    assert statuses["c"].processing and not statuses["c"].results
    assert statuses_from_body([{"taskUUID": "a"}]) is None
    assert statuses_from_body({"errors": {"taskUUID": "d", "code": "x", "message": "y"}})["d"].errors
