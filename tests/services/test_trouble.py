"""Trouble shown promptly (SPEC 3.5): the progress note from the first failed round, and the operator
alerted when Runware has failed for 5 minutes or 3 jobs in a row failed, at most hourly. The rules
with a clock that moves only when told; the engine stepped round by round against the simulator's
fault injection; and the bot's ops channel on the fake Discord."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from bot.config import Config
from bot.db import open_database
from bot.requests import resolve_request
from bot.runware.client import RunwareClient
from bot.services.clock import FixedClock
from bot.services.engine import Engine
from bot.services.quotas import Member
from bot.services.sink import Outcome, ProgressUpdate
from bot.services.trouble import ALERT_EVERY_S, DOWN_ALERT_S, NOT_ANSWERING, RunwareTrouble
from bot.simulator.server import Simulator
from tests.fakes.world import started_world

OPS_CHANNEL = 777_000_000_000_000_002


class Alerts:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def __call__(self, text: str) -> None:
        self.sent.append(text)


async def test_runware_down_for_five_minutes_alerts_once_an_hour() -> None:
    clock, alerts = FixedClock(), Alerts()
    trouble = RunwareTrouble(clock, alerts)
    await trouble.request_failed("getResponse: http503")
    assert trouble.note == NOT_ANSWERING and alerts.sent == []  # shown at once, not alerted yet
    clock.advance(DOWN_ALERT_S - 1)
    await trouble.request_failed("getResponse: http503")
    assert alerts.sent == []
    clock.advance(1)
    await trouble.request_failed("getResponse: http503")
    assert len(alerts.sent) == 1 and "5 minutes" in alerts.sent[0] and "http503" in alerts.sent[0]
    clock.advance(ALERT_EVERY_S - 1)
    await trouble.request_failed("getResponse: http503")
    assert len(alerts.sent) == 1  # not again within the hour
    clock.advance(1)
    await trouble.request_failed("getResponse: http503")
    assert len(alerts.sent) == 2

    trouble.request_answered()
    assert trouble.note is None
    clock.advance(DOWN_ALERT_S - 1)
    await trouble.request_failed("submit: http500")  # a new outage starts its own five minutes
    assert len(alerts.sent) == 2


async def test_three_failed_jobs_in_a_row_alert_and_a_success_resets_the_count() -> None:
    clock, alerts = FixedClock(), Alerts()
    trouble = RunwareTrouble(clock, alerts)
    for state in ("failed", "timed_out", "succeeded", "failed", "failed"):
        await trouble.job_finished(state, "The video provider failed.")
    assert alerts.sent == []
    await trouble.job_finished("failed", "The video provider failed.")
    assert alerts.sent == ["3 jobs in a row failed at Runware (last: The video provider failed.)."]
    await trouble.job_finished("failed", None)
    assert len(alerts.sent) == 1  # at most hourly
    clock.advance(ALERT_EVERY_S)
    await trouble.job_finished("failed", None)
    assert len(alerts.sent) == 2 and alerts.sent[1].startswith("5 jobs in a row")


class NoteSink:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.notes: list[str | None] = []
        self.alerts = Alerts()

    def handles(self, job):
        return True

    def download_cap(self, job):
        return 50 * 1024 * 1024

    def download_dir(self, job):
        return self.folder

    def fit_limit(self, job):
        return None

    async def progress(self, update: ProgressUpdate) -> int | None:
        self.notes.append(update.note)
        return None

    async def deliver(self, outcome: Outcome) -> int | None:
        return 1

    async def alert(self, text: str) -> None:
        await self.alerts(text)


@pytest.fixture
async def stepped(tmp_path: Path):
    sim = Simulator(api_key="k", base_generation_s=3600)
    await sim.start()
    cfg = Config.model_validate({
        "runware": {"api_url": sim.url, "first_poll_after_s": 0, "poll_interval_s": 1,
                    "download_hosts": ["127.0.0.1"], "max_retries": 0},
        "storage": {"path": str(tmp_path / "db.sqlite3")},
        "progress": {"min_edit_interval_s": 3600},
        "limits": {"daily_videos": "unlimited", "max_concurrent": "unlimited", "monthly_usd": "unlimited"},
    })
    db = await open_database(cfg.storage.path)
    client = RunwareClient(api_url=sim.url, api_key=SecretStr("k"), max_retries=0)
    sink = NoteSink(tmp_path / "videos")
    clock = FixedClock()
    async with httpx.AsyncClient() as http:
        engine = Engine(cfg=cfg, db=db, client=client, sink=sink, clock=clock, http=http)
        yield sim, engine, sink, clock
    await client.aclose()
    await db.close()
    await sim.stop()


async def test_the_note_is_on_progress_from_the_first_failed_round_and_gone_after_one_answered(stepped) -> None:
    sim, engine, sink, clock = stepped
    request = resolve_request(engine.cfg, prompt="a fox in the snow")
    await engine.create_job(Member(1, 11), request, channel_id=5)
    await engine.tick()                    # submitted, polled once, shown
    assert sink.notes == [None]
    sim.faults.next_statuses = [503]       # exactly one round fails
    clock.advance(1)
    await engine.tick()
    assert sink.notes == [None, NOT_ANSWERING]  # in that same round's progress, despite the interval
    clock.advance(1)
    await engine.tick()                    # Runware answers again: the note goes at once too
    assert sink.notes == [None, NOT_ANSWERING, None]
    assert sink.alerts.sent == []


async def test_three_jobs_failing_in_a_row_at_runware_alert_the_operator(stepped) -> None:
    sim, engine, sink, clock = stepped
    for n in range(3):
        request = resolve_request(engine.cfg, prompt=f"FAIL_PROVIDER fox {n}")
        await engine.create_job(Member(1, 11), request, channel_id=5)
    await engine.tick()
    sim.finish_all()
    clock.advance(1)
    await engine.tick()
    assert len(sink.alerts.sent) == 1 and sink.alerts.sent[0].startswith("3 jobs in a row failed")


async def test_the_alert_reaches_the_ops_channel(tmp_path: Path) -> None:
    async with started_world(tmp_path, {"discord": {"ops_channel_id": OPS_CHANNEL}}) as w:
        w.fake.add_channel(w.seed.guild_id, OPS_CHANNEL, "ops")
        for n in range(3):
            await w.video({"prompt": f"FAIL_PROVIDER a cat {n}"})
        await w.wait_submitted(3)
        w.sim.finish_all()
        alert = await w.fake.wait_for_message(OPS_CHANNEL, lambda m: "in a row failed" in m.content)
        assert alert.content.startswith("⚠️ 3 jobs in a row failed at Runware")
        assert alert.notified_user_ids == [] and not alert.notified_everyone
        await w.wait_result(3)
