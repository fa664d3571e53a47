"""Posted once (SPEC 3.4): every message the bot creates for a job carries its own deterministic nonce
with enforce_nonce, so a create whose answer was lost comes back as the message Discord already has.
(The crash cases, with the bot killed in that window, are in tests/test_crash_posted_once.py.)"""

from __future__ import annotations

from tests.fakes.world import BotWorld

CREATE = r"^/channels/\d+/messages$"


def creates(w: BotWorld, channel_id: int) -> list[dict]:
    return [c.payload for c in w.fake.calls
            if c.method == "POST" and c.path == f"/channels/{channel_id}/messages" and c.status == 200]


async def test_each_message_of_a_job_has_its_own_nonce(world: BotWorld) -> None:
    w = world
    await w.reply(await w.video({"prompt": "a quiet harbour"}), "Queued as job #1")
    await w.reply(await w.video({"prompt": "FAIL_PROVIDER a loud harbour"}), "Queued as job #2")
    await w.wait_submitted(2)
    w.sim.finish_all()
    await w.wait_notified(1)
    await w.wait_notified(2)
    sent = {p["nonce"]: p for p in creates(w, w.seed.channel_id)}
    assert sorted(sent) == ["kb-j1-p", "kb-j1-r", "kb-j2-f", "kb-j2-p"]
    assert all(p["enforce_nonce"] is True for p in sent.values())
    by_nonce = {m.nonce: m for m in w.channel_messages()}
    result, failure = by_nonce["kb-j1-r"], by_nonce["kb-j2-f"]
    assert result.attachments and "did not produce a video" in failure.content
    # The failure notice carries Re-roll, Details and Delete; a result Extend and Remix too.
    assert failure.custom_ids() == ["klingbot:reroll:2", "klingbot:details:2", "klingbot:delete:2"]
    assert result.custom_ids() == [f"klingbot:{a}:1" for a in ("reroll", "extend", "remix", "share", "details",
                                                                "delete")]


async def test_a_result_whose_answer_was_lost_is_not_posted_again(world: BotWorld) -> None:
    w = world
    await w.reply(await w.video({"prompt": "a lost answer"}), "Queued as job #1")
    await w.wait_submitted(1)
    stored = w.fake.stop_after_storing(lambda m: m.content.startswith("<@"))  # the answer never arrives
    w.sim.finish_all()
    first = await w.wait(lambda: stored.done() and stored.result())
    job = await w.wait_notified(1, timeout=30)  # the delivery is tried again (after its backoff)
    [result] = w.result_messages()
    assert result.id == first.id == job.result_message_id
    assert len(creates(w, w.seed.channel_id)) == 2 and w.fake.nonce_hits == 1  # progress + the repeat


async def test_a_deleted_progress_message_is_replaced_under_a_nonce_of_its_own(world: BotWorld) -> None:
    w = world
    await w.reply(await w.video({"prompt": "someone tidies the channel"}), "Queued as job #1")
    [progress] = await w.wait(lambda: w.progress_messages())
    assert progress.nonce == "kb-j1-p"
    w.fake.delete_message(progress.id)
    await w.wait_submitted(1)  # a new phase: the next edit finds the message gone
    replacement = await w.wait(lambda: next((m for m in w.progress_messages() if not m.deleted), None))
    assert replacement.id != progress.id and replacement.nonce.startswith("kb-j1-p") and \
        replacement.nonce != "kb-j1-p" and len(replacement.nonce) <= 25
    job = await w.wait_job(1, lambda j: j.progress_message_id == replacement.id)
    w.sim.finish_all()
    await w.wait_notified(1)
    assert [m.id for m in w.progress_messages() if not m.deleted] == [job.progress_message_id]
    assert len(w.result_messages()) == 1


async def test_the_dm_fallback_carries_the_nonce(world: BotWorld) -> None:
    w = world
    await w.reply(await w.video({"prompt": "the channel goes away"}), "Queued as job #1")
    await w.wait_submitted(1)
    w.fake.delete_channel(w.seed.channel_id)
    w.sim.finish_all()
    dm = int(w.fake.dm_channel_for(w.seed.user_id)["id"])
    [result] = await w.wait_result(1, channel_id=dm)
    assert result.nonce == "kb-j1-r" and result.attachments
