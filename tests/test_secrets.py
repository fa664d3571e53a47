"""Secrets and downloads (SPEC 2.2, 5): the Discord token, the Runware key and the webhook secret never
appear in logs (debug level included), crash output, error messages, anything sent to Discord, the
database, `klingbot doctor` or `klingbot generate` output; downloads only come from allowed hosts,
redirects to other hosts are not followed."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from aiohttp import web

from bot.simulator.server import run_simulator
from tests.crash_bot_runner import ROOT, BotProcess
from tests.fakes.discord import FakeDiscord
from tests.fakes.processes import free_port
from tests.fakes.world import BotWorld, image_bytes, started_world

OPS_CHANNEL = 990_000_000_000_000_001



def leaks(secret: str, text: str) -> list[str]:
    """The forms of ``secret`` found in ``text``: whole, URL-quoted, or a 16-character piece of it."""
    forms = {secret, quote(secret, safe=""), secret[4:20]}
    return [form for form in forms if form in text]


async def run_cli(*args: str, env: dict[str, str]) -> str:
    unset = ("DISCORD_TOKEN", "RUNWARE_API_KEY", "RUNWARE_WEBHOOK_SECRET", "KLINGBOT_CONFIG")
    child_env = {k: v for k, v in os.environ.items() if k not in unset}
    child_env.update(env, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=ROOT, env=child_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return f"[exit {proc.returncode}]\n{out.decode()}\n{err.decode()}"


def bot_config(tmp_path: Path, fake: FakeDiscord, sim_url: str, hook_port: int | None) -> Path:
    hooks = (f'webhook_public_url = "http://127.0.0.1:{hook_port}/runware-hook"\n'
             f'webhook_listen = "127.0.0.1:{hook_port}"\n') if hook_port else ""
    path = tmp_path / ("bot.toml" if hook_port else "plain.toml")
    path.write_text(f"""
[discord]
api_base_url = "{fake.api_base_url}"
attachment_hosts = ["127.0.0.1"]
ops_channel_id = {OPS_CHANNEL}

[runware]
api_url = "{sim_url}"
download_hosts = ["127.0.0.1"]
first_poll_after_s = 0.05
poll_interval_s = 0.05
request_timeout_s = 10.0
max_retries = 1
{hooks}
[storage]
path = "{(tmp_path / 'klingbot.sqlite3').as_posix()}"

[progress]
min_edit_interval_s = 0.05
""", encoding="utf-8")
    return path


async def test_secrets_appear_in_no_log_message_database_or_command_output(tmp_path: Path) -> None:
    runware_key = "rw-key-" + secrets.token_hex(20)
    revoked_key = "rw-old-" + secrets.token_hex(20)
    hook_secret = "wh-sec-" + secrets.token_hex(20)
    fake = FakeDiscord()
    fake.token = "dc-token." + secrets.token_urlsafe(30)
    discord_token = fake.token
    hook_port = free_port()
    log = tmp_path / "bot.log"
    outputs: list[str] = []
    env = {"RUNWARE_API_KEY": runware_key, "RUNWARE_WEBHOOK_SECRET": hook_secret}
    async with fake, run_simulator(api_key=runware_key, base_generation_s=0.3) as sim:
        seed = fake.seed_default()
        fake.add_channel(seed.guild_id, OPS_CHANNEL, "ops")
        config = bot_config(tmp_path, fake, sim.url, hook_port)

        # A bot at debug level, killed at a failpoint (its crash output is in the log too), restarted.
        first = await BotProcess.start(config, fake, env=env, log=log, failpoint="after_submit", debug=True)
        try:
            await fake.send_slash("video", {"prompt": "a secret garden"})
            assert await first.killed() == -signal.SIGKILL
        finally:
            await first.terminate()
        bot = await BotProcess.start(config, fake, env=env, log=log, debug=True)
        try:
            sim.finish_all()  # the result comes by webhook (with the token in its URL) and by poll
            await fake.wait_for(lambda: [m for m in fake.messages(seed.channel_id) if m.attachments], 30)
            assert sim.stats.webhook_posts >= 1
            async with httpx.AsyncClient() as client:  # a forged webhook: refused, logged, token not shown
                forged = await client.post(f"http://127.0.0.1:{hook_port}/runware-hook?token=guess",
                                           json={"data": []})
                assert forged.status_code in (401, 403)
            # doctor while everything runs, with the real secrets: all checks pass.
            outputs.append(await run_cli("doctor", "--config", str(config),
                                         env={**env, "DISCORD_TOKEN": discord_token}))
            assert "[exit 0]" in outputs[-1], outputs[-1]
            sim.api_key = "rotated"  # the key stops working: an error, an alert, the member told
            iid = await fake.send_slash("video", {"prompt": "after the rotation"})
            await fake.wait_for_message(OPS_CHANNEL, lambda m: "rejected" in m.content, 30)
            await fake.wait_for(lambda: [r for r in fake.interaction_responses(iid)
                                         if r.kind == "edit_original"])
            # doctor again, verbose, now that Runware refuses the key.
            outputs.append(await run_cli("-v", "doctor", "--config", str(config),
                                         env={**env, "RUNWARE_API_KEY": revoked_key,
                                              "DISCORD_TOKEN": discord_token}))
            assert "[exit 1]" in outputs[-1]
            # generate, verbose, with a key Runware refuses: an error message, no key.
            plain = bot_config(tmp_path, fake, sim.url, None)
            outputs.append(await run_cli("-v", "generate", "a refused key", "--config", str(plain), "--json",
                                         "--out", str(tmp_path / "out"),
                                         env={"RUNWARE_API_KEY": revoked_key}))
            assert "[exit 1]" in outputs[-1]
        finally:
            assert await bot.terminate() == 0
        sent_to_discord = "\n".join(repr(c.payload) for c in fake.calls)

    logged = log.read_text(encoding="utf-8", errors="replace")
    database = b"".join(p.read_bytes() for p in tmp_path.glob("klingbot.sqlite3*")).decode("latin-1")
    places = {"bot log": logged, "commands": "\n".join(outputs), "Discord": sent_to_discord,
              "database": database}
    for name, secret in (("Discord token", discord_token), ("Runware key", runware_key),
                         ("revoked key", revoked_key), ("webhook secret", hook_secret)):
        for place, text in places.items():
            assert not leaks(secret, text), f"the {name} leaked into the {place}"
    # The scans read real output: a debug-level log with the refusal in it, doctor's answers.
    assert " DEBUG " in logged and "invalidApiKey" in logged and "refused" in logged
    assert "https://discord.com/oauth2/authorize" in outputs[0] and "Runware" in outputs[1]


# ---- downloads only from allowed hosts ------------------------------------------------------------------

@pytest.fixture
async def redirector() -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback server whose /start.png redirects elsewhere; records every path asked for."""
    seen: list[str] = []
    target: dict[str, str] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        if request.path.startswith("/start"):
            raise web.HTTPFound(target[request.path])
        return web.Response(body=image_bytes(), content_type="image/png")

    app = web.Application()
    app.router.add_get("/{name}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    target["/start-local.png"] = f"http://localhost:{port}/elsewhere.png"  # loopback, but not allowed
    target["/start-metadata.png"] = "http://169.254.169.254/latest/meta-data/"  # checked, never fetched
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def attach_url(w: BotWorld, url: str) -> dict:
    obj = w.attach("frame.png", image_bytes())
    obj["url"] = obj["proxy_url"] = url
    return obj


async def nothing_spent(w: BotWorld) -> None:
    assert await w.jobs() == [] and await w.ledger() == [] and w.sim.stats.http_requests == 0


async def test_attachments_only_from_allowed_hosts(tmp_path: Path) -> None:
    async with started_world(tmp_path, {"discord": {"attachment_hosts": ["cdn.discordapp.com"]}}) as w:
        iid = await w.video({"prompt": "from the wrong host"},
                            attachments={"first_frame": w.attach("f.png", image_bytes())})
        text = await w.reply(iid)
        assert "Refused to download" in text and "127.0.0.1" in text and "cdn.discordapp.com" in text
        assert w.fake.attachment_downloads == []
        await nothing_spent(w)


@pytest.mark.parametrize("start", ["/start-local.png", "/start-metadata.png"])
async def test_redirects_to_other_hosts_are_not_followed(tmp_path: Path, redirector, start: str) -> None:
    base, seen = redirector
    async with started_world(tmp_path) as w:
        obj = await attach_url(w, base + start)
        text = await w.reply(await w.video({"prompt": "follow me"}, attachments={"first_frame": obj}))
        assert "Refused to follow a redirect" in text, text
        assert seen == [start]  # the redirect target was never asked for
        await nothing_spent(w)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/frame.png", "http://[::1]:1/x.png"])
async def test_other_schemes_and_hosts_are_refused(world_url_case: BotWorld, url: str) -> None:
    w = world_url_case
    obj = await attach_url(w, url)
    text = await w.reply(await w.video({"prompt": "odd url"}, attachments={"first_frame": obj}))
    assert "first_frame" in text and "Refused" in text, text
    await nothing_spent(w)


@pytest.fixture
async def world_url_case(tmp_path: Path) -> AsyncIterator[BotWorld]:
    async with started_world(tmp_path) as w:
        yield w


async def test_results_from_a_host_not_allowed_are_linked_not_downloaded(tmp_path: Path) -> None:
    async with started_world(tmp_path, {"runware": {"download_hosts": ["*.runware.ai"]}}) as w:
        iid = await w.video({"prompt": "a video from an unknown host"})
        await w.reply(iid, "Queued as job #1")
        await w.wait_submitted(1)
        w.sim.finish_all()
        [result] = await w.wait_result(1)
        assert result.attachments == [] and w.sim.stats.video_downloads == 0
        [task] = w.sim.stats.tasks.values()
        assert task.results[0]["videoURL"] in result.content
        assert [r.kind for r in await w.ledger()] == ["reserve", "settle"]
