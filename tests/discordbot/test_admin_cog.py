"""/genadmin end to end: the real bot against the fake Discord and the Runware simulator
(tests/fakes/world.py). Asserted: what the moderator and the log channel see, the audit rows,
the ledger, and what members feel (/video refused while paused)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from bot.db.audit import list_audit
from bot.db.guilds import get_ban, get_guild_settings
from bot.discordbot.cogs.admin import REFUSAL
from tests.fakes.discord_state import DEFAULT_OWNER_ID
from tests.fakes.world import BotWorld, started_world

EPHEMERAL = 64
MANAGE_GUILD = 1 << 5
OWNER = DEFAULT_OWNER_ID  # the guild owner has every permission
ROLE = 1_100_000_000_000_000_501
MOD_ROLE = 1_100_000_000_000_000_502
MOD_MEMBER = 1_100_000_000_000_000_503
LOG = 1_100_000_000_000_000_504
OTHER_CHANNEL = 1_100_000_000_000_000_505


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[BotWorld]:
    async with started_world(tmp_path) as w:
        fake, gid = w.fake, w.seed.guild_id
        fake.add_role(gid, ROLE, "artists", 0)
        fake.add_role(gid, MOD_ROLE, "mods", 0)
        fake.add_member(gid, MOD_MEMBER, "helper", [MOD_ROLE])
        fake.add_channel(gid, LOG, "mod-log")
        fake.add_channel(gid, OTHER_CHANNEL, "chat")
        yield w


async def admin(w: BotWorld, path: str, options: dict | None = None, *, user_id: int = OWNER,
                **kwargs) -> str:
    return await w.fake.send_slash(f"genadmin {path}", options or {}, user_id=user_id, **kwargs)


async def answer(w: BotWorld, iid: str) -> dict:
    """The moderator's (ephemeral) answer: the first message shown, whatever its route."""
    def find() -> dict | None:
        for r in w.fake.interaction_responses(iid):
            if (r.kind == "callback" and r.type == 4) or r.kind in ("followup", "edit_original"):
                return r.data
        return None
    data = await w.wait(find)
    message = w.fake.interaction_message(iid)
    assert message is not None and message.ephemeral, "every /genadmin answer is ephemeral"
    return data


async def text_of(w: BotWorld, iid: str) -> str:
    return (await answer(w, iid)).get("content") or ""


async def audit_rows(w: BotWorld) -> list:
    assert w.bot is not None and w.bot.db is not None
    return list(reversed(await list_audit(w.bot.db, w.seed.guild_id, 1000)))


def leaves(command: dict, prefix: str = "") -> list[str]:
    found = []
    for option in command.get("options", []):
        if option["type"] in (1, 2):
            name = f"{prefix}{option['name']}"
            found += leaves(option, name + " ") if option["type"] == 2 else [name]
    return found


def samples(w: BotWorld) -> dict[str, dict]:
    """Valid options for every subcommand."""
    user, channel = w.seed.user_id, w.seed.channel_id
    return {
        "quota set": {"user": user, "daily_videos": "3"}, "quota reset": {"user": user},
        "quota show": {"user": user}, "role-quota set": {"role": ROLE, "max_concurrent": "unlimited"},
        "role-quota clear": {"role": ROLE}, "credit": {"user": user, "amount": 1.5, "reason": "prize"},
        "ban": {"user": user, "reason": "spam"}, "unban": {"user": user}, "pause": {}, "resume": {},
        "channels add": {"channel": channel}, "channels remove": {"channel": channel}, "channels list": {},
        "blocklist add": {"term": "gore"}, "blocklist remove": {"term": "gore"}, "blocklist list": {},
        "budget set": {"amount": "50"}, "modrole set": {"role": ROLE}, "modrole clear": {},
        "logchannel set": {"channel": LOG}, "logchannel clear": {}, "safety mode": {"mode": "full"},
        "gallery set": {"channel": OTHER_CHANNEL}, "gallery clear": {},
        "confirm set": {"amount": "2"},
        "usage": {"period": "all", "by": "user"}, "refund": {"job": 1, "reason": "x"}, "audit": {"count": 5},
    }


async def test_registered_guild_only_for_manage_server_with_every_subcommand(world: BotWorld) -> None:
    w = world
    [genadmin] = [c for c in w.fake.registered_commands(None) + w.fake.registered_commands(w.seed.guild_id)
                  if c["name"] == "genadmin"]
    assert int(genadmin["default_member_permissions"]) == MANAGE_GUILD
    assert genadmin.get("dm_permission") is False or genadmin.get("contexts") == [0]
    assert sorted(leaves(genadmin)) == sorted(samples(w))
    assert len(genadmin["options"]) <= 25


async def test_a_member_is_refused_everything_even_when_the_server_loosened_it(world: BotWorld) -> None:
    w = world
    for path, options in samples(w).items():
        iid = await admin(w, path, options, user_id=w.seed.user_id, permissions=0)
        assert await text_of(w, iid) == REFUSAL, path
    assert await audit_rows(w) == []
    settings = await get_guild_settings(w.bot.db, w.seed.guild_id)
    assert not settings.paused and settings.mod_role_id is None and settings.log_channel_id is None
    assert settings.gallery_channel_id is None
    assert await get_ban(w.bot.db, w.seed.guild_id, w.seed.user_id) is None


async def test_each_subcommand_answers_and_is_audited(world: BotWorld) -> None:
    w = world
    user, gid = w.seed.user_id, w.seed.guild_id
    steps = [  # (subcommand, options, the audit action and target it writes, text in the reply)
        ("quota set", {"user": user, "daily_videos": "7", "monthly_usd": "unlimited", "reason": "trusted"},
         "quota.set", f"user:{user}", f"<@{user}>: `daily_videos=default"),
        ("quota reset", {"user": user}, "quota.reset", f"user:{user}", "reset the limits of"),
        ("role-quota set", {"role": ROLE, "monthly_usd": "12.5"}, "role_quota.set", f"role:{ROLE}", "$12.50"),
        ("role-quota clear", {"role": ROLE}, "role_quota.clear", f"role:{ROLE}", f"<@&{ROLE}>"),
        ("credit", {"user": user, "amount": -1.25, "reason": "misuse"}, "credit", f"user:{user}", "-$1.25"),
        ("ban", {"user": user, "reason": "spam"}, "ban", f"user:{user}", "not banned → banned: spam"),
        ("unban", {"user": user}, "unban", f"user:{user}", "→ not banned"),
        ("pause", {"reason": "upgrade"}, "pause", None, "running → paused: upgrade"),
        ("resume", {}, "resume", None, "→ running"),
        ("channels add", {"channel": OTHER_CHANNEL}, "channels.add", f"channel:{OTHER_CHANNEL}",
         f"any channel → <#{OTHER_CHANNEL}>"),
        ("channels remove", {"channel": OTHER_CHANNEL}, "channels.remove", f"channel:{OTHER_CHANNEL}",
         "→ any channel"),
        ("blocklist add", {"term": "Gore"}, "blocklist.add", "term:Gore", "`Gore`"),
        ("blocklist remove", {"term": "gore"}, "blocklist.remove", "term:gore", "1 term → 0 terms"),
        ("budget set", {"amount": "unlimited"}, "budget.set", None, "default ($100.00) → unlimited"),
        ("modrole set", {"role": MOD_ROLE}, "modrole.set", f"role:{MOD_ROLE}", f"none → <@&{MOD_ROLE}>"),
        ("modrole clear", {}, "modrole.set", None, f"<@&{MOD_ROLE}> → none"),
        ("safety mode", {"mode": "full"}, "safety.mode", None, "default (fast) → full"),
        ("confirm set", {"amount": "2.50"}, "confirm.set", None, "default (never) → $2.50"),
        ("logchannel set", {"channel": LOG}, "logchannel.set", f"channel:{LOG}", f"none → <#{LOG}>"),
        ("logchannel clear", {}, "logchannel.set", None, f"<#{LOG}> → none"),
        ("gallery set", {"channel": OTHER_CHANNEL}, "gallery.set", f"channel:{OTHER_CHANNEL}",
         f"none → <#{OTHER_CHANNEL}>"),
        ("gallery clear", {}, "gallery.set", None, f"<#{OTHER_CHANNEL}> → none"),
    ]
    for number, (path, options, action, target, shown) in enumerate(steps, start=1):
        text = await text_of(w, await admin(w, path, options))
        rows = await audit_rows(w)
        assert len(rows) == number, (path, text)
        row = rows[-1]
        assert (row.action, row.target, row.actor) == (action, target, f"discord:{OWNER}"), path
        assert text.startswith("✅ Done") and shown in text and f"audit #{row.id}" in text, (path, text)
    first = (await audit_rows(w))[0]
    assert (first.before, first.after, first.reason) == (
        "daily_videos=default, monthly_usd=default, max_concurrent=default",
        "daily_videos=7, monthly_usd=unlimited, max_concurrent=default", "trusted")
    assert (await get_guild_settings(w.bot.db, gid)).safety_mode == "full"

    # The read-only ones: lists and the trail itself (every action above, newest first).
    await admin(w, "channels add", {"channel": OTHER_CHANNEL})
    assert await text_of(w, await admin(w, "channels list")) == f"Generation channels: <#{OTHER_CHANNEL}>"
    await admin(w, "blocklist add", {"term": "blood*"})
    assert await text_of(w, await admin(w, "blocklist list")) == "Blocked terms (1): `blood*`"
    embed = (await answer(w, await admin(w, "audit", {"count": 50})))["embeds"][0]
    lines = embed["description"].split("\n")
    assert len(lines) == len(steps) + 2
    assert "blocked the term `blood*`" in lines[0] and "set the limits of" in lines[-1]
    assert all(f"<@{OWNER}>" in line for line in lines)
    show = (await answer(w, await admin(w, "quota show", {"user": user})))["embeds"][0]
    fields = {f["name"]: f["value"] for f in show["fields"]}
    assert fields["Ban"] == "not banned" and "includes -$1.25 credit" in fields["This month"]


async def test_bad_values_are_named_and_change_nothing(world: BotWorld) -> None:
    w = world
    text = await text_of(w, await admin(w, "quota set", {"user": w.seed.user_id, "daily_videos": "lots"}))
    assert "`daily_videos`" in text and "'lots'" in text and '"unlimited"' in text
    text = await text_of(w, await admin(w, "budget set", {"amount": "cheap"}))
    assert "`amount`" in text and "'cheap'" in text
    text = await text_of(w, await admin(w, "safety mode", {"mode": "none"}))
    assert "weaker" in text and "'fast'" in text
    text = await text_of(w, await admin(w, "refund", {"job": 99, "reason": "x"}))
    assert "no job #99" in text
    text = await text_of(w, await admin(w, "unban", {"user": w.seed.user_id}))
    assert "not banned" in text
    assert await audit_rows(w) == []


async def test_the_moderator_role_grants_the_console(world: BotWorld) -> None:
    w = world
    assert await text_of(w, await admin(w, "pause", user_id=MOD_MEMBER, permissions=0)) == REFUSAL
    await text_of(w, await admin(w, "modrole set", {"role": MOD_ROLE}))
    text = await text_of(w, await admin(w, "pause", {"reason": "night"}, user_id=MOD_MEMBER, permissions=0))
    assert text.startswith("✅ Done: paused generation")
    assert (await audit_rows(w))[-1].actor == f"discord:{MOD_MEMBER}"
    # Someone without the role (and without Manage Server) still gets nothing.
    assert await text_of(w, await admin(w, "resume", user_id=w.seed.user_id)) == REFUSAL
    assert (await get_guild_settings(w.bot.db, w.seed.guild_id)).paused


async def test_the_log_channel_gets_a_line_per_action(world: BotWorld) -> None:
    w = world
    await text_of(w, await admin(w, "logchannel set", {"channel": LOG}))
    first = await w.fake.wait_for_message(LOG)
    assert first.content.startswith(f"🛡️ <@{OWNER}> set the log channel") and f"<#{LOG}>" in first.content
    await text_of(w, await admin(w, "ban", {"user": w.seed.user_id, "reason": "prompt spam"}))
    line = await w.fake.wait_for_message(LOG, lambda m: "banned" in m.content)
    assert line.content == f"🛡️ <@{OWNER}> banned <@{w.seed.user_id}>: not banned → banned: prompt spam " \
                           "(reason: prompt spam)"
    assert line.notified_user_ids == [] and not line.notified_everyone  # a log line pings no one


async def test_pause_is_felt_by_video_and_resume_lifts_it(world: BotWorld) -> None:
    w = world
    await text_of(w, await admin(w, "pause", {"reason": "server maintenance"}))
    reply = await w.reply(await w.video(), "paused")
    assert "Video generation is paused on this server: server maintenance." in reply
    assert await w.jobs() == [] and w.sim.stats.submits == 0
    await text_of(w, await admin(w, "resume"))
    await w.reply(await w.video(), "Queued as job #1")


async def finished_video(w: BotWorld) -> int:
    before = w.sim.stats.submits
    iid = await w.video()
    await w.reply(iid, "Queued as job #")
    await w.wait_submitted(before + 1)
    w.sim.finish_all()
    job_id = max(j.id for j in await w.jobs())
    await w.wait_notified(job_id)
    return job_id


async def test_usage_answers_with_a_table_and_a_csv_equal_to_the_ledger(world: BotWorld) -> None:
    w = world
    job_id = await finished_video(w)
    text = await text_of(w, await admin(w, "refund", {"job": job_id, "reason": "glitchy output"}))
    assert text.startswith("✅ Done: refunded job #") and "$0.35" in text
    await w.reply(await w.video(), "Queued as job #2")  # still reserved: open
    iid = await admin(w, "usage", {"period": "all", "by": "user"})
    data = await answer(w, iid)
    message = w.fake.interaction_message(iid)
    [attachment] = message.attachments
    assert attachment["filename"] == "usage-all-by-user.csv"
    [row] = list(csv.DictReader(io.StringIO(attachment["data"].decode())))
    ledger = await w.ledger(guild_id=w.seed.guild_id)

    def total(kind: str) -> int:
        return sum(r.amount_micro for r in ledger if r.kind == kind)

    assert row["user"] == str(w.seed.user_id) and (row["jobs"], row["videos"]) == ("2", "2")
    assert Decimal(row["reserved_usd"]) * 1_000_000 == total("reserve") == 700_000
    assert Decimal(row["settled_usd"]) * 1_000_000 == total("settle") == 350_000
    assert Decimal(row["refunded_usd"]) * 1_000_000 == total("refund") == 350_000
    assert (row["released_usd"], row["open_usd"], row["net_usd"]) == ("0.000000", "0.350000", "0.000000")
    embed = data["embeds"][0]
    assert embed["title"] == "Usage all time, by user" and f"<@{w.seed.user_id}>" in embed["description"]
    assert [r.action for r in await audit_rows(w)] == ["refund", "usage.export"]
    by_model = await answer(w, await admin(w, "usage", {"period": "today", "by": "model"}))
    assert "kling-2.5-turbo-pro" in by_model["embeds"][0]["description"]


async def test_budget_warnings_reach_the_log_channel_once(world: BotWorld) -> None:
    w = world
    cog = w.bot.get_cog("AdminCog")
    assert cog.budget_loop.is_running()
    await text_of(w, await admin(w, "logchannel set", {"channel": LOG}))
    await text_of(w, await admin(w, "budget set", {"amount": "0.40"}))
    await finished_video(w)  # $0.35 of $0.40: past 80%
    await cog.post_budget_warnings()  # what the loop does every 30 s
    warning = await w.fake.wait_for_message(LOG, lambda m: "budget" in m.content and "%" in m.content)
    assert warning.content == "⚠️ This server has used 80% of its monthly video budget: $0.35 of $0.40 " \
                              "spent this month."
    assert await cog.post_budget_warnings() == []  # once per level and month
    assert len([m for m in w.fake.messages(LOG) if "% of its monthly" in m.content]) == 1
