"""The moderation service on a real SQLite file: each action, its audit row (before/after) written in
the same transaction, clear errors that write nothing, and the effect a member feels."""

from __future__ import annotations

from datetime import datetime
from itertools import count
from zoneinfo import ZoneInfo

import pytest

from bot.config import Config
from bot.db import Conn, open_database
from bot.db.audit import list_audit
from bot.db.guilds import get_guild_settings, get_member_limits
from bot.db.money import ledger_rows
from bot.db.records import UNLIMITED as UNLIMITED_COLUMN
from bot.db.records import LimitOverride
from bot.errors import InvalidInput, LimitExceeded, NotPermitted, UserFacingError
from bot.services.clock import FixedClock
from bot.services.jobs import JobStore
from bot.services.moderation import Moderation
from bot.services.moderation.limits import DEFAULT, KEEP, UNLIMITED, parse_count_limit, parse_usd_limit
from bot.services.moderation.money import parse_usd_amount
from bot.services.quotas import Member

G = 1
ALICE = Member(G, 100)
MOD = "discord:900"
EST = 350_000
_uuids = count()


def at(*args: int) -> float:
    return datetime(*args, tzinfo=ZoneInfo("UTC")).timestamp()


class Env:
    def __init__(self, db, cfg: Config, clock: FixedClock) -> None:
        self.db, self.cfg, self.clock = db, cfg, clock
        self.mod = Moderation(db, cfg, clock)
        self.store = JobStore(db, self.mod.quotas, clock, cfg.progress.tz)

    async def job(self, member: Member = ALICE, cost: int | None = EST, channel_id: int = 10,
                  estimate: int = EST):
        """A job created (reserve) and, when ``cost`` is given, finished and settled at that cost."""
        job = await self.store.create(
            member, channel_id=channel_id, model_key="kling-2.5-turbo-pro", params={},
            task_uuid=f"task-{next(_uuids)}", duration_s=5, variations=1, estimate_micro=estimate)
        if cost is not None:
            await self.store.mark_submitted(job.id, self.clock.now())
            assert await self.store.finish(job.id, "succeeded", None, cost)
        return job

    async def audit_rows(self, guild_id: int = G):
        return list(reversed(await self.db.run(list_audit, guild_id, 1000)))

    async def count(self, table: str) -> int:
        return int(await self.db.run(Conn.fetchval, f"SELECT COUNT(*) FROM {table}"))


@pytest.fixture
async def env(tmp_path):
    db = await open_database(tmp_path / "mod.sqlite3")
    cfg = Config.model_validate({
        "limits": {"daily_videos": 5, "monthly_usd": 5, "max_concurrent": 2, "guild_monthly_usd": 10,
                   "global_daily_usd": "unlimited"},
        "runware": {"safety_mode": "fast"},
    })
    yield Env(db, cfg, FixedClock(at(2024, 3, 10, 12, 0)))
    await db.close()


async def nothing_written(env: Env, coro) -> UserFacingError:
    """Run an action that must fail; assert that it wrote no audit row and return the error."""
    before = await env.count("audit")
    with pytest.raises(UserFacingError) as info:
        await coro
    assert await env.count("audit") == before
    return info.value


# ---- parsing option text --------------------------------------------------------------------


def test_limit_parsers_accept_numbers_unlimited_and_default() -> None:
    assert parse_count_limit("daily_videos", None) is KEEP
    assert parse_count_limit("daily_videos", "12") == 12
    assert parse_count_limit("daily_videos", " Unlimited ") is UNLIMITED
    assert parse_count_limit("daily_videos", "default") is DEFAULT
    assert parse_usd_limit("monthly_usd", "2.50") == 2_500_000
    assert parse_usd_limit("monthly_usd", "$3") == 3_000_000
    assert parse_usd_limit("monthly_usd", "unlimited") is UNLIMITED
    assert parse_usd_limit("monthly_usd", None) is KEEP
    assert parse_usd_amount("amount", -1.25) == -1_250_000


@pytest.mark.parametrize("field,value", [("daily_videos", "lots"), ("max_concurrent", "-1"),
                                         ("daily_videos", "1.5"), ("max_concurrent", "99999999")])
def test_bad_count_names_the_field_and_the_value(field: str, value: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_count_limit(field, value)
    text = info.value.message
    assert f"`{field}`" in text and repr(value) in text and '"unlimited"' in text


@pytest.mark.parametrize("value", ["five", "-2", "1e9"])
def test_bad_usd_limit_names_the_field_and_the_value(value: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_usd_limit("monthly_usd", value)
    assert "`monthly_usd`" in info.value.message and value in info.value.message


@pytest.mark.parametrize("value", ["0", "abc", "0.0000001"])
def test_credit_amount_must_be_a_non_zero_usd_amount(value: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_usd_amount("amount", value)
    assert "`amount`" in info.value.message and "non-zero" in info.value.message


# ---- member and role limits ------------------------------------------------------------------


async def test_set_member_limits_writes_the_override_and_its_audit_row(env: Env) -> None:
    change = await env.mod.set_member_limits(G, 100, daily_videos=10, monthly_micro=UNLIMITED, actor=MOD,
                                             reason="trusted creator")
    assert await env.db.run(get_member_limits, G, 100) == LimitOverride(10, UNLIMITED_COLUMN, None)
    [row] = await env.audit_rows()
    assert (row.actor, row.action, row.target) == (MOD, "quota.set", "user:100")
    assert row.reason == "trusted creator"
    assert row.before == "daily_videos=default, monthly_usd=default, max_concurrent=default"
    assert row.after == "daily_videos=10, monthly_usd=unlimited, max_concurrent=default"
    assert (change.audit_id, change.before, change.after) == (row.id, row.before, row.after)
    assert row.at == env.clock.now()
    limits = await env.mod.quotas.effective_limits(ALICE)
    assert (limits.daily_videos, limits.monthly_micro, limits.max_concurrent) == (10, None, 2)

    # KEEP leaves the others alone; DEFAULT removes one override.
    await env.mod.set_member_limits(G, 100, max_concurrent=1, monthly_micro=DEFAULT, actor=MOD)
    assert await env.db.run(get_member_limits, G, 100) == LimitOverride(10, None, 1)
    last = (await env.audit_rows())[-1]
    assert last.before == row.after and last.after == "daily_videos=10, monthly_usd=default, max_concurrent=1"
    assert last.reason is None


async def test_a_stricter_member_limit_is_felt_at_once(env: Env) -> None:
    await env.mod.set_member_limits(G, 100, daily_videos=1, actor=MOD)
    await env.job(cost=None)
    with pytest.raises(LimitExceeded) as info:
        await env.job(cost=None)
    assert info.value.limit == "daily_videos" and "1 of 1" in info.value.message


async def test_setting_nothing_or_nonsense_writes_nothing(env: Env) -> None:
    err = await nothing_written(env, env.mod.set_member_limits(G, 100, actor=MOD))
    assert "daily_videos" in err.message and "monthly_usd" in err.message
    await nothing_written(env, env.mod.set_member_limits(G, 100, daily_videos=-3, actor=MOD))
    with pytest.raises(TypeError):
        await env.mod.set_member_limits(G, 100, daily_videos=None, actor=MOD)  # type: ignore[arg-type]
    assert await env.db.run(get_member_limits, G, 100) is None


async def test_reset_member_limits(env: Env) -> None:
    await env.mod.set_member_limits(G, 100, daily_videos=0, actor=MOD)
    change = await env.mod.reset_member_limits(G, 100, actor=MOD, reason="appeal accepted")
    assert await env.db.run(get_member_limits, G, 100) is None
    assert change.before == "daily_videos=0, monthly_usd=default, max_concurrent=default"
    assert change.after == "daily_videos=default, monthly_usd=default, max_concurrent=default"
    err = await nothing_written(env, env.mod.reset_member_limits(G, 100, actor=MOD))
    assert "no limits of their own" in err.message


async def test_show_member(env: Env) -> None:
    await env.mod.set_member_limits(G, 100, monthly_micro=2_000_000, actor=MOD)
    await env.job(cost=300_000)
    await env.mod.ban(G, 100, actor=MOD, reason="spam")
    report = await env.mod.show_member(ALICE)
    assert report.override == LimitOverride(None, 2_000_000, None)
    assert report.ban is not None and report.ban.reason == "spam"
    assert report.usage.spent_month_micro == 300_000 and report.usage.remaining_micro == 1_700_000


async def test_role_limits_set_and_clear(env: Env) -> None:
    change = await env.mod.set_role_limits(G, 55, daily_videos=UNLIMITED, max_concurrent=4, actor=MOD)
    assert (change.action, change.target) == ("role_quota.set", "role:55")
    assert change.after == "daily_videos=unlimited, monthly_usd=default, max_concurrent=4"
    limits = await env.mod.quotas.effective_limits(Member(G, 100, (55,)))
    assert (limits.daily_videos, limits.max_concurrent) == (None, 4)
    members, roles = await env.mod.list_limits(G)
    assert members == [] and [r.role_id for r in roles] == [55]

    cleared = await env.mod.clear_role_limits(G, 55, actor=MOD, reason="event over")
    assert (cleared.action, cleared.before) == ("role_quota.clear", change.after)
    assert cleared.reason == "event over"
    assert (await env.mod.quotas.effective_limits(Member(G, 100, (55,)))).daily_videos == 5
    err = await nothing_written(env, env.mod.clear_role_limits(G, 55, actor=MOD))
    assert "no limits" in err.message


# ---- money -----------------------------------------------------------------------------------


async def test_credit_adds_and_a_negative_credit_takes_away(env: Env) -> None:
    change = await env.mod.credit(G, 100, 2_500_000, actor=MOD, reason="contest prize")
    assert (change.action, change.target, change.amount_micro) == ("credit", "user:100", 2_500_000)
    assert (change.before, change.after) == ("credit 2024-03: $0.00", "credit 2024-03: $2.50")
    [row] = await env.db.run(ledger_rows, kind="credit")
    assert (row.amount_micro, row.user_id, row.actor, row.reason, row.month) == (
        2_500_000, 100, MOD, "contest prize", "2024-03")
    assert (await env.mod.quotas.usage(ALICE)).remaining_micro == 7_500_000

    taken = await env.mod.credit(G, 100, -4_000_000, actor=MOD, reason="abuse")
    assert taken.after == "credit 2024-03: -$1.50"
    assert (await env.mod.quotas.usage(ALICE)).remaining_micro == 3_500_000
    assert len(await env.audit_rows()) == 2


async def test_credit_needs_a_reason_and_an_amount(env: Env) -> None:
    err = await nothing_written(env, env.mod.credit(G, 100, 1_000_000, actor=MOD, reason="  "))
    assert "`reason`" in err.message
    err = await nothing_written(env, env.mod.credit(G, 100, 0, actor=MOD, reason="x"))
    assert "`amount`" in err.message
    assert await env.count("ledger") == 0


async def test_refund_once(env: Env) -> None:
    job = await env.job(cost=420_000)
    change = await env.mod.refund(job.id, actor=MOD, reason="bad output", guild_id=G)
    assert (change.action, change.target, change.amount_micro, change.guild_id) == (
        "refund", f"job:{job.id}", 420_000, G)
    assert change.before == "settled $0.42 (user:100)" and change.after == "refunded $0.42 to user:100"
    refunds = await env.db.run(ledger_rows, kind="refund")
    assert [(r.amount_micro, r.actor, r.reason) for r in refunds] == [(420_000, MOD, "bad output")]
    assert (await env.mod.quotas.usage(ALICE)).spent_month_micro == 0

    err = await nothing_written(env, env.mod.refund(job.id, actor=MOD, reason="again", guild_id=G))
    assert "already refunded" in err.message
    assert len(await env.db.run(ledger_rows, kind="refund")) == 1


async def test_refund_refuses_other_guilds_and_unsettled_jobs(env: Env) -> None:
    theirs = await env.job(Member(2, 100), cost=EST)
    err = await nothing_written(env, env.mod.refund(theirs.id, actor=MOD, reason="x", guild_id=G))
    assert f"no job #{theirs.id}" in err.message
    running = await env.job(cost=None)
    err = await nothing_written(env, env.mod.refund(running.id, actor=MOD, reason="x", guild_id=G))
    assert "no settled cost" in err.message
    # The operator (no guild) may refund any guild's job; the audit row goes to that guild.
    change = await env.mod.refund(theirs.id, actor="cli:root", reason="operator")
    assert change.guild_id == 2 and [r.action for r in await env.audit_rows(2)] == ["refund"]


# ---- access ----------------------------------------------------------------------------------


async def test_ban_and_unban(env: Env) -> None:
    change = await env.mod.ban(G, 100, actor=MOD, reason="spam prompts")
    assert (change.before, change.after) == ("not banned", "banned: spam prompts")
    with pytest.raises(LimitExceeded) as info:
        await env.job(cost=None)
    assert info.value.limit == "ban" and "spam prompts" in info.value.message
    assert [b.user_id for b in await env.mod.list_bans(G)] == [100]

    await nothing_written(env, env.mod.ban(G, 100, actor=MOD, reason=""))
    lifted = await env.mod.unban(G, 100, actor=MOD)
    assert (lifted.action, lifted.before, lifted.after) == ("unban", "banned: spam prompts", "not banned")
    await env.job(cost=None)
    err = await nothing_written(env, env.mod.unban(G, 100, actor=MOD))
    assert "not banned" in err.message


async def test_pause_and_resume(env: Env) -> None:
    change = await env.mod.pause(G, actor=MOD, reason="raid in progress")
    assert (change.action, change.before, change.after) == ("pause", "running", "paused: raid in progress")
    with pytest.raises(LimitExceeded) as info:
        await env.job(cost=None)
    assert info.value.limit == "pause" and "paused" in info.value.message
    assert "raid in progress" in info.value.message
    await env.job(Member(2, 100), cost=None)  # other guilds are not affected

    resumed = await env.mod.resume(G, actor=MOD)
    assert (resumed.before, resumed.after) == ("paused: raid in progress", "running")
    await env.job(cost=None)
    err = await nothing_written(env, env.mod.resume(G, actor=MOD))
    assert "not paused" in err.message


# ---- channels and blocklist ------------------------------------------------------------------


async def test_generation_channels(env: Env) -> None:
    first = await env.mod.add_channel(G, 10, actor=MOD)
    assert (first.target, first.before, first.after) == ("channel:10", "any channel", "channel:10")
    second = await env.mod.add_channel(G, 11, actor=MOD)
    assert second.after == "channel:10 channel:11"
    assert await env.mod.list_channels(G) == [10, 11]
    with pytest.raises(NotPermitted) as info:
        await env.job(cost=None, channel_id=12)
    assert "<#10>" in info.value.message
    await nothing_written(env, env.mod.add_channel(G, 10, actor=MOD))

    removed = await env.mod.remove_channel(G, 10, actor=MOD)
    assert (removed.before, removed.after) == ("channel:10 channel:11", "channel:11")
    await nothing_written(env, env.mod.remove_channel(G, 10, actor=MOD))
    await env.mod.remove_channel(G, 11, actor=MOD)
    await env.job(cost=None, channel_id=12)  # no list: every channel


async def test_blocklist(env: Env) -> None:
    change = await env.mod.add_blocked_term(G, "  gore ", actor=MOD, reason="rules")
    assert (change.target, change.before, change.after) == ("term:gore", "0 terms", "1 term")
    await nothing_written(env, env.mod.add_blocked_term(G, "GORE", actor=MOD))  # case-insensitive
    await nothing_written(env, env.mod.add_blocked_term(G, "**", actor=MOD))
    assert await env.mod.list_blocklist(G) == ["gore"]
    with pytest.raises(InvalidInput) as info:
        await env.store.precheck(ALICE, channel_id=10, blocklist_text="so much Gore")
    assert "gore" in info.value.message

    removed = await env.mod.remove_blocked_term(G, "gore", actor=MOD)
    assert (removed.action, removed.after) == ("blocklist.remove", "0 terms")
    await nothing_written(env, env.mod.remove_blocked_term(G, "gore", actor=MOD))


# ---- guild settings --------------------------------------------------------------------------


async def test_modrole_and_logchannel(env: Env) -> None:
    change = await env.mod.set_modrole(G, 77, actor=MOD)
    assert (change.before, change.after, change.log_channel_id) == ("none", "role:77", None)
    log = await env.mod.set_logchannel(G, 500, actor=MOD)
    assert (log.before, log.after, log.log_channel_id) == ("none", "channel:500", 500)
    settings = await env.mod.settings(G)
    assert (settings.mod_role_id, settings.log_channel_id) == (77, 500)
    # Every later change says where to announce it.
    assert (await env.mod.pause(G, actor=MOD)).log_channel_id == 500
    cleared = await env.mod.set_logchannel(G, None, actor=MOD)
    assert (cleared.after, cleared.log_channel_id) == ("none", None)


async def test_safety_mode_is_never_weaker_than_the_config(env: Env) -> None:
    err = await nothing_written(env, env.mod.set_safety_mode(G, "none", actor=MOD))
    assert "`mode`" in err.message and "weaker" in err.message and "'fast'" in err.message
    assert "fast, full" in err.message
    change = await env.mod.set_safety_mode(G, "full", actor=MOD)
    assert (change.action, change.before, change.after) == ("safety.mode", "default (fast)", "full")
    assert (await get_guild_settings(env.db, G)).safety_mode == "full"
    back = await env.mod.set_safety_mode(G, "fast", actor=MOD)
    assert (back.before, back.after) == ("full", "fast")
    await nothing_written(env, env.mod.set_safety_mode(G, "paranoid", actor=MOD))

    strict = Moderation(env.db, env.cfg.model_copy(update={
        "runware": env.cfg.runware.model_copy(update={"safety_mode": "full"})}), env.clock)
    err = await nothing_written(env, strict.set_safety_mode(G, "fast", actor=MOD))
    assert "'full'" in err.message


async def test_budget_and_its_warnings(env: Env) -> None:
    change = await env.mod.set_budget(G, 1_000_000, actor=MOD, reason="small server")
    assert (change.before, change.after) == ("default ($10.00)", "$1.00")
    assert await env.mod.check_budget_warnings() == []  # no log channel: nobody to tell
    await env.mod.set_logchannel(G, 500, actor=MOD)

    await env.job(cost=700_000, estimate=100_000)
    assert await env.mod.check_budget_warnings() == []  # 70%
    await env.job(cost=150_000, estimate=100_000)
    [warn] = await env.mod.check_budget_warnings()  # 85%
    assert (warn.guild_id, warn.channel_id, warn.level, warn.spent_micro, warn.budget_micro) == (
        G, 500, 80, 850_000, 1_000_000)
    assert await env.mod.check_budget_warnings() == []  # said once
    await env.job(cost=150_000, estimate=100_000)
    assert [w.level for w in await env.mod.check_budget_warnings()] == [100]
    assert await env.mod.check_budget_warnings() == []

    # A new budget is measured afresh; "unlimited" and "default" are accepted.
    await env.mod.set_budget(G, 1_100_000, actor=MOD)
    assert [w.level for w in await env.mod.check_budget_warnings()] == [80]
    unlimited = await env.mod.set_budget(G, UNLIMITED, actor=MOD)
    assert unlimited.after == "unlimited"
    assert await env.mod.check_budget_warnings() == []
    back = await env.mod.set_budget(G, DEFAULT, actor=MOD)
    assert back.after == "default ($10.00)"
    await nothing_written(env, env.mod.set_budget(G, KEEP, actor=MOD))

    # Next month: the spend starts again, and so do the warnings.
    await env.mod.set_budget(G, 500_000, actor=MOD)
    env.clock.set(at(2024, 4, 2, 9, 0))
    assert await env.mod.check_budget_warnings() == []
    await env.job(cost=450_000, estimate=100_000)
    assert [w.level for w in await env.mod.check_budget_warnings()] == [80]


# ---- the trail -------------------------------------------------------------------------------


async def test_audit_lists_newest_first(env: Env) -> None:
    await env.mod.pause(G, actor=MOD, reason="one")
    env.clock.advance(60)
    await env.mod.resume(G, actor="discord:901")
    await env.mod.pause(Member(2, 0).guild_id, actor=MOD)  # another guild's trail
    rows = await env.mod.audit(G, 10)
    assert [(r.action, r.actor) for r in rows] == [("resume", "discord:901"), ("pause", MOD)]
    assert rows[0].at - rows[1].at == 60
    assert [r.action for r in await env.mod.audit(G, 1)] == ["resume"]
    for bad in (0, 101):
        with pytest.raises(InvalidInput):
            await env.mod.audit(G, bad)
    recorded = await env.mod.record(G, "usage.export", actor=MOD, after="period=month by=user rows=0")
    assert (await env.mod.audit(G, 1))[0].id == recorded.audit_id
