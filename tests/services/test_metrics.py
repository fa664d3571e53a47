"""The metrics (SPEC 2.4) of a real bot, scraped over loopback and read with prometheus-client's own
parser, after real jobs through the fake Discord and the Runware simulator: every figure is checked
against what the ledger, the results table, the simulator and the fake Discord recorded."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import LimitsConfig
from bot.db import open_database
from bot.db.jobs import get_job, results_for_job
from bot.db.records import FINAL_STATES
from bot.discordbot.http_metrics import request_kind
from bot.services.clock import FixedClock
from bot.services.jobs import JobStore
from bot.services.metrics import RUNWARE_OUTCOMES, RUNWARE_TASKS, Metrics
from bot.services.queue import CLAIM_TTL_S
from bot.services.quotas import Member, Quotas
from tests.fakes.discord import API_PREFIX
from tests.fakes.world import BotWorld, eventually, started_world

MODEL = "kling-2.5-turbo-pro"
UTC_ZONE = ZoneInfo("UTC")
# Two jobs at Runware at once, so the third waits in the queue (and is cancelled there).
CONFIG = {"metrics": {"listen": "127.0.0.1:0"}, "limits": {"max_in_flight": 2}}


class Scrape:
    """One /metrics answer, parsed: ``value(name, **labels)``; a series that is absent reads None."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                        for f in self.families.values() for s in f.samples}

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def by_label(self, name: str, *keys: str) -> dict[tuple[str, ...], float]:
        return {tuple(dict(labels)[k] for k in keys): v for (n, labels), v in self.samples.items()
                if n == name and v}


async def scrape(w: BotWorld) -> Scrape:
    assert w.bot is not None and w.bot.metrics_server is not None
    async with httpx.AsyncClient() as http:
        response = await http.get(w.bot.metrics_server.url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.text)


async def scrape_when(w: BotWorld, predicate, timeout: float = 20.0) -> Scrape:
    async def check() -> Scrape | None:
        got = await scrape(w)
        return got if predicate(got) else None
    return await eventually(check, timeout)


async def queued_reply(w: BotWorld, prompt: str) -> None:
    iid = await w.video({"prompt": prompt})
    await w.reply(iid, "Queued as job #")


def fake_discord_counts(w: BotWorld) -> Counter:
    """The fake's own record of every REST request, by the metric's labels."""
    return Counter((request_kind(c.method, API_PREFIX + c.path), str(c.status)) for c in w.fake.calls)


def on_store(store: str) -> dict:
    """CONFIG on this store (the gauges' SQL runs on both)."""
    return {**CONFIG, "storage": {"url": store}} if store.startswith("postgresql") else CONFIG


async def test_metrics_after_a_succeeded_a_failed_and_a_cancelled_job(tmp_path: Path, store: str) -> None:
    async with started_world(tmp_path, on_store(store)) as w:
        start = await scrape(w)
        # Counters start at 0, every model and final state present from the first scrape.
        for model in w.cfg.models:
            for state in FINAL_STATES:
                assert start.value("klingbot_jobs_finished_total", model=model, state=state) == 0
            assert start.value("klingbot_spend_usd_total", model=model) == 0
            assert start.value("klingbot_videos_delivered_total", model=model) == 0
        for task in RUNWARE_TASKS:
            for outcome in RUNWARE_OUTCOMES:
                assert start.value("klingbot_runware_requests_total", task=task, outcome=outcome) == 0
        assert start.value("klingbot_queue_depth") == 0
        assert start.value("klingbot_jobs_in_flight") == 0
        assert start.value("klingbot_paused") == 0
        assert start.value("klingbot_result_post_seconds_count") == 0

        # Runware answers the first submit 503, then 429 (both retried); Discord answers the first
        # channel message (job 1's progress) 429 (retried by discord.py).
        w.sim.faults.next_statuses = [503, 429]
        w.fake.fail_next("POST", r"^/channels/\d+/messages$", 429)
        await queued_reply(w, "a red fox running through snow")
        await w.wait_submitted(1)
        await queued_reply(w, "FAIL_PROVIDER a boat on a lake")
        await w.wait_submitted(2)
        await queued_reply(w, "a job that is cancelled while it waits")

        waiting = await scrape_when(w, lambda s: s.value("klingbot_queue_depth") == 1)
        assert waiting.value("klingbot_jobs_in_flight") == 2

        job3 = await w.wait_job(3, lambda j: j.progress_message_id is not None)
        progress = await w.wait(lambda: "klingbot:cancel:3" in w.fake.message(job3.progress_message_id).custom_ids()
                                and w.fake.message(job3.progress_message_id))
        await w.fake.click_button(progress, "klingbot:cancel:3")
        await w.wait_job(3, lambda j: j.state == "cancelled")
        w.sim.finish_all()
        jobs = {job_id: await w.wait_notified(job_id) for job_id in (1, 2, 3)}
        assert {i: j.state for i, j in jobs.items()} == {1: "succeeded", 2: "failed", 3: "cancelled"}

        # Discord's figures settle once the last message is out: wait until they match the fake's
        # (all but the gateway's websocket upgrade, which is no REST call).
        end = await scrape_when(w, lambda s: {k: v for k, v in s.by_label(
            "klingbot_discord_requests_total", "kind", "status").items() if k != ("gateway", "101")}
            == dict(fake_discord_counts(w)))

        # Jobs by final state.
        finished = end.by_label("klingbot_jobs_finished_total", "model", "state")
        assert finished == {(MODEL, "succeeded"): 1, (MODEL, "failed"): 1, (MODEL, "cancelled"): 1}

        # Spend: the ledger's settle rows, to the micro-dollar.
        ledger = await w.ledger()
        settled = sum(r.amount_micro for r in ledger if r.kind == "settle")
        assert settled == 350_000  # the succeeded 5 s video; the failure billed 0, the cancel was free
        assert end.value("klingbot_spend_usd_total", model=MODEL) == pytest.approx(settled / 1e6, abs=1e-9)
        assert w.sim.stats.billed_micro == settled

        # Videos: one posted, as the fake Discord received it.
        results = await results_for_job(w.bot.db, 1)
        posted = [m for m in w.result_messages() if m.attachments]
        assert len(posted) == 1 and len(results) == 1 and results[0].delivered_at is not None
        assert end.value("klingbot_videos_delivered_total", model=MODEL) == 1
        assert end.value("klingbot_result_post_seconds_count") == 1
        assert end.value("klingbot_result_post_seconds_sum") == pytest.approx(
            results[0].delivered_at - results[0].created_at, abs=1e-6)

        # Submit -> final, for the two jobs that reached Runware (the cancelled one never did).
        assert jobs[3].submitted_at is None
        assert end.value("klingbot_job_seconds_count", model=MODEL) == 2
        assert end.value("klingbot_job_seconds_sum", model=MODEL) == pytest.approx(
            sum(jobs[i].finished_at - jobs[i].submitted_at for i in (1, 2)), abs=1e-6)
        assert end.value("klingbot_job_seconds_bucket", model=MODEL, le="+Inf") == 2

        # Runware: every HTTP request the simulator received, by task and outcome.
        runware = end.by_label("klingbot_runware_requests_total", "task", "outcome")
        assert runware[("videoInference", "server_error")] == 1
        assert runware[("videoInference", "rate_limited")] == 1
        assert runware[("videoInference", "ok")] == w.sim.stats.submits == 2
        assert runware[("getResponse", "ok")] == w.sim.stats.poll_requests
        assert sum(runware.values()) == w.sim.stats.http_requests

        # Discord: the 429 is there, next to the retry that went through.
        discord_counts = end.by_label("klingbot_discord_requests_total", "kind", "status")
        assert discord_counts[("message_create", "429")] == 1
        assert discord_counts[("message_create", "200")] >= 3  # three progress messages, one result
        assert discord_counts[("interaction_response", "200")] == 4  # three /video, one button
        assert discord_counts[("interaction_edit", "200")] >= 3
        assert discord_counts[("gateway", "101")] == 1

        # Gauges are read at scrape time: all quiet now.
        assert end.value("klingbot_queue_depth") == 0
        assert end.value("klingbot_jobs_in_flight") == 0
        assert end.value("klingbot_paused") == 0

        # Runware refuses the key: generation pauses bot-wide, the job waits in the queue.
        w.sim.faults.next_statuses = [401]
        await queued_reply(w, "a job while the key is refused")
        paused = await scrape_when(w, lambda s: s.value("klingbot_paused") == 1)
        assert paused.value("klingbot_runware_requests_total", task="videoInference", outcome="refused") == 1
        assert paused.value("klingbot_queue_depth") == 1


async def test_a_job_timed_out_counts_as_timed_out(tmp_path: Path) -> None:
    config = {**CONFIG, "runware": {"job_deadline_s": 0.3}}
    async with started_world(tmp_path, config) as w:
        await queued_reply(w, "a slow one")
        await w.wait_submitted(1)
        await w.wait_job(1, lambda j: j.state == "timed_out")
        got = await scrape_when(w, lambda s: s.value("klingbot_jobs_finished_total", model=MODEL,
                                                     state="timed_out") == 1)
        assert got.value("klingbot_job_seconds_count", model=MODEL) == 1
        assert got.value("klingbot_spend_usd_total", model=MODEL) == 0  # no cost reported yet


async def test_a_cancel_finished_by_the_stale_claim_sweep_counts_once(store: str) -> None:
    """A cancel that came while the job's submit was out, whose taker never came back: the next take
    from the queue finishes it, and it counts as cancelled, once, whatever arrives after."""
    db = await open_database(store)
    try:
        clock, metrics = FixedClock(datetime(2024, 3, 10, 12, tzinfo=UTC).timestamp()), Metrics([MODEL])
        zone = UTC_ZONE
        limits = LimitsConfig(daily_videos=None, max_concurrent=None, monthly_usd=None, guild_monthly_usd=None,
                              global_daily_usd=None)
        jobs = JobStore(db, Quotas(db, limits, zone, clock), clock, zone, metrics=metrics)

        def finished() -> dict[tuple[str, ...], float]:
            return Scrape(metrics.render().decode()).by_label("klingbot_jobs_finished_total", "model", "state")

        job = await jobs.create(Member(1, 2), channel_id=1, model_key=MODEL, params={}, task_uuid="stale-claim",
                                duration_s=5, variations=1, estimate_micro=350_000)
        assert [j.id for j in await jobs.next_to_submit(1)] == [job.id]
        assert await jobs.begin_submit(job.id)  # its submit goes out...
        assert (await jobs.request_cancel(job.id, "user:2")).cancel_requested  # ...and a cancel waits for it
        assert finished() == {}
        clock.advance(CLAIM_TTL_S + 1)  # its taker never came back
        assert await jobs.next_to_submit(1) == []
        assert (await get_job(db, job.id)).state == "cancelled"
        assert finished() == {(MODEL, "cancelled"): 1}
        # What comes after counts no second time: the taker back late, another take, Runware's cost.
        await jobs.unclaim(job.id)
        assert not await jobs.begin_submit(job.id)
        await jobs.next_to_submit(1)
        assert await jobs.finish(job.id, "succeeded", None, 350_000)
        assert finished() == {(MODEL, "cancelled"): 1}
        assert Scrape(metrics.render().decode()).value("klingbot_spend_usd_total", model=MODEL) == 0.35
    finally:
        await db.close()


def test_each_metrics_has_its_own_registry() -> None:
    one, two = Metrics(["m"]), Metrics(["m"])  # the same names twice in one process: no clash
    one.runware_request("getResponse", "ok")
    assert Scrape(one.render().decode()).value("klingbot_runware_requests_total", task="getResponse",
                                               outcome="ok") == 1
    assert Scrape(two.render().decode()).value("klingbot_runware_requests_total", task="getResponse",
                                               outcome="ok") == 0


def test_bad_listen_address_names_the_key(tmp_path: Path) -> None:
    from bot.config import ConfigError, load_config
    path = tmp_path / "config.toml"
    path.write_text('[metrics]\nlisten = "9464"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "metrics.listen = '9464'" in str(info.value)
    assert "HOST:PORT" in str(info.value)
