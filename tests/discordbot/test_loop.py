"""Loop videos (SPEC 8: first frame = last frame), end to end: the real bot against the fake Discord
and the Runware simulator. Asserted: the task Runware receives (the first frame's imageUUID as both
frames, uploaded once), the refusals (nothing downloaded, uploaded or reserved), and that Re-roll,
Remix and Extend keep the loop, with "Loop" shown where the parameters are listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.world import BotWorld, callback, image_bytes, started_world

OTHER_USER = 1_100_000_000_000_000_777
LOOP_FIELD = "yes: ends on its first frame"


async def finished_job(w: BotWorld, options: dict, **kwargs) -> object:
    """Run one /video to its result message; returns that message."""
    before, submits = len(w.result_messages()), w.sim.stats.submits
    iid = await w.video(options, **kwargs)
    await w.reply(iid, "Queued as job #")
    await w.wait_submitted(submits + 1)
    w.sim.finish_all()
    results = await w.wait_result(before + 1)
    return results[-1]


def fields(embed: dict) -> dict[str, str]:
    return {f["name"]: f["value"] for f in embed["fields"]}


def frames(w: BotWorld, task_uuid: str) -> list[dict]:
    return w.sim.stats.tasks[task_uuid].body["inputs"]["frameImages"]


async def test_a_loop_sends_the_first_frame_as_the_last_one_uploaded_once(world: BotWorld) -> None:
    w = world
    first = w.attach("first.png", image_bytes(640, 360, "PNG", "red"))
    iid = await w.video({"prompt": "a lantern swaying in the wind", "loop": True},
                        attachments={"first_frame": first})
    await w.reply(iid, "Queued as job #1")
    await w.wait_submitted(1)
    [job] = await w.jobs()
    [image_uuid] = job.image_uuids.values()
    assert job.image_uuids == {"first": image_uuid}
    assert job.params["loop"] is True
    # Runware accepted exactly this task (the simulator checks it against the model pages).
    [task] = w.sim.stats.tasks.values()
    assert task.body == {
        "taskType": "videoInference", "taskUUID": job.task_uuid, "deliveryMethod": "async",
        "outputType": "URL", "includeCost": True, "model": "klingai:6@1",
        "positivePrompt": "a lantern swaying in the wind", "width": 1280, "height": 720, "duration": 5,
        "numberResults": 1, "outputFormat": "MP4", "ttl": 86400, "safety": {"checkContent": True, "mode": "fast"},
        "inputs": {"frameImages": [{"image": image_uuid, "frame": "first"},
                                   {"image": image_uuid, "frame": "last"}]},
    }
    assert w.sim.stats.upload_tasks == 1 and image_uuid in w.sim.images

    # The progress message and the result list it among the parameters.
    [progress] = await w.wait(lambda: w.progress_messages())
    await w.wait(lambda: w.fake.message(progress.id).embeds)
    assert fields(w.fake.message(progress.id).embeds[0])["Loop"] == LOOP_FIELD
    w.sim.finish_all()
    [result] = await w.wait_result(1)
    assert fields(result.embeds[0])["Loop"] == LOOP_FIELD

    # Details (ephemeral) says so too.
    details = await w.fake.click_button(result, "klingbot:details:1")
    reply = await w.wait(lambda: callback(w, details))
    assert reply.data["flags"] & 64
    shown = fields(reply.data["embeds"][0])
    assert (shown["Loop"], shown["Frames"]) == (LOOP_FIELD, "first: yes, last: the first (loop)")


async def test_a_job_that_is_not_a_loop_shows_no_loop_field(world: BotWorld) -> None:
    w = world
    result = await finished_job(w, {"prompt": "a plain fox"})
    assert "Loop" not in fields(result.embeds[0])
    details = await w.fake.click_button(result, "klingbot:details:1")
    reply = await w.wait(lambda: callback(w, details))
    assert fields(reply.data["embeds"][0])["Loop"] == "no"


@pytest.mark.parametrize(("frames_given", "message"), [
    ((), "`loop`: is on but no first_frame was given; allowed: loop only together with a first_frame "
         "(the video ends on the frame it starts from)."),
    (("first_frame", "last_frame"), "`loop`: is on and a last_frame was given; allowed: loop or a last_frame, "
                                    "not both: loop uses the first frame as the last."),
])
async def test_loop_refusals_cost_nothing(world: BotWorld, frames_given: tuple[str, ...], message: str) -> None:
    w = world
    attachments = {name: w.attach(f"{name}.png", image_bytes(640, 360)) for name in frames_given}
    iid = await w.video({"prompt": "a lantern swaying", "loop": True}, attachments=attachments)
    assert message in await w.reply(iid, "`loop`")
    assert await w.jobs() == [] and await w.ledger() == []
    assert w.fake.attachment_downloads == []  # refused from the options alone
    assert w.sim.stats.http_requests == 0 and w.sim.stats.upload_tasks == 0


async def test_loop_on_a_model_without_last_frames_names_the_models_that_take_one(tmp_path: Path) -> None:
    async with started_world(tmp_path, {"models": {"kling-2.5-turbo-pro": {"last_frame": False}}}) as w:
        first = w.attach("first.png", image_bytes(640, 360))
        iid = await w.video({"prompt": "a lantern swaying", "loop": True}, attachments={"first_frame": first})
        text = await w.reply(iid, "`loop`")
        assert ("`loop`: is on, but Kling 2.5 Turbo Pro takes no last frame; allowed: loop with a model that "
                "takes a last frame: Kling 2.1 Pro (kling-2.1-pro).") in text
        assert await w.jobs() == [] and await w.ledger() == []
        assert w.fake.attachment_downloads == []
        assert w.sim.stats.http_requests == 0


async def test_reroll_and_remix_of_a_loop_are_loops_over_the_same_upload(world: BotWorld) -> None:
    w = world
    first = w.attach("first.png", image_bytes(640, 360, "PNG", "red"))
    result = await finished_job(w, {"prompt": "a lantern swaying", "loop": True, "cfg_scale": 0.4},
                                attachments={"first_frame": first})

    rolled = await w.fake.click_button(result, "klingbot:reroll:1", user_id=OTHER_USER)
    assert "as job #2" in await w.answer(rolled, "Re-rolling")
    await w.wait_submitted(2)

    remixed = await w.fake.click_button(result, "klingbot:remix:1", user_id=OTHER_USER)
    await w.wait(lambda: any(r.type == 9 for r in w.fake.interaction_responses(remixed)))
    submitted = await w.fake.submit_modal(remixed, {"Prompt": "a lantern glowing at dusk"})
    assert "Queued as job #3" in await w.answer(submitted, "Queued")
    await w.wait_submitted(3)

    jobs = sorted(await w.jobs(), key=lambda j: j.id)
    uploaded = jobs[0].image_uuids["first"]
    both = [{"image": uploaded, "frame": "first"}, {"image": uploaded, "frame": "last"}]
    assert [frames(w, j.task_uuid) for j in jobs] == [both, both, both]
    assert [j.params["loop"] for j in jobs] == [True, True, True]
    assert w.sim.stats.tasks[jobs[2].task_uuid].body["positivePrompt"] == "a lantern glowing at dusk"
    assert w.sim.stats.upload_tasks == 1
    w.sim.finish_all()
    results = await w.wait_result(3)
    assert all(fields(r.embeds[0])["Loop"] == LOOP_FIELD for r in results)


async def test_extending_a_loop_ends_on_its_own_new_first_frame(world: BotWorld) -> None:
    w = world
    w.sim.video_bytes = 300_000  # a real 1280x720 video, so its last frame can be read
    first = w.attach("first.png", image_bytes(1280, 720, "PNG", "red"))
    result = await finished_job(w, {"prompt": "a lantern swaying", "loop": True}, attachments={"first_frame": first})
    clicked = await w.fake.click_button(result, "klingbot:extend:1")
    assert "Queued as job #2" in await w.answer(clicked, "Queued")
    await w.wait_submitted(2)
    old, new = sorted(await w.jobs(), key=lambda j: j.id)
    frame = new.image_uuids["first"]
    assert frame != old.image_uuids["first"]  # the result's last frame, uploaded once
    assert frames(w, new.task_uuid) == [{"image": frame, "frame": "first"}, {"image": frame, "frame": "last"}]
    assert w.sim.stats.upload_tasks == 2
    w.sim.finish_all()
    [_, extended] = await w.wait_result(2)
    shown = fields(extended.embeds[0])
    assert (shown["Loop"], shown["Extends"]) == (LOOP_FIELD, "job #1, video 1")
