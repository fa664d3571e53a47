"""The bot as a process: start-up, command registration, shutdown, error handling, pacing, alerts,
lost channels. The real bot against the fake Discord and the simulator."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

import pytest

from bot.cli.run import cmd_run, cmd_sync
from bot.config import Config, Secrets
from bot.discordbot.endpoints import reset_discord_endpoints
from bot.discordbot.sink import REFUSALS_BEFORE_DM
from tests.fakes.world import BotWorld, launch, started_world

VIDEO_OPTIONS = ["prompt", "model", "first_frame", "last_frame", "duration", "aspect", "negative_prompt",
                 "cfg_scale", "variations", "format", "quality", "loop", "enhance"]


async def test_video_command_is_registered_with_its_options_and_choices(world: BotWorld) -> None:
    w = world
    [video] = [c for c in w.fake.registered_commands(None) if c["name"] == "video"]
    options = {o["name"]: o for o in video["options"]}
    assert [o["name"] for o in video["options"]] == VIDEO_OPTIONS
    assert options["prompt"]["required"] is True
    assert (options["prompt"]["min_length"], options["prompt"]["max_length"]) == (2, 2500)
    assert [c["value"] for c in options["model"]["choices"]] == ["kling-2.5-turbo-pro", "kling-2.1-pro"]
    assert [c["name"] for c in options["model"]["choices"]] == ["Kling 2.5 Turbo Pro", "Kling 2.1 Pro"]
    assert [c["value"] for c in options["duration"]["choices"]] == [5, 10]
    assert [c["value"] for c in options["aspect"]["choices"]] == ["16:9", "9:16", "1:1"]
    assert [c["value"] for c in options["format"]["choices"]] == ["MP4", "WEBM", "MOV"]
    assert (options["cfg_scale"]["min_value"], options["cfg_scale"]["max_value"]) == (0, 1)
    assert (options["variations"]["min_value"], options["variations"]["max_value"]) == (1, 4)
    assert (options["quality"]["min_value"], options["quality"]["max_value"]) == (20, 99)
    assert options["first_frame"]["type"] == 11 and options["last_frame"]["type"] == 11
    assert (options["loop"]["type"], options["loop"].get("required", False)) == (5, False)  # an optional boolean
    assert options["loop"]["description"].startswith("End on the first frame: a seamless loop")
    assert (options["enhance"]["type"], options["enhance"].get("required", False)) == (5, False)
    assert options["enhance"]["description"] == "Let Runware's prompt enhancer rewrite the prompt first"

    # Job ids go up to Discord's largest integer option (2^53 - 1); 2^53 makes Discord refuse the whole
    # registration, and the fake with it (its schema check).
    [job] = [c for c in w.fake.registered_commands(None) if c["name"] == "job"]
    assert [(o["name"], o["min_value"], o["max_value"]) for o in job["options"]] == [("id", 1, 2**53 - 1)]
    [admin] = [c for c in w.fake.registered_commands(None) if c["name"] == "genadmin"]
    [refund] = [o for o in admin["options"] if o["name"] == "refund"]
    [job_option] = [o for o in refund["options"] if o["name"] == "job"]
    assert (job_option["type"], job_option["max_value"]) == (4, 2**53 - 1)
    assert w.fake.schema_violations == []

    # A restart with the same commands does not register them again (the hash is in the database).
    syncs = len(w.fake.command_syncs)
    await w.stop_bot()
    await w.start_bot()
    assert len(w.fake.command_syncs) == syncs


async def test_dev_guild_gets_the_commands(tmp_path: Path) -> None:
    async with BotWorld(tmp_path) as w:
        cfg = w.make_config({"discord": {"dev_guild_id": w.seed.guild_id}})
        await w.start_bot(cfg)
        names = {c["name"] for c in w.fake.registered_commands(w.seed.guild_id)}
        assert {"video", "quota", "history", "job"} <= names
        assert w.fake.registered_commands(None) == []


async def test_unexpected_errors_get_an_error_id(world: BotWorld, caplog: pytest.LogCaptureFixture) -> None:
    w = world

    async def broken(*args, **kwargs):
        raise RuntimeError("a bug in the engine")

    w.bot.engine.create_job = broken  # a bug stands in for any unexpected exception
    iid = await w.video({"prompt": "this will hit a bug"})
    text = await w.reply(iid)
    assert text.startswith("Something went wrong (error id ")
    error_id = text.split("error id ")[1].split(")")[0]
    assert len(error_id) == 8
    assert any(error_id in r.getMessage() and r.exc_info for r in caplog.records)
    assert "a bug in the engine" not in text


async def test_queue_position_is_shown_while_queued(tmp_path: Path) -> None:
    async with started_world(tmp_path, {"limits": {"max_in_flight": 1}}) as w:
        await w.reply(await w.video({"prompt": "first in line"}), "Queued as job #1")
        await w.wait_submitted(1)
        second = await w.video({"prompt": "second in line"})
        await w.reply(second, "Queued as job #2")
        queued = await w.wait(lambda: next((m for m in w.progress_messages() if m.embeds
                                            and "Job #2" in m.embeds[0]["title"]), None))
        assert "position 1 in the queue" in queued.embeds[0]["description"]
        w.sim.finish_all()
        await w.wait_submitted(2)
        w.sim.finish_all()
        await w.wait_result(2)


async def test_many_writes_in_one_channel_never_hit_the_rate_limit(tmp_path: Path) -> None:
    async with BotWorld(tmp_path) as w:
        w.fake.channel_rate_limit = (2, 0.5)  # a scaled-down "5 creates and 5 edits per 5 s"
        # The bot's own guess allows one write per 30 s: only Discord's X-RateLimit headers, read
        # from discord.py's session, let it go faster, so this finishes only if they reach the pacer.
        await w.start_bot(pace=(1, 30.0))
        for n in range(4):
            await w.video({"prompt": f"video number {n}"})
        await w.wait_submitted(4)
        w.sim.finish_all()
        results = await w.wait_result(4)
        for job_id in range(1, 5):
            await w.wait_notified(job_id)
        await w.wait(lambda: all(m.content.startswith("✅") for m in w.progress_messages()))
        assert w.fake.count_429 == 0
        titles = sorted(r.embeds[0]["title"].split(" ·")[0] for r in results)
        assert titles == [f"Job #{n}" for n in range(1, 5)]
        # 0 429s above: the bot never sent more than Discord's window had left (discord.py alone lets
        # writes of a fresh window follow the last ones of the old at once, and then meets a 429).
        creates = [c for c in w.fake.calls if c.path == f"/channels/{w.seed.channel_id}/messages"
                   and c.method == "POST"]
        assert len(creates) >= 4  # the 4 results, and the progress messages made before them


async def test_lost_permission_tells_the_member_by_dm(world: BotWorld) -> None:
    w = world
    iid = await w.video({"prompt": "the bot gets locked out"})
    await w.reply(iid, "Queued as job #1")
    await w.wait_submitted(1)
    await w.wait(lambda: w.progress_messages())
    w.fake.denied_channels.add(w.seed.channel_id)
    w.sim.finish_all()
    dm_id = int(w.fake.dm_channel_for(w.seed.user_id)["id"])
    [result] = await w.wait_result(1, channel_id=dm_id)
    assert result.attachments and result.attachments[0]["data"] == w.sim.mp4
    job = await w.wait_notified(1)
    assert job.result_message_id == result.id


async def test_a_result_discord_refuses_with_400_every_time_goes_by_dm_after_a_few_tries(tmp_path: Path) -> None:
    """A locked or archived thread answers every post with a 400: after REFUSALS_BEFORE_DM tries
    the member gets the result by DM, the operator hears of it, and the job counts as notified
    (no retry forever)."""
    ops = 777_000_000_000_000_002
    async with BotWorld(tmp_path) as w:
        w.fake.add_channel(w.seed.guild_id, ops, "ops")
        bot = await w.start_bot(w.make_config({"discord": {"ops_channel_id": ops}}))
        bot.engine.deliverer.retry_base_s = 0.05  # the bound is under test, not the back-off
        await w.reply(await w.video({"prompt": "into a thread that gets archived"}), "Queued as job #1")
        await w.wait_submitted(1)
        await w.wait(lambda: w.progress_messages())
        posts = f"/channels/{w.seed.channel_id}/messages"
        w.fake.fail_next("POST", rf"^{posts}$", 400, 50083, "Thread is archived", count=10_000)
        w.sim.finish_all()
        dm_id = int(w.fake.dm_channel_for(w.seed.user_id)["id"])
        [result] = await w.wait_result(1, channel_id=dm_id)
        assert result.attachments and result.attachments[0]["data"] == w.sim.mp4
        job = await w.wait_notified(1)
        assert job.result_message_id == result.id
        alert = await w.wait(lambda: next(iter(w.fake.messages(ops)), None))
        assert "job #1" in alert.content and "400" in alert.content and "by DM" in alert.content
        refused = [c for c in w.fake.calls if c.method == "POST" and c.path == posts and c.status == 400]
        assert len(refused) == REFUSALS_BEFORE_DM
        assert w.result_messages() == []  # nothing reached the channel
        await w.stop_bot()  # a clean stop: nothing is tried again
        assert len([c for c in w.fake.calls if c.method == "POST" and c.path == posts and c.status == 400]) \
            == REFUSALS_BEFORE_DM
        assert len(w.result_messages(dm_id)) == 1


async def test_runware_refusing_the_key_alerts_the_ops_channel(tmp_path: Path) -> None:
    ops = 777_000_000_000_000_001
    async with BotWorld(tmp_path) as w:
        w.fake.add_channel(w.seed.guild_id, ops, "ops")
        await w.start_bot(w.make_config({"discord": {"ops_channel_id": ops}}))
        w.sim.faults.balance_micro = 0  # the next submit gets 402
        await w.reply(await w.video({"prompt": "no money left"}), "Queued as job #1")
        alert = await w.wait(lambda: next(iter(w.fake.messages(ops)), None))
        assert "balance" in alert.content and "paused" in alert.content.lower()
        assert alert.notified_user_ids == [] and not alert.notified_everyone


async def test_sigterm_stops_the_bot_cleanly(tmp_path: Path) -> None:
    async with BotWorld(tmp_path) as w:
        task, bot = await launch(w.cfg, install_signals=True)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 30)  # returns normally: exit code 0
        assert bot.is_closed() and not bot.accepting_commands


async def test_sandbox_uses_the_simulator_and_its_own_database(tmp_path: Path) -> None:
    async with BotWorld(tmp_path) as w:
        cfg = w.make_config({"runware": {"api_url": "https://api.runware.ai/v1"}})
        cfg = cfg.with_overrides(secrets=Secrets(discord_token=cfg.secrets.discord_token))  # no Runware key
        stop = asyncio.Event()
        task, bot = await launch(cfg, sandbox=True, stop=stop)
        assert bot.cfg.runware.api_url.startswith("http://127.0.0.1:")
        assert "127.0.0.1" in bot.cfg.runware.download_hosts
        assert Path(bot.cfg.storage.path) == tmp_path / "klingbot.sandbox.sqlite3"
        assert (tmp_path / "klingbot.sandbox.sqlite3").exists()
        assert not (tmp_path / "klingbot.sqlite3").exists()
        stop.set()
        await asyncio.wait_for(task, 30)


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"config": None, "sandbox": False, "guild": None, **kw})


def test_run_without_tokens_is_a_clear_error(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KLINGBOT_CONFIG", raising=False)
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.delenv("RUNWARE_API_KEY", raising=False)
    assert cmd_run(_args()) == 1
    assert "DISCORD_TOKEN is not set" in capsys.readouterr().err
    monkeypatch.setenv("DISCORD_TOKEN", "secret-token-value")
    assert cmd_run(_args()) == 1
    err = capsys.readouterr().err
    assert "RUNWARE_API_KEY is not set" in err and "--sandbox" in err
    assert "secret-token-value" not in err


async def test_sync_registers_to_a_guild(tmp_path: Path, monkeypatch, capsys) -> None:
    async with BotWorld(tmp_path) as w:
        monkeypatch.chdir(tmp_path)
        (tmp_path / "config.toml").write_text(
            f'[discord]\napi_base_url = "{w.fake.api_base_url}"\n', encoding="utf-8")
        monkeypatch.setenv("DISCORD_TOKEN", w.fake.token)
        monkeypatch.delenv("KLINGBOT_CONFIG", raising=False)
        # cmd_sync runs its own event loop: give it a thread of its own.
        code = await asyncio.to_thread(cmd_sync, _args(config=str(tmp_path / "config.toml"),
                                                       guild=w.seed.guild_id))
        assert code == 0
        names = {c["name"] for c in w.fake.registered_commands(w.seed.guild_id)}
        assert {"video", "quota", "history", "job"} <= names
        assert f"guild {w.seed.guild_id}" in capsys.readouterr().out
        assert not (tmp_path / "data").exists()  # sync needs no database
        reset_discord_endpoints()



def test_error_descriptions() -> None:
    from discord import app_commands

    from bot.discordbot.cogs.errors import describe
    from bot.errors import InvalidInput

    wrapped = app_commands.CommandInvokeError.__new__(app_commands.CommandInvokeError)
    wrapped.original = InvalidInput("quality", 5, "a whole number from 20 to 99")
    text, bug = describe(wrapped)
    assert text == "`quality` = 5 is not allowed; allowed: a whole number from 20 to 99." and not bug
    text, bug = describe(app_commands.MissingPermissions(["manage_guild"]))
    assert text == "You need the Manage Server permission to do that." and not bug
    assert describe(app_commands.CheckFailure())[1] is False
    assert describe(RuntimeError("boom")) == ("", True)


def test_discord_shard_count_makes_an_auto_sharded_bot_running_its_shards():
    from discord.ext import commands

    from bot.discordbot.app import new_bot

    sharded = new_bot(Config.model_validate({"discord": {"shard_count": 4, "shard_ids": [1, 3]}}),
                      runware_api_key=None)
    assert isinstance(sharded, commands.AutoShardedBot)
    assert (sharded.shard_count, sharded.shard_ids) == (4, [1, 3])
    every = new_bot(Config.model_validate({"discord": {"shard_count": 2}}), runware_api_key=None)
    assert (every.shard_count, every.shard_ids) == (2, None)  # all of them, in this process
    assert not isinstance(new_bot(Config.model_validate({}), runware_api_key=None), commands.AutoShardedBot)
