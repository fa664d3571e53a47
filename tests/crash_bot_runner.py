"""The real bot (bot.discordbot.app.run_bot) in a process of its own, for the crash tests:

    python -m tests.crash_bot_runner CONFIG_TOML [--debug]

The test process runs the fake Discord and the Runware simulator; CONFIG_TOML points the bot at them
over loopback, DISCORD_TOKEN and RUNWARE_API_KEY come from the environment, and KLINGBOT_FAILPOINT
(when set) makes this process SIGKILL itself at that point. Prints "ready" on stdout each time the
bot is connected, so the test knows when to send commands; SIGTERM stops it cleanly.

Tests start it with ``BotProcess.start`` (below), which waits for that line; ``write_config`` writes
the config it reads and ``read_db`` reads back what it left.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import load_config
from bot.db import open_database
from bot.db.jobs import jobs_by_state, results_for_job
from bot.db.money import ledger_rows
from bot.discordbot.app import KlingBot, run_bot
from tests.fakes.configs import loopback_config

if TYPE_CHECKING:
    from tests.fakes.discord import FakeDiscord

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 30.0  # generous for a loaded machine; a start normally takes about a second
KEY = "crash-bot-key"  # the simulator's key in the crash tests
PRICE_5S = 350_000  # one 5 s video of the default model


def write_config(tmp_path: Path, fake: FakeDiscord, api_url: str) -> Path:
    return loopback_config(tmp_path / "config.toml", runware_url=api_url, db_path=tmp_path / "klingbot.sqlite3",
                           discord_url=fake.api_base_url)


async def read_db(path: Path):
    db = await open_database(path)
    try:
        jobs = sorted(await jobs_by_state(db, None, 100), key=lambda j: j.id)
        ledger = await ledger_rows(db)
        results = {job.id: await results_for_job(db, job.id) for job in jobs}
    finally:
        await db.close()
    return jobs, ledger, results


class BotProcess:
    """The test side: one run of this script as a child process."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    @classmethod
    async def start(cls, config: Path, fake: FakeDiscord, *, env: dict[str, str], log: Path,
                    failpoint: str | None = None, debug: bool = False) -> BotProcess:
        """Start the bot with ``env`` (RUNWARE_API_KEY...; DISCORD_TOKEN is the fake's) and wait until
        it is connected to ``fake``. Its stderr is appended to ``log``."""
        child_env = {k: v for k, v in os.environ.items()
                     if k not in ("KLINGBOT_FAILPOINT", "KLINGBOT_CONFIG", "RUNWARE_WEBHOOK_SECRET")}
        child_env.update(DISCORD_TOKEN=fake.token, **env,
                         PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        if failpoint:
            child_env["KLINGBOT_FAILPOINT"] = failpoint
        args = [str(config), "--debug"] if debug else [str(config)]
        with log.open("ab") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.crash_bot_runner", *args, cwd=ROOT, env=child_env,
                stdout=asyncio.subprocess.PIPE, stderr=err)
        bot = cls(proc, log)
        assert proc.stdout is not None
        while (line := await asyncio.wait_for(proc.stdout.readline(), TIMEOUT_S)) != b"ready\n":
            assert line, f"the bot exited before it was ready:\n{log.read_text()[-3000:]}"
        await fake.wait_ready()
        return bot

    async def killed(self) -> int:
        return await asyncio.wait_for(self.proc.wait(), TIMEOUT_S)

    async def terminate(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), TIMEOUT_S)


def main(config_path: str, debug: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(config_path)

    def on_bot(bot: KlingBot) -> None:
        async def ready() -> None:
            print("ready", flush=True)

        bot.add_listener(ready, "on_ready")

    # The fake enforces no channel rate limit here: pace loosely so a case takes no longer than it must.
    asyncio.run(run_bot(cfg, sandbox=False, on_bot=on_bot,
                        bot_options={"guild_ready_timeout": 0.05, "pace": (100, 1.0)}))


if __name__ == "__main__":
    main(sys.argv[1], debug="--debug" in sys.argv[2:])
