"""The buttons on job messages, end to end: the real bot against the fake Discord and the Runware
simulator (tests/fakes/world.py). What is asserted is what members and Runware see."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bot.discordbot.app import RESTARTING
from bot.discordbot.cogs.buttons import JobButton, components_for
from bot.discordbot.cogs.next_steps import COG_NAME as NEXT_STEPS
from bot.discordbot.cogs.next_steps import NextStepsCog
from tests.fakes.discord_state import EVERYONE_PERMISSIONS, MANAGE_GUILD
from tests.fakes.records import job_record as view_job
from tests.fakes.world import BotWorld, callback, image_bytes, started_world

EPHEMERAL = 64
OTHER_USER = 1_100_000_000_000_000_777  # a member with no special permission
MODERATOR = 1_100_000_000_000_000_888  # gets Manage Server in the interaction




def assert_ephemeral(w: BotWorld, iid: str) -> None:
    first = callback(w, iid)
    assert first is not None and first.data.get("flags", 0) & EPHEMERAL


async def finished_job(w: BotWorld, options: dict | None = None, **kwargs) -> object:
    """Run one /video to its result message; returns that message."""
    before, submits = len(w.result_messages()), w.sim.stats.submits
    iid = await w.video(options or {"prompt": "a red fox running through snow"}, **kwargs)
    await w.reply(iid, "Queued as job #")
    await w.wait_submitted(submits + 1)
    w.sim.finish_all()
    results = await w.wait_result(before + 1)
    return results[-1]


async def progress_message(w: BotWorld, job_id: int, action: str = "cancel"):
    """The job's progress message once it carries its Cancel button."""
    job = await w.wait_job(job_id, lambda j: j.progress_message_id is not None)
    wanted = f"klingbot:{action}:{job_id}"
    return await w.wait(lambda: wanted in w.fake.message(job.progress_message_id).custom_ids()
                        and w.fake.message(job.progress_message_id))


async def job_ledger(w: BotWorld, job_id: int) -> list[tuple[str, int]]:
    return [(r.kind, r.amount_micro) for r in await w.ledger() if r.job_id == job_id]


def body_without_uuid(task) -> dict:
    return {k: v for k, v in task.body.items() if k != "taskUUID"}


# ---- pure parts -----------------------------------------------------------------------------------

async def test_components_per_stage_and_custom_ids() -> None:
    # A View needs a running event loop, hence an async test.
    running = view_job(id=7, state="submitted")

    def ids(stage: str, record) -> list[str] | None:
        view = components_for(record, stage)
        return None if view is None else [c.custom_id for c in view.children]

    assert ids("progress", running) == ["klingbot:cancel:7"]
    assert ids("result", replace(running, state="succeeded")) == [
        "klingbot:reroll:7", "klingbot:extend:7", "klingbot:remix:7", "klingbot:share:7", "klingbot:details:7",
        "klingbot:delete:7"]
    # At most 5 buttons in an action row (Discord's limit): what makes another video, then this one's.
    rows = [item.row for item in components_for(replace(running, state="succeeded"), "result").children]
    assert rows == [0, 0, 0, 1, 1, 1]
    # No gallery outside a server: a DM job's result has no Share.
    assert "klingbot:share:7" not in ids("result", replace(running, state="succeeded", guild_id=-1))
    assert ids("failure", replace(running, state="failed")) == ["klingbot:reroll:7", "klingbot:details:7",
                                                                "klingbot:delete:7"]
    assert ids("progress", replace(running, cancel_requested=True)) is None  # nothing to press now
    assert JobButton.__discord_ui_compiled_template__.fullmatch("klingbot:reroll:123")
    assert not JobButton.__discord_ui_compiled_template__.fullmatch("klingbot:reroll:12x")


# ---- Re-roll ------------------------------------------------------------------------------------

async def test_reroll_repeats_the_request_and_frames_charged_to_the_clicker(world: BotWorld) -> None:
    w = world
    first = w.attach("first.png", image_bytes(640, 360, "PNG", "red"))
    result = await finished_job(w, {"prompt": "the red square spins", "cfg_scale": 0.7, "quality": 80,
                                    "negative_prompt": "blurry"}, attachments={"first_frame": first})
    assert result.custom_ids() == ["klingbot:reroll:1", "klingbot:extend:1", "klingbot:remix:1",
                                   "klingbot:share:1", "klingbot:details:1", "klingbot:delete:1"]
    assert w.sim.stats.upload_tasks == 1

    clicked = await w.fake.click_button(result, "klingbot:reroll:1", user_id=OTHER_USER)
    again = await w.fake.click_button(result, "klingbot:reroll:1", user_id=OTHER_USER)
    text = await w.answer(clicked, "Re-rolling")
    assert "Re-rolling job #1 as job #2" in text
    assert_ephemeral(w, clicked)
    await w.wait_submitted(2)

    # The second quick click was acknowledged and did nothing: no reply, no third job.
    second = await w.wait(lambda: callback(w, again))
    assert second.type == 6
    assert [r.kind for r in w.fake.interaction_responses(again)] == ["callback"]
    jobs = sorted(await w.jobs(), key=lambda j: j.id)
    assert [j.id for j in jobs] == [1, 2]

    # Runware received the same task (new taskUUID), with the imageUUID uploaded once for job 1.
    t1, t2 = (w.sim.stats.tasks[j.task_uuid] for j in jobs)
    assert t1.task_uuid != t2.task_uuid
    assert body_without_uuid(t2) == body_without_uuid(t1)
    assert t2.body["inputs"]["frameImages"][0]["image"] == jobs[0].image_uuids["first"]
    assert w.sim.stats.upload_tasks == 1
    # Charged to whoever clicked.
    assert (jobs[1].user_id, jobs[1].parent_job_id) == (OTHER_USER, 1)
    reserves = [(r.job_id, r.user_id) for r in await w.ledger() if r.kind == "reserve"]
    assert reserves == [(1, w.seed.user_id), (2, OTHER_USER)]


async def test_reroll_is_subject_to_the_clickers_quota(tmp_path: Path) -> None:
    async with started_world(tmp_path, {"limits": {"daily_videos": 1}}) as w:
        result = await finished_job(w)
        await w.wait_notified(1)
        clicked = await w.fake.click_button(result, "klingbot:reroll:1")  # the owner: 1 of 1 used
        text = await w.answer(clicked)
        assert "Daily video limit reached" in text and "1 of 1" in text
        assert [j.id for j in await w.jobs()] == [1]
        # Another member still has their own quota.
        other = await w.fake.click_button(result, "klingbot:reroll:1", user_id=OTHER_USER)
        assert "as job #2" in await w.answer(other, "Re-rolling")


# ---- Details ------------------------------------------------------------------------------------

async def test_details_shows_every_parameter_seeds_task_uuid_and_cost(world: BotWorld) -> None:
    w = world
    result = await finished_job(w, {"prompt": "waves at night", "negative_prompt": "blurry", "cfg_scale": 0.7,
                                    "variations": 2, "format": "WEBM", "quality": 80, "aspect": "9:16"})
    job = await w.wait_notified(1)
    iid = await w.fake.click_button(result, "klingbot:details:1", user_id=OTHER_USER)
    reply = await w.wait(lambda: callback(w, iid))
    assert reply.type == 4 and reply.data["flags"] & EPHEMERAL
    [embed] = reply.data["embeds"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    task = w.sim.stats.tasks[job.task_uuid]
    assert job.task_uuid in fields["Task UUID"]
    assert fields["Seeds"] == ", ".join(str(r["seed"]) for r in task.results)
    assert fields["Model"] == "Kling 2.5 Turbo Pro (`klingai:6@1`)"
    assert fields["Size"] == "720×1280 (9:16)"
    assert (fields["Duration"], fields["Variations"]) == ("5 s", "2")
    assert (fields["CFG scale"], fields["Format"], fields["Quality"]) == ("0.7", "WEBM", "80")
    assert fields["Negative prompt"] == "blurry"
    assert fields["Frames"] == "first: no, last: no"
    assert (fields["Reserved"], fields["Settled cost"]) == ("$0.70", "$0.70")
    assert fields["State"] == "succeeded"
    times = (("Created", job.created_at), ("Submitted", job.submitted_at), ("Finished", job.finished_at))
    for name, ts in times:
        assert f"<t:{int(ts)}:f>" in fields[name]
    assert "waves at night" in embed["description"]


# ---- restart --------------------------------------------------------------------------------------

async def test_buttons_work_after_a_restart(world: BotWorld) -> None:
    w = world
    result = await finished_job(w)
    await w.wait_notified(1)
    await w.stop_bot()
    await w.start_bot()  # a new process: nothing in memory knows the old message

    details = await w.fake.click_button(result, "klingbot:details:1")
    reply = await w.wait(lambda: callback(w, details))
    job = await w.job(1)
    assert job.task_uuid in str(reply.data["embeds"])
    reroll = await w.fake.click_button(result, "klingbot:reroll:1")
    assert "as job #2" in await w.answer(reroll, "Re-rolling")
    await w.wait_submitted(2)


async def test_a_press_whose_cog_is_not_loaded_says_the_bot_is_restarting(world: BotWorld) -> None:
    """Extend and Remix belong to the NextSteps cog: while it is not loaded (its extension reloading,
    the bot restarting) a press is told so, and nothing happens."""
    w = world
    result = await finished_job(w)
    await w.wait_notified(1)
    await w.bot.remove_cog(NEXT_STEPS)
    posted, submits = len(w.channel_messages()), w.sim.stats.submits
    for action in ("extend", "remix"):
        clicked = await w.fake.click_button(result, f"klingbot:{action}:1")
        assert await w.answer(clicked) == RESTARTING
        assert_ephemeral(w, clicked)
    assert (len(w.channel_messages()), w.sim.stats.submits) == (posted, submits)
    assert [j.id for j in await w.jobs()] == [1]
    # The buttons cog's own actions are unaffected; Remix works again once its cog is back.
    details = await w.fake.click_button(result, "klingbot:details:1")
    assert "embeds" in (await w.wait(lambda: callback(w, details))).data
    await w.bot.add_cog(NextStepsCog(w.bot))
    remix = await w.fake.click_button(result, "klingbot:remix:1")
    await w.wait(lambda: any(r.type == 9 for r in w.fake.interaction_responses(remix)))  # its modal


# ---- Delete ---------------------------------------------------------------------------------------

async def test_delete_is_for_the_owner_or_a_moderator(world: BotWorld) -> None:
    w = world
    result = await finished_job(w)
    refused = await w.fake.click_button(result, "klingbot:delete:1", user_id=OTHER_USER)
    text = await w.answer(refused)
    assert "or a moderator can delete it" in text
    assert_ephemeral(w, refused)
    assert not w.fake.message(result.id).deleted

    done = await w.fake.click_button(result, "klingbot:delete:1", user_id=MODERATOR,
                                     permissions=EVERYONE_PERMISSIONS | MANAGE_GUILD)
    assert "Deleted the message of job #1" in await w.answer(done, "Deleted")
    assert w.fake.message(result.id).deleted


async def test_the_owner_deletes_their_result(world: BotWorld) -> None:
    w = world
    result = await finished_job(w)
    done = await w.fake.click_button(result, "klingbot:delete:1")
    await w.answer(done, "Deleted")
    assert w.fake.message(result.id).deleted
    assert (await w.job(1)).state == "succeeded"  # the job and its money are untouched


# ---- Cancel ---------------------------------------------------------------------------------------

async def test_cancel_by_someone_else_is_refused_and_changes_nothing(world: BotWorld) -> None:
    w = world
    iid = await w.video({"prompt": "mine to cancel"})
    await w.reply(iid, "Queued as job #1")
    await w.wait_submitted(1)
    progress = await progress_message(w, 1)
    refused = await w.fake.click_button(progress, "klingbot:cancel:1", user_id=OTHER_USER)
    assert "or a moderator can cancel it" in await w.answer(refused)
    job = await w.job(1)
    assert not job.cancel_requested and job.state in ("submitted", "processing")
    assert [r.kind for r in await w.ledger()] == ["reserve"]
    w.sim.finish_all()
    [result] = await w.wait_result(1)  # delivered as usual
    assert result.attachments


async def test_cancel_while_queued_is_free_and_never_reaches_runware(tmp_path: Path) -> None:
    async with started_world(tmp_path, {"limits": {"max_in_flight": 1}}) as w:
        await w.reply(await w.video({"prompt": "first in line"}), "Queued as job #1")
        await w.wait_submitted(1)
        await w.reply(await w.video({"prompt": "waiting for a slot"}), "Queued as job #2")
        progress = await progress_message(w, 2)
        clicked = await w.fake.click_button(progress, "klingbot:cancel:2")
        text = await w.answer(clicked, "cancelled")
        assert "before it reached Runware; nothing was charged" in text
        assert_ephemeral(w, clicked)

        job2 = await w.wait_notified(2)
        assert job2.state == "cancelled"
        assert await job_ledger(w, 2) == [("reserve", 350_000), ("release", 350_000)]
        await w.wait(lambda: w.fake.message(progress.id).content.startswith("🚫 Job #2 was cancelled"))
        assert w.fake.message(progress.id).components == []

        # The slot frees: the next job goes to Runware, job 2 never does.
        w.sim.finish_all()
        await w.wait_notified(1)
        await w.reply(await w.video({"prompt": "after the cancel"}), "Queued as job #3")
        await w.wait_submitted(2)
        job3 = await w.job(3)
        assert set(w.sim.stats.tasks) == {(await w.job(1)).task_uuid, job3.task_uuid}
        assert job2.task_uuid not in w.sim.stats.tasks
        assert len(w.result_messages()) == 1  # job 1 only


async def test_cancel_while_running_is_settled_quietly_and_never_delivered(world: BotWorld) -> None:
    w = world
    iid = await w.video({"prompt": "changed my mind"})
    await w.reply(iid, "Queued as job #1")
    await w.wait_submitted(1)
    progress = await progress_message(w, 1)
    clicked = await w.fake.click_button(progress, "klingbot:cancel:1")
    text = await w.answer(clicked, "cancelled")
    assert "may still be billed" in text
    assert (await w.job(1)).cancel_requested
    # The progress message says so at once and loses its button.
    await w.wait(lambda: "Cancelling" in str(w.fake.message(progress.id).embeds)
                 and w.fake.message(progress.id).components == [])

    w.sim.finish_all()
    job = await w.wait_notified(1)
    assert job.state == "cancelled"
    ledger = await job_ledger(w, 1)
    assert w.sim.stats.billed_micro == 350_000
    assert ledger == [("reserve", 350_000), ("settle", w.sim.stats.billed_micro)]
    await w.wait(lambda: w.fake.message(progress.id).content.startswith("🚫 Job #1 was cancelled"))
    assert w.result_messages() == []  # never delivered


async def test_a_moderator_may_cancel_anyones_job(world: BotWorld) -> None:
    w = world
    await w.reply(await w.video({"prompt": "a moderator stops this"}), "Queued as job #1")
    await w.wait_submitted(1)
    progress = await progress_message(w, 1)
    clicked = await w.fake.click_button(progress, "klingbot:cancel:1", user_id=MODERATOR,
                                        permissions=EVERYONE_PERMISSIONS | MANAGE_GUILD)
    assert "may still be billed" in await w.answer(clicked, "cancelled")
    job = await w.job(1)
    assert job.cancel_requested and job.cancelled_by == f"discord:{MODERATOR}"
