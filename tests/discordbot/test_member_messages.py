"""What members see on Discord (SPEC 3.4): paced progress edits, honest link texts, the longest
prompts and four variations within every limit, prompt markup shown as typed, DMs refused."""

from __future__ import annotations

from pathlib import Path

from bot.discordbot.pacer import EDIT
from bot.services.sink import ProgressUpdate
from tests.fakes.world import eventually, started_world


def _job_id(reply: str) -> int:
    return int(reply.split("job #", 1)[1].split(".", 1)[0].split(" ", 1)[0])


async def test_an_update_queued_during_an_edit_waits_out_the_minimum_interval(tmp_path: Path) -> None:
    """SPEC 3.4: at most one edit per min_edit_interval_s per message. An update that arrives while
    the previous edit is still on its way to Discord must not be written right after it."""
    interval = 60.0
    async with started_world(tmp_path, {"progress": {"min_edit_interval_s": interval}}) as w:
        assert w.bot is not None and w.bot.sink is not None and w.bot.engine is not None
        job_id = _job_id(await w.reply(await w.video({"prompt": "paced edits"}), "Queued"))
        await w.wait_submitted(1)
        [progress] = await w.wait(lambda: w.progress_messages())
        reporter = w.bot.engine.reporter
        # The reporter has shown the last phase; it stays quiet for a whole interval from here.
        await eventually(lambda: _async(reporter._last_report.get(job_id, ("", 0))[0] == "processing"))
        job = await w.job(job_id)
        sink = w.bot.sink
        track = sink._tracks[job_id]
        channel = w.seed.channel_id
        track.last_write = sink._clock() - interval - 1  # the last edit was over a minute ago

        # Discord answers the next edit with a 429: discord.py waits and retries inside the edit, so
        # the edit is still on its way when the next update arrives.
        w.fake.fail_next("PATCH", rf"^/channels/{channel}/messages/{progress.id}$", 429, retry_after=2.0)
        limited = w.fake.count_429
        edits_before = len(w.fake.message(progress.id).edits)
        await sink.progress(ProgressUpdate(job=job, phase="processing", elapsed_s=1.0, note="first"))
        await w.wait(lambda: w.fake.count_429 > limited)
        await sink.progress(ProgressUpdate(job=job, phase="processing", elapsed_s=2.0, note="second"))

        def settled() -> bool:
            edits = len(w.fake.message(progress.id).edits) - edits_before
            later = [i for i in sink.pacer.waiting(channel, EDIT)
                     if i.key == ("progress", job_id) and i.not_before > sink._clock() + interval / 2]
            return edits >= 2 or (edits == 1 and bool(later))

        await w.wait(settled)
        edits = w.fake.message(progress.id).edits[edits_before:]
        assert len(edits) == 1, [e.embeds[0]["description"] for e in edits]
        assert "first" in edits[0].embeds[0]["description"]


async def _async(value):  # eventually() takes an async check
    return value



async def test_a_link_after_discord_refused_the_upload_does_not_claim_the_file_was_over_the_limit(
        tmp_path: Path) -> None:
    """The bot's cap let the file through, Discord then said 40005: the links must not tell the
    member that a 0.1 MB video was "over the 10 MB upload limit"."""
    async with started_world(tmp_path) as w:
        iid = await w.video({"prompt": "discord changes its mind"})
        await w.reply(iid, "Queued as job #1")
        await w.wait_submitted(1)
        w.fake.max_upload_bytes = 1024  # after the interaction: the bot downloads, Discord says 40005
        w.sim.finish_all()
        [result] = await w.wait_result(1)
        assert result.attachments == []
        [task] = w.sim.stats.tasks.values()
        [line] = [x for x in result.content.splitlines() if task.results[0]["videoURL"] in x]
        assert "upload limit" not in line, line
        assert line.startswith("Video 1 (") and "link expires <t:" in line
        assert any(c.status == 413 for c in w.fake.calls)  # Discord did refuse the upload


async def test_longest_prompts_and_four_variations_fit_every_message_and_reply(tmp_path: Path) -> None:
    """SPEC 3.4 with the largest input: 2,500-character prompts full of Markdown (escaping doubles
    them) and 4 variations. Discord accepts every message and reply, and every embed field fits."""
    prompt = ("*_`~|>#-" * 313)[:2500]
    negative = ("@everyone |~*" * 193)[:2500]
    async with started_world(tmp_path) as w:
        iid = await w.video({"prompt": prompt, "negative_prompt": negative, "variations": 4})
        job_id = _job_id(await w.reply(iid, "Queued"))
        await w.wait_submitted(1)
        w.sim.finish_all()
        [result] = await w.wait_result(1)
        assert len(result.attachments) == 4
        await w.wait_notified(job_id)
        details = await w.fake.click_button(result, f"klingbot:details:{job_id}")
        await w.wait(lambda: any(r.kind == "callback" for r in w.fake.interaction_responses(details)))
        repost = await w.fake.send_slash("job", {"id": job_id})
        await w.wait(lambda: any(r.kind == "edit_original" for r in w.fake.interaction_responses(repost)))
        failed = [f"{c.method} {c.path} -> {c.status}" for c in w.fake.calls if c.status >= 400]
        assert failed == []
        embeds = [e for m in w.fake.all_messages() for e in m.embeds]
        embeds += [e for i in (details, repost) for r in w.fake.interaction_responses(i)
                   for e in (r.data or {}).get("embeds") or []]
        assert len(embeds) >= 4
        for embed in embeds:
            for f in embed.get("fields", []):
                assert 0 < len(f["value"]) <= 1024 and 0 < len(f["name"]) <= 256, f["name"]


async def test_numbered_lists_and_mention_tokens_in_a_prompt_show_as_typed(tmp_path: Path) -> None:
    """discord.py's escape_markdown leaves "1. " (a numbered list in Discord) and the <@id>, <#id>,
    <@&id>, <t:...> and <:emoji:id> tokens alone: the embed would show a list, a user's name or a
    date instead of what the member typed. Each gets a backslash, which Discord hides."""
    prompt = "1. a cat meets <@123> and <@&7>\n  2. in <#5> at <t:0:R> <:wave:9> <a:spin:8> </video:1>"
    shown = ("1\\. a cat meets \\<@123> and \\<@&7>\n  2\\. in \\<#5> at \\<t:0:R> \\<:wave:9> "
             "\\<a:spin:8> \\</video:1>")
    async with started_world(tmp_path) as w:
        iid = await w.video({"prompt": prompt})
        job_id = _job_id(await w.reply(iid, "Queued"))
        await w.wait_submitted(1)
        w.sim.finish_all()
        [result] = await w.wait_result(1)
        assert result.embeds[0]["description"] == shown
        assert (await w.job(job_id)).params["prompt"] == prompt  # stored and sent as typed


async def test_member_commands_refuse_dms_at_run_time_unless_allowed(tmp_path: Path) -> None:
    """SPEC 2.3: member commands are guild only unless allow_dms. guild_only only shapes the
    registration; a DM interaction that still arrives (a stale registration, a user install) got
    a made-up quota for "guild 0" instead of a refusal."""
    async with started_world(tmp_path) as w:
        for name, options in (("quota", {}), ("history", {}), ("job", {"id": 1})):
            iid = await w.fake.send_slash(name, options, dm=True)
            response = await w.wait(lambda iid=iid: next(
                (r for r in w.fake.interaction_responses(iid)
                 if r.kind in ("callback", "edit_original") and (r.data or {}).get("content")), None))
            assert "not in direct messages" in response.data["content"], (name, response.data)
            assert not response.data.get("embeds"), name
    async with started_world(tmp_path / "dms", {"discord": {"allow_dms": True}}) as w:
        iid = await w.fake.send_slash("quota", {}, dm=True)
        response = await w.wait(lambda: next(
            (r for r in w.fake.interaction_responses(iid) if r.kind == "callback"), None))
        assert response.data["embeds"][0]["title"] == "Your video quota"
