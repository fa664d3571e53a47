"""/quota, /history and /job end to end: the real bot against the fake Discord and the simulator."""

from __future__ import annotations

import os
import time
from datetime import UTC
from pathlib import Path

from bot.db.jobs import results_for_job
from bot.services.clock import Clock, next_day_start, next_month_start
from bot.usd import micro_to_usd
from tests.fakes.discord_state import EVERYONE_PERMISSIONS, MANAGE_GUILD
from tests.fakes.world import BotWorld, callback

EPHEMERAL = 64
OTHER_USER = 1_100_000_000_000_000_777
MODERATOR = 1_100_000_000_000_000_888


class ShiftClock(Clock):
    """Real time plus an offset a test moves forward (the engine keeps polling in real time)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


async def embed_reply(w: BotWorld, iid: str) -> dict:
    """The ephemeral embed an immediate answer carried."""
    reply = await w.wait(lambda: callback(w, iid))
    assert reply.type == 4 and reply.data["flags"] & EPHEMERAL
    [embed] = reply.data["embeds"]
    return embed


def fields(embed: dict) -> dict[str, str]:
    return {f["name"]: f["value"] for f in embed.get("fields", [])}




async def start_job(w: BotWorld, prompt: str, **kwargs) -> int:
    submits = w.sim.stats.submits
    text = await w.reply(await w.video({"prompt": prompt}, **kwargs), "Queued as job #")
    await w.wait_submitted(submits + 1)
    return int(text.split("Queued as job #")[1].split()[0].rstrip(".").split("(")[0])


async def finish_job(w: BotWorld, prompt: str = "a red fox running through snow", **kwargs) -> int:
    job_id = await start_job(w, prompt, **kwargs)
    w.sim.finish_all()
    await w.wait_notified(job_id)
    return job_id


# ---- /quota -----------------------------------------------------------------------------------------

async def test_quota_matches_the_ledger(world: BotWorld) -> None:
    w = world
    await finish_job(w)
    await start_job(w, "still running")
    before = time.time()
    embed = await embed_reply(w, await w.fake.send_slash("quota"))
    after = time.time()

    ledger = await w.ledger()
    closed = {r.job_id for r in ledger if r.kind in ("settle", "release")}
    settled = sum(r.amount_micro for r in ledger if r.kind == "settle")
    open_reserves = sum(r.amount_micro for r in ledger if r.kind == "reserve" and r.job_id not in closed)
    assert (settled, open_reserves) == (350_000, 350_000)
    used = settled + open_reserves

    got = fields(embed)
    assert "**48** of 50 left (2 used)" in got["Videos today"]
    assert (f"**{micro_to_usd(100_000_000 - used)}** of $100.00 left ({micro_to_usd(used)} used)"
            in got["Spending this month"])
    assert f"{micro_to_usd(open_reserves)} of it is reserved" in got["Spending this month"]
    assert got["Jobs in flight"].startswith("1 of 10 at once\n#2 (")
    day_resets = {int(next_day_start(t, UTC).timestamp()) for t in (before, after)}
    month_resets = {int(next_month_start(t, UTC).timestamp()) for t in (before, after)}
    assert any(f"resets <t:{ts}:f>" in got["Videos today"] for ts in day_resets)
    assert any(f"resets <t:{ts}:f>" in got["Spending this month"] for ts in month_resets)

    # Another member's quota is their own.
    other = fields(await embed_reply(w, await w.fake.send_slash("quota", user_id=OTHER_USER)))
    assert "**50** of 50 left (0 used)" in other["Videos today"]
    assert other["Jobs in flight"] == "0 of 10 at once"


# ---- /history ---------------------------------------------------------------------------------------

async def test_history_lists_own_recent_jobs_newest_first(world: BotWorld) -> None:
    w = world
    await finish_job(w, "the first fox")
    await start_job(w, "the second fox")
    await start_job(w, "the third fox")
    await start_job(w, "someone else's cat", user_id=OTHER_USER)

    everything = (await embed_reply(w, await w.fake.send_slash("history")))["description"]
    lines = [line for line in everything.split("\n") if line.startswith("**#")]
    assert [line.split("**")[1] for line in lines] == ["#3", "#2", "#1"]
    assert "#1** · succeeded · $0.35 · <t:" in everything
    assert lines[0].split(" · ")[2] == "$0.35 reserved"
    assert "the third fox" in everything and "the first fox" in everything
    assert "cat" not in everything

    two = (await embed_reply(w, await w.fake.send_slash("history", {"count": 2})))["description"]
    assert "**#3**" in two and "**#2**" in two and "**#1**" not in two

    none = await embed_reply(w, await w.fake.send_slash("history", user_id=MODERATOR))
    assert none["description"] == "You have no jobs here yet."


# ---- /job -------------------------------------------------------------------------------------------

async def test_job_reposts_the_video_with_its_buttons(world: BotWorld) -> None:
    w = world
    job_id = await finish_job(w, "repost me")
    iid = await w.fake.send_slash("job", {"id": job_id})
    await w.answer(iid, "attached")
    first = callback(w, iid)
    assert first.type == 5 and not first.data.get("flags", 0) & EPHEMERAL  # a public re-post
    message = w.fake.interaction_message(iid)
    assert message.content.startswith(f"Job #{job_id}: 1 video(s) attached.")
    assert [a["data"] for a in message.attachments] == [w.sim.mp4]
    assert message.custom_ids() == [f"klingbot:{action}:{job_id}"
                                    for action in ("reroll", "extend", "remix", "share", "details", "delete")]
    assert message.notified_user_ids == []  # a re-post pings no one
    assert "repost me" in message.embeds[0]["description"]


async def test_job_is_for_the_owner_or_a_moderator(world: BotWorld) -> None:
    w = world
    job_id = await finish_job(w)
    refused = await w.fake.send_slash("job", {"id": job_id}, user_id=OTHER_USER)
    assert "only look at your own jobs" in await w.answer(refused)
    assert callback(w, refused).data["flags"] & EPHEMERAL
    assert w.fake.interaction_message(refused).attachments == []

    allowed = await w.fake.send_slash("job", {"id": job_id}, user_id=MODERATOR,
                                      permissions=EVERYONE_PERMISSIONS | MANAGE_GUILD)
    await w.answer(allowed, "attached")
    assert w.fake.interaction_message(allowed).attachments

    missing = await w.fake.send_slash("job", {"id": 99})
    assert "There is no job #99 here." in await w.answer(missing)


async def test_job_still_running_is_shown_to_the_asker_only(world: BotWorld) -> None:
    w = world
    job_id = await start_job(w, "not done yet")
    iid = await w.fake.send_slash("job", {"id": job_id})
    text = await w.answer(iid, f"Job #{job_id}")
    assert "its videos are posted when it finishes" in text
    assert callback(w, iid).data["flags"] & EPHEMERAL


async def test_job_links_a_file_no_longer_on_disk_and_says_when_the_link_expired(tmp_path: Path) -> None:
    clock = ShiftClock()
    async with BotWorld(tmp_path) as w:
        await w.start_bot(clock=clock)
        job_id = await finish_job(w, "an old one")
        [result] = await results_for_job(w.bot.engine.db, job_id)
        assert result.local_path and os.path.isfile(result.local_path)
        os.remove(result.local_path)  # the bot's copy is gone: only Runware's link is left

        fresh = await w.fake.send_slash("job", {"id": job_id})
        text = await w.answer(fresh, "Video 1")
        assert f"Video 1: {result.video_url} (link expires <t:" in text
        assert "expired" not in text
        assert w.fake.interaction_message(fresh).attachments == []

        clock.offset = w.cfg.runware.output_ttl_s + 60  # past Runware's retention
        old = await w.fake.send_slash("job", {"id": job_id})
        text = await w.answer(old, "Video 1")
        assert "Video 1: the link has expired" in text
        assert result.video_url not in text
