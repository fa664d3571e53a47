"""`klingbot -v run` (the real command line, debug logging on): discord.py's debug lines carry the
interaction tokens (in callback and followup URLs, and in the INTERACTION_CREATE payload). A token
lets anyone answer or edit as the bot for 15 minutes, so the log shows it redacted."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from pathlib import Path

from bot.simulator.server import run_simulator
from tests.crash_bot_runner import ROOT
from tests.fakes.configs import loopback_config
from tests.fakes.discord import FakeDiscord

TIMEOUT_S = 30.0


async def test_debug_log_of_klingbot_run_shows_no_interaction_token(tmp_path: Path) -> None:
    key = "rw-" + secrets.token_hex(16)
    fake = FakeDiscord()
    log = tmp_path / "bot.log"
    async with fake, run_simulator(api_key=key, base_generation_s=0.2) as sim:
        seed = fake.seed_default()
        config = loopback_config(tmp_path / "config.toml", runware_url=sim.url,
                                 db_path=tmp_path / "klingbot.sqlite3", discord_url=fake.api_base_url)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RUNWARE_", "DISCORD_", "KLINGBOT_"))}
        env.update(DISCORD_TOKEN=fake.token, RUNWARE_API_KEY=key)
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "-v", "run", "--config", str(config), cwd=ROOT, env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=err)
        try:
            await fake.wait_ready(TIMEOUT_S)
            await fake.send_slash("video", {"prompt": "a quiet harbour at dawn"})
            await fake.wait_for(lambda: [m for m in fake.messages(seed.channel_id) if m.attachments], TIMEOUT_S)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), TIMEOUT_S)
        tokens = [inter.token for inter in fake._interactions.values()]
    logged = log.read_text(encoding="utf-8", errors="replace")
    assert tokens
    # The debug lines are there (the callback, the gateway event), with the token taken out.
    assert " DEBUG " in logged and "/callback" in logged and "INTERACTION_CREATE" in logged
    for token in tokens:
        assert token not in logged
        assert token[len("fake-interaction-"):] not in logged
    assert fake.token not in logged and key not in logged
