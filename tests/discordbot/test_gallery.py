"""The gallery end to end: /genadmin gallery set|clear and the Share button on results, with the real bot
against the fake Discord and the Runware simulator (tests/fakes/world.py). Asserted: what the moderator,
the member and the gallery channel see, the audit rows, and that a job is posted there once, also when
Discord's answer to the post was lost (the claim, then a retry with the same nonce)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.db.audit import list_audit
from bot.db.gallery import get_gallery_post
from bot.db.guilds import get_guild_settings
from bot.discordbot import render_gallery
from bot.discordbot.nonces import gallery_nonce
from bot.discordbot.render_job import jump_url
from tests.fakes.discord import Message
from tests.fakes.discord_state import ATTACH_FILES, DEFAULT_OWNER_ID, EMBED_LINKS, EVERYONE_PERMISSIONS, MANAGE_GUILD
from tests.fakes.world import BotWorld, callback, started_world

EPHEMERAL = 64
GALLERY = 1_100_000_000_000_000_601
LOG = 1_100_000_000_000_000_602
OTHER_USER = 1_100_000_000_000_000_777  # a member with no special permission
MODERATOR = 1_100_000_000_000_000_888  # gets Manage Server in the interaction
PROMPT = "a red fox running through snow"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[BotWorld]:
    async with started_world(tmp_path) as w:
        w.fake.add_channel(w.seed.guild_id, GALLERY, "showcase")
        w.fake.add_channel(w.seed.guild_id, LOG, "mod-log")
        yield w


async def admin(w: BotWorld, path: str, options: dict | None = None) -> str:
    """What the guild owner is told by /genadmin ``path`` (ephemeral)."""
    iid = await w.fake.send_slash(f"genadmin {path}", options or {}, user_id=DEFAULT_OWNER_ID)
    return await w.answer(iid)


async def finished_job(w: BotWorld, prompt: str = PROMPT, **options: object) -> Message:
    before, submits = len(w.result_messages()), w.sim.stats.submits
    iid = await w.video({"prompt": prompt, **options})
    await w.reply(iid, "Queued as job #")
    await w.wait_submitted(submits + 1)
    w.sim.finish_all()
    results = await w.wait_result(before + 1)
    return results[-1]


async def share(w: BotWorld, result: Message, job_id: int = 1, **kwargs) -> str:
    """Press Share; returns the interaction id once it has been answered (ephemerally)."""
    iid = await w.fake.click_button(result, f"klingbot:share:{job_id}", **kwargs)
    await w.answer(iid)
    first = callback(w, iid)
    assert first is not None and first.data.get("flags", 0) & EPHEMERAL
    return iid


def gallery(w: BotWorld) -> list[Message]:
    return [m for m in w.fake.messages(GALLERY) if not m.deleted]


async def gallery_set(w: BotWorld) -> None:
    assert (await admin(w, "gallery set", {"channel": GALLERY})).startswith("✅ Done")


async def test_gallery_nonces_fit_discords_limit() -> None:
    longest = gallery_nonce(2**53 - 1, replacing=2**63 - 1)
    assert gallery_nonce(42) == "kb-j42-g" and len(longest) <= 25 and longest.startswith("kb-j9007199254740991-g")


# ---- the setting ------------------------------------------------------------------------------------

async def test_set_and_clear_are_audited_and_posted_in_the_log_channel(world: BotWorld) -> None:
    w = world
    await admin(w, "logchannel set", {"channel": LOG})
    text = await admin(w, "gallery set", {"channel": GALLERY, "reason": "best of"})
    assert text.startswith(f"✅ Done: set the gallery channel <#{GALLERY}>: none → <#{GALLERY}>")
    assert (await get_guild_settings(w.bot.db, w.seed.guild_id)).gallery_channel_id == GALLERY
    line = await w.fake.wait_for_message(LOG, lambda m: "gallery" in m.content)
    assert line.content.startswith(f"🛡️ <@{DEFAULT_OWNER_ID}> set the gallery channel") and "best of" in line.content

    text = await admin(w, "gallery clear")
    assert text.startswith(f"✅ Done: set the gallery channel: <#{GALLERY}> → none")
    assert (await get_guild_settings(w.bot.db, w.seed.guild_id)).gallery_channel_id is None
    rows = [r for r in await list_audit(w.bot.db, w.seed.guild_id, 10) if r.action == "gallery.set"]
    assert [(r.target, r.before, r.after, r.reason) for r in reversed(rows)] == [
        (f"channel:{GALLERY}", "none", f"channel:{GALLERY}", "best of"), (None, f"channel:{GALLERY}", "none", None)]
    assert all(r.actor == f"discord:{DEFAULT_OWNER_ID}" for r in rows)


async def test_a_channel_the_bot_cannot_post_files_and_embeds_in_is_refused(world: BotWorld) -> None:
    w = world
    w.fake.deny_channel(GALLERY, permissions=ATTACH_FILES | EMBED_LINKS)
    text = await admin(w, "gallery set", {"channel": GALLERY})
    assert text == render_gallery.unusable_channel(GALLERY, ["Embed Links", "Attach Files"])
    assert f"<#{GALLERY}>" in text and "Embed Links, Attach Files permissions" in text
    assert (await get_guild_settings(w.bot.db, w.seed.guild_id)).gallery_channel_id is None
    assert await list_audit(w.bot.db, w.seed.guild_id, 10) == []

    w.fake.deny_channel(GALLERY)  # nothing at all, not even seeing it
    assert "View Channel, Send Messages" in await admin(w, "gallery set", {"channel": GALLERY})
    w.fake.deny_channel(GALLERY, denied=False)
    await gallery_set(w)


async def test_only_moderators_set_the_gallery(world: BotWorld) -> None:
    w = world
    iid = await w.fake.send_slash("genadmin gallery set", {"channel": GALLERY}, user_id=OTHER_USER, permissions=0)
    assert "Only moderators" in await w.answer(iid)
    assert (await get_guild_settings(w.bot.db, w.seed.guild_id)).gallery_channel_id is None


# ---- Share ------------------------------------------------------------------------------------------

async def test_share_without_a_gallery_says_how_a_moderator_sets_one(world: BotWorld) -> None:
    w = world
    result = await finished_job(w)
    iid = await share(w, result)
    assert await w.answer(iid) == render_gallery.NO_GALLERY
    assert "/genadmin gallery set" in render_gallery.NO_GALLERY
    assert w.fake.messages(GALLERY) == []


async def test_the_owner_shares_once_and_a_second_press_links_to_it(world: BotWorld) -> None:
    w = world
    await gallery_set(w)
    result = await finished_job(w)
    await w.wait_notified(1)
    [row1, row2] = [[c["custom_id"] for c in row["components"]] for row in result.components]
    assert row1 == ["klingbot:reroll:1", "klingbot:extend:1", "klingbot:remix:1"]
    assert row2 == ["klingbot:share:1", "klingbot:details:1", "klingbot:delete:1"]

    text = await w.answer(await share(w, result))
    [post] = await w.wait(lambda: gallery(w))
    assert text == f"Shared job #1 to <#{GALLERY}>: {jump_url(w.seed.guild_id, GALLERY, post.id)}"
    # The videos themselves, byte for byte, under the result's file names.
    assert [(a["filename"], a["data"]) for a in post.attachments] == [
        (a["filename"], a["data"]) for a in result.attachments]
    assert [a["data"] for a in post.attachments] == [w.sim.mp4]
    [embed] = post.embeds
    original = jump_url(w.seed.guild_id, w.seed.channel_id, result.id)
    assert embed["description"] == PROMPT and embed["url"] == original
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields == {"Made by": f"<@{w.seed.user_id}>", "Model": "Kling 2.5 Turbo Pro", "Duration": "5 s",
                      "Aspect": "1280×720 (16:9)", "Original": f"[the result message]({original})"}
    # The maker is named, not pinged; and the post is de-duplicated by its nonce.
    assert post.notified_user_ids == [] and not post.notified_everyone and post.allowed_mentions["parse"] == []
    assert post.nonce == "kb-j1-g" and post.components == []
    row = await get_gallery_post(w.bot.db, 1)
    assert (row.channel_id, row.message_id, row.shared_by) == (GALLERY, post.id, w.seed.user_id)

    # Anyone pressing again (after a restart, too) gets the link; nothing more is posted.
    await w.stop_bot()
    await w.start_bot()
    for presser in (w.seed.user_id, OTHER_USER):
        again = await w.answer(await share(w, result, user_id=presser))
        assert again == f"Job #1 is already in the gallery: {jump_url(w.seed.guild_id, GALLERY, post.id)}"
    assert len(w.fake.messages(GALLERY)) == 1


async def test_another_member_is_refused_and_a_moderator_may_share(world: BotWorld) -> None:
    w = world
    await gallery_set(w)
    result = await finished_job(w)
    await w.wait_notified(1)
    refused = await w.answer(await share(w, result, user_id=OTHER_USER))
    assert refused == f"Only <@{w.seed.user_id}>, who made job #1, or a moderator can share it to the gallery."
    assert w.fake.messages(GALLERY) == [] and await get_gallery_post(w.bot.db, 1) is None

    text = await w.answer(await share(w, result, user_id=MODERATOR, permissions=EVERYONE_PERMISSIONS | MANAGE_GUILD))
    assert text.startswith("Shared job #1")
    [post] = gallery(w)
    fields = {f["name"]: f["value"] for f in post.embeds[0]["fields"]}
    assert fields["Made by"] == f"<@{w.seed.user_id}>" and fields["Shared by"] == f"<@{MODERATOR}>"
    assert post.notified_user_ids == []


async def test_a_result_posted_as_a_link_is_shared_as_that_link(world: BotWorld) -> None:
    w = world
    await gallery_set(w)
    iid = await w.video({"prompt": PROMPT})
    await w.reply(iid, "Queued as job #1")
    await w.wait_submitted(1)
    w.fake.max_upload_bytes = 1024  # Discord refuses the file: the result carries the link
    w.sim.finish_all()
    [result] = await w.wait_result(1)
    await w.wait_notified(1)
    assert result.attachments == []
    [task] = w.sim.stats.tasks.values()
    url = task.results[0]["videoURL"]

    assert (await w.answer(await share(w, result))).startswith("Shared job #1")
    [post] = gallery(w)
    assert post.attachments == []
    assert post.content.startswith(f"Video 1: {url} (link expires <t:") and post.content.endswith(":R>)")


async def test_a_deleted_result_has_nothing_left_to_share(world: BotWorld) -> None:
    w = world
    await gallery_set(w)
    result = await finished_job(w)
    await w.wait_notified(1)
    w.fake.delete_message(result.id)  # deleted while the press was on its way
    iid = await w.fake.click_button(result, "klingbot:share:1", check=False)
    assert await w.answer(iid) == render_gallery.video_gone((await w.jobs())[0])
    assert w.fake.messages(GALLERY) == []


async def test_a_gallery_the_bot_lost_is_named_when_sharing(world: BotWorld) -> None:
    w = world
    await gallery_set(w)
    result = await finished_job(w)
    await w.wait_notified(1)
    w.fake.deny_channel(GALLERY, permissions=ATTACH_FILES)
    text = await w.answer(await share(w, result))
    assert text == render_gallery.gallery_unusable(GALLERY, ["Attach Files"])
    assert w.fake.messages(GALLERY) == []


# ---- exactly once ------------------------------------------------------------------------------------

async def test_a_lost_answer_then_a_retry_after_a_restart_posts_once(world: BotWorld) -> None:
    """Discord stored the gallery post, the bot never heard: the claim stays without a message; the
    retry sends the same nonce and Discord hands back the stored message."""
    w = world
    await gallery_set(w)
    result = await finished_job(w)
    await w.wait_notified(1)
    stored = w.fake.stop_after_storing(lambda m: m.channel_id == GALLERY)
    iid = await w.fake.click_button(result, "klingbot:share:1")
    kept = await w.wait(lambda: stored.done() and stored.result())
    first = await w.answer(iid)
    # The claim was made before the post and has no message: the member is told to press again.
    row = await get_gallery_post(w.bot.db, 1)
    assert (row.channel_id, row.message_id) == (GALLERY, None)
    assert first == render_gallery.unreachable((await w.jobs())[0])
    hits = w.fake.nonce_hits

    await w.stop_bot()
    await w.start_bot()
    text = await w.answer(await share(w, result))
    assert text.endswith(jump_url(w.seed.guild_id, GALLERY, kept.id))
    assert [m.id for m in w.fake.messages(GALLERY)] == [kept.id]
    assert (await get_gallery_post(w.bot.db, 1)).message_id == kept.id
    assert w.fake.nonce_hits == hits + 1  # Discord handed back the stored post


async def test_a_gallery_post_a_moderator_deleted_can_be_shared_again(world: BotWorld) -> None:
    w = world
    await gallery_set(w)
    result = await finished_job(w)
    await w.wait_notified(1)
    await share(w, result)
    [first] = gallery(w)
    w.fake.delete_message(first.id)

    text = await w.answer(await share(w, result))
    [second] = gallery(w)
    assert second.id != first.id and text.endswith(jump_url(w.seed.guild_id, GALLERY, second.id))
    assert second.nonce == gallery_nonce(1, replacing=first.id) != first.nonce  # a new post, not the old one
    row = await get_gallery_post(w.bot.db, 1)
    assert (row.message_id, row.replaced_message_id) == (second.id, first.id)
    # And now it is there again: a press links to it.
    assert "already in the gallery" in await w.answer(await share(w, result))
    assert len(gallery(w)) == 1


async def test_an_enhanced_job_is_shared_with_the_prompt_that_made_it(world: BotWorld) -> None:
    w = world
    await gallery_set(w)
    result = await finished_job(w, enhance=True)
    job = await w.wait_notified(1)
    assert job.enhanced_prompt and job.enhanced_prompt != PROMPT
    await w.answer(await share(w, result))
    [post] = await w.wait(lambda: gallery(w))
    [embed] = post.embeds
    assert embed["description"] == job.enhanced_prompt
    assert {f["name"]: f["value"] for f in embed["fields"]}["Enhanced from"] == PROMPT
