"""Usage reports: per user / model / day over a period, equal to what the ledger holds, and the CSV
export with USD to 6 decimals."""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from itertools import count
from zoneinfo import ZoneInfo

import pytest

from bot.config import Config
from bot.db import open_database
from bot.db.jobs import get_job
from bot.db.money import ledger_rows
from bot.errors import InvalidInput
from bot.services.clock import FixedClock
from bot.services.jobs import JobStore
from bot.services.moderation import Moderation
from bot.services.quotas import Member
from bot.services.usage import Usage, UsageLine, to_csv

G = 1
ALICE, BOB, CAROL_ELSEWHERE = Member(G, 100), Member(G, 200), Member(2, 300)
_uuids = count()
KIND_FIELDS = {"reserve": "reserved_micro", "settle": "settled_micro", "release": "released_micro",
               "refund": "refunded_micro"}


def at(*args: int) -> float:
    return datetime(*args, tzinfo=ZoneInfo("UTC")).timestamp()


class Env:
    def __init__(self, db, cfg: Config, clock: FixedClock) -> None:
        self.db, self.clock = db, clock
        self.mod = Moderation(db, cfg, clock)
        self.store = JobStore(db, self.mod.quotas, clock, cfg.progress.tz)
        self.usage = Usage(db, cfg, clock)

    async def job(self, member: Member, outcome: str, *, model: str = "kling-2.5-turbo-pro",
                  variations: int = 1, estimate: int = 350_000, cost: int = 350_000) -> int:
        job = await self.store.create(
            member, channel_id=10, model_key=model, params={}, task_uuid=f"t{next(_uuids)}", duration_s=5,
            variations=variations, estimate_micro=estimate)
        if outcome == "open":
            return job.id
        await self.store.mark_submitted(job.id, self.clock.now())
        if outcome == "failed":
            await self.store.finish(job.id, "failed", "provider error", None)
        else:
            await self.store.finish(job.id, "succeeded", None, cost)
            if outcome == "refunded":
                await self.mod.refund(job.id, actor="discord:9", reason="bad")
        return job.id


@pytest.fixture
async def env(tmp_path):
    db = await open_database(tmp_path / "usage.sqlite3")
    cfg = Config.model_validate({"limits": {
        "daily_videos": "unlimited", "monthly_usd": "unlimited", "max_concurrent": "unlimited",
        "guild_monthly_usd": "unlimited", "global_daily_usd": "unlimited"}})
    e = Env(db, cfg, FixedClock(at(2024, 2, 20, 10)))
    # Last month, then earlier this month, then within the last week, then today.
    await e.job(ALICE, "settled", cost=410_000)
    e.clock.set(at(2024, 3, 2, 10))
    await e.job(ALICE, "settled", variations=2, estimate=700_000, cost=690_000)
    await e.job(BOB, "failed", model="kling-2.1-pro")
    e.clock.set(at(2024, 3, 12, 23, 30))
    await e.job(BOB, "refunded", model="kling-2.1-pro", cost=500_000)
    await e.job(CAROL_ELSEWHERE, "settled")
    e.clock.set(at(2024, 3, 15, 8))
    await e.job(ALICE, "open", estimate=700_000)
    await e.job(BOB, "settled", cost=123_457)
    await e.mod.credit(G, 100, 1_000_000, actor="discord:9", reason="prize")  # not usage: no job
    yield e
    await db.close()


async def expected_from_ledger(env: Env, guild_id: int | None, since: str | None, by: str) -> dict:
    """Per key: each ledger kind summed straight from the ledger rows, and the jobs counted."""
    sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    kinds: dict[int, dict[str, int]] = defaultdict(dict)
    for row in await env.db.run(ledger_rows, guild_id=guild_id, since_day=since):
        if row.kind != "credit":
            kinds[row.job_id][row.kind] = row.amount_micro
    for job_id, rows in kinds.items():
        job = await env.db.run(get_job, job_id)
        key = {"user": str(job.user_id), "model": job.model_key, "day": job.day}[by]
        for kind, amount in rows.items():
            sums[key][KIND_FIELDS[kind]] += amount
        sums[key]["jobs"] += 1
        sums[key]["videos"] += 0 if "release" in rows else job.variations
        closed = "settle" in rows or "release" in rows
        sums[key]["open_micro"] += 0 if closed else rows["reserve"]
    fields = [*KIND_FIELDS.values(), "jobs", "videos", "open_micro"]
    return {k: {f: v.get(f, 0) for f in fields} for k, v in sums.items()}


def as_dict(line: UsageLine) -> dict:
    return {"reserved_micro": line.reserved_micro, "settled_micro": line.settled_micro,
            "released_micro": line.released_micro, "refunded_micro": line.refunded_micro, "jobs": line.jobs,
            "videos": line.videos, "open_micro": line.open_micro}


@pytest.mark.parametrize("period,since", [("today", "2024-03-15"), ("7d", "2024-03-09"),
                                          ("month", "2024-03-01"), ("all", None)])
@pytest.mark.parametrize("by", ["user", "model", "day"])
async def test_report_equals_the_ledger(env: Env, period: str, since: str | None, by: str) -> None:
    report = await env.usage.report(G, period, by)
    assert (report.period, report.by, report.since_day, report.guild_id) == (period, by, since, G)
    assert {r.key: as_dict(r) for r in report.rows} == await expected_from_ledger(env, G, since, by)
    assert report.rows, "the fixture has jobs in every period"
    total = report.total
    assert total.key == "total"
    assert total.settled_micro == sum(r.settled_micro for r in report.rows)


async def test_report_by_user_this_month(env: Env) -> None:
    report = await env.usage.report(G, "month", "user")
    rows = {r.key: r for r in report.rows}
    alice, bob = rows["100"], rows["200"]
    # Alice: a settled job of 2 videos, and an open one (reserve not settled yet).
    assert (alice.jobs, alice.videos, alice.settled_micro, alice.open_micro) == (2, 3, 690_000, 700_000)
    # Bob: a failed job (released, no videos), a refunded one, a settled one.
    assert (bob.jobs, bob.videos, bob.released_micro, bob.refunded_micro) == (3, 2, 350_000, 500_000)
    assert bob.settled_micro == 623_457 and bob.net_micro == 123_457
    assert [r.key for r in report.rows] == ["100", "200"]  # highest settled first
    assert "300" not in rows  # another guild's member


async def test_report_of_every_guild(env: Env) -> None:
    report = await env.usage.report(None, "all", "user")
    assert {r.key for r in report.rows} == {"100", "200", "300"}
    assert {r.key: as_dict(r) for r in report.rows} == await expected_from_ledger(env, None, None, "user")


async def test_day_rows_are_in_order(env: Env) -> None:
    report = await env.usage.report(G, "all", "day")
    assert [r.key for r in report.rows] == ["2024-02-20", "2024-03-02", "2024-03-12", "2024-03-15"]


async def test_csv_equals_the_report_with_six_decimals(env: Env) -> None:
    report = await env.usage.report(G, "all", "model")
    text = report.csv()
    assert text == to_csv(report.rows, "model")
    assert report.filename == "usage-all-by-model.csv"
    lines = list(csv.DictReader(io.StringIO(text)))
    assert list(lines[0]) == ["model", "jobs", "videos", "reserved_usd", "settled_usd", "released_usd",
                              "refunded_usd", "open_usd", "net_usd"]
    assert len(lines) == len(report.rows)
    for line, row in zip(lines, report.rows, strict=True):
        assert (line["model"], int(line["jobs"]), int(line["videos"])) == (row.key, row.jobs, row.videos)
        for name in ("reserved", "settled", "released", "refunded", "open", "net"):
            assert re.fullmatch(r"-?\d+\.\d{6}", line[f"{name}_usd"]), line
            assert Decimal(line[f"{name}_usd"]) * 1_000_000 == getattr(row, f"{name}_micro")
    pro = next(line for line in lines if line["model"] == "kling-2.5-turbo-pro")
    assert pro["settled_usd"] == "1.223457"  # 0.41 + 0.69 + 0.123457


async def test_bad_period_or_grouping_names_the_field(env: Env) -> None:
    with pytest.raises(InvalidInput) as info:
        await env.usage.report(G, "year", "user")
    assert "`period`" in info.value.message and "today, 7d, month, all" in info.value.message
    with pytest.raises(InvalidInput) as info:
        await env.usage.report(G, "all", "colour")
    assert "`by`" in info.value.message and "user, model, day" in info.value.message


def test_empty_csv_has_its_header() -> None:
    header = "day,jobs,videos,reserved_usd,settled_usd,released_usd,refunded_usd,open_usd,net_usd\n"
    assert to_csv([], "day") == header
