"""/video end to end: the real bot (run_bot) against the fake Discord and the Runware simulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.db.guilds import add_gen_channel
from bot.errors import LimitExceeded
from bot.requests import resolve_request
from bot.services.quotas import DM_SCOPE, TERMINAL_SCOPE, Member
from bot.services.usage import Usage
from tests.fakes.world import BotWorld, callback, image_bytes, started_world

EPHEMERAL = 64


async def test_text_to_video_end_to_end(world: BotWorld) -> None:
    w = world
    iid = await w.video({"prompt": "a red fox running through fresh snow @everyone"})
    # Deferred at once, ephemeral and "thinking".
    first = await w.wait(lambda: callback(w, iid))
    assert first.type == 5 and first.data.get("flags", 0) & EPHEMERAL
    assert w.fake.interaction_responses(iid)[0] is first

    reply = await w.reply(iid, "Queued as job #1")
    await w.wait_submitted(1)
    progress = await w.wait(lambda: w.progress_messages())
    assert len(progress) == 1
    # The reply links the progress message (or, had it been slow to appear, the channel).
    link = f"https://discord.com/channels/{w.seed.guild_id}/{w.seed.channel_id}/{progress[0].id}"
    assert link in reply or f"<#{w.seed.channel_id}>" in reply
    assert "$0.35" in reply
    w.sim.finish_all()

    [result] = await w.wait_result(1)
    # One NEW message that notifies the member and no one else, with the video attached.
    assert result.content.startswith(f"<@{w.seed.user_id}>")
    assert result.notified_user_ids == [w.seed.user_id]
    assert not result.notified_everyone and result.notified_role_ids == []
    assert [a["filename"].rsplit(".", 1)[-1] for a in result.attachments] == ["mp4"]
    assert result.attachments[0]["data"] == w.sim.mp4
    embed = result.embeds[0]
    assert "a red fox running through fresh snow @everyone" in embed["description"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    task = next(iter(w.sim.stats.tasks.values()))
    assert fields["Seed"] == str(task.results[0]["seed"])
    assert fields["Cost"] == "$0.35"

    # The progress message: edited in place, ending with a line that points at the result.
    [progress] = w.progress_messages()
    await w.wait(lambda: str(result.id) in w.fake.message(progress.id).content)
    assert w.fake.message(progress.id).edits, "the progress message was never edited"
    assert w.fake.message(progress.id).content.startswith("✅ Job #1")

    # Money: reserved the estimate, settled to what the simulator billed.
    job = await w.wait_notified(1)
    ledger = await w.ledger()
    assert w.sim.stats.billed_micro == 350_000
    assert [(r.kind, r.amount_micro) for r in ledger] == [("reserve", 350_000), ("settle", 350_000)]
    assert job.result_message_id == result.id


async def test_image_to_video_with_first_and_last_frames(world: BotWorld) -> None:
    w = world
    first = w.attach("first.png", image_bytes(640, 360, "PNG", "red"))
    last = w.attach("last.jpg", image_bytes(1280, 720, "JPEG", "blue"), "image/jpeg")
    iid = await w.video({"prompt": "the red square turns blue"},
                        attachments={"first_frame": first, "last_frame": last})
    await w.reply(iid, "Queued as job #1")
    await w.wait_submitted(1)
    [task] = w.sim.stats.tasks.values()
    frames = task.body["inputs"]["frameImages"]
    assert [f["frame"] for f in frames] == ["first", "last"]
    # The frames went up once with imageUpload; the task names the imageUUIDs Runware issued.
    assert all(f["image"] in w.sim.images for f in frames)
    assert w.sim.stats.upload_tasks == 2
    # The default aspect follows the first frame (640x360 is 16:9).
    assert (task.body["width"], task.body["height"]) == (1280, 720)
    w.sim.finish_all()
    [result] = await w.wait_result(1)
    assert result.attachments


async def test_every_option_reaches_runware(world: BotWorld) -> None:
    w = world
    options = {
        "prompt": "waves at night", "model": "kling-2.5-turbo-pro", "duration": 10, "aspect": "9:16",
        "negative_prompt": "blurry", "cfg_scale": 0.7, "variations": 2, "format": "WEBM", "quality": 80,
    }
    iid = await w.video(options)
    await w.reply(iid, "Queued as job #1")
    await w.wait_submitted(1)
    [task] = w.sim.stats.tasks.values()
    body = task.body
    assert body["model"] == "klingai:6@1"
    assert body["positivePrompt"] == "waves at night"
    assert body["negativePrompt"] == "blurry"
    assert (body["width"], body["height"], body["duration"]) == (720, 1280, 10)
    assert body["CFGScale"] == 0.7
    assert body["numberResults"] == 2
    assert body["outputFormat"] == "WEBM"
    assert body["outputQuality"] == 80
    assert body["includeCost"] is True and body["deliveryMethod"] == "async"
    w.sim.finish_all()
    [result] = await w.wait_result(1)
    assert result.content.startswith(f"<@{w.seed.user_id}> your 2 videos are ready.")
    assert len(result.attachments) == 2 and all(a["filename"].endswith(".webm") for a in result.attachments)
    ledger = await w.ledger()
    assert [(r.kind, r.amount_micro) for r in ledger] == [("reserve", 1_400_000), ("settle", 1_400_000)]


async def test_a_text_file_named_png_is_refused_before_anything_is_spent(world: BotWorld) -> None:
    w = world
    fake_png = w.attach("cat.png", b"just some text, not an image at all\n" * 20)
    iid = await w.video({"prompt": "a cat"}, attachments={"first_frame": fake_png})
    text = await w.reply(iid)
    assert "first_frame" in text and "not a recognised image" in text
    assert await w.jobs() == []
    assert await w.ledger() == []
    assert w.sim.stats.http_requests == 0


async def test_an_invalid_field_is_refused_without_downloading(world: BotWorld) -> None:
    w = world
    frame = w.attach("f.png", image_bytes())
    iid = await w.video({"prompt": "a cat", "model": "kling-2.1-pro", "duration": 7},
                        attachments={"first_frame": frame})
    text = await w.reply(iid)
    assert "`duration`" in text and "5 or 10 seconds" in text
    assert w.fake.attachment_downloads == []
    assert await w.ledger() == []


async def test_daily_limit_names_the_limit_and_when_it_resets(tmp_path: Path) -> None:
    async with started_world(tmp_path, {"limits": {"daily_videos": 1}}) as w:
        first = await w.video({"prompt": "first video"})
        await w.reply(first, "Queued as job #1")
        second = await w.video({"prompt": "second video"})
        text = await w.reply(second)
        assert "Daily video limit reached" in text and "1 of 1" in text and "resets at 00:00" in text
        assert [r.kind for r in await w.ledger()] == ["reserve"]


async def test_generation_channels_refuse_other_channels_with_a_pointer(world: BotWorld) -> None:
    w = world
    gen_channel = 555_000_000_000_000_001
    w.fake.add_channel(w.seed.guild_id, gen_channel, "video-gen")
    await add_gen_channel(w.bot.db, w.seed.guild_id, gen_channel)
    iid = await w.video({"prompt": "somewhere else"})
    text = await w.reply(iid)
    assert f"<#{gen_channel}>" in text
    assert await w.jobs() == []
    ok = await w.video({"prompt": "in the right place"}, channel_id=gen_channel)
    assert "Queued as job #1" in await w.reply(ok, "Queued")


async def test_dms_are_refused_unless_allowed(world: BotWorld) -> None:
    w = world
    iid = await w.video({"prompt": "in a DM"}, dm=True)
    text = await w.reply(iid)
    assert "not in direct messages" in text
    assert await w.jobs() == []


async def test_a_dm_job_and_a_terminal_job_of_one_person_count_apart(tmp_path: Path) -> None:
    """With allow_dms, direct messages are a scope of their own: a DM job uses neither the quota
    nor the usage lines of the terminal (guild 0), and the terminal's job not the DM's."""
    config = {"discord": {"allow_dms": True}, "limits": {"daily_videos": 1}}
    async with started_world(tmp_path, config) as w:
        uid = w.seed.user_id
        assert "Queued as job #1" in await w.reply(await w.video({"prompt": "a lantern in a DM"}, dm=True),
                                                   "Queued")
        # The same person at the terminal (`klingbot generate --user`), on the same database.
        request = resolve_request(w.cfg, prompt="a lantern at the terminal")
        terminal = await w.bot.engine.create_job(Member(TERMINAL_SCOPE, uid), request, channel_id=0)
        refused = await w.reply(await w.video({"prompt": "a second lantern"}, dm=True))
        # The DM quota is used up by the DM job alone: the terminal's did not count there.
        assert "Daily video limit" in refused and "1 of 1" in refused
        with pytest.raises(LimitExceeded, match="Daily video limit"):
            await w.bot.engine.create_job(Member(TERMINAL_SCOPE, uid), request, channel_id=0)

        jobs = sorted(await w.jobs(), key=lambda j: j.id)
        assert [(j.id, j.guild_id, j.user_id) for j in jobs] == [(1, DM_SCOPE, uid), (terminal.id, 0, uid)]
        usage = Usage(w.bot.db, w.cfg)
        dm_lines = (await usage.report(DM_SCOPE, "all", "user")).rows
        terminal_lines = (await usage.report(TERMINAL_SCOPE, "all", "user")).rows
        assert [(r.key, r.jobs, r.reserved_micro) for r in dm_lines] == [(str(uid), 1, 350_000)]
        assert [(r.key, r.jobs, r.reserved_micro) for r in terminal_lines] == [(str(uid), 1, 350_000)]
        assert [row.guild_id for row in await w.ledger()] == [DM_SCOPE, TERMINAL_SCOPE]
        # The DM job is delivered in the DM.
        w.sim.finish_all()
        dm_id = int(w.fake.dm_channel_for(uid)["id"])
        [result] = await w.wait_result(1, channel_id=dm_id)
        assert result.attachments
        await w.wait_notified(1)


async def test_missing_bot_permissions_are_named(world: BotWorld) -> None:
    w = world
    from tests.fakes.discord_state import SEND_MESSAGES, VIEW_CHANNEL

    iid = await w.video({"prompt": "no files allowed"}, app_permissions=VIEW_CHANNEL | SEND_MESSAGES)
    text = await w.reply(iid)
    assert "Embed Links" in text and "Attach Files" in text and "Send Messages," not in text
    assert await w.ledger() == []


async def test_restart_mid_job_resumes_and_delivers_exactly_once(world: BotWorld) -> None:
    w = world
    iid = await w.video({"prompt": "survives a restart"})
    await w.reply(iid, "Queued as job #1")
    await w.wait_submitted(1)
    await w.wait(lambda: w.progress_messages())
    await w.stop_bot()

    await w.start_bot()  # a NEW bot on the same database
    w.sim.finish_all()
    await w.wait_result(1)
    await w.wait_notified(1)
    assert w.sim.stats.submits == 1
    assert len(w.result_messages()) == 1
    assert len(w.progress_messages()) == 1  # the new process edited the message the old one posted
    ledger = await w.ledger()
    assert [r.kind for r in ledger] == ["reserve", "settle"]


async def test_a_deleted_progress_message_is_replaced(world: BotWorld) -> None:
    w = world
    w.fake.fail_next("PATCH", r"^/channels/\d+/messages/\d+$", 404, 10008, "Unknown Message")
    iid = await w.video({"prompt": "someone deletes my progress"})
    await w.reply(iid, "Queued as job #1")
    await w.wait_submitted(1)
    # The first edit finds the message gone: a new progress message is posted and stored.
    await w.wait(lambda: len(w.progress_messages()) >= 2)
    new_id = w.progress_messages()[-1].id
    job = await w.wait_job(1, lambda j: j.progress_message_id == new_id)
    assert job.progress_message_id == new_id
    w.sim.finish_all()
    await w.wait_result(1)
    await w.wait(lambda: w.fake.message(new_id).content.startswith("✅ Job #1"))


async def test_an_expired_interaction_token_does_not_stop_delivery(world: BotWorld) -> None:
    w = world
    w.fake.fail_next("PATCH", r"/messages/@original$", 401, 50027, "Invalid Webhook Token")
    iid = await w.video({"prompt": "slow to confirm"})
    await w.wait_submitted(1)
    w.sim.finish_all()
    [result] = await w.wait_result(1)
    assert result.attachments
    assert w.reply_edits(iid) == []  # the only edit was refused (50027)
    job = await w.wait_notified(1)
    assert job.result_message_id == result.id


async def test_a_video_over_the_upload_limit_is_posted_as_a_link(world: BotWorld) -> None:
    w = world
    w.fake.max_upload_bytes = 1024  # the interaction says so; the MP4 is bigger
    assert len(w.sim.mp4) > 1024
    iid = await w.video({"prompt": "too big to attach"})
    await w.reply(iid, "Queued as job #1")
    await w.wait_submitted(1)
    w.sim.finish_all()
    [result] = await w.wait_result(1)
    assert result.attachments == []
    [task] = w.sim.stats.tasks.values()
    url = task.results[0]["videoURL"]
    assert url in result.content
    assert "link expires <t:" in result.content and ":R>" in result.content


async def test_a_deleted_channel_means_delivery_by_dm(world: BotWorld) -> None:
    w = world
    iid = await w.video({"prompt": "the channel goes away"})
    await w.reply(iid, "Queued as job #1")
    await w.wait_submitted(1)
    w.fake.delete_channel(w.seed.channel_id)
    w.sim.finish_all()
    dm = w.fake.dm_channel_for(w.seed.user_id)
    [result] = await w.wait_result(1, channel_id=int(dm["id"]))
    assert result.attachments
    await w.wait_notified(1)


async def test_a_failed_image_upload_is_told_once_in_the_reply_and_released(world: BotWorld) -> None:
    w = world
    first = w.attach("first.png", image_bytes(640, 360, "PNG", "red"))
    w.sim.faults.next_statuses = [403]  # Runware refuses the imageUpload (not retried)
    iid = await w.video({"prompt": "the red square turns blue"}, attachments={"first_frame": first})
    text = await w.reply(iid, "upload")
    assert "upload" in text.lower()
    [job] = await w.jobs()
    assert job.state == "failed" and job.notified_at is not None
    assert [row.kind for row in await w.ledger()] == ["reserve", "release"]
    assert w.sim.stats.submits == 0
    # The reply said it: no progress message and no public failure notice pinging the member too.
    assert w.channel_messages() == []
