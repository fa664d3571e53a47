"""The operator's commands in a subprocess (`python -m bot jobs|backup|quota|usage`; health has
test_health.py) on a real database file that the test fills through the services, as the bot would."""

from __future__ import annotations

import csv
import os
import re
import sqlite3
from decimal import Decimal
from itertools import count
from zoneinfo import ZoneInfo

import pytest

from bot.cli.ops import operator_actor
from bot.config import Config, LimitsConfig
from bot.db import open_database
from bot.db.runs import record_poll_round, register_run
from bot.services.clock import Clock
from bot.services.jobs import JobStore
from bot.services.moderation import Moderation
from bot.services.quotas import DM_SCOPE, Member, Quotas
from tests.fakes.processes import cli

UTC_ZONE = ZoneInfo("UTC")
EST = 350_000
_uuids = count()


class World:
    """The bot's database at the path the config names, filled through JobStore and Quotas."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path = tmp_path
        self.db_path = tmp_path / "data" / "bot.sqlite3"
        (tmp_path / "config.toml").write_text(
            f'[storage]\npath = "{self.db_path.as_posix()}"\n'
            '[limits]\ndaily_videos = "unlimited"\nmax_concurrent = "unlimited"\n'
        )
        self.db = None

    async def open(self, clock=None) -> JobStore:
        self.db = await open_database(self.db_path)
        clock = clock or Clock()
        limits = LimitsConfig.model_validate({"daily_videos": "unlimited", "max_concurrent": "unlimited"})
        self.quotas = Quotas(self.db, limits, UTC_ZONE, clock)
        self.clock = clock
        self.store = JobStore(self.db, self.quotas, clock, UTC_ZONE)
        return self.store

    async def bot_run(self) -> None:
        """A live bot run that just finished a poll round, as the engine records it."""
        now = self.clock.now()
        run_id = f"test:{os.getpid()}:backup"
        await register_run(self.db, run_id=run_id, kind="discord", host="test", pid=os.getpid(), now=now,
                           lease_until=now + 30)
        await record_poll_round(self.db, run_id, now)

    async def job(self, member=None, *, model="kling-2.5-turbo-pro", variations=1, settle=None,
                  state="succeeded"):
        job = await self.store.create(
            member or Member(7, 100), channel_id=10, model_key=model, params={"prompt": "a fox"},
            task_uuid=f"t-{next(_uuids)}", duration_s=5, variations=variations,
            estimate_micro=EST * variations,
        )
        if settle is not None:
            await self.store.finish(job.id, state, None, settle)
        return job

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()
            self.db = None

    def rows(self, sql, path=None):
        with sqlite3.connect(path or self.db_path) as conn:
            return conn.execute(sql).fetchall()


@pytest.fixture
async def world(tmp_path):
    w = World(tmp_path)
    yield w
    await w.close()


# ---- jobs --------------------------------------------------------------------------------------


async def test_jobs_table_and_state_filter(world):
    await world.open()
    done = await world.job(settle=412_345)
    queued = await world.job(Member(8, 200), model="kling-2.1-pro", variations=2)
    failed = await world.job(settle=0, state="failed")
    await world.close()

    code, out, err = await cli(world.tmp_path, "jobs")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["id", "guild", "user", "state", "model", "created", "cost"]
    by_id = {int(ln.split()[0]): ln for ln in lines[2:]}
    assert list(by_id) == [failed.id, queued.id, done.id]  # newest first
    assert by_id[done.id].split()[1:5] == ["7", "100", "succeeded", "kling-2.5-turbo-pro"]
    assert by_id[done.id].endswith("$0.412345")
    assert by_id[queued.id].split()[1:5] == ["8", "200", "queued", "kling-2.1-pro"]
    assert by_id[queued.id].endswith("~$0.70 (reserved)")
    assert by_id[failed.id].endswith("$0 (released)")

    code, out, _ = await cli(world.tmp_path, "jobs", "--state", "queued")
    assert code == 0 and [int(ln.split()[0]) for ln in out.splitlines()[2:]] == [queued.id]
    code, out, _ = await cli(world.tmp_path, "jobs", "--guild", "7", "--limit", "1")
    assert code == 0 and [int(ln.split()[0]) for ln in out.splitlines()[2:]] == [failed.id]
    code, out, _ = await cli(world.tmp_path, "jobs", "--state", "timed_out")
    assert (code, out.strip()) == (0, "no jobs in state timed_out")


async def test_jobs_rejects_an_unknown_state(world):
    code, _, err = await cli(world.tmp_path, "jobs", "--state", "done")
    assert code == 2
    assert "`--state` = 'done'" in err
    assert "queued, submitted, processing, succeeded, failed, timed_out, cancelled" in err


async def test_jobs_without_database(world):
    code, _, err = await cli(world.tmp_path, "jobs")
    assert code == 1 and f"no database at {world.db_path}" in err
    assert not world.db_path.exists()


# ---- backup ------------------------------------------------------------------------------------


async def test_backup_while_the_database_is_in_use(world):
    await world.open()
    for n in range(3):
        await world.job(settle=100_000 + n)
    await world.bot_run()
    target = world.tmp_path / "backups" / "copy.sqlite3"
    # The test's connection stays open (as the running bot's would) and has un-checkpointed WAL pages.
    code, out, err = await cli(world.tmp_path, "backup", str(target))
    assert code == 0, err
    assert out.strip() == f"backed up {world.db_path} to {target} ({target.stat().st_size} bytes)"
    for table in ("jobs", "ledger", "runs"):
        assert world.rows(f"SELECT * FROM {table} ORDER BY 1", target) == world.rows(
            f"SELECT * FROM {table} ORDER BY 1")
    assert len(world.rows("SELECT * FROM ledger", target)) == 6
    # The copy is a whole klingbot database: it opens (no migration needed) with the same rows.
    copy = await open_database(target)
    assert await copy.user_version() == await world.db.user_version()
    await copy.close()


async def test_backup_never_overwrites(world):
    await world.open()
    await world.job(settle=1)
    target = world.tmp_path / "existing.sqlite3"
    target.write_bytes(b"precious")
    code, _, err = await cli(world.tmp_path, "backup", str(target))
    assert code == 2 and f"{target} already exists" in err
    assert target.read_bytes() == b"precious"


async def test_backup_without_database(world):
    code, _, err = await cli(world.tmp_path, "backup", str(world.tmp_path / "b.sqlite3"))
    assert code == 1 and "no database at" in err
    assert not (world.tmp_path / "b.sqlite3").exists()


# ---- quota -------------------------------------------------------------------------------------


async def test_quota_set_show_credit_reset_are_audited(world):
    actor = operator_actor()
    code, out, err = await cli(world.tmp_path, "quota", "set", "--guild", "7", "--user", "100",
                               "--monthly-usd", "2.50", "--daily-videos", "unlimited", "--reason", "vip")
    assert code == 0, err
    assert "quota.set user:100 in guild 7" in out and "monthly_usd=$2.50" in out
    assert world.rows("SELECT guild_id, user_id, daily_videos, monthly_micro, max_concurrent "
                      "FROM member_limits") == [(7, 100, -1, 2_500_000, None)]
    audit = world.rows("SELECT guild_id, actor, action, target, before, after, reason FROM audit")
    assert audit == [(7, actor, "quota.set", "user:100",
                      "daily_videos=default, monthly_usd=default, max_concurrent=default",
                      "daily_videos=unlimited, monthly_usd=$2.50, max_concurrent=default", "vip")]

    code, out, err = await cli(world.tmp_path, "quota", "credit", "--guild", "7", "--user", "100",
                               "--amount", "-1.25", "--reason", "took too much")
    assert code == 0, err
    assert world.rows("SELECT kind, guild_id, user_id, job_id, amount_micro, actor, reason FROM ledger") == [
        ("credit", 7, 100, None, -1_250_000, actor, "took too much")]
    last_audit = world.rows("SELECT action, target, actor FROM audit ORDER BY id")[-1]
    assert last_audit == ("credit", "user:100", actor)

    code, out, err = await cli(world.tmp_path, "quota", "show", "--guild", "7", "--user", "100")
    assert code == 0, err
    assert "own overrides: daily_videos=unlimited, monthly_usd=$2.50" in out
    assert "$0.00 spent of $1.25 ($2.50 - $1.25 credit), $1.25 left" in out

    code, out, err = await cli(world.tmp_path, "quota", "reset", "--guild", "7", "--user", "100")
    assert code == 0, err
    assert world.rows("SELECT * FROM member_limits") == []
    assert [r[0] for r in world.rows("SELECT action FROM audit ORDER BY id")] == ["quota.set", "credit",
                                                                                "quota.reset"]


@pytest.mark.parametrize(("args", "words"), [
    (["set", "--daily-videos", "lots"], "`--daily-videos` = 'lots'"),
    (["set", "--monthly-usd", "five"], "`--monthly-usd` = 'five'"),
    (["set", "--max-concurrent", "-1"], "`--max-concurrent` = '-1'"),
    (["set"], "no limit was given"),
    (["credit", "--amount", "0", "--reason", "x"], "`--amount` = '0'"),
    (["credit", "--amount", "2"], "`--reason`"),
    (["credit", "--reason", "x"], "`--amount`"),
    (["reset", "--monthly-usd", "3"], "`--monthly-usd`"),
])
async def test_quota_bad_values_exit_2_and_change_nothing(world, args, words):
    await world.open()
    await world.close()
    code, _, err = await cli(world.tmp_path, "quota", *args, "--guild", "7", "--user", "100")
    assert code == 2, err
    assert words in err and "allowed" in err
    assert world.rows("SELECT * FROM audit") == [] and world.rows("SELECT * FROM ledger") == []
    assert world.rows("SELECT * FROM member_limits") == []


# ---- usage -------------------------------------------------------------------------------------


def ledger_usage(world, key_sql, guild=None):
    """The usage table computed straight from the raw ledger and jobs rows."""
    where = "" if guild is None else f"WHERE j.guild_id = {int(guild)}"
    jobs = world.rows(f"SELECT j.id, {key_sql}, j.variations FROM jobs j {where}")
    out = {}
    for job_id, key, variations in jobs:
        kinds = dict(world.rows(f"SELECT kind, amount_micro FROM ledger WHERE job_id = {job_id}"))
        row = out.setdefault(str(key), dict.fromkeys(
            ["jobs", "videos", "reserved", "settled", "released", "refunded", "open"], 0))
        row["jobs"] += 1
        row["videos"] += 0 if "release" in kinds else variations
        for kind, name in (("reserve", "reserved"), ("settle", "settled"), ("release", "released"),
                           ("refund", "refunded")):
            row[name] += kinds.get(kind, 0)
        if "settle" not in kinds and "release" not in kinds:
            row["open"] += kinds["reserve"]
    for row in out.values():
        row["net"] = row["settled"] - row["refunded"]
    return out


def csv_usage(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    out = {}
    for line in body:
        row = dict(zip(header, line, strict=True))
        for name, value in row.items():
            if name.endswith("_usd"):
                assert re.fullmatch(r"-?\d+\.\d{6}", value), value  # USD with exactly 6 decimals
        out[line[0]] = {"jobs": int(row["jobs"]), "videos": int(row["videos"]),
                        **{n[:-4]: int(Decimal(v) * 1_000_000) for n, v in row.items() if n.endswith("_usd")}}
    return header, out


async def test_usage_csv_equals_the_ledger(world):
    await world.open()
    await world.job(Member(7, 100), settle=412_345)
    await world.job(Member(7, 100), variations=2)  # still open
    await world.job(Member(7, 200), model="kling-2.1-pro", settle=0, state="failed")  # released
    refunded = await world.job(Member(7, 200), model="kling-2.1-pro", settle=500_001)
    await world.job(Member(8, 300), settle=350_000)  # another guild
    await world.job(Member(0, 0), settle=123_456)  # the terminal's own job
    mod = Moderation(world.db, Config(), Clock())
    await mod.refund(refunded.id, actor="cli:test", reason="broken video")
    await mod.credit(7, 100, 2_000_000, actor="cli:test", reason="prize")  # not usage: no job
    await world.close()

    out_csv = world.tmp_path / "exports" / "usage.csv"
    code, out, err = await cli(world.tmp_path, "usage", "--period", "all", "--csv", str(out_csv))
    assert code == 0, err
    header, got = csv_usage(out_csv)
    assert header == ["user", "jobs", "videos", "reserved_usd", "settled_usd", "released_usd", "refunded_usd",
                      "open_usd", "net_usd"]
    assert got == ledger_usage(world, "j.user_id")
    assert set(got) == {"0", "100", "200", "300"}
    assert got["200"]["refunded"] == 500_001 and got["100"]["open"] == 700_000
    assert f"wrote 4 row(s) to {out_csv}" in out
    # The table on stdout carries the same numbers for people.
    lines = out.splitlines()
    assert lines[1].split() == ["user", "jobs", "videos", "reserved", "settled", "released", "refunded",
                                "open", "net"]
    total = next(ln for ln in lines if ln.startswith("total")).split()
    assert total[1:3] == ["6", "6"]  # 6 jobs; 1 + 2 + 0 (released) + 1 + 1 + 1 videos

    by_model = world.tmp_path / "by-model.csv"
    code, _, err = await cli(world.tmp_path, "usage", "--period", "all", "--by", "model", "--guild", "7",
                             "--csv", str(by_model))
    assert code == 0, err
    assert csv_usage(by_model)[1] == ledger_usage(world, "j.model_key", guild=7)

    code, out, err = await cli(world.tmp_path, "usage", "--period", "all", "--by", "day", "--csv", "-")
    assert code == 0, err
    (tmp := world.tmp_path / "stdout.csv").write_text(out)
    assert csv_usage(tmp)[1] == ledger_usage(world, "j.day")


async def test_usage_rejects_unknown_period(world):
    code, _, err = await cli(world.tmp_path, "usage", "--period", "year")
    assert code == 2 and "today" in err and "7d" in err and "month" in err


async def test_direct_messages_are_a_scope_of_their_own_at_the_terminal(world):
    """`--guild dm` addresses the DM scope: its usage, its member's quota and its jobs, apart from
    the terminal's (guild 0) for the same person."""
    await world.open()
    await world.job(Member(DM_SCOPE, 5), settle=300_000)
    await world.job(Member(0, 5), settle=123_456)
    await world.close()
    code, out, err = await cli(world.tmp_path, "usage", "--period", "all", "--guild", "dm")
    assert code == 0, err
    assert "direct messages" in out.splitlines()[0]
    assert [ln.split()[:5] for ln in out.splitlines() if ln.startswith("5 ")] == [["5", "1", "1", "$0.35",
                                                                                "$0.30"]]
    code, out, err = await cli(world.tmp_path, "usage", "--period", "all", "--guild", "0", "--csv", "-")
    assert code == 0, err
    assert [ln.split(",")[:5] for ln in out.splitlines()[1:]] == [["5", "1", "1", "0.350000", "0.123456"]]
    code, out, err = await cli(world.tmp_path, "quota", "show", "--guild", "dm", "--user", "5")
    assert code == 0, err
    assert "user 5 in direct messages" in out and "$0.30 spent" in out
    code, out, err = await cli(world.tmp_path, "jobs", "--guild", "dm")
    assert code == 0, err
    assert [ln.split()[:3] for ln in out.splitlines()[2:]] == [["1", "-1", "5"]]
    code, _, err = await cli(world.tmp_path, "usage", "--guild", "direct")
    assert code == 2 and "--guild" in err and "direct" in err and "dm for direct messages" in err
