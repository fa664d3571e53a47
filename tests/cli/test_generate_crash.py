"""`klingbot generate` as a real subprocess (SPEC 2.1, 3.1, 3.3): killed with SIGKILL at every
failpoint and run again, every job finishes once, is billed once, and the ledger balances; against a
`klingbot simulator` process, the --json line carries the simulator's cost; 20 jobs with provider
failures mixed in settle to exactly what the simulator billed; and a generate run beside a running
bot on the same database delivers each job only where it came from."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image
from pydantic import SecretStr

from bot import failpoints
from bot.cli.generate_run import TerminalSink
from bot.config import Config, load_config
from bot.db import open_database
from bot.db.jobs import jobs_by_state, results_for_job
from bot.db.money import ledger_rows
from bot.requests import resolve_request
from bot.runware.client import RunwareClient
from bot.services.engine import Engine
from bot.services.quotas import Member
from bot.simulator.server import Simulator, run_simulator
from tests.fakes.configs import loopback_config
from tests.fakes.processes import free_port
from tests.fakes.world import SIM_KEY, started_world

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[2]
KEY = "crash-test-key"
PRICE_5S = 350_000  # kling-2.5-turbo-pro, 5 s, one video (the registry's price and the simulator's)
CHILD_TIMEOUT_S = 40.0
JSON_KEYS = {"job_id", "status", "task_uuid", "model", "videos", "seeds", "cost_usd", "error"}


def write_config(tmp_path: Path, api_url: str, db_path: Path | None = None) -> Path:
    return loopback_config(tmp_path / "config.toml", runware_url=api_url,
                           db_path=db_path or tmp_path / "klingbot.sqlite3")


def frame_file(tmp_path: Path) -> Path:
    path = tmp_path / "first.png"
    out = io.BytesIO()
    Image.new("RGB", (640, 360), "teal").save(out, "PNG")
    path.write_bytes(out.getvalue())
    return path


def child_env(failpoint: str | None, key: str = KEY) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("KLINGBOT_FAILPOINT", "KLINGBOT_CONFIG", "DISCORD_TOKEN", "RUNWARE_WEBHOOK_SECRET")}
    env["RUNWARE_API_KEY"] = key
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if failpoint:
        env["KLINGBOT_FAILPOINT"] = failpoint
    return env


async def generate(config: Path, out: Path, *extra: str, prompt: str = "a lighthouse in a storm",
                   failpoint: str | None = None, key: str = KEY) -> tuple[int, list[dict], str]:
    """Run `python -m bot generate ... --json`; returns (exit code, JSON lines of stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "generate", prompt, "--config", str(config), "--json",
        "--out", str(out), *extra,
        cwd=ROOT, env=child_env(failpoint, key),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), CHILD_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]
    return proc.returncode, lines, stderr.decode()


async def read_db(path: Path):
    db = await open_database(path)
    try:
        jobs = sorted(await jobs_by_state(db, None, 1000), key=lambda j: j.id)
        ledger = await ledger_rows(db)
        results = {job.id: await results_for_job(db, job.id) for job in jobs}
    finally:
        await db.close()
    return jobs, ledger, results


def assert_each_job_settled_once(jobs, ledger) -> None:
    by_job: dict[int, Counter] = {job.id: Counter() for job in jobs}
    for row in ledger:
        by_job[row.job_id][row.kind] += 1
    for job in jobs:
        kinds = by_job[job.id]
        assert kinds["reserve"] == 1, (job.id, kinds)
        assert kinds["settle"] + kinds["release"] == 1, (job.id, kinds)


# ---- killed at each failpoint, then run again ----------------------------------------------------------

CASES = [(name, True) for name in failpoints.NAMES] + [("after_reserve", False)]
PARALLEL = 4  # scenarios at once: each is two short child processes, mostly waiting on imports


@dataclass
class Scenario:
    killed_code: int
    killed_lines: list[dict]
    code: int
    lines: list[dict]
    err: str
    sim: Simulator
    out: Path
    db: tuple


async def run_scenario(base: Path, failpoint: str, with_frame: bool, slots: asyncio.Semaphore) -> Scenario:
    """Kill a generate child at ``failpoint``, run generate again, and read what is left behind."""
    async with slots:
        # Generation takes 0.05 s at the simulator; the child polls until it is done, so every
        # failpoint is reached while it runs.
        async with run_simulator(api_key=KEY, base_generation_s=0.05) as sim:
            config = write_config(base, sim.url)
            out = base / "videos"
            extra = ("--first-frame", str(frame_file(base))) if with_frame else ()
            killed_code, killed_lines, _ = await generate(config, out, *extra, failpoint=failpoint)
            code, lines, err = await generate(config, out, *extra, prompt="a second lighthouse")
            db = await read_db(base / "klingbot.sqlite3")
    return Scenario(killed_code, killed_lines, code, lines, err, sim, out, db)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def scenarios(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], Scenario | Exception]:
    """Every failpoint scenario, run side by side once; each test below checks one of them."""
    slots = asyncio.Semaphore(PARALLEL)
    runs = await asyncio.gather(*(run_scenario(tmp_path_factory.mktemp(f"{name}-{frame}"), name, frame, slots)
                                  for name, frame in CASES), return_exceptions=True)
    return dict(zip(CASES, runs, strict=True))


@pytest.mark.parametrize(("failpoint", "with_frame"), CASES,
                         ids=[f"{n}-{'frame' if f else 'text'}" for n, f in CASES])
async def test_generate_killed_at_a_failpoint_then_run_again(scenarios, failpoint: str,
                                                             with_frame: bool) -> None:
    run = scenarios[(failpoint, with_frame)]
    if isinstance(run, BaseException):
        raise run
    assert run.killed_code == -signal.SIGKILL, f"not killed at {failpoint} (exit {run.killed_code})"
    assert run.killed_lines == []
    assert run.code == 0, (json.dumps(run.lines), run.err)
    lines, sim, out = run.lines, run.sim, run.out
    jobs, ledger, results = run.db

    assert [j.id for j in jobs] == [1, 2]
    first, second = jobs
    # The new job is the last line; the killed job is reported first unless it had been reported.
    assert set(lines[-1]) == JSON_KEYS
    assert (lines[-1]["job_id"], lines[-1]["status"]) == (2, "delivered")
    reported = [line["job_id"] for line in lines]
    assert reported == ([2] if failpoint == "after_notify" else [1, 2])

    abandoned = failpoint == "after_reserve" and with_frame  # its frame only lived in the dead process
    for job in jobs:
        assert job.notified_at is not None, job
        if job is first and abandoned:
            assert job.state == "failed" and "restarted before your images were uploaded" in job.error
            assert results[job.id] == [] and job.submitted_at is None
        else:
            assert job.state == "succeeded", job
            [result] = results[job.id]
            assert result.delivered_at is not None and Path(result.local_path).read_bytes() == sim.mp4

    # Runware saw each task once (a retried submit would be a conflict, not a second task) and each
    # frame was uploaded once.
    submitted = {j.task_uuid for j in jobs if j.submitted_at is not None}
    assert set(sim.stats.tasks) == submitted and sim.stats.submits == len(submitted)
    assert sim.stats.upload_tasks == sum(1 for j in jobs if j.image_uuids)
    # Money: one reserve and one settle-or-release per job; settled == billed, to the micro-dollar.
    assert_each_job_settled_once(jobs, ledger)
    settled = sum(r.amount_micro for r in ledger if r.kind == "settle")
    assert settled == sim.stats.billed_micro == PRICE_5S * len(submitted)
    if abandoned:
        assert [(r.kind, r.amount_micro) for r in ledger if r.job_id == 1] == [
            ("reserve", PRICE_5S), ("release", PRICE_5S)]
    # Delivered once: one file per video in --out, nothing half-downloaded left behind.
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(Path(r.local_path).name for rs in results.values() for r in rs)
    for line in lines:
        job = jobs[line["job_id"] - 1]
        assert line["status"] == ("delivered" if job.state == "succeeded" else "failed")
        assert [Path(v).name for v in line["videos"]] == [Path(r.local_path).name for r in results[job.id]]


# ---- a separate `klingbot simulator` process ------------------------------------------------------------


async def test_generate_against_a_simulator_process_prints_the_json_line(tmp_path: Path) -> None:
    port = free_port()
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "simulator", "--port", str(port), "--api-key", KEY, "--speed", "200",
        cwd=ROOT, env=child_env(None), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert sim.stdout is not None
        while b"listening" not in (line := await asyncio.wait_for(sim.stdout.readline(), 20)):
            assert line, "the simulator exited before listening"
        config = write_config(tmp_path, f"http://127.0.0.1:{port}/v1")
        out = tmp_path / "videos"
        code, lines, err = await generate(config, out, "--variations", "2", "--duration", "10",
                                          prompt="two boats at dawn")
        failed_code, failed_lines, _ = await generate(config, out, prompt="FAIL_PROVIDER a boat")
    finally:
        sim.send_signal(signal.SIGTERM)
        await asyncio.wait_for(sim.wait(), 20)

    assert code == 0, err
    [line] = lines
    assert set(line) == JSON_KEYS
    assert line["status"] == "delivered" and line["error"] is None and line["job_id"] == 1
    assert line["model"] == "klingai:6@1"
    assert line["cost_usd"] == 1.4  # 2 videos x 10 s x $0.07 (the simulator's reported cost)
    assert len(line["videos"]) == 2 and len(line["seeds"]) == 2
    assert all(isinstance(s, int) for s in line["seeds"])
    for video in line["videos"]:
        assert Path(video).read_bytes()[4:8] == b"ftyp"
    # A provider failure: exit 1, the job's final state, nothing charged, the reason in words.
    assert failed_code == 1
    assert failed_lines[-1]["status"] == "failed" and failed_lines[-1]["cost_usd"] == 0
    assert "provider" in failed_lines[-1]["error"].lower()
    jobs, ledger, _ = await read_db(tmp_path / "klingbot.sqlite3")
    assert_each_job_settled_once(jobs, ledger)
    assert [(r.job_id, r.kind, r.amount_micro) for r in ledger if r.kind != "reserve"] == [
        (1, "settle", 1_400_000), (2, "release", PRICE_5S)]


# ---- 20 jobs, failures mixed in: settled == billed ------------------------------------------------------

async def test_twenty_jobs_with_failures_settle_to_what_the_simulator_billed(tmp_path: Path) -> None:
    async with run_simulator(api_key=KEY, base_generation_s=0.2, seed=7) as sim:
        cfg: Config = load_config(write_config(tmp_path, sim.url), env={})
        db = await open_database(cfg.storage.path)
        client = RunwareClient(api_url=cfg.runware.api_url, api_key=SecretStr(KEY), timeout_s=10.0,
                               max_retries=4, poll_batch_size=7, backoff_base_s=0.01, backoff_cap_s=0.05)
        sink = TerminalSink(tmp_path / "videos", show_bar=False)
        engine = Engine(cfg=cfg, db=db, client=client, sink=sink)
        # Transport trouble on top: every kind is retried, none may bill or settle twice.
        sim.faults.next_statuses = [503, 429, 500]
        sim.faults.drop_after_processing_next = 2   # two answers lost after Runware acted
        sim.faults.malformed_next = 1
        await engine.start()
        try:
            jobs = []
            for i in range(20):
                trouble = " FAIL_PROVIDER" if i % 4 == 1 else " FAIL_PARTIAL" if i % 5 == 2 else ""
                prompt = f"clip {i}{trouble}"
                request = resolve_request(cfg, prompt=prompt, model=None, duration=10 if i % 3 == 0 else 5,
                                          aspect=None, negative_prompt=None, cfg_scale=None,
                                          variations=1 + i % 3, output_format=None, quality=None,
                                          first_frame_size=None, has_last_frame=False)
                jobs.append(await engine.create_job(Member(0, 1 + i % 4), request, channel_id=0))
            outcomes = await asyncio.wait_for(asyncio.gather(*(sink.wait_for(j.id) for j in jobs)), 60)
        finally:
            await engine.stop()
            await client.aclose()
            await db.close()
        jobs_after, ledger, _ = await read_db(Path(cfg.storage.path))

    assert len(outcomes) == 20
    states = Counter(j.state for j in jobs_after)
    assert states["failed"] == 6 and states["succeeded"] == 14, states  # job 12: FAIL_PARTIAL of 1
    assert all(j.notified_at is not None for j in jobs_after)
    assert sim.stats.submits == 20 and len(sim.stats.tasks) == 20
    assert_each_job_settled_once(jobs_after, ledger)
    settled = sum(r.amount_micro for r in ledger if r.kind == "settle")
    assert settled == sim.stats.billed_micro
    assert settled == sum(t.billed_micro for t in sim.stats.tasks.values()) > 0
    # Partial failures settled to the videos actually made, not to the estimate.
    partial = [j for j in jobs_after if j.state == "succeeded" and j.failed_variations]
    assert partial and all(
        next(r.amount_micro for r in ledger if r.job_id == j.id and r.kind == "settle") < j.estimate_micro
        for j in partial)


# ---- the terminal and a running bot on one database -----------------------------------------------------

async def test_generate_beside_a_running_bot_keeps_each_jobs_delivery_apart(tmp_path: Path) -> None:
    """Both engines submit and poll every job, but each job is shown only where it came from."""
    async with started_world(tmp_path / "bot") as w:
        assert w.cfg is not None
        w.sim.base_generation_s = 0.05  # the harness's videos otherwise wait for finish_all()
        config = write_config(tmp_path, w.sim.url, db_path=Path(w.cfg.storage.path))
        iid = await w.video({"prompt": "a member's video"})
        await w.reply(iid, "Queued as job #1")
        await w.wait_submitted(1)
        run = asyncio.create_task(generate(config, tmp_path / "videos", prompt="the operator's video",
                                           key=SIM_KEY))
        await w.wait_submitted(2)
        w.sim.finish_all()
        code, lines, err = await run
        await w.wait_notified(1)
        assert code == 0, err
        assert [(line["job_id"], line["status"]) for line in lines] == [(2, "delivered")]
        # The member's video went to Discord only; the operator's only to --out.
        [posted] = w.result_messages()
        assert posted.content.startswith(f"<@{w.seed.user_id}>") and posted.attachments
        assert [p.name.split("-")[0] for p in (tmp_path / "videos").iterdir()] == ["job2"]
        assert not any(c.path.startswith("/channels/0/") for c in w.fake.calls)
        jobs, ledger, _ = await read_db(Path(w.cfg.storage.path))
        assert_each_job_settled_once(jobs, ledger)
        assert w.sim.stats.billed_micro == sum(r.amount_micro for r in ledger if r.kind == "settle")
