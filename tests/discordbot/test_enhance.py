"""Runware's prompt enhancer (SPEC 8), end to end: the real bot against the fake Discord and the
Runware simulator. Asserted: the promptEnhance task Runware receives, the video task carrying the
enhanced text, what the member sees (the enhanced prompt, "Enhanced from"), the ledger (the videos
plus the enhancement, settled once), the refusals, a transient error, and that Re-roll and Remix
start from the enhanced prompt without enhancing again."""

from __future__ import annotations

from bot.db.guilds import add_blocklist_term
from bot.services.enhance import enhance_task_uuid
from bot.simulator.enhance import MICRO_PER_VERSION, enhanced_text
from tests.fakes.world import BotWorld, callback

OTHER_USER = 1_100_000_000_000_000_777
PRICE_5S = 350_000  # one 5 s video of the default model (registry and simulator)
RESERVE = 10_000    # runware.enhance_reserve_usd's default
PROMPT = "a fox in the snow"
ENHANCED = enhanced_text(PROMPT, 0, 300)


def fields(embed: dict) -> dict[str, str]:
    return {f["name"]: f["value"] for f in embed["fields"]}


def money(rows) -> list[tuple[str, int]]:
    return [(r.kind, r.amount_micro) for r in rows]


async def enhanced_job(w: BotWorld, prompt: str = PROMPT) -> None:
    submits = w.sim.stats.submits
    iid = await w.video({"prompt": prompt, "enhance": True})
    await w.reply(iid, "Queued as job #")
    await w.wait_submitted(submits + 1)


async def test_the_enhanced_prompt_is_sent_shown_and_settled_with_the_video(world: BotWorld) -> None:
    w = world
    await enhanced_job(w)
    [job] = await w.jobs()
    uuid = enhance_task_uuid(job.task_uuid)
    # Runware got one promptEnhance task, then the video task with the enhancer's text.
    assert w.sim.stats.enhance_calls == {uuid: 1}
    assert w.sim.stats.enhance_bodies[uuid] == {
        "taskType": "promptEnhance", "taskUUID": uuid, "prompt": PROMPT, "promptMaxLength": 300,
        "promptVersions": 1, "includeCost": True}
    assert w.sim.stats.tasks[job.task_uuid].body["positivePrompt"] == ENHANCED
    assert (job.enhanced_prompt, job.enhance_cost_micro, job.enhance_resent) == (ENHANCED, MICRO_PER_VERSION, False)
    assert money(await w.ledger()) == [("reserve", PRICE_5S + RESERVE)]

    # The progress message shows the enhanced prompt as the prompt, and the member's own.
    [progress] = await w.wait(lambda: w.progress_messages())
    shown = await w.wait(lambda: (e := w.fake.message(progress.id).embeds) and ENHANCED in e[0]["description"]
                         and e[0]["description"])
    assert f"Enhanced from: {PROMPT}" in shown

    w.sim.finish_all()
    [result] = await w.wait_result(1)
    embed = result.embeds[0]
    assert embed["description"] == ENHANCED and fields(embed)["Enhanced from"] == PROMPT
    assert fields(embed)["Cost"] == "$0.3503"
    await w.wait_notified(1)
    assert money(await w.ledger()) == [("reserve", PRICE_5S + RESERVE), ("settle", PRICE_5S + MICRO_PER_VERSION)]
    assert PRICE_5S + MICRO_PER_VERSION == w.sim.stats.billed_micro + w.sim.stats.enhance_billed_micro

    details = await w.fake.click_button(result, "klingbot:details:1")
    reply = await w.wait(lambda: callback(w, details))
    listed = fields(reply.data["embeds"][0])
    assert reply.data["embeds"][0]["description"] == ENHANCED and listed["Enhanced from"] == PROMPT
    assert listed["Prompt enhancer"] == "prompt rewritten, cost $0.0003"
    assert (listed["Reserved"], listed["Settled cost"]) == ("$0.36", "$0.3503")


async def test_reroll_and_remix_start_from_the_enhanced_prompt_without_enhancing_again(world: BotWorld) -> None:
    w = world
    await enhanced_job(w)
    w.sim.finish_all()
    [result] = await w.wait_result(1)

    rolled = await w.fake.click_button(result, "klingbot:reroll:1", user_id=OTHER_USER)
    assert "as job #2" in await w.answer(rolled, "Re-rolling")
    await w.wait_submitted(2)
    remixed = await w.fake.click_button(result, "klingbot:remix:1", user_id=OTHER_USER)
    modal = await w.wait(lambda: next((r.data for r in w.fake.interaction_responses(remixed)
                                       if r.kind == "callback" and r.type == 9), None))
    prefilled = {row["components"][0]["label"]: row["components"][0].get("value") for row in modal["components"]}
    assert prefilled["Prompt"] == ENHANCED
    submitted = await w.fake.submit_modal(remixed, {"Prompt": ENHANCED + ", at dusk"})
    assert "Queued as job #3" in await w.answer(submitted, "Queued")
    await w.wait_submitted(3)

    first, reroll, remix = sorted(await w.jobs(), key=lambda j: j.id)
    assert w.sim.stats.enhance_tasks == 1  # only the first job was enhanced
    assert w.sim.stats.tasks[reroll.task_uuid].body["positivePrompt"] == ENHANCED
    assert w.sim.stats.tasks[remix.task_uuid].body["positivePrompt"] == ENHANCED + ", at dusk"
    for job in (reroll, remix):
        assert (job.params["enhance"], job.enhance_reserve_micro, job.enhanced_prompt) == (False, None, None)
    assert money(await w.ledger(user_id=OTHER_USER)).count(("reserve", PRICE_5S)) == 2


async def test_a_failed_video_still_settles_the_enhancement(world: BotWorld) -> None:
    w = world
    await enhanced_job(w, "FAIL_PROVIDER a fox")
    w.sim.finish_all()
    job = await w.wait_notified(1)
    assert job.state == "failed"
    assert money(await w.ledger()) == [("reserve", PRICE_5S + RESERVE), ("settle", MICRO_PER_VERSION)]
    assert w.sim.stats.billed_micro == 0 and w.sim.stats.enhance_billed_micro == MICRO_PER_VERSION
    [notice] = await w.wait(lambda: [m for m in w.channel_messages() if "did not produce a video" in m.content])
    assert "Runware billed $0.0003 for it." in notice.embeds[0]["description"]


async def test_an_enhancer_refusal_fails_the_job_and_releases(world: BotWorld) -> None:
    w = world
    iid = await w.video({"prompt": "SIM_ENHANCE_REFUSE a fox", "enhance": True})
    await w.reply(iid, "Queued as job #1")
    job = await w.wait_notified(1)
    assert job.state == "failed"
    assert job.error == "Runware's prompt enhancer refused the prompt: The prompt was rejected by the prompt enhancer."
    assert money(await w.ledger()) == [("reserve", PRICE_5S + RESERVE), ("release", PRICE_5S + RESERVE)]
    assert w.sim.stats.submits == 0 and w.sim.stats.enhance_tasks == 0
    [notice] = await w.wait(lambda: [m for m in w.channel_messages() if "did not produce a video" in m.content])
    description = notice.embeds[0]["description"]
    assert "prompt enhancer refused the prompt" in description and "You were not charged." in description


async def test_a_5xx_keeps_the_job_queued_and_the_next_round_succeeds(world: BotWorld) -> None:
    w = world
    w.sim.faults.next_statuses = [503]  # the first request: the enhancement's
    iid = await w.video({"prompt": PROMPT, "enhance": True})
    await w.reply(iid, "Queued as job #1")
    await w.wait_submitted(1)
    [job] = await w.jobs()
    assert w.sim.stats.enhance_calls == {enhance_task_uuid(job.task_uuid): 1}  # the 503 came before it
    assert job.enhance_resent and job.enhanced_prompt == ENHANCED  # the 503 may have been billed
    assert w.sim.stats.tasks[job.task_uuid].body["positivePrompt"] == ENHANCED
    w.sim.finish_all()
    await w.wait_notified(1)
    # The unanswered call counts at its reserve (the bound of what it may have billed).
    assert money(await w.ledger()) == [("reserve", PRICE_5S + RESERVE), ("settle", PRICE_5S + RESERVE)]


async def test_a_long_prompt_with_enhance_is_refused_before_anything_is_spent(world: BotWorld) -> None:
    w = world
    iid = await w.video({"prompt": "x" * 301, "enhance": True})
    text = await w.reply(iid, "`prompt`")
    assert ("`prompt`: is 301 characters long; allowed: at most 300 characters with enhance (the limit of "
            "Runware's prompt enhancer), or enhance off.") in text
    assert await w.jobs() == [] and await w.ledger() == []
    assert w.sim.stats.http_requests == 0


async def test_an_enhanced_prompt_with_a_term_the_server_blocks_makes_no_video(world: BotWorld) -> None:
    """The member's own prompt passed the blocklist; the enhancer's text adds a blocked term: no
    video task goes out, the job fails naming the term, and only the enhancement is charged."""
    w = world
    assert world.bot is not None and world.bot.db is not None
    await add_blocklist_term(world.bot.db, w.seed.guild_id, "cinematic*")
    iid = await w.video({"prompt": PROMPT, "enhance": True})
    await w.reply(iid, "Queued as job #1")
    job = await w.wait_notified(1)
    assert job.state == "failed"
    assert "'cinematic*'" in (job.error or "") and "blocked on this server" in (job.error or "")
    assert w.sim.stats.enhance_tasks == 1 and w.sim.stats.submits == 0
    assert money(await w.ledger()) == [("reserve", PRICE_5S + RESERVE), ("settle", MICRO_PER_VERSION)]
    [notice] = await w.wait(lambda: [m for m in w.channel_messages() if "did not produce a video" in m.content])
    assert "blocked on this server" in notice.embeds[0]["description"]
