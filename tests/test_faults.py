"""Faults around the bot (SPEC 3.3, 3.5, 5), end to end with the real bot, the Runware simulator and
the fake Discord: Runware 5xx, 429, dropped connections, slow and malformed answers, a lost answer
(conflictTaskUUID), 401 in the middle of a run, 402, provider errors; Discord 429 storms, 5xx, 403, a
deleted channel or guild, closed DMs; the database locked or full. Whatever happens, each job is
billed and settled once and its member gets one final message (or is told why not)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.db import open_database
from bot.db.jobs import jobs_by_state
from bot.db.kv import kv_get
from bot.db.money import ledger_rows
from bot.errors import DatabaseUnavailable
from bot.services import delivery, submitter
from bot.services.clock import SystemClock
from bot.services.jobs import JobStore
from bot.services.quotas import RUNWARE_PAUSE_KEY, Member, Quotas
from tests.fakes.world import SIM_KEY, BotWorld, eventually, started_world

PRICE_5S = 350_000
OPS_CHANNEL = 777_000_000_000_000_001
NOT_ANSWERING = "Runware is not answering, retrying"


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # Retry pacing only: the behaviour under test is the same at any speed.
    monkeypatch.setattr(delivery, "RETRY_BASE_S", 0.05)
    monkeypatch.setattr(submitter, "PAUSE_PROBE_S", 0.1)


@contextlib.asynccontextmanager
async def fast_world(tmp_path: Path, config: dict | None = None) -> AsyncIterator[BotWorld]:
    async with started_world(tmp_path, config) as w:
        assert w.bot is not None and w.bot.runware is not None
        w.bot.runware.backoff_base_s, w.bot.runware.backoff_cap_s = 0.01, 0.05
        yield w


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[BotWorld]:
    async with fast_world(tmp_path, {"discord": {"ops_channel_id": OPS_CHANNEL}}) as w:
        w.fake.add_channel(w.seed.guild_id, OPS_CHANNEL, "ops")
        yield w


async def queued(w: BotWorld, prompt: str, job_id: int, **options) -> str:
    iid = await w.video({"prompt": prompt, **options})
    await w.reply(iid, f"Queued as job #{job_id}")
    return iid


async def money(w: BotWorld) -> list[tuple[int, str, int]]:
    return [(r.job_id, r.kind, r.amount_micro) for r in await w.ledger()]


async def _is_none(value) -> bool:
    return await value is None


def progress_text(w: BotWorld) -> str:
    msgs = w.progress_messages()
    return " ".join((e.get("description") or "") for m in msgs for e in m.embeds)


# ---- Runware ---------------------------------------------------------------------------------------------

async def test_transport_faults_and_a_lost_answer_bill_once(world: BotWorld) -> None:
    w = world
    f = w.sim.faults
    # Every kind of transient trouble on the submit, then the answer lost after Runware took the task:
    # the retry with the same taskUUID gets conflictTaskUUID, which means "accepted".
    f.drop_next, f.next_statuses, f.malformed_next = 1, [500, 502, 429, 503], 1
    f.drop_after_processing_next = 1
    await queued(w, "a storm over the sea", 1)
    await w.wait_submitted(1)
    await w.wait_job(1, lambda j: j.state == "submitted")
    assert w.sim.stats.dropped_connections == 2
    f.next_statuses, f.drop_next = [503, 429], 1  # the polls too
    w.sim.finish_all()
    [result] = await w.wait_result(1)
    assert [a["data"] for a in result.attachments] == [w.sim.mp4]
    await w.wait_notified(1)
    assert w.sim.stats.submits == 1 and w.sim.stats.billed_micro == PRICE_5S
    assert await money(w) == [(1, "reserve", PRICE_5S), (1, "settle", PRICE_5S)]


async def test_runware_down_then_back_shows_a_note_and_resumes(world: BotWorld) -> None:
    w = world
    await queued(w, "waves at night", 1)
    await w.wait_submitted(1)
    w.sim.faults.rate_5xx = 1.0
    await w.wait(lambda: NOT_ANSWERING in progress_text(w))
    assert (await w.job(1)).state in ("submitted", "processing")
    w.sim.faults.reset()
    w.sim.finish_all()
    await w.wait_result(1)
    await w.wait_notified(1)
    assert len(w.result_messages()) == 1
    assert await money(w) == [(1, "reserve", PRICE_5S), (1, "settle", PRICE_5S)]


async def test_slow_answers_time_out_and_are_retried(tmp_path: Path) -> None:
    async with fast_world(tmp_path, {"runware": {"request_timeout_s": 0.3}}) as w:
        await queued(w, "a slow river", 1)
        await w.wait_submitted(1)
        w.sim.faults.latency_s = 2.0
        await w.wait(lambda: NOT_ANSWERING in progress_text(w))
        w.sim.faults.latency_s = 0.0
        w.sim.finish_all()
        await w.wait_result(1)
        await w.wait_notified(1)
        assert w.sim.stats.submits == 1
        assert await money(w) == [(1, "reserve", PRICE_5S), (1, "settle", PRICE_5S)]


async def test_a_401_mid_run_pauses_alerts_and_recovers(world: BotWorld) -> None:
    w = world
    await queued(w, "first light", 1)
    await w.wait_submitted(1)
    w.sim.api_key = "rotated-elsewhere"  # the key stops working while job 1 is at Runware
    alert = await w.fake.wait_for_message(OPS_CHANNEL, lambda m: "API key was rejected" in m.content)
    assert alert.notified_everyone is False and alert.notified_role_ids == []
    # Members are told; nothing is reserved, nothing reaches Runware.
    text = await w.reply(await w.video({"prompt": "while paused"}))
    assert "paused" in text and "Runware" in text
    assert [j.id for j in await w.jobs()] == [1]
    w.sim.api_key = SIM_KEY  # the operator fixes the key: job 1 finishes, new jobs are taken again
    w.sim.finish_all()
    await w.wait_result(1)
    await w.wait_notified(1)
    assert w.bot is not None and w.bot.engine is not None
    db = w.bot.engine.db
    await eventually(lambda: _is_none(kv_get(db, RUNWARE_PAUSE_KEY)))  # a probe finds the key works again
    await queued(w, "after the fix", 2)
    await w.wait_submitted(2)  # at Runware first: finish_all() only finishes the tasks it has
    w.sim.finish_all()
    await w.wait_notified(2)
    assert len(w.fake.messages(OPS_CHANNEL)) == 1  # alerted once
    assert await money(w) == [(1, "reserve", PRICE_5S), (1, "settle", PRICE_5S),
                              (2, "reserve", PRICE_5S), (2, "settle", PRICE_5S)]


async def test_a_402_keeps_the_job_queued_until_the_balance_is_back(world: BotWorld,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    w = world
    # A probe's key check passes even with no balance (only a submit says 402), so between a probe
    # and the next refused submit new jobs would be taken: no probes until the balance is back.
    monkeypatch.setattr(submitter, "PAUSE_PROBE_S", 3600.0)
    w.sim.faults.balance_micro = 0
    await queued(w, "an empty wallet", 1)
    await w.fake.wait_for_message(OPS_CHANNEL, lambda m: "balance is exhausted" in m.content)
    assert (await w.job(1)).state == "queued" and w.sim.stats.submits == 0
    # The queued job's progress message says so, while the pause holds.
    paused = await w.wait(lambda: next((m for m in w.progress_messages() if m.embeds
                                        and "Generation is paused" in m.embeds[0]["description"]), None))
    assert "starts by itself" in paused.embeds[0]["description"]
    text = await w.reply(await w.video({"prompt": "another one"}))
    assert "paused" in text
    w.sim.faults.balance_micro = None  # topped up: the next probe lets the waiting job through, once
    monkeypatch.setattr(submitter, "PAUSE_PROBE_S", 0.1)
    await w.wait_submitted(1)
    await w.wait(lambda: all("Generation is paused" not in json.dumps(m.embeds) for m in w.progress_messages()))
    w.sim.finish_all()
    await w.wait_result(1)
    await w.wait_notified(1)
    assert w.sim.stats.submits == 1 and w.sim.stats.billed_micro == PRICE_5S
    assert await money(w) == [(1, "reserve", PRICE_5S), (1, "settle", PRICE_5S)]


async def test_provider_errors_fail_or_partly_fail_and_settle_to_what_was_billed(world: BotWorld) -> None:
    w = world
    w.sim.faults.errors_in_data = True  # failed items inside `data` with status "error" too
    await queued(w, "FAIL_PROVIDER a cat", 1)
    await queued(w, "FAIL_PARTIAL two dogs", 2, variations=2)
    await w.wait_submitted(2)
    w.sim.finish_all()
    await w.wait_notified(1)
    await w.wait_notified(2)
    failed, partial = sorted(w.result_messages(), key=lambda m: m.content)
    assert "job #1 did not produce a video" in failed.content
    assert "not charged" in failed.embeds[0]["description"]
    assert partial.content.startswith(f"<@{w.seed.user_id}> your video is ready")
    assert len(partial.attachments) == 1
    fields = {f["name"]: f["value"] for f in partial.embeds[0]["fields"]}
    assert "provider" in fields["Not delivered"].lower() and fields["Cost"] == "$0.35"
    # The order of the two jobs' final rows depends on which finished first.
    assert Counter(await money(w)) == Counter([(1, "reserve", PRICE_5S), (2, "reserve", 2 * PRICE_5S),
                                               (1, "release", PRICE_5S), (2, "settle", PRICE_5S)])
    assert w.sim.stats.billed_micro == PRICE_5S


# ---- Discord ---------------------------------------------------------------------------------------------

FINAL_POST = r"^/channels/\d+/messages$"


@pytest.mark.parametrize(("status", "code", "count"), [
    (429, None, 4),    # a storm discord.py rides out itself
    (429, None, 7),    # longer than discord.py's five tries: the delivery is retried later
    (503, None, 3),    # Discord's 5xx
    (500, 0, 1),
])
async def test_discord_errors_on_the_final_message_still_deliver_once(world: BotWorld, status: int,
                                                                      code: int | None, count: int) -> None:
    w = world
    await queued(w, "through the storm", 1)
    await w.wait_submitted(1)
    await w.wait(lambda: w.progress_messages())
    w.fake.fail_next("POST", FINAL_POST, status, code, "trouble", count=count)
    w.sim.finish_all()
    [result] = await w.wait_result(1)
    job = await w.wait_notified(1)
    assert job.result_message_id == result.id and result.attachments
    assert len(w.result_messages()) == 1
    assert await money(w) == [(1, "reserve", PRICE_5S), (1, "settle", PRICE_5S)]


async def test_lost_permission_delivers_by_dm(world: BotWorld) -> None:
    w = world
    await queued(w, "a locked room", 1)
    await w.wait_submitted(1)
    w.fake.deny_channel(w.seed.channel_id)  # every write there now gets 403
    w.sim.finish_all()
    dm = int(w.fake.dm_channel_for(w.seed.user_id)["id"])
    [result] = await w.wait_result(1, channel_id=dm)
    assert result.attachments and result.notified_user_ids == [w.seed.user_id]
    await w.wait_notified(1)
    assert w.result_messages() == []
    assert await money(w) == [(1, "reserve", PRICE_5S), (1, "settle", PRICE_5S)]


async def test_a_deleted_guild_and_closed_dms_still_settle_and_the_poller_goes_on(world: BotWorld) -> None:
    w = world
    other_guild, other_channel = 880_000_000_000_000_001, 880_000_000_000_000_002
    w.fake.add_guild(other_guild, "Other")
    w.fake.add_channel(other_guild, other_channel, "gen")
    w.fake.add_member(other_guild, w.seed.user_id, "member")
    await queued(w, "in a guild about to vanish", 1)
    await w.wait_submitted(1)
    w.fake.dm_closed.add(w.seed.user_id)
    w.fake.remove_guild(w.seed.guild_id)
    w.sim.finish_all()
    gone = await w.wait_notified(1)  # nowhere left to tell: recorded, never retried forever
    assert gone.state == "succeeded"
    iid = await w.video({"prompt": "elsewhere"}, guild_id=other_guild, channel_id=other_channel)
    await w.reply(iid, "Queued as job #2")
    await w.wait_submitted(2)
    w.sim.finish_all()
    [result] = await w.wait_result(1, channel_id=other_channel)
    assert result.attachments
    assert await money(w) == [(1, "reserve", PRICE_5S), (1, "settle", PRICE_5S),
                              (2, "reserve", PRICE_5S), (2, "settle", PRICE_5S)]


# ---- the database ----------------------------------------------------------------------------------------

async def test_a_locked_database_gets_a_clear_answer_and_writes_nothing(world: BotWorld) -> None:
    w = world
    assert w.bot is not None and w.bot.db is not None
    await w.bot.db.run(lambda c: c.execute("PRAGMA busy_timeout = 100"))
    other = sqlite3.connect(str(w.bot.db.path), isolation_level=None, check_same_thread=False, timeout=10)
    try:
        await asyncio.to_thread(other.execute, "BEGIN EXCLUSIVE")  # another program holds the lock
        text = await w.reply(await w.video({"prompt": "a locked door"}))
        assert "database is locked" in text and "nothing was changed" in text
        await asyncio.to_thread(other.execute, "ROLLBACK")
    finally:
        other.close()
    assert await w.jobs() == [] and await w.ledger() == []
    assert w.sim.stats.http_requests == 0
    await queued(w, "the door opens", 1)  # and the bot goes on once the lock is gone


async def test_a_full_disk_gets_a_clear_answer_and_writes_nothing(world: BotWorld) -> None:
    w = world
    assert w.bot is not None and w.bot.db is not None

    def fill(c) -> int:  # the file may not grow by one page: SQLite's own "database or disk is full"
        c.execute("VACUUM")  # and has no free page to use instead (a migration's DROP TABLE leaves some)
        assert c.fetchval("PRAGMA freelist_count") == 0
        pages = c.fetchval("PRAGMA page_count")
        c.execute(f"PRAGMA max_page_count = {pages}")
        return pages

    pages = await w.bot.db.run(fill)
    long_text = "a very long and detailed scene " * 80  # the job row needs new pages
    text = await w.reply(await w.video({"prompt": long_text[:2500], "negative_prompt": long_text[:2500]}))
    assert "disk holding the bot's database is full" in text and "nothing was changed" in text
    await w.bot.db.run(lambda c: c.execute(f"PRAGMA max_page_count = {pages * 1000}"))
    assert await w.jobs() == [] and await w.ledger() == []
    assert w.sim.stats.http_requests == 0


async def test_the_store_raises_a_clear_error_when_locked_and_rolls_back(tmp_path: Path) -> None:
    """The same for the terminal (`klingbot generate`): the CLI prints UserFacingError messages."""
    from zoneinfo import ZoneInfo

    from bot.config import LimitsConfig

    utc = ZoneInfo("UTC")
    db = await open_database(tmp_path / "k.sqlite3")
    other = sqlite3.connect(str(tmp_path / "k.sqlite3"), isolation_level=None, timeout=10)
    try:
        await db.run(lambda c: c.execute("PRAGMA busy_timeout = 50"))
        clock = SystemClock()
        store = JobStore(db, Quotas(db, LimitsConfig(), utc, clock), clock, utc)
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(DatabaseUnavailable, match="locked") as caught:
            await store.create(Member(0, 0), channel_id=0, model_key="kling-2.5-turbo-pro",
                               params={"prompt": "x"}, task_uuid="t-1", duration_s=5, variations=1,
                               estimate_micro=PRICE_5S)
        assert caught.value.exit_code == 1
        other.execute("ROLLBACK")
        assert await jobs_by_state(db, None, 10) == [] and await ledger_rows(db) == []
    finally:
        other.close()
        await db.close()
