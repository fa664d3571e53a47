"""Premium through Discord's monetization end to end: the real bot against the fake Discord, whose
interactions carry the entitlements a test grants (tests/fakes/discord_entitlements.py). An active
entitlement to one of premium.sku_ids raises the member's limits; a member who is not premium and hits a
limit premium raises gets Discord's premium button (checked against Discord's rules by the fake)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from bot.discordbot.premium import counts
from tests.fakes.discord_entitlements import TEST_MODE_PURCHASE
from tests.fakes.world import BotWorld, callback, started_world

SKU = 1_300_000_000_000_000_001
OTHER_SKU = 1_300_000_000_000_000_999
OTHER_USER = 1_100_000_000_000_000_777
PREMIUM = {"limits": {"daily_videos": 1}, "premium": {"sku_ids": [SKU], "daily_videos": 3}}
PREMIUM_BUTTON = [{"type": 1, "components": [{"type": 2, "style": 6, "sku_id": str(SKU), "disabled": False}]}]
EPHEMERAL = 64


async def refusal(w: BotWorld, iid: str) -> tuple[str, list]:
    """The refusal the member saw in the deferred reply: its text and its components."""
    text = await w.reply(iid, "Daily video limit reached")
    edit = next(r for r in w.reply_edits(iid) if "Daily video limit reached" in (r.data.get("content") or ""))
    return text, edit.data.get("components") or []


async def queued(w: BotWorld, iid: str) -> str:
    return await w.reply(iid, "Queued as job #")


def active(w: BotWorld, **who) -> dict:
    now = time.time()
    return w.fake.grant_entitlement(SKU, starts_at=now - 60, ends_at=now + 30 * 86400, **who)


# ---- who counts (pure) --------------------------------------------------------------------------------

def test_which_entitlements_count() -> None:
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    hour = timedelta(hours=1)

    def ent(**kw):
        base = {"sku_id": SKU, "user_id": 5, "guild_id": None, "deleted": False, "starts_at": now - hour,
                "ends_at": now + hour}
        return SimpleNamespace(**{**base, **kw})

    def ok(e, user_id=5, guild_id=9):
        return counts(e, [SKU], user_id=user_id, guild_id=guild_id, now=now)

    assert ok(ent())
    assert ok(ent(starts_at=None, ends_at=None))  # a test entitlement has no dates
    assert not ok(ent(sku_id=OTHER_SKU))
    assert not ok(ent(deleted=True))
    assert not ok(ent(ends_at=now))  # [starts_at, ends_at): over at ends_at
    assert ok(ent(starts_at=now))
    assert not ok(ent(starts_at=now + hour, ends_at=None))
    assert not ok(ent(), user_id=6)  # another user's
    # A guild's subscription: every member of that guild (user_id, if any, is whoever bought it).
    assert ok(ent(guild_id=9, user_id=1), user_id=6)
    assert ok(ent(guild_id=9, user_id=None), user_id=6)
    assert not ok(ent(guild_id=8), user_id=5)
    assert not ok(ent(guild_id=9), guild_id=None)


# ---- /video ---------------------------------------------------------------------------------------------

async def test_a_member_without_premium_is_refused_with_the_premium_button(tmp_path: Path) -> None:
    async with started_world(tmp_path, PREMIUM) as w:
        await queued(w, await w.video({"prompt": "first video"}))
        text, components = await refusal(w, await w.video({"prompt": "second video"}))
        assert "1 of 1" in text
        assert components == PREMIUM_BUTTON
        assert [r.kind for r in await w.ledger()] == ["reserve"]


async def test_an_active_entitlement_raises_the_limit_and_premium_gets_no_button(tmp_path: Path) -> None:
    async with started_world(tmp_path, PREMIUM) as w:
        active(w, user_id=w.seed.user_id)
        for n in range(1, 4):
            assert f"Queued as job #{n}" in await queued(w, await w.video({"prompt": f"video {n}"}))
        text, components = await refusal(w, await w.video({"prompt": "a fourth video"}))
        assert "3 of 3" in text
        assert components == []  # already premium: nothing to buy
        rows = await w.ledger()
        assert [r.kind for r in rows] == ["reserve"] * 3
        assert {r.user_id for r in rows} == {w.seed.user_id}
        # The premium limits bind only the subscriber: another member keeps 1 a day.
        await queued(w, await w.video({"prompt": "theirs"}, user_id=OTHER_USER))
        _, components = await refusal(w, await w.video({"prompt": "theirs again"}, user_id=OTHER_USER))
        assert components == PREMIUM_BUTTON


async def test_ended_deleted_future_and_other_sku_entitlements_do_not_count(tmp_path: Path) -> None:
    async with started_world(tmp_path, PREMIUM) as w:
        now = time.time()
        grants = {
            1_100_000_000_000_000_101: {"sku_id": SKU, "starts_at": now - 86400, "ends_at": now - 60},
            1_100_000_000_000_000_102: {"sku_id": SKU, "deleted": True},
            1_100_000_000_000_000_103: {"sku_id": SKU, "starts_at": now + 3600, "ends_at": now + 7200},
            1_100_000_000_000_000_104: {"sku_id": OTHER_SKU, "starts_at": now - 60, "ends_at": now + 3600},
        }
        for user_id, grant in grants.items():
            w.fake.grant_entitlement(grant.pop("sku_id"), user_id=user_id, **grant)
            await queued(w, await w.video({"prompt": "first video"}, user_id=user_id))
            _, components = await refusal(w, await w.video({"prompt": "second video"}, user_id=user_id))
            assert components == PREMIUM_BUTTON, user_id
        assert len(await w.ledger()) == len(grants)


async def test_a_guild_entitlement_makes_every_member_premium(tmp_path: Path) -> None:
    async with started_world(tmp_path, PREMIUM) as w:
        # Bought by the owner for the server; a test entitlement (no dates) from the Developer Portal.
        w.fake.grant_entitlement(SKU, guild_id=w.seed.guild_id, type=TEST_MODE_PURCHASE)
        for n in range(1, 4):
            await queued(w, await w.video({"prompt": f"video {n}"}, user_id=OTHER_USER))
        _, components = await refusal(w, await w.video({"prompt": "a fourth"}, user_id=OTHER_USER))
        assert components == []
        assert [r.user_id for r in await w.ledger()] == [OTHER_USER] * 3


async def test_premium_does_not_lift_the_guild_budget(tmp_path: Path) -> None:
    config = {**PREMIUM, "limits": {"daily_videos": 1, "guild_monthly_usd": "0.50"},
              "premium": {"sku_ids": [SKU], "daily_videos": "unlimited", "monthly_usd": "unlimited"}}
    async with started_world(tmp_path, config) as w:
        active(w, user_id=w.seed.user_id)
        await queued(w, await w.video({"prompt": "first video"}))  # $0.35 of $0.50
        iid = await w.video({"prompt": "second video"})
        text = await w.reply(iid, "monthly video budget")
        assert "$0.35 of $0.50" in text
        assert not any(r.data.get("components") for r in w.reply_edits(iid))  # buying would not help


async def test_without_premium_configured_a_refusal_has_no_button(tmp_path: Path) -> None:
    async with started_world(tmp_path, {"limits": {"daily_videos": 1}}) as w:
        active(w, user_id=w.seed.user_id)  # an entitlement to a SKU the bot was not told about
        await queued(w, await w.video({"prompt": "first video"}))
        _, components = await refusal(w, await w.video({"prompt": "second video"}))
        assert components == []


# ---- Re-roll, /quota ------------------------------------------------------------------------------------

async def test_reroll_takes_the_clickers_entitlements(tmp_path: Path) -> None:
    async with started_world(tmp_path, PREMIUM) as w:
        await queued(w, await w.video({"prompt": "a red fox running through snow"}))
        await queued(w, await w.video({"prompt": "theirs"}, user_id=OTHER_USER))
        await w.wait_submitted(2)
        w.sim.finish_all()
        [result] = [m for m in await w.wait_result(2) if "klingbot:reroll:1" in m.custom_ids()]
        await w.wait_notified(1)
        # Both have used their 1 video today; only the owner has subscribed.
        active(w, user_id=w.seed.user_id)
        theirs = await w.fake.click_button(result, "klingbot:reroll:1", user_id=OTHER_USER)
        assert "Daily video limit reached" in await w.answer(theirs)
        refused = next(r for r in w.fake.interaction_responses(theirs)
                       if "Daily video limit" in (r.data.get("content") or ""))
        assert refused.data.get("components") == PREMIUM_BUTTON
        mine = await w.fake.click_button(result, "klingbot:reroll:1")
        assert "as job #3" in await w.answer(mine, "Re-rolling")
        assert [(r.user_id, r.job_id) for r in await w.ledger() if r.kind == "reserve"] == [
            (w.seed.user_id, 1), (OTHER_USER, 2), (w.seed.user_id, 3)]


async def test_quota_shows_premium_and_the_premium_limits(tmp_path: Path) -> None:
    config = {"limits": {"daily_videos": 1, "monthly_usd": 5, "max_concurrent": 1},
              "premium": {"sku_ids": [OTHER_SKU, SKU], "daily_videos": 3, "monthly_usd": 20,
                          "max_concurrent": "default"}}
    async with started_world(tmp_path, config) as w:
        active(w, user_id=w.seed.user_id)

        async def quota(user_id: int) -> dict:
            iid = await w.fake.send_slash("quota", user_id=user_id)
            reply = await w.wait(lambda: callback(w, iid))
            assert reply.data["flags"] & EPHEMERAL
            [embed] = reply.data["embeds"]
            return embed

        mine = await quota(w.seed.user_id)
        assert "Premium" in mine["title"] and "Premium" in mine["description"]
        shown = {f["name"]: f["value"] for f in mine["fields"]}
        assert "**3** of 3 left" in shown["Videos today"]
        assert "**$20.00** of $20.00 left" in shown["Spending this month"]
        assert "0 of 1 at once" in shown["Jobs in flight"]  # "default": the normal limit
        theirs = await quota(OTHER_USER)
        assert "Premium" not in theirs["title"] and "description" not in theirs
        assert "**1** of 1 left" in {f["name"]: f["value"] for f in theirs["fields"]}["Videos today"]
