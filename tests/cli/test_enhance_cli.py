"""`klingbot generate --enhance` in subprocesses: --dry-run prints the promptEnhance task before the
video task; a long prompt is refused before anything exists; a run sends the enhanced text and its
--json cost has the enhancement in it; and the crash window (killed after ``enhance_sent_at`` is
written, before or after Runware answered, never recorded): the run after it calls Runware again with
the SAME taskUUID, and the job settles once, the enhancement at its reserve (the bound of what the
unanswered call may have billed), never twice."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import pytest

from bot.services.enhance import enhance_task_uuid
from bot.simulator import run_simulator
from bot.simulator.enhance import MICRO_PER_VERSION, enhanced_text
from tests.cli.test_generate_crash import PRICE_5S, assert_each_job_settled_once, generate, read_db, write_config
from tests.fakes.processes import cli, last_json, run_cli

RESERVE = 10_000
PROMPT = "a lighthouse in a storm"


def test_dry_run_prints_the_enhance_task_first(tmp_path: Path) -> None:
    proc = run_cli("generate", "--dry-run", "--json", "--enhance", "a fox in the snow", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    enhance, video = json.loads(proc.stdout.strip().splitlines()[-1])["tasks"]
    assert enhance == {"taskType": "promptEnhance", "taskUUID": enhance_task_uuid(video["taskUUID"]),
                       "prompt": "a fox in the snow", "promptMaxLength": 300, "promptVersions": 1,
                       "includeCost": True}
    uuid.UUID(enhance["taskUUID"], version=4)
    assert video["taskType"] == "videoInference" and video["positivePrompt"] == "a fox in the snow"
    text = run_cli("generate", "--dry-run", "--enhance", "a fox in the snow", cwd=tmp_path)
    assert "estimated $0.36 (with $0.01 for the prompt enhancer)" in text.stdout
    assert "its text replaces positivePrompt" in text.stdout
    assert not (tmp_path / "data").exists()


def test_a_long_prompt_with_enhance_exits_2_naming_the_limit(tmp_path: Path) -> None:
    proc = run_cli("generate", "--sandbox", "--enhance", "y" * 320, cwd=tmp_path)
    assert proc.returncode == 2
    assert ("`prompt`: is 320 characters long; allowed: at most 300 characters with enhance (the limit of "
            "Runware's prompt enhancer), or enhance off.") in proc.stderr
    assert not (tmp_path / "data").exists()  # no database: nothing was reserved


async def test_generate_enhance_sends_the_enhanced_prompt_and_reports_its_cost(tmp_path: Path) -> None:
    async with run_simulator(api_key="k-enh", base_generation_s=0.3) as sim:
        (tmp_path / "config.toml").write_text(
            f'[runware]\napi_url = "{sim.url}"\ndownload_hosts = ["127.0.0.1"]\n'
            "first_poll_after_s = 0.2\npoll_interval_s = 0.2\n")
        code, out, err = await cli(tmp_path, "generate", "--json", "--enhance", PROMPT,
                                   "--out", str(tmp_path / "clips"), env_extra={"RUNWARE_API_KEY": "k-enh"})
        assert code == 0, err
        line = last_json(out)
        assert line["status"] == "delivered"
        assert line["cost_usd"] == pytest.approx((PRICE_5S + MICRO_PER_VERSION) / 1e6)
        [task] = sim.stats.tasks.values()
        assert task.body["positivePrompt"] == enhanced_text(PROMPT, 0, 300)
        assert list(sim.stats.enhance_calls.values()) == [1]


@pytest.mark.parametrize("failpoint", ["enhance_sent", "enhance_answered"])
async def test_killed_in_the_enhance_window_settles_once_at_the_reserve(tmp_path: Path, failpoint: str) -> None:
    async with run_simulator(api_key="crash-test-key", base_generation_s=0.05) as sim:
        config = write_config(tmp_path, sim.url)
        out = tmp_path / "videos"
        killed, lines, _ = await generate(config, out, "--enhance", prompt=PROMPT, failpoint=failpoint)
        assert killed == -signal.SIGKILL and lines == []
        [job], _, _ = await read_db(tmp_path / "klingbot.sqlite3")
        assert job.state == "queued" and job.enhance_sent_at is not None and job.enhanced_prompt is None
        uuid_ = enhance_task_uuid(job.task_uuid)
        assert sim.stats.enhance_calls == ({uuid_: 1} if failpoint == "enhance_answered" else {})

        code, lines, err = await generate(config, out, prompt="a second lighthouse")  # resumes job 1 first
        assert code == 0, err
        jobs, ledger, results = await read_db(tmp_path / "klingbot.sqlite3")

    first, second = jobs
    assert (first.state, second.state) == ("succeeded", "succeeded")
    assert first.enhance_resent and first.enhanced_prompt == enhanced_text(PROMPT, 0, 300)
    # Called again with the same taskUUID (never a new one), and the video made from its text.
    assert sim.stats.enhance_calls == {uuid_: 2 if failpoint == "enhance_answered" else 1}
    assert sim.stats.tasks[first.task_uuid].body["positivePrompt"] == first.enhanced_prompt
    assert_each_job_settled_once(jobs, ledger)
    settled = {r.job_id: r.amount_micro for r in ledger if r.kind == "settle"}
    assert settled == {first.id: PRICE_5S + RESERVE, second.id: PRICE_5S}
    # Never less than Runware billed for the job; the enhancement counted once, at its bound.
    assert settled[first.id] >= PRICE_5S + sim.stats.enhance_billed_micro
    assert [line["job_id"] for line in lines] == [1, 2]
