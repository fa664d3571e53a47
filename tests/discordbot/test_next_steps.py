"""Extend, Remix and `Make a video`, end to end: the real bot against the fake Discord and the
Runware simulator serving real videos. Asserted: what Runware receives (frames, prompts), who is
charged (the ledger), and what members see; the buttons are clicked after a restart."""

from __future__ import annotations

import io
from pathlib import Path

import av
from PIL import Image, ImageChops

from tests.fakes.world import BotWorld, callback, image_bytes, started_world

OTHER_USER = 1_100_000_000_000_000_777  # a member with no special permission
MAKER = 1_100_000_000_000_000_555  # posts the image someone else makes a video from


def assert_ephemeral(w: BotWorld, iid: str) -> None:
    first = callback(w, iid)
    assert first is not None and first.data.get("flags", 0) & 64


async def finished_job(w: BotWorld, options: dict | None = None, **kwargs) -> object:
    """Run one /video to its result message; returns that message."""
    before, submits = len(w.result_messages()), w.sim.stats.submits
    iid = await w.video(options or {"prompt": "a red fox running through snow"}, **kwargs)
    await w.reply(iid, "Queued as job #")
    await w.wait_submitted(submits + 1)
    w.sim.finish_all()
    results = await w.wait_result(before + 1)
    return results[-1]


def last_picture(video: bytes) -> Image.Image:
    container = av.open(io.BytesIO(video))
    frames = list(container.decode(video=0))
    return frames[-1].to_image()


def uploaded_frame(w: BotWorld, task_uuid: str) -> Image.Image:
    task = w.sim.stats.tasks[task_uuid]
    [frame] = task.body["inputs"]["frameImages"]
    assert frame["frame"] == "first"
    return Image.open(io.BytesIO(w.sim.images[frame["image"]])).convert("RGB")


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


async def reserves(w: BotWorld) -> list[tuple[int | None, int]]:
    return [(r.job_id, r.user_id) for r in await w.ledger() if r.kind == "reserve"]


async def details_fields(w: BotWorld, message: object, job_id: int) -> dict[str, str]:
    """The fields of the Details a member gets for ``job_id`` from ``message``'s button."""
    clicked = await w.fake.click_button(message, f"klingbot:details:{job_id}")
    reply = await w.wait(lambda: callback(w, clicked))
    return {f["name"]: f["value"] for f in reply.data["embeds"][0]["fields"]}


async def test_extend_after_a_restart_continues_from_the_last_frame(tmp_path: Path) -> None:
    async with started_world(tmp_path) as w:
        w.sim.video_bytes = 300_000  # a real 1280x720, 5 s video
        result = await finished_job(w, {"prompt": "a red fox running through snow", "cfg_scale": 0.6})
        assert result.custom_ids() == ["klingbot:reroll:1", "klingbot:extend:1", "klingbot:remix:1",
                                       "klingbot:share:1", "klingbot:details:1", "klingbot:delete:1"]
        [video] = result.attachments
        await w.wait_notified(1)
        await w.stop_bot()
        await w.start_bot()  # the button on the old message still works

        clicked = await w.fake.click_button(result, "klingbot:extend:1", user_id=OTHER_USER)
        assert "Queued as job #2" in await w.answer(clicked, "Queued")
        assert_ephemeral(w, clicked)
        await w.wait_submitted(2)
        jobs = sorted(await w.jobs(), key=lambda j: j.id)
        # The uploaded first frame is the video's last picture, pixel for pixel, uploaded once.
        assert same_pixels(uploaded_frame(w, jobs[1].task_uuid), last_picture(video["data"]))
        assert w.sim.stats.upload_tasks == 1
        t1, t2 = (w.sim.stats.tasks[j.task_uuid].body for j in jobs)
        for key in ("positivePrompt", "CFGScale", "duration", "width", "height", "model"):
            assert t2[key] == t1[key], key
        # Charged to whoever clicked, under their quota.
        assert await reserves(w) == [(1, w.seed.user_id), (2, OTHER_USER)]
        w.sim.finish_all()
        [_, extended] = await w.wait_result(2)
        fields = {f["name"]: f["value"] for f in extended.embeds[0]["fields"]}
        assert fields["Extends"] == "job #1, video 1"
        assert (await details_fields(w, extended, 2))["Extension of"] == "job #1"
        # A re-roll of the extension is a re-roll of it (from the same frame, so it still extends job #1).
        reroll = await w.fake.click_button(extended, "klingbot:reroll:2")
        assert "as job #3" in await w.answer(reroll, "Re-rolling")
        await w.wait_submitted(3)
        w.sim.finish_all()
        rerolled = (await w.wait_result(3))[-1]
        fields = await details_fields(w, rerolled, 3)
        assert fields["Re-roll of"] == "job #2" and "Extension of" not in fields


async def test_extend_with_several_videos_asks_which(world: BotWorld) -> None:
    w = world
    w.sim.video_bytes = 100_000  # real 1280x720 videos (the small default clip is below 300 px)
    result = await finished_job(w, {"prompt": "a red fox running through snow", "variations": 2})
    clicked = await w.fake.click_button(result, "klingbot:extend:1")
    assert "Which video of job #1" in await w.answer(clicked, "Which video")
    picker = w.fake.interaction_message(clicked)
    assert picker.custom_ids() == ["klingbot:extendpick:1"]
    assert w.sim.stats.submits == 1  # nothing started yet
    await w.stop_bot()
    await w.start_bot()  # the select is persistent too
    chosen = await w.fake.click_button(picker, "klingbot:extendpick:1", values=["2"])
    assert "Queued as job #2" in await w.answer(chosen, "Queued")
    await w.wait_submitted(2)
    w.sim.finish_all()
    results = await w.wait_result(2)
    fields = {f["name"]: f["value"] for f in results[-1].embeds[0]["fields"]}
    assert fields["Extends"] == "job #1, video 2"


async def test_remix_after_a_restart_keeps_the_frames_and_takes_the_new_texts(tmp_path: Path) -> None:
    async with started_world(tmp_path) as w:
        first = w.attach("first.png", image_bytes(640, 360, "PNG", "red"))
        result = await finished_job(w, {"prompt": "the red square spins", "negative_prompt": "blurry",
                                        "cfg_scale": 0.4}, attachments={"first_frame": first})
        await w.wait_notified(1)
        await w.stop_bot()
        await w.start_bot()
        clicked = await w.fake.click_button(result, "klingbot:remix:1", user_id=OTHER_USER)
        modal = await w.wait(lambda: next((r.data for r in w.fake.interaction_responses(clicked)
                                           if r.kind == "callback" and r.type == 9), None))
        prefilled = {row["components"][0]["label"]: row["components"][0].get("value")
                     for row in modal["components"]}
        assert prefilled == {"Prompt": "the red square spins", "Negative prompt (optional)": "blurry",
                             "CFG scale, 0 to 1 (optional)": "0.4"}
        submitted = await w.fake.submit_modal(clicked, {"Prompt": "the blue square melts",
                                                        "CFG scale, 0 to 1 (optional)": "0.8"})
        assert "Queued as job #2" in await w.answer(submitted, "Queued")
        assert_ephemeral(w, submitted)
        await w.wait_submitted(2)
        jobs = sorted(await w.jobs(), key=lambda j: j.id)
        t1, t2 = (w.sim.stats.tasks[j.task_uuid].body for j in jobs)
        assert (t2["positivePrompt"], t2["negativePrompt"], t2["CFGScale"]) == ("the blue square melts", "blurry",
                                                                               0.8)
        assert t2["inputs"]["frameImages"] == t1["inputs"]["frameImages"]  # the same uploaded frame
        assert w.sim.stats.upload_tasks == 1
        assert await reserves(w) == [(1, w.seed.user_id), (2, OTHER_USER)]
        w.sim.finish_all()
        remixed = (await w.wait_result(2))[-1]
        fields = await details_fields(w, remixed, 2)
        assert fields["Remix of"] == "job #1" and "Re-roll of" not in fields

        # A bad value is named, and nothing starts.
        again = await w.fake.click_button(result, "klingbot:remix:1", user_id=OTHER_USER)
        await w.wait(lambda: any(r.type == 9 for r in w.fake.interaction_responses(again)))
        refused = await w.fake.submit_modal(again, {"CFG scale, 0 to 1 (optional)": "lots"})
        assert "cfg_scale" in await w.answer(refused, "cfg_scale")
        assert len(await w.jobs()) == 2


async def test_make_a_video_from_a_members_image(world: BotWorld) -> None:
    w = world
    picture = image_bytes(640, 360, "PNG", "green")
    posted = w.fake.post_member_message(w.seed.channel_id, MAKER, "look at this",
                                        [w.attach("green.png", picture)])
    chosen = await w.fake.send_message_command("Make a video", posted, user_id=OTHER_USER)
    await w.wait(lambda: any(r.type == 9 for r in w.fake.interaction_responses(chosen)))
    submitted = await w.fake.submit_modal(chosen, {"Prompt": "the green field sways",
                                                   "Negative prompt (optional)": "people"})
    assert "Queued as job #1" in await w.answer(submitted, "Queued")
    await w.wait_submitted(1)
    [job] = await w.jobs()
    body = w.sim.stats.tasks[job.task_uuid].body
    assert (body["positivePrompt"], body["negativePrompt"]) == ("the green field sways", "people")
    assert same_pixels(uploaded_frame(w, job.task_uuid), Image.open(io.BytesIO(picture)))
    assert (body["width"], body["height"]) == (1280, 720)  # the aspect follows the image, as /video does
    assert await reserves(w) == [(1, OTHER_USER)]  # charged to whoever made it, not the poster

    text_only = w.fake.post_member_message(w.seed.channel_id, MAKER, "no picture here")
    refused = await w.fake.send_message_command("Make a video", text_only, user_id=OTHER_USER)
    assert "no image attachment" in await w.answer(refused, "image")
    assert callback(w, refused).data.get("flags", 0) & 64
    assert len(await w.jobs()) == 1
