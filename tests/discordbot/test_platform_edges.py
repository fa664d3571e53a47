"""The bot at the edges of the platform, against the fake Discord: 30046 (too many edits of an old
message), 40005 per attachment, and message creates paced per channel like edits."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.world import BotWorld


def patches_of(w: BotWorld, message_id: int) -> list[int]:
    return [c.status for c in w.fake.calls if c.method == "PATCH" and c.path.endswith(f"/messages/{message_id}")]


async def test_30046_stops_the_edits_of_that_message_and_nothing_else(world: BotWorld) -> None:
    w = world
    await w.reply(await w.video({"prompt": "an old message"}), "Queued as job #1")
    [old] = await w.wait(lambda: w.progress_messages())
    await w.reply(await w.video({"prompt": "a young message"}), "Queued as job #2")
    young = await w.wait(lambda: next((m for m in w.progress_messages() if m.id != old.id), None))
    # Job 1's progress message is over an hour old and has had its edits for the hour.
    w.fake.message(old.id).created_at -= 3601
    w.fake.old_message_edits_per_hour = 0
    await w.wait_submitted(2)
    await w.wait(lambda: 400 in patches_of(w, old.id))
    refused_at = len(patches_of(w, old.id))
    young_edits = len(w.fake.message(young.id).edits)
    w.sim.finish_all()
    await w.wait_notified(1)
    await w.wait_notified(2)
    # Job 2's message is still edited (to its finished line); job 1's result is a new message as usual.
    await w.wait(lambda: w.fake.message(young.id).content.startswith("✅"))
    assert len(w.fake.message(young.id).edits) > young_edits
    assert len(w.result_messages()) == 2
    assert patches_of(w, old.id)[refused_at - 1] == 400 and len(patches_of(w, old.id)) == refused_at
    assert not w.fake.message(old.id).content.startswith("✅")


async def test_a_file_discord_refuses_becomes_a_link_and_the_others_still_attach(world: BotWorld) -> None:
    w = world
    await w.reply(await w.video({"prompt": "two takes", "variations": 2}), "Queued as job #1")
    await w.wait_submitted(1)
    [task] = w.sim.stats.tasks.values()
    small, large = (item["videoUUID"] for item in task.planned)
    # The second take is larger than Discord's real limit here (the bot believes 10 MiB): it was already
    # downloaded (as after a restart), so its size is what Discord sees.
    downloads = w.bot.sink.download_dir(await w.job(1))
    downloads.mkdir(parents=True, exist_ok=True)
    Path(downloads / f"job1-{large}.mp4").write_bytes(w.sim.mp4 + bytes(4096))
    w.fake.max_upload_bytes = len(w.sim.mp4) + 1024
    w.sim.finish_all()
    [result] = await w.wait_result(1)
    await w.wait_notified(1)
    assert [a["data"] for a in result.attachments] == [w.sim.mp4]
    assert [a["filename"] for a in result.attachments] == [f"job1-{small}.mp4"]
    assert f"/video/{large}.mp4" in result.content and f"/video/{small}.mp4" not in result.content
    assert "over the" not in result.content  # within the limit the bot knew: no false reason given
    finals = [c for c in w.fake.calls if c.method == "POST" and c.payload and c.payload.get("nonce") == "kb-j1-r"]
    assert [(c.status, len(c.files)) for c in finals] == [(413, 2), (200, 1)]


async def test_message_creates_are_paced_per_channel(tmp_path: Path) -> None:
    async with BotWorld(tmp_path) as w:
        w.fake.channel_rate_limit = (2, 0.5)  # a scaled-down "5 per 5 s", for creates and for edits
        await w.start_bot(pace=(2, 0.6))
        for n in range(5):
            await w.reply(await w.video({"prompt": f"burst number {n}"}), f"Queued as job #{n + 1}")
        await w.wait_submitted(5)
        w.sim.finish_all()
        await w.wait_result(5)
        for job_id in range(1, 6):
            await w.wait_notified(job_id)
        assert w.fake.count_429 == 0
        created = sorted(c.at for c in w.fake.calls
                         if c.method == "POST" and c.path == f"/channels/{w.seed.channel_id}/messages")
        assert len(created) >= 5  # the results, and the progress messages posted before them
        assert all(later - earlier >= 0.5 for earlier, later in zip(created, created[2:], strict=False))
