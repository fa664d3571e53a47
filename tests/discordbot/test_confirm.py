"""Cost confirmation: a job estimated above the threshold asks first (Confirm / Cancel, 60 s);
nothing is reserved or uploaded before Confirm; the same for Re-roll; a guild sets its own
threshold with /genadmin confirm set."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.db.audit import list_audit
from bot.discordbot import confirm
from tests.fakes.discord_state import DEFAULT_OWNER_ID
from tests.fakes.world import BotWorld, image_bytes, started_world

OTHER_USER = 1_100_000_000_000_000_777  # a member with no special permission

COSTLY = {"prompt": "a red fox running through snow", "duration": 10}  # $0.70 at $0.07/s


def button(message, label: str) -> str:
    """The custom id of the button labelled ``label`` on ``message``."""
    for row in message.components:
        for item in row.get("components", []):
            if item.get("label") == label:
                return item["custom_id"]
    raise LookupError(f"no button {label!r} on message {message.id}: {message.components}")


async def admin(w: BotWorld, path: str, options: dict) -> str:
    """/genadmin PATH as the guild owner (every permission); the text of the answer."""
    iid = await w.fake.send_slash(f"genadmin {path}", options, user_id=DEFAULT_OWNER_ID)
    return await w.answer(iid)


async def asked(w: BotWorld, iid: str):
    await w.answer(iid, "This will cost about")
    return await w.wait(lambda: (m := w.fake.interaction_message(iid)) and m.components and m)


@pytest.fixture
async def costly_world(tmp_path: Path):
    async with started_world(tmp_path, {"limits": {"confirm_above_usd": 0.5}}) as w:
        yield w


async def test_nothing_is_reserved_or_uploaded_before_confirm(costly_world: BotWorld) -> None:
    w = costly_world
    first = w.attach("first.png", image_bytes(640, 360, "PNG", "red"))
    iid = await w.video(COSTLY, attachments={"first_frame": first})
    prompt = await asked(w, iid)
    assert "This will cost about $0.70" in prompt.content and prompt.ephemeral
    assert [(item["label"]) for row in prompt.components for item in row["components"]] == ["Confirm", "Cancel"]
    assert await w.ledger() == [] and w.sim.stats.upload_tasks == 0 and w.sim.stats.submits == 0

    cancelled = await w.fake.click_button(prompt, button(prompt, "Cancel"))
    await w.wait(lambda: "Cancelled; nothing was charged" in w.fake.interaction_message(iid).content)
    assert cancelled and await w.jobs() == [] and await w.ledger() == [] and w.sim.stats.upload_tasks == 0

    again = await w.video(COSTLY, attachments={"first_frame": first})
    prompt = await asked(w, again)
    await w.fake.click_button(prompt, button(prompt, "Confirm"))
    assert "Queued as job #1" in await w.answer(again, "Queued")
    await w.wait_submitted(1)
    assert [(r.kind, r.amount_micro) for r in await w.ledger()] == [("reserve", 700_000)]
    assert w.sim.stats.upload_tasks == 1


async def test_reroll_asks_too_and_only_the_asker_may_answer(costly_world: BotWorld) -> None:
    w = costly_world
    iid = await w.video(COSTLY)
    prompt = await asked(w, iid)
    stranger = await w.fake.click_button(prompt, button(prompt, "Confirm"), user_id=OTHER_USER)
    assert "not yours" in await w.answer(stranger, "not yours")
    assert await w.jobs() == []
    await w.fake.click_button(prompt, button(prompt, "Confirm"))
    await w.answer(iid, "Queued as job #1")
    await w.wait_submitted(1)
    w.sim.finish_all()
    [result] = await w.wait_result(1)

    clicked = await w.fake.click_button(result, "klingbot:reroll:1")
    prompt = await asked(w, clicked)
    assert "a re-roll of job #1" in prompt.content
    assert [j.id for j in await w.jobs()] == [1]
    await w.fake.click_button(prompt, button(prompt, "Confirm"))
    assert "Re-rolling job #1 as job #2" in await w.answer(clicked, "Re-rolling")


async def test_an_unanswered_confirmation_expires(costly_world: BotWorld, monkeypatch) -> None:
    w = costly_world
    monkeypatch.setattr(confirm, "CONFIRM_S", 0.3)
    iid = await w.video(COSTLY)
    await w.answer(iid, "Not confirmed within")
    assert await w.jobs() == [] and await w.ledger() == []


async def test_a_guild_sets_its_own_threshold(tmp_path: Path) -> None:
    async with started_world(tmp_path, {"limits": {"confirm_above_usd": 0.5}}) as w:
        assert "amount" in await admin(w, "confirm set", {"amount": "-1"})
        assert "never" in await admin(w, "confirm set", {"amount": "0"})
        [row] = [r for r in await list_audit(w.bot.db, w.seed.guild_id, 10) if r.action == "confirm.set"]
        assert (row.before, row.after) == ("default ($0.50)", "never")
        iid = await w.video(COSTLY)  # 0 = never ask
        assert "Queued as job #1" in await w.answer(iid, "Queued")
        await admin(w, "confirm set", {"amount": "0.60"})
        again = await w.video(COSTLY)
        assert "$0.60 confirmation threshold" in (await asked(w, again)).content
