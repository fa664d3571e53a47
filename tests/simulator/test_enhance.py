"""promptEnhance: the simulator's rules and error shapes over loopback HTTP, and the client's
``enhance_prompt`` through its one exchange path (each call sent once: no retry of its own)."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from bot.runware.client import RunwareClient
from bot.runware.errors import RateLimited, RequestValidationError, ServerError, TransportError
from bot.runware.models import PromptEnhanceTask
from bot.services.enhance import enhance_task_uuid
from bot.simulator import Simulator, run_simulator
from bot.simulator.enhance import MICRO_PER_VERSION, enhanced_text

KEY = "enhance-key"
UUID = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"


def task(**over) -> dict:
    return {"taskType": "promptEnhance", "taskUUID": UUID, "prompt": "a fox", "promptMaxLength": 64,
            "promptVersions": 2, "includeCost": True, **over}


@pytest.fixture
async def sim():
    async with run_simulator(api_key=KEY) as s:
        yield s


async def post(sim: Simulator, body: list) -> httpx.Response:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as c:
        return await c.post(sim.url, json=body)


async def test_versions_texts_and_cost(sim: Simulator) -> None:
    answer = await post(sim, [task()])
    assert answer.status_code == 200
    assert answer.json() == {"data": [
        {"taskType": "promptEnhance", "taskUUID": UUID, "text": enhanced_text("a fox", v, 64), "cost": 0.0003}
        for v in range(2)]}
    assert enhanced_text("a fox", 0, 64) != enhanced_text("a fox", 1, 64)
    assert (sim.stats.enhance_tasks, sim.stats.enhance_billed_micro) == (1, 2 * MICRO_PER_VERSION)
    without = await post(sim, [task(includeCost=False, promptVersions=1)])
    assert "cost" not in without.json()["data"][0]
    assert sim.stats.enhance_calls == {UUID: 2}  # a repeated taskUUID is answered (and billed) again


@pytest.mark.parametrize(("over", "code", "parameter"), [
    ({"prompt": ""}, "invalidPrompt", "prompt"),
    ({"prompt": "x" * 301}, "invalidPrompt", "prompt"),
    ({"promptMaxLength": 11}, "invalidPromptMaxLength", "promptMaxLength"),
    ({"promptMaxLength": 401}, "invalidPromptMaxLength", "promptMaxLength"),
    ({"promptVersions": 0}, "invalidPromptVersions", "promptVersions"),
    ({"promptVersions": 6}, "invalidPromptVersions", "promptVersions"),
    ({"includeCost": "yes"}, "invalidIncludeCost", "includeCost"),
    ({"taskUUID": "not-a-uuid"}, "invalidTaskUUID", "taskUUID"),
    ({"style": "noir"}, "unsupportedParameter", "style"),
    ({"prompt": "SIM_ENHANCE_REFUSE a fox"}, "invalidPrompt", "prompt"),
])
async def test_refusals_name_the_parameter_in_runwares_error_shape(sim, over, code, parameter) -> None:
    answer = await post(sim, [task(**over)])
    assert answer.status_code == 400
    [error] = answer.json()["errors"]
    assert (error["code"], error["parameter"], error["taskType"]) == (code, parameter, "promptEnhance")
    assert "data" not in answer.json() and sim.stats.enhance_tasks == 0


async def test_an_empty_balance_refuses_with_402(sim: Simulator) -> None:
    sim.faults.balance_micro = MICRO_PER_VERSION  # enough for one version, not two
    answer = await post(sim, [task()])
    assert answer.status_code == 402 and answer.json()["errors"][0]["code"] == "insufficientCredits"


async def client_for(sim: Simulator) -> RunwareClient:
    return RunwareClient(api_url=sim.url, api_key=SecretStr(KEY), max_retries=4)


async def test_the_client_sends_one_task_and_reads_every_version(sim: Simulator) -> None:
    uuid = enhance_task_uuid("3cc0f581-1a7e-43d8-bdbb-4ddefb97fef4")
    assert uuid == enhance_task_uuid("3cc0f581-1a7e-43d8-bdbb-4ddefb97fef4") and uuid[14] == "4"
    async with await client_for(sim) as client:
        texts = await client.enhance_prompt(PromptEnhanceTask(task_uuid=uuid, prompt="a fox", max_length=300,
                                                              versions=2))
    assert [(t.task_uuid, t.text, t.cost_micro) for t in texts] == [
        (uuid, enhanced_text("a fox", v, 300), MICRO_PER_VERSION) for v in range(2)]
    assert sim.stats.enhance_bodies[uuid] == {"taskType": "promptEnhance", "taskUUID": uuid, "prompt": "a fox",
                                              "promptMaxLength": 300, "promptVersions": 2, "includeCost": True}


@pytest.mark.parametrize(("fault", "error"), [
    ("503", ServerError), ("429", RateLimited), ("drop", TransportError), ("refuse", RequestValidationError)])
async def test_faults_apply_and_the_client_does_not_retry_a_call(sim: Simulator, fault: str, error) -> None:
    if fault == "drop":
        sim.faults.drop_next = 1
    elif fault != "refuse":
        sim.faults.next_statuses = [int(fault)]
    prompt = "SIM_ENHANCE_REFUSE a fox" if fault == "refuse" else "a fox"
    async with await client_for(sim) as client:
        with pytest.raises(error) as raised:
            await client.enhance_prompt(PromptEnhanceTask(task_uuid=UUID, prompt=prompt, max_length=300))
    assert raised.value.retryable == (fault != "refuse")
    assert sim.stats.http_requests == 1 and sim.stats.enhance_tasks == 0
    if fault == "refuse":
        assert (raised.value.parameter, raised.value.message) == ("prompt", "The prompt was rejected by the "
                                                                            "prompt enhancer.")
