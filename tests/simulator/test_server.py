"""The Runware simulator, spoken to over loopback HTTP exactly as a client would."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import uuid
from typing import Any

import httpx
import pytest
from aiohttp import web

from bot.simulator import Simulator, make_small, run_simulator
from tests.fakes.runware_tasks import KEY, PNG, PNG_URI, call, poll, video_task


@pytest.fixture
async def sim():
    async with run_simulator(seed=1234) as s:
        yield s


@pytest.fixture
async def client(sim: Simulator):
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as c:
        yield c


# ---- auth ----------------------------------------------------------------------------------------


async def test_missing_and_wrong_api_key(sim: Simulator):
    async with httpx.AsyncClient() as plain:
        missing = await plain.post(sim.url, json=[{"taskType": "ping"}])
        ping = [{"taskType": "ping"}]
        wrong = await plain.post(sim.url, json=ping, headers={"Authorization": "Bearer nope"})
        basic = await plain.post(sim.url, json=ping, headers={"Authorization": f"Basic {KEY}"})
        via_task = await plain.post(sim.url, json=[{"taskType": "authentication", "apiKey": KEY},
                                                   {"taskType": "ping"}])
    assert missing.status_code == 401 and missing.json()["errors"][0]["code"] == "missingApiKey"
    assert wrong.status_code == 401 and wrong.json()["errors"][0]["code"] == "invalidApiKey"
    assert basic.status_code == 401 and basic.json()["errors"][0]["code"] == "invalidApiKey"
    assert via_task.status_code == 200
    assert [i["taskType"] for i in via_task.json()["data"]] == ["authentication", "ping"]
    assert sim.stats.submits == 0


async def test_custom_key_is_the_only_one_accepted():
    async with run_simulator(api_key="s3cret") as s, httpx.AsyncClient() as c:
        ok = await c.post(s.url, json=[{"taskType": "ping"}], headers={"Authorization": "Bearer s3cret"})
        bad = await c.post(s.url, json=[{"taskType": "ping"}], headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200 and bad.status_code == 401


# ---- validation ----------------------------------------------------------------------------------

T21, T25 = "klingai:5@2", "klingai:6@1"
NOT_UPLOADED = str(uuid.uuid4())
CASES = [
    # (model, overrides, code, parameter, allowedValues or None)
    (T25, {"taskUUID": "not-a-uuid"}, "invalidTaskUUID", "taskUUID", None),
    (T25, {"taskUUID": str(uuid.uuid1())}, "invalidTaskUUID", "taskUUID", None),
    (T25, {"model": "klingai:9@9"}, "invalidModel", "model", [T21, T25]),
    (T25, {"positivePrompt": None}, "invalidPositivePrompt", "positivePrompt", None),
    (T25, {"positivePrompt": "a"}, "invalidPositivePrompt", "positivePrompt", None),
    (T21, {"positivePrompt": "x" * 2501}, "invalidPositivePrompt", "positivePrompt", None),
    (T25, {"negativePrompt": "x"}, "invalidNegativePrompt", "negativePrompt", None),
    (T21, {"negativePrompt": "x" * 2501}, "invalidNegativePrompt", "negativePrompt", None),
    (T25, {"width": 1920, "height": 1080}, "invalidWidth", "width", [720, 1280]),
    (T21, {"width": 1280, "height": 720}, "invalidWidth", "width", [1080, 1920]),
    (T25, {"width": 1280, "height": 1280}, "invalidHeight", "height", [720]),
    (T21, {"width": 1080, "height": 720}, "invalidHeight", "height", [1080, 1920]),
    (T25, {"duration": 7}, "unsupportedDuration", "duration", [5, 10]),
    (T21, {"duration": 15}, "unsupportedDuration", "duration", [5, 10]),
    (T25, {"CFGScale": 1.5}, "invalidCFGScale", "CFGScale", None),
    (T21, {"CFGScale": -0.01}, "invalidCFGScale", "CFGScale", None),
    (T25, {"CFGScale": 0.555}, "invalidCFGScale", "CFGScale", None),
    (T25, {"numberResults": 0}, "invalidNumberResults", "numberResults", None),
    (T21, {"numberResults": 5}, "invalidNumberResults", "numberResults", None),
    (T25, {"outputFormat": "GIF"}, "invalidOutputFormat", "outputFormat", ["MP4", "WEBM", "MOV"]),
    (T25, {"outputQuality": 19}, "invalidOutputQuality", "outputQuality", None),
    (T21, {"outputQuality": 100}, "invalidOutputQuality", "outputQuality", None),
    (T25, {"deliveryMethod": "sync"}, "invalidDeliveryMethod", "deliveryMethod", ["async"]),
    (T25, {"outputType": "base64Data"}, "invalidOutputType", "outputType", ["URL"]),
    (T25, {"ttl": 59}, "invalidTtl", "ttl", None),
    (T25, {"safety": {"checkContent": True, "mode": "paranoid"}}, "invalidSafetyMode", "safety.mode",
     ["none", "fast", "full"]),
    (T25, {"prompt": "typo of positivePrompt"}, "unsupportedParameter", "prompt", None),
    (T21, {"inputs": None}, "invalidFrameImages", "inputs.frameImages", None),
    (T25, {"inputs": {"frameImages": []}}, "invalidFrameImages", "inputs.frameImages", None),
    (T25, {"inputs": {"frameImages": [PNG_URI] * 3}}, "invalidFrameImages", "inputs.frameImages", None),
    (T21, {"inputs": {"frameImages": [NOT_UPLOADED]}}, "invalidFrameImages", "inputs.frameImages", None),
    (T25, {"inputs": {"frameImages": ["http://example.com/a.png"]}}, "invalidFrameImages",
     "inputs.frameImages", None),
    (T25, {"inputs": {"frameImages": ["bm90IGFuIGltYWdl"]}}, "invalidFrameImages",
     "inputs.frameImages", None),
    (T21, {"inputs": {"frameImages": [{"image": PNG_URI, "frame": "middle"}]}}, "invalidFrameImages",
     "inputs.frameImages", ["first", "last", 0, -1]),
    (T21, {"inputs": {"frameImages": [{"image": PNG_URI, "frame": "first"}, {"image": PNG_URI, "frame": 0}]}},
     "invalidFrameImages", "inputs.frameImages", None),
]


@pytest.mark.parametrize(("model", "overrides", "code", "parameter", "allowed"), CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
async def test_validation_errors(client, sim, model, overrides, code, parameter, allowed):
    task = video_task(model, **overrides)
    status, body = await call(client, sim, [task])
    assert status == 400
    assert "data" not in body
    [error] = body["errors"]
    assert error["code"] == code
    assert error["parameter"] == parameter
    assert error["taskType"] == "videoInference"
    assert error["taskUUID"] == task["taskUUID"]
    assert error["message"]
    assert error["documentation"].startswith("https://")
    if allowed is not None:
        assert error["allowedValues"] == allowed
    assert sim.stats.submits == 0 and sim.stats.tasks == {}


async def test_every_documented_key_and_frame_shape_is_accepted(client, sim):
    status, body = await call(client, sim, [{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()),
                                             "image": PNG_URI}])
    image_uuid = body["data"][0]["imageUUID"]
    full = video_task(
        "klingai:6@1", width=720, height=1280, duration=10, negativePrompt="blurry, low detail",
        CFGScale=0.72, numberResults=2, outputFormat="WEBM", outputQuality=20, ttl=60, seed=42,
        safety={"checkContent": True, "mode": "full"}, webhookURL="http://127.0.0.1:9/hook?token=t",
        uploadEndpoint="https://storage.example.com/put/here",
        inputs={"frameImages": [image_uuid,
                                {"image": "https://assets.example.com/last.jpg", "frame": "last"}]},
    )
    shapes = [
        video_task("klingai:5@2", width=1080, height=1080, inputs={"frameImages": [{"image": image_uuid}]}),
        video_task("klingai:5@2", width=1080, height=1920,
                   inputs={"frameImages": [{"image": PNG_URI, "frame": -1},
                                           {"image": image_uuid, "frame": 0}]}),
        video_task("klingai:6@1", width=720, height=720, duration=5.0, outputFormat="MOV", outputQuality=99,
                   inputs={"frameImages": [base64.b64encode(PNG).decode()]}),
    ]
    status, body = await call(client, sim, [full, *shapes])
    assert status == 200, body
    assert "errors" not in body
    acks = [{"taskType": "videoInference", "taskUUID": t["taskUUID"]} for t in [full, *shapes]]
    assert body["data"] == acks
    assert sim.stats.submits == 4
    assert sim.stats.tasks[full["taskUUID"]].body == full


@pytest.mark.parametrize(("model", "size"), [(T25, (1280, 720)), (T21, (1920, 1080))])
async def test_one_uploaded_image_as_both_first_and_last_frame_is_accepted(client, sim, model, size):
    # A loop: the model pages allow any image in either position; nothing says the two must differ.
    status, body = await call(client, sim, [{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()),
                                             "image": PNG_URI}])
    image_uuid = body["data"][0]["imageUUID"]
    task = video_task(model, width=size[0], height=size[1],
                      inputs={"frameImages": [{"image": image_uuid, "frame": "first"},
                                              {"image": image_uuid, "frame": "last"}]})
    status, body = await call(client, sim, [task])
    assert status == 200 and "errors" not in body, body
    assert sim.stats.tasks[task["taskUUID"]].body == task


async def test_one_bad_task_does_not_sink_the_others(client, sim):
    good, bad = video_task(), video_task(duration=8)
    status, body = await call(client, sim, [good, bad])
    assert status == 400
    assert body["data"] == [{"taskType": "videoInference", "taskUUID": good["taskUUID"]}]
    assert [(e["code"], e["taskUUID"]) for e in body["errors"]] == [("unsupportedDuration", bad["taskUUID"])]
    assert list(sim.stats.tasks) == [good["taskUUID"]]


async def test_request_shape_errors(client, sim):
    status, body = await call(client, sim, {"taskType": "getResponse"})
    assert status == 400 and body["errors"][0]["code"] == "invalidRequestBody"
    status, body = await call(client, sim, [{"taskType": "imageInference", "taskUUID": str(uuid.uuid4())}])
    assert status == 400 and body["errors"][0]["code"] == "invalidTaskType"


# ---- the life of a task --------------------------------------------------------------------------


async def test_ack_processing_then_stable_success_items(client, sim):
    task = video_task(numberResults=3)
    tid = task["taskUUID"]
    status, body = await call(client, sim, [task])
    assert (status, body) == (200, {"data": [{"taskType": "videoInference", "taskUUID": tid}]})
    assert not sim.task_ready(tid)
    status, body = await call(client, sim, poll(tid))
    assert (status, body) == (200, {"data": [{"taskType": "videoInference", "taskUUID": tid,
                                              "status": "processing"}]})
    assert sim.stats.billed_micro == 0
    sim.finish_all()
    assert sim.task_ready(tid)
    _, first = await call(client, sim, poll(tid))
    _, second = await call(client, sim, poll(tid))
    assert first == second  # the full state, every time
    items = first["data"]
    assert len(items) == 3 and "errors" not in first
    for item in items:
        assert item["taskType"] == "videoInference" and item["taskUUID"] == tid
        assert item["status"] == "success"
        assert uuid.UUID(item["videoUUID"]).version == 4
        assert item["videoURL"] == f"{sim.url.removesuffix('/v1')}/video/{item['videoUUID']}.mp4"
        assert isinstance(item["seed"], int)
        assert item["cost"] == 0.35
        assert "NSFWContent" not in item
    assert len({i["videoUUID"] for i in items}) == 3
    assert sim.stats.billed_micro == 3 * 350_000
    assert sim.stats.tasks[tid].billed_micro == 3 * 350_000


async def test_generation_time_follows_duration_and_speed():
    now = [1000.0]
    async with run_simulator(clock=lambda: now[0], speed=4, base_generation_s=60) as s, \
            httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as c:
        short, long = video_task(duration=5), video_task(duration=10)
        await c.post(s.url, json=[short, long])
        now[0] += 14.99  # 60 * 1 / 4 = 15 s
        assert not s.task_ready(short["taskUUID"])
        now[0] += 0.01
        body = (await c.post(s.url, json=poll(short["taskUUID"], long["taskUUID"]))).json()
        assert [i["status"] for i in body["data"]] == ["success", "processing"]
        now[0] += 15  # 60 * 2 / 4 = 30 s
        body = (await c.post(s.url, json=poll(long["taskUUID"]))).json()
        assert [i["status"] for i in body["data"]] == ["success"]


@pytest.mark.parametrize(("model", "duration", "include", "expected", "billed"), [
    ("klingai:6@1", 10, True, 0.7, 700_000),
    ("klingai:5@2", 5, True, 0.49, 490_000),
    ("klingai:5@2", 10, True, 0.98, 980_000),
    ("klingai:6@1", 5, False, None, 350_000),
])
async def test_costs(client, sim, model, duration, include, expected, billed):
    task = video_task(model, duration=duration, includeCost=include)
    await call(client, sim, [task])
    sim.finish_all()
    _, body = await call(client, sim, poll(task["taskUUID"]))
    assert body["data"][0].get("cost") == expected
    assert sim.stats.billed_micro == billed


async def test_fail_provider_fails_every_variation_and_bills_nothing(client, sim):
    task = video_task(positivePrompt="please FAIL_PROVIDER now", numberResults=2)
    await call(client, sim, [task])
    sim.finish_all()
    status, body = await call(client, sim, poll(task["taskUUID"]))
    assert status == 200 and "data" not in body
    assert len(body["errors"]) == 2
    for error in body["errors"]:
        assert error["code"] == "providerError"
        assert "provider failed" in error["message"]
        assert error["taskUUID"] == task["taskUUID"] and error["cost"] == 0
    sim.faults.errors_in_data = True
    _, body = await call(client, sim, poll(task["taskUUID"]))
    assert "errors" not in body
    assert [(i["status"], i["code"]) for i in body["data"]] == [("error", "providerError")] * 2
    assert sim.stats.billed_micro == 0


async def test_fail_partial_fails_only_the_last_variation(client, sim):
    task = video_task(positivePrompt="FAIL_PARTIAL fox", numberResults=3, duration=10)
    await call(client, sim, [task])
    sim.finish_all()
    _, body = await call(client, sim, poll(task["taskUUID"]))
    assert [i["status"] for i in body["data"]] == ["success", "success"]
    assert [e["code"] for e in body["errors"]] == ["providerError"]
    assert sim.stats.billed_micro == 2 * 700_000


async def test_fail_rate_and_nsfw(client):
    async with run_simulator(fail_rate=1.0, seed=3) as failing, \
            httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as c:
        task = video_task()
        await c.post(failing.url, json=[task])
        failing.finish_all()
        body = (await c.post(failing.url, json=poll(task["taskUUID"]))).json()
        assert [e["code"] for e in body["errors"]] == ["providerError"]
    async with run_simulator() as s, httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as c:
        task = video_task(positivePrompt="SIM_NSFW beach")
        await c.post(s.url, json=[task])
        s.finish_all()
        body = (await c.post(s.url, json=poll(task["taskUUID"]))).json()
        assert body["data"][0]["NSFWContent"] is True and body["data"][0]["status"] == "success"
        assert s.stats.billed_micro == 350_000


async def test_conflicting_resubmit_is_refused_and_billed_once(client, sim):
    task = video_task()
    sim.faults.drop_after_processing_next = 1
    with pytest.raises(httpx.TransportError):
        await client.post(sim.url, json=[task])  # accepted, answer lost
    status, body = await call(client, sim, [task])
    assert status == 400
    [error] = body["errors"]
    assert (error["code"], error["taskUUID"]) == ("conflictTaskUUID", task["taskUUID"])
    sim.finish_all()
    assert sim.stats.submits == 1
    assert sim.stats.billed_micro == 350_000


async def test_batched_get_response(client, sim):
    done, running = video_task(numberResults=2), video_task(duration=10)
    await call(client, sim, [done, running])
    sim.finish(done["taskUUID"])
    unknown = str(uuid.uuid4())
    before = sim.stats.poll_requests
    status, body = await call(client, sim, poll(done["taskUUID"], running["taskUUID"], unknown))
    assert status == 200
    assert [(i["taskUUID"], i["status"]) for i in body["data"]] == [
        (done["taskUUID"], "success"), (done["taskUUID"], "success"), (running["taskUUID"], "processing")]
    [error] = body["errors"]
    assert (error["code"], error["taskUUID"]) == ("taskNotFound", unknown)
    assert sim.stats.poll_requests == before + 1


async def test_reject_batches(client, sim):
    task = video_task()
    await call(client, sim, [task])
    sim.faults.reject_batches = True
    status, body = await call(client, sim, poll(task["taskUUID"], task["taskUUID"]))
    assert status == 400
    [error] = body["errors"]
    assert error["code"] == "invalidRequestBody" and "taskUUID" not in error
    status, body = await call(client, sim, poll(task["taskUUID"]))
    assert status == 200 and body["data"][0]["status"] == "processing"


# ---- uploads, balance, media ---------------------------------------------------------------------


async def test_image_upload_shapes_and_errors(client, sim):
    tid = str(uuid.uuid4())
    status, body = await call(client, sim, [{"taskType": "imageUpload", "taskUUID": tid, "image": PNG_URI}])
    assert status == 200
    [item] = body["data"]
    assert item["taskType"] == "imageUpload" and item["taskUUID"] == tid
    assert uuid.UUID(item["imageUUID"]).version == 4
    assert sim.images[item["imageUUID"]] == PNG
    fetched = await client.get(item["imageURL"])
    assert fetched.content == PNG and fetched.headers["content-type"] == "image/png"
    sim.faults.upload_as_object = True
    for image in (base64.b64encode(PNG).decode(), "https://assets.example.com/in.jpg"):
        status, body = await call(client, sim, [{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()),
                                                 "image": image}])
        assert status == 200 and isinstance(body["data"], dict) and body["data"]["imageUUID"]
    for bad in ("data:image/png;base64,!!!", base64.b64encode(b"hello").decode(), "", 12):
        status, body = await call(client, sim, [{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()),
                                                 "image": bad}])
        assert status == 400 and body["errors"][0]["code"] == "invalidImage"
    assert sim.stats.upload_requests == 7


async def test_insufficient_balance_is_402(client, sim):
    sim.faults.balance_micro = 500_000
    first, second = video_task(), video_task()
    status, _ = await call(client, sim, [first])
    assert status == 200
    status, body = await call(client, sim, [second])
    assert status == 402
    [error] = body["errors"]
    assert (error["code"], error["taskUUID"]) == ("insufficientCredits", second["taskUUID"])
    sim.faults.balance_micro = None
    status, _ = await call(client, sim, [second])
    assert status == 200
    assert sim.stats.submits == 2


async def test_video_download_is_the_mp4(client, sim):
    task = video_task()
    await call(client, sim, [task])
    sim.finish_all()
    _, body = await call(client, sim, poll(task["taskUUID"]))
    resp = await client.get(body["data"][0]["videoURL"])
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "video/mp4"
    assert int(resp.headers["content-length"]) == len(resp.content)
    assert resp.content == make_small("MP4") and resp.content[4:8] == b"ftyp"
    missing = await client.get(f"{sim.url.removesuffix('/v1')}/video/{uuid.uuid4()}.mp4")
    assert missing.status_code == 404


# ---- webhooks ------------------------------------------------------------------------------------


class Receiver:
    """A tiny webhook endpoint on loopback that can fail its first answers."""

    def __init__(self, want: int, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.queries: list[str] = []
        self.fail_first = fail_first
        self.want = want
        self.done = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_post("/hook", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=500)
        self.bodies.append(await request.json())
        self.queries.append(request.query_string)
        if len(self.bodies) >= self.want:
            self.done.set()
        return web.Response(text="ok")


@pytest.fixture
async def receiver_factory():
    runners = []

    async def make(want: int, fail_first: int = 0) -> tuple[Receiver, str]:
        receiver = Receiver(want, fail_first)
        runner = web.AppRunner(receiver.app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return receiver, f"http://127.0.0.1:{runner.addresses[0][1]}/hook?token=abc"

    yield make
    for runner in runners:
        await runner.cleanup()


async def test_webhook_posts_each_item_and_retries(client, sim, receiver_factory):
    receiver, url = await receiver_factory(want=2, fail_first=1)
    task = video_task(numberResults=2, webhookURL=url)
    await call(client, sim, [task])
    sim.finish_all()
    await asyncio.wait_for(receiver.done.wait(), 10)
    _, polled = await call(client, sim, poll(task["taskUUID"]))
    assert receiver.bodies == [{"data": [item]} for item in polled["data"]]
    assert receiver.queries == ["token=abc", "token=abc"]
    assert sim.stats.webhook_posts == 3  # one retry after the 500


async def test_webhook_fires_at_ready_time_with_errors(receiver_factory):
    receiver, url = await receiver_factory(want=1)
    async with run_simulator(base_generation_s=0.05) as s, \
            httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as c:
        task = video_task(positivePrompt="FAIL_PROVIDER", webhookURL=url)
        await c.post(s.url, json=[task])
        await asyncio.wait_for(receiver.done.wait(), 10)  # no finish_all: the scheduler fires it
        [body] = receiver.bodies
        assert body["errors"][0]["code"] == "providerError"
        assert body["errors"][0]["taskUUID"] == task["taskUUID"]


# ---- faults and counters -------------------------------------------------------------------------


async def test_forced_statuses_drops_and_malformed(client, sim):
    sim.faults.next_statuses = [429, 503]
    status, body = await call(client, sim, [{"taskType": "ping"}])
    assert status == 429 and body["errors"][0]["code"] == "rateLimitExceeded"
    status, body = await call(client, sim, [{"taskType": "ping"}])
    assert status == 503 and body["errors"][0]["code"]
    task = video_task()
    sim.faults.drop_next = 1
    with pytest.raises(httpx.TransportError):
        await client.post(sim.url, json=[task])
    assert sim.stats.submits == 0  # dropped before processing
    sim.faults.malformed_next = 1
    resp = await client.post(sim.url, json=[task])
    assert resp.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        resp.json()
    assert sim.stats.submits == 0
    status, _ = await call(client, sim, [task])
    assert status == 200 and sim.stats.submits == 1


async def test_random_fault_rates(client, sim):
    sim.faults.rate_5xx = 1.0
    statuses = {(await client.post(sim.url, json=[{"taskType": "ping"}])).status_code for _ in range(12)}
    assert statuses <= {500, 502, 503} and statuses
    sim.faults.rate_5xx, sim.faults.rate_429 = 0.0, 1.0
    assert (await client.post(sim.url, json=[{"taskType": "ping"}])).status_code == 429
    sim.faults.rate_429, sim.faults.rate_drop = 0.0, 1.0
    with pytest.raises(httpx.TransportError):
        await client.post(sim.url, json=[{"taskType": "ping"}])
    sim.faults.reset()
    assert (await client.post(sim.url, json=[{"taskType": "ping"}])).status_code == 200


async def test_latency_delays_the_answer(client, sim):
    loop = asyncio.get_running_loop()
    sim.faults.latency_s = 0.05
    started = loop.time()
    await client.post(sim.url, json=[{"taskType": "ping"}])
    assert loop.time() - started >= 0.05  # a floor that asyncio.sleep guarantees


async def test_stats_counters_and_wait_submitted(client, sim):
    waiter = asyncio.create_task(sim.wait_submitted(2))
    tasks = [video_task(), video_task()]
    await call(client, sim, [tasks[0]])
    assert not waiter.done()
    await call(client, sim, [tasks[1]])
    await asyncio.wait_for(waiter, 5)
    await call(client, sim, poll(tasks[0]["taskUUID"]))
    await call(client, sim, poll(tasks[0]["taskUUID"], tasks[1]["taskUUID"]))
    await call(client, sim, [{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": PNG_URI}])
    s = sim.stats
    counts = (s.http_requests, s.poll_requests, s.get_response_tasks, s.submits, s.upload_requests)
    assert counts == (5, 2, 3, 2, 1)
    assert set(s.tasks) == {t["taskUUID"] for t in tasks}


async def test_serve_runs_as_a_process():
    code = "from bot.simulator import serve; serve('127.0.0.1', 0, 'cli-key', 1000.0, 0.0)"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        url = next(word for word in line.split() if word.startswith("http://"))
        assert "cli-key" not in line
        async with httpx.AsyncClient(headers={"Authorization": "Bearer cli-key"}) as c:
            resp = await c.post(url, json=[video_task()])
        assert resp.status_code == 200
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
