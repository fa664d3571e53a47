"""The bench's scenarios, each run once with tiny sizes: the scenario code works end to end (the bot,
the simulator, the fake Discord, the subprocesses) and reports sane numbers. Nothing here asserts
a timing: the bars are the bench's business (python -m bench), not the test suite's."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench import ack, contention, contention_pg, edits, fanin, latency, memory, resume, transcode
from bench.__main__ import main as bench_main
from bench.common import BenchSimulator, Row, ScenarioResult, format_table, percentile, write_toml

FAST_POLLS = {"first_poll_after_s": 0.2, "poll_interval_s": 0.2}


def row(result: ScenarioResult, starts: str) -> Row:
    found = [r for r in result.rows if r.measure.startswith(starts)]
    assert found, f"{result.name} has no row {starts!r}: {[r.measure for r in result.rows]}"
    return found[0]


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_table_lines_up_and_shows_verdicts() -> None:
    result = ScenarioResult("demo")
    result.add("a measure", 12.3456, "ms", "< 150 ms", True)
    result.add("another", 3, "", "0", False)
    lines = format_table(result.rows).splitlines()
    assert lines[0].split() == ["scenario", "measure", "value", "bar", "result"]
    assert "12.3 ms" in lines[2] and lines[2].endswith("pass")
    assert lines[3].endswith("FAIL")
    assert not result.passed


def test_toml_for_the_bot_process_loads_as_config(tmp_path: Path) -> None:
    from bot.config import load_config

    path = write_toml({"runware": {"api_url": "http://127.0.0.1:9/v1", "download_hosts": ["127.0.0.1"]},
                       "limits": {"daily_videos": "unlimited", "max_in_flight": 5000},
                       "storage": {"path": str(tmp_path / "x.sqlite3")}}, tmp_path / "c.toml")
    cfg = load_config(path, env={})
    assert cfg.runware.download_hosts == ["127.0.0.1"]
    assert cfg.limits.daily_videos is None and cfg.limits.max_in_flight == 5000


async def test_bench_simulator_tells_the_baseline_from_the_bot() -> None:
    import httpx

    from bot.config import Config
    from bot.requests import build_task, resolve_request

    sim = BenchSimulator(generation_s=(0.0, 0.0))
    await sim.start()
    try:
        headers = {"Authorization": "Bearer bench-key"}
        cfg = Config()
        request = resolve_request(cfg, prompt="a fox in the snow")
        task = build_task(request, task_uuid="6f1e5a7c-0000-4000-8000-000000000001", runware=cfg.runware,
                          first_image=None, last_image=None, safety_mode=None, webhook_url=None).to_wire()
        poll = [{"taskType": "getResponse", "taskUUID": task["taskUUID"]}]
        async with httpx.AsyncClient() as http:
            assert (await http.post(sim.url, json=[task], headers=headers)).status_code == 200
            await http.post(sim.url, json=poll, headers=headers)
            await http.post(sim.baseline_url, json=poll, headers=headers)
            await http.post(sim.baseline_url, json=poll, headers=headers)
    finally:
        await sim.stop()
    assert sim.polls == {"bot": 1, "baseline": 2}
    assert set(sim.first_done["bot"]) == set(sim.first_done["baseline"]) == {task["taskUUID"]}


async def test_fan_in_smoke(tmp_path: Path) -> None:
    result = await fanin.run(tmp_path, jobs=12, speed=30.0)
    assert row(result, "jobs delivered").value == "12/12"
    details = result.details
    assert details["poll_requests"]["bot"] >= 1
    assert details["poll_requests"]["baseline"] == details["poll_requests"]["baseline_counted_by_client"]
    assert details["poll_requests"]["baseline"] >= 12  # at least one getResponse per task
    assert details["submits"] == 12 and details["upload_requests"] == 1  # one job in ten has a frame
    assert details["lateness_s"]["n"] == 12 and details["lateness_s"]["min"] >= 0


async def test_edits_smoke(tmp_path: Path) -> None:
    result = await edits.run(tmp_path, jobs=1, speed=30.0)
    assert row(result, "Discord 429s").value == 0
    assert row(result, "final messages correct").value == "1/1"
    assert result.details["problems"] == {}


async def test_latency_smoke(tmp_path: Path) -> None:
    result = await latency.run(tmp_path, jobs=4, channels=2, speed=30.0)
    for label in ("polling", "webhooks"):
        assert row(result, f"{label}: results posted").value == "4/4"
        assert result.details[label]["posted_p99_s"] >= 0
    assert row(result, "polling: ready -> fetched max").value >= 0
    assert row(result, "webhooks: ready -> fetched p99").value >= 0


async def test_contention_smoke(tmp_path: Path) -> None:
    result = await contention.run(tmp_path, total=40, members=8, processes=2)
    details = result.details
    assert details["expected_admitted"] >= 1
    for side in ("one_process", "multi_process"):
        assert details[side]["admitted"] == details["expected_admitted"]
        assert details[side]["overspend_micro"] == 0 and details[side]["errors"] == []
        assert details[side]["reserve_rows"] == details["expected_admitted"]
        assert details[side]["rate_per_s"] > 0


async def test_contention_pg_smoke(tmp_path: Path, pg_url: str) -> None:
    result = await contention_pg.run(tmp_path, total=40, members=8, processes=2, url=pg_url)
    details = result.details
    many = details["multi_process"]
    assert details["expected_admitted"] >= 1 and many["processes"] == 2
    assert many["admitted"] == many["reserve_rows"] == details["expected_admitted"]
    assert many["overspend_micro"] == 0 and many["errors"] == [] and many["rate_per_s"] > 0
    assert result.passed


async def test_ack_smoke(tmp_path: Path) -> None:
    result = await ack.run(tmp_path, in_flight=6, rate=20.0, seconds=0.3)
    details = result.details
    assert details["in_flight_before"] == 6 and details["in_flight_after"] == 12
    assert 0 < details["latency_ms"]["p50"] <= details["latency_ms"]["max"]
    assert details["bot_lag_whole_run"]["samples"] > 0


async def test_resume_smoke(tmp_path: Path) -> None:
    result = await resume.run(tmp_path, jobs=20)
    details = result.details
    assert 0 < details["first_poll_s"] <= details["all_polled_s"] < 60
    assert details["poll_requests_until_all"] >= 1
    assert "setup_done" in details["process_marks_s"]


async def test_memory_smoke(tmp_path: Path) -> None:
    result = await memory.run(tmp_path, jobs=10, runware=FAST_POLLS, hold_s=0.3)
    details = result.details
    assert details["in_flight"] == 10 and details["progress_messages"] >= 10
    assert 10 < details["peak_rss_mb_while_running"] <= details["peak_rss_mb"] < 10_000
    assert details["peak_rss_mb_at_exit"] > 10


async def test_transcode_smoke(tmp_path: Path) -> None:
    result = await transcode.run(tmp_path, quick=True)
    [case] = [v for k, v in result.details.items() if k != "event_loop_lag"]
    assert case["fitted_bytes"] <= transcode.QUICK_LIMIT < case["source_bytes"]
    assert case["frames"] == 60 and case["wall_s"] > 0
    assert row(result, "360p 2 s fitted file").value == "fits"
    assert result.details["event_loop_lag"]["samples"] > 0


def test_command_line_runs_one_scenario_and_writes_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.json"
    status = bench_main(["--quick", "--only", "contention", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "contention" in printed and "reservations/s" in printed
    data = json.loads(out.read_text())
    assert data["machine"]["nproc"] >= 1 and data["machine"]["python"]
    assert [s["name"] for s in data["scenarios"]] == ["contention"]
    assert status == (0 if data["passed"] else 1)
