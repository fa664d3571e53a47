"""RunwareClient against the Runware simulator on loopback: retries, batching, fallback, results."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aiohttp import web
from PIL import Image
from pydantic import SecretStr

from bot.runware.client import POLL_CONCURRENCY, RunwareClient
from bot.runware.errors import (
    AuthError,
    BalanceError,
    ConflictTaskUUID,
    ForbiddenError,
    ProviderError,
    RateLimited,
    RequestValidationError,
    RunwareError,
    SafetyError,
    ServerError,
    TaskNotFound,
    TransportError,
    error_for,
)
from bot.runware.models import FrameImage, Safety, TaskError, VideoInferenceTask, new_task_uuid
from bot.simulator.server import run_simulator

KEY = "sk-test-0123456789abcdef-secret"


class RecordingSleep:
    """Stands in for asyncio.sleep: records the delays, waits for nothing."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class CeilingRng(random.Random):
    """uniform(a, b) -> b: makes full jitter show its ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture
async def sim():
    # Slow generation (speed 1): tasks stay `processing` until the test calls finish_all().
    async with run_simulator(api_key=KEY, speed=1.0) as simulator:
        yield simulator


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
async def client(sim, sleeps):
    c = RunwareClient(api_url=sim.url, api_key=SecretStr(KEY), sleep=sleeps, rng=random.Random(7))
    yield c
    await c.aclose()


def make_client(sim, sleeps, **kwargs) -> RunwareClient:
    kwargs.setdefault("api_key", SecretStr(KEY))
    kwargs.setdefault("rng", random.Random(11))
    return RunwareClient(api_url=sim.url, sleep=sleeps, **kwargs)


def video_task(prompt: str = "a red fox running through fresh snow", **overrides) -> VideoInferenceTask:
    fields = dict(
        task_uuid=new_task_uuid(),
        model="klingai:6@1",
        positive_prompt=prompt,
        width=1280,
        height=720,
        duration=5,
        ttl=3600,
        safety=Safety.for_mode("fast"),
    )
    fields.update(overrides)
    return VideoInferenceTask(**fields)


def png_data_uri(width: int = 640, height: int = 360) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# ---- retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_submit_retries_transient_status_then_succeeds(sim, client, sleeps, status):
    sim.faults.next_statuses = [status]
    task = video_task()
    await client.submit(task)
    assert sim.stats.http_requests == 2
    assert client.http_requests == 2
    assert len(sleeps.delays) == 1
    assert 0 <= sleeps.delays[0] <= client.backoff_base_s
    statuses = await client.poll_many([task.task_uuid])
    assert statuses[task.task_uuid].processing
    assert statuses[task.task_uuid].errors == []


async def test_several_transient_failures_in_a_row(sim, client, sleeps):
    sim.faults.next_statuses = [500, 429, 503]
    await client.submit(video_task())
    assert sim.stats.http_requests == 4
    assert len(sleeps.delays) == 3
    assert sim.stats.submits == 1


async def test_dropped_connection_then_success(sim, client, sleeps):
    sim.faults.drop_next = 1
    task = video_task()
    await client.submit(task)
    assert client.http_requests == 2
    assert len(sleeps.delays) == 1
    assert sim.stats.submits == 1


async def test_malformed_json_is_retried(sim, client, sleeps):
    sim.faults.malformed_next = 1
    task = video_task()
    await client.submit(task)
    assert client.http_requests == 2
    assert len(sleeps.delays) == 1


async def test_lost_answer_after_processing_counts_as_accepted(sim, client, sleeps):
    # Runware took the task, the answer was lost; the retry (same taskUUID) gets conflictTaskUUID.
    sim.faults.drop_after_processing_next = 1
    task = video_task()
    await client.submit(task)
    assert client.http_requests == 2
    assert sim.stats.submits == 1
    sim.finish_all()
    statuses = await client.poll_many([task.task_uuid])
    assert len(statuses[task.task_uuid].results) == 1
    assert sim.stats.billed_micro == 350_000


async def test_resubmit_after_crash_is_accepted(sim, client):
    task = video_task()
    await client.submit(task)
    await client.submit(task)  # a restarted bot submits the same queued job again
    assert sim.stats.submits == 1
    sim.finish_all()
    await client.poll_many([task.task_uuid])
    assert sim.stats.billed_micro == 350_000


async def test_400_is_not_retried_and_names_the_parameter(sim, client, sleeps):
    with pytest.raises(RequestValidationError) as info:
        await client.submit(video_task(width=1000))
    assert sim.stats.http_requests == 1
    assert sleeps.delays == []
    assert info.value.parameter == "width"
    assert info.value.status == 400
    assert not info.value.retryable
    assert "size" in info.value.user_message


async def test_401_is_not_retried_and_never_shows_the_key(sim, sleeps):
    wrong = "sk-wrong-key-which-must-not-leak-42"
    c = make_client(sim, sleeps, api_key=SecretStr(wrong))
    try:
        with pytest.raises(AuthError) as info:
            await c.submit(video_task())
    finally:
        await c.aclose()
    assert sim.stats.http_requests == 1
    assert sleeps.delays == []
    error = info.value
    assert error.status == 401
    for text in (str(error), repr(error), error.user_message, error.message, repr(c)):
        assert wrong not in text
        assert KEY not in text
    assert "{" not in error.user_message


async def test_402_balance_is_not_retried(sim, client, sleeps):
    sim.faults.balance_micro = 0
    with pytest.raises(BalanceError) as info:
        await client.submit(video_task())
    assert sim.stats.http_requests == 1
    assert sleeps.delays == []
    assert info.value.status == 402
    assert sim.stats.billed_micro == 0


async def test_403_is_not_retried(sim, client, sleeps):
    sim.faults.next_statuses = [403]
    with pytest.raises(ForbiddenError):
        await client.submit(video_task())
    assert sim.stats.http_requests == 1
    assert sleeps.delays == []


async def test_retries_exhausted_raises_the_mapped_error(sim, sleeps):
    c = make_client(sim, sleeps, max_retries=2)
    sim.faults.next_statuses = [503, 503, 503, 503]
    try:
        with pytest.raises(ServerError) as info:
            await c.submit(video_task())
    finally:
        await c.aclose()
    assert info.value.retryable
    assert info.value.status == 503
    assert sim.stats.http_requests == 3
    assert len(sleeps.delays) == 2


async def test_rate_limit_exhausted_raises_rate_limited(sim, sleeps):
    c = make_client(sim, sleeps, max_retries=1)
    sim.faults.next_statuses = [429, 429]
    try:
        with pytest.raises(RateLimited):
            await c.poll_many([new_task_uuid()])
    finally:
        await c.aclose()
    assert sim.stats.http_requests == 2


async def test_drops_exhausted_raise_transport_error(sim, sleeps):
    c = make_client(sim, sleeps, max_retries=1)
    sim.faults.drop_next = 2
    try:
        with pytest.raises(TransportError) as info:
            await c.submit(video_task())
    finally:
        await c.aclose()
    assert info.value.retryable
    assert KEY not in str(info.value)
    assert len(sleeps.delays) == 1


async def test_backoff_grows_and_is_capped(sim, sleeps):
    c = make_client(sim, sleeps, max_retries=6, rng=CeilingRng(), backoff_base_s=0.5, backoff_cap_s=3.0)
    sim.faults.next_statuses = [500] * 6
    try:
        await c.submit(video_task())
    finally:
        await c.aclose()
    assert sleeps.delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


async def test_backoff_jitter_stays_under_the_ceiling(sim, sleeps):
    c = make_client(sim, sleeps, max_retries=8, rng=random.Random(3), backoff_base_s=0.5, backoff_cap_s=2.0)
    sim.faults.next_statuses = [502] * 8
    try:
        await c.submit(video_task())
    finally:
        await c.aclose()
    ceilings = [min(2.0, 0.5 * 2**attempt) for attempt in range(8)]
    assert len(sleeps.delays) == 8
    assert all(0 <= d <= ceiling for d, ceiling in zip(sleeps.delays, ceilings, strict=True))
    assert len(set(sleeps.delays)) > 1  # jittered, not a fixed schedule


# ---- batching ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "batch"), [(1, 1), (5, 1), (7, 3), (10, 4), (50, 50), (51, 50), (120, 50)])
async def test_one_http_request_per_batch(sim, sleeps, count, batch):
    c = make_client(sim, sleeps, poll_batch_size=batch)
    try:
        tasks = [video_task(f"scene number {i}") for i in range(count)]
        for task in tasks:
            await c.submit(task)
        sim.finish_all()
        before_sim, before_client = sim.stats.poll_requests, c.http_requests
        statuses = await c.poll_many([t.task_uuid for t in tasks])
    finally:
        await c.aclose()
    assert sim.stats.poll_requests - before_sim == math.ceil(count / batch)
    assert c.http_requests - before_client == math.ceil(count / batch)
    assert c.batching_enabled
    assert set(statuses) == {t.task_uuid for t in tasks}
    for task in tasks:
        status = statuses[task.task_uuid]
        assert [r.task_uuid for r in status.results] == [task.task_uuid]
        assert status.errors == []


async def test_a_rounds_batches_are_in_flight_together_up_to_the_cap(sim, sleeps):
    """Sequential batches would put the last batch of a round several round trips after the first,
    stretching the gap between a task's polls past one interval when its batch moves back."""
    c = make_client(sim, sleeps, poll_batch_size=2)
    try:
        tasks = [video_task(f"scene {i}") for i in range(2 * POLL_CONCURRENCY + 1)]
        for task in tasks:
            await c.submit(task)
        sim.faults.hold = asyncio.Event()
        before = sim.stats.poll_requests
        polling = asyncio.create_task(c.poll_many([t.task_uuid for t in tasks]))
        await eventually(lambda: sim.stats.in_flight == POLL_CONCURRENCY)
        assert sim.stats.poll_requests - before == POLL_CONCURRENCY  # the fifth waits for a free slot
        sim.faults.hold.set()
        statuses = await polling
    finally:
        await c.aclose()
    assert sim.stats.poll_requests - before == POLL_CONCURRENCY + 1
    assert sim.stats.max_in_flight == POLL_CONCURRENCY
    assert set(statuses) == {t.task_uuid for t in tasks}


async def eventually(predicate: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met"
        await asyncio.sleep(0.005)


async def test_every_requested_task_gets_a_status(sim, client):
    task = video_task()
    await client.submit(task)
    statuses = await client.poll_many([task.task_uuid])
    assert statuses[task.task_uuid].processing
    assert statuses[task.task_uuid].results == []
    assert await client.poll_many([]) == {}
    assert sim.stats.poll_requests == 1


async def test_unknown_task_in_a_batch_is_reported_for_that_task_only(sim, client):
    known = video_task()
    await client.submit(known)
    sim.finish_all()
    stranger = new_task_uuid()
    statuses = await client.poll_many([known.task_uuid, stranger])
    assert sim.stats.poll_requests == 1
    assert client.batching_enabled
    assert [e.code for e in statuses[stranger].errors] == ["taskNotFound"]
    assert len(statuses[known.task_uuid].results) == 1
    assert statuses[known.task_uuid].errors == []


async def test_fallback_when_runware_rejects_batches(sim, sleeps, caplog):
    sim.faults.reject_batches = True
    c = make_client(sim, sleeps, poll_batch_size=50)
    try:
        tasks = [video_task(f"scene {i}", number_results=2) for i in range(5)]
        for task in tasks:
            await c.submit(task)
        sim.finish_all()
        with caplog.at_level(logging.WARNING, logger="bot.runware.client"):
            before = sim.stats.poll_requests
            first = await c.poll_many([t.task_uuid for t in tasks])
            assert sim.stats.poll_requests - before == 1 + len(tasks)  # the rejected batch, then one each
            assert not c.batching_enabled
            before = sim.stats.poll_requests
            second = await c.poll_many([t.task_uuid for t in tasks])
            assert sim.stats.poll_requests - before == len(tasks)
    finally:
        await c.aclose()
    assert sleeps.delays == []  # a rejected batch is not a transient failure
    for statuses in (first, second):
        for task in tasks:
            assert len({r.video_uuid for r in statuses[task.task_uuid].results}) == 2
            assert statuses[task.task_uuid].errors == []
    warnings = [r for r in caplog.records if r.name == "bot.runware.client" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert KEY not in caplog.text


# ---- results ----------------------------------------------------------------------------------


async def test_three_variations_give_three_distinct_results(sim, client):
    task = video_task(number_results=3)
    await client.submit(task)
    sim.finish_all()
    seen = None
    for _ in range(2):  # getResponse repeats the full state: no duplicates
        status = (await client.poll_many([task.task_uuid]))[task.task_uuid]
        assert len(status.results) == 3
        assert len({r.video_uuid for r in status.results}) == 3
        assert all(r.cost_micro == 350_000 for r in status.results)
        assert all(r.video_url and r.seed is not None for r in status.results)
        assert not status.errors
        uuids = {r.video_uuid for r in status.results}
        assert seen is None or uuids == seen
        seen = uuids


@pytest.mark.parametrize("errors_in_data", [False, True])
async def test_partial_failure(sim, client, errors_in_data):
    sim.faults.errors_in_data = errors_in_data
    task = video_task("FAIL_PARTIAL a fox", number_results=3)
    await client.submit(task)
    sim.finish_all()
    status = (await client.poll_many([task.task_uuid]))[task.task_uuid]
    assert len(status.results) == 2
    assert len(status.errors) == 1
    assert status.errors[0].task_uuid == task.task_uuid
    assert status.errors[0].code == "providerError"


@pytest.mark.parametrize("errors_in_data", [False, True])
async def test_provider_failure(sim, client, errors_in_data):
    sim.faults.errors_in_data = errors_in_data
    ok, bad = video_task(), video_task("FAIL_PROVIDER a fox", number_results=2)
    await client.submit(ok)
    await client.submit(bad)
    sim.finish_all()
    statuses = await client.poll_many([ok.task_uuid, bad.task_uuid])
    assert statuses[bad.task_uuid].results == []
    assert statuses[bad.task_uuid].errors
    assert {e.code for e in statuses[bad.task_uuid].errors} == {"providerError"}
    assert len(statuses[ok.task_uuid].results) == 1


# ---- uploads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("as_object", [False, True])
async def test_upload_then_image_to_video(sim, client, as_object):
    sim.faults.upload_as_object = as_object
    image_uuid = await client.upload_image(png_data_uri())
    assert image_uuid
    assert sim.stats.upload_requests == 1
    task = video_task(
        model="klingai:5@2",
        width=1920,
        height=1080,
        frame_images=(FrameImage(image=image_uuid, frame="first"),),
    )
    await client.submit(task)
    sim.finish_all()
    status = (await client.poll_many([task.task_uuid]))[task.task_uuid]
    assert len(status.results) == 1
    assert status.results[0].cost_micro == 490_000


async def test_upload_retried_after_a_drop(sim, client, sleeps):
    sim.faults.drop_after_processing_next = 1
    image_uuid = await client.upload_image(png_data_uri())
    assert image_uuid
    assert client.http_requests == 2
    assert len(sleeps.delays) == 1


# ---- key check and lifecycle ------------------------------------------------------------------


async def test_check_key(sim, client, sleeps):
    await client.check_key()
    assert sim.stats.http_requests == 1
    bad = make_client(sim, sleeps, api_key=SecretStr("nope-not-the-key"))
    try:
        with pytest.raises(AuthError):
            await bad.check_key()
    finally:
        await bad.aclose()


async def test_aclose_leaves_a_borrowed_http_client_open(sim, sleeps):
    async with httpx.AsyncClient() as http:
        c = make_client(sim, sleeps, http=http)
        await c.check_key()
        await c.aclose()
        assert not http.is_closed
        await c.check_key()
    own = make_client(sim, sleeps)
    await own.check_key()
    await own.aclose()
    assert own._http.is_closed


# ---- answers the simulator never gives, from a canned loopback server ---------------------------


@asynccontextmanager
async def canned_runware(answers: list[tuple[int, Any]]) -> AsyncIterator[tuple[str, list[dict]]]:
    """A loopback server answering each POST with the next (status, JSON body); records requests."""
    received: list[dict] = []

    async def handle(request: web.Request) -> web.Response:
        received.append({"auth": request.headers.get("Authorization"), "body": await request.json()})
        status, body = answers.pop(0)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/v1", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1", received
    finally:
        await runner.cleanup()


async def test_poll_dedupes_ignores_strangers_and_reads_unnamed_errors(sleeps):
    mine, stranger = new_task_uuid(), new_task_uuid()

    def success(task_uuid: str, video_uuid: str) -> dict:
        return {"taskType": "videoInference", "taskUUID": task_uuid, "status": "success",
                "videoUUID": video_uuid, "videoURL": f"https://vm.runware.ai/{video_uuid}.mp4",
                "seed": 5, "cost": 0.35}

    body = {
        "data": [success(mine, "v1"), success(mine, "v1"), success(mine, "v2"), success(stranger, "v9"),
                 {"taskType": "videoInference", "taskUUID": mine, "status": "queued"}],
        "errors": [{"code": "timeoutProvider", "message": "The provider timed out."}],
    }
    async with canned_runware([(200, body)]) as (url, received):
        c = RunwareClient(api_url=url, api_key=SecretStr(KEY), sleep=sleeps)
        try:
            statuses = await c.poll_many([mine])
        finally:
            await c.aclose()
    assert received == [{"auth": f"Bearer {KEY}", "body": [{"taskType": "getResponse", "taskUUID": mine}]}]
    assert set(statuses) == {mine}
    status = statuses[mine]
    assert [r.video_uuid for r in status.results] == ["v1", "v2"]
    assert [r.cost_micro for r in status.results] == [350_000, 350_000]
    assert [e.code for e in status.errors] == ["timeoutProvider"]
    assert status.processing


async def test_echoed_key_is_scrubbed_from_errors(sleeps):
    body = {"errors": [{"code": "invalidApiKey", "message": f"Invalid API key {KEY}", "parameter": "apiKey",
                        "taskType": "authentication"}]}
    async with canned_runware([(401, body)]) as (url, received):
        c = RunwareClient(api_url=url, api_key=SecretStr(KEY), sleep=sleeps)
        try:
            with pytest.raises(AuthError) as info:
                await c.submit(video_task())
        finally:
            await c.aclose()
    assert len(received) == 1
    assert KEY not in str(info.value)
    assert KEY not in info.value.message
    assert "Invalid API key" in str(info.value)


async def test_submit_accepts_an_empty_ack_and_reports_task_errors(sleeps):
    task, bad = video_task(), video_task()
    refusal = {"errors": [{"code": "invalidCFGScale", "message": "CFGScale must be 0..1",
                           "parameter": "CFGScale", "taskType": "videoInference", "taskUUID": bad.task_uuid,
                           "allowedValues": [0, 1]}]}
    async with canned_runware([(200, {"data": []}), (400, refusal)]) as (url, received):
        c = RunwareClient(api_url=url, api_key=SecretStr(KEY), sleep=sleeps)
        try:
            await c.submit(task)
            with pytest.raises(RequestValidationError) as info:
                await c.submit(bad)
        finally:
            await c.aclose()
    assert received[0]["body"][0]["taskUUID"] == task.task_uuid
    assert info.value.parameter == "CFGScale"
    assert info.value.task_uuid == bad.task_uuid
    assert info.value.user_message == "Runware did not accept the CFG scale. Allowed: 0, 1."
    assert sleeps.delays == []


# ---- error mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "expected", "retryable"),
    [
        (401, "invalidApiKey", AuthError, False),
        (401, "missingApiKey", AuthError, False),
        (401, "somethingNew", AuthError, False),
        (402, "insufficientCredits", BalanceError, False),
        (403, "forbidden", ForbiddenError, False),
        (400, "invalidPositivePrompt", RequestValidationError, False),
        (400, "unsupportedDuration", RequestValidationError, False),
        (400, "conflictTaskUUID", ConflictTaskUUID, False),
        (200, "taskNotFound", TaskNotFound, False),
        (None, "providerError", ProviderError, True),
        (None, "timeoutProvider", ProviderError, True),
        (None, "contentModerationFailed", SafetyError, False),
        (200, "nsfwContentDetected", SafetyError, False),
        (429, "rateLimitExceeded", RateLimited, True),
        (502, "badGateway", ServerError, True),
        (504, "somethingNew", ServerError, True),
    ],
)
def test_error_for_maps_codes_then_statuses(status, code, expected, retryable):
    error = error_for(status, TaskError(code=code, message="m", parameter="width"))
    assert type(error) is expected
    assert error.retryable is retryable
    assert error.code == code and error.status == status
    assert error.user_message and "{" not in error.user_message


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, RequestValidationError), (401, AuthError), (402, BalanceError), (403, ForbiddenError),
     (429, RateLimited), (500, ServerError), (None, RunwareError)],
)
def test_error_for_without_an_item_uses_the_status(status, expected):
    assert type(error_for(status, None)) is expected


@pytest.mark.parametrize("code", ["taskNotFound", "invalidTaskUUID", "noTaskFound"])
async def test_check_key_takes_any_answer_about_the_probe_task_as_a_working_key(sleeps, code):
    # Runware authenticates before it reads the tasks: whatever it says about the unknown probe task
    # (its codes are "being standardized"), the key was accepted. Only 401/402/403 refuse it.
    about_task = {"errors": [{"code": code, "message": "No task with this UUID.", "parameter": "taskUUID",
                              "taskType": "getResponse"}]}
    refused = {"errors": [{"code": "invalidApiKey", "message": "Invalid API key.", "parameter": "apiKey",
                           "taskType": "authentication"}]}
    async with canned_runware([(400, about_task), (401, refused), (402, {}), (403, {})]) as (url, received):
        c = RunwareClient(api_url=url, api_key=SecretStr(KEY), sleep=sleeps)
        try:
            await c.check_key()
            with pytest.raises(AuthError):
                await c.check_key()
            with pytest.raises(BalanceError):
                await c.check_key()
            with pytest.raises(ForbiddenError):
                await c.check_key()
        finally:
            await c.aclose()
    assert len(received) == 4


# ---- the retry decision is the error's own `retryable` ---------------------------------------------


async def poll_against(answers: list[tuple[int, Any]], sleeps, task_uuid: str):
    async with canned_runware(answers) as (url, received):
        c = RunwareClient(api_url=url, api_key=SecretStr(KEY), sleep=sleeps, max_retries=2)
        try:
            return await c.poll_many([task_uuid]), received
        finally:
            await c.aclose()


async def test_a_5xx_naming_a_refused_key_is_not_retried(sleeps):
    body = {"errors": [{"code": "invalidApiKey", "message": "Invalid API key."}]}
    with pytest.raises(AuthError):
        await poll_against([(500, body)], sleeps, new_task_uuid())
    assert sleeps.delays == []


async def test_a_provider_failure_of_the_request_is_retried(sleeps):
    task = new_task_uuid()
    trouble = {"errors": [{"code": "providerUnavailable", "message": "The provider is down."}]}
    ok = {"data": [{"taskType": "videoInference", "taskUUID": task, "status": "processing"}]}
    statuses, received = await poll_against([(400, trouble), (200, ok)], sleeps, task)
    assert len(received) == 2 and len(sleeps.delays) == 1
    assert statuses[task].processing


async def test_an_error_naming_a_task_is_that_tasks_answer_not_a_retry(sleeps):
    task = new_task_uuid()
    failed = {"errors": [{"code": "providerError", "message": "The provider failed.", "taskUUID": task}]}
    statuses, received = await poll_against([(400, failed)], sleeps, task)
    assert len(received) == 1 and sleeps.delays == []
    assert [e.code for e in statuses[task].errors] == ["providerError"]


async def test_a_malformed_item_is_left_out_and_the_others_are_read(sleeps, caplog):
    task = new_task_uuid()
    body = {"data": [
        {"taskType": "videoInference", "taskUUID": task, "status": "success", "videoUUID": "bad", "seed": "x"},
        {"taskType": "videoInference", "taskUUID": task, "status": "success", "videoUUID": "v1",
         "videoURL": "https://vm.runware.ai/v1.mp4", "seed": 5, "cost": 0.35},
    ]}
    with caplog.at_level(logging.WARNING, logger="bot.runware.fold"):
        statuses, _ = await poll_against([(200, body)], sleeps, task)
    assert [r.video_uuid for r in statuses[task].results] == ["v1"]
    assert "malformed Runware item" in caplog.text
