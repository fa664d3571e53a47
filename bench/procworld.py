"""A fake Discord and the Runware simulator in the bench's process, and the real bot in a child
process (bench.botproc, the `klingbot run` path), so that what is measured of the bot (its latency,
its memory, its start) is the bot's own and not the load generator's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import SIM_KEY, BenchSimulator, config_data, rss_kb, write_toml
from tests.fakes.discord import FakeDiscord

ROOT = Path(__file__).resolve().parents[1]
GUILD_ID = 1_310_000_000_000_000_001
CHANNEL_BASE = 1_310_000_000_000_100_000
USER_BASE = 1_310_000_000_000_200_000


class ProcWorld:
    def __init__(self, tmp: Path, *, channels: int = 1, members: int = 1, sim: BenchSimulator | None = None,
                 runware: dict[str, Any] | None = None, progress: dict[str, Any] | None = None,
                 profile: Path | None = None, watchdog: bool = False) -> None:
        self.tmp = tmp
        self.fake = FakeDiscord()
        self.sim = sim or BenchSimulator(base_generation_s=36_000.0)  # nothing finishes by itself
        self.channel_ids = [CHANNEL_BASE + i for i in range(channels)]
        self.user_ids = [USER_BASE + i for i in range(members)]
        self.runware = runware or {}
        self.progress = progress or {}
        self.profile = profile
        self.watchdog = watchdog
        self.db_path = tmp / "bot.sqlite3"
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at: float | None = None
        self.report: dict[str, Any] = {}
        self.peak_rss_kb: int | None = None
        self._log = None

    async def __aenter__(self) -> ProcWorld:
        await self.fake.start()
        await self.sim.start()
        self.fake.add_guild(GUILD_ID, "Bench")
        for i, channel_id in enumerate(self.channel_ids):
            self.fake.add_channel(GUILD_ID, channel_id, f"gen-{i}")
        for i, user_id in enumerate(self.user_ids):
            self.fake.add_member(GUILD_ID, user_id, f"member{i}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.stop_bot()
        finally:
            await self.sim.stop()
            await self.fake.stop()

    def config_path(self) -> Path:
        data = config_data(sim_url=self.sim.url, db_path=self.db_path, discord_url=self.fake.api_base_url,
                           runware=self.runware, progress=self.progress)
        return write_toml(data, self.tmp / "config.toml")

    async def start_bot(self, *, wait_ready: bool = True) -> float:
        """Start the bot's process; returns the wall time just before it was spawned."""
        assert self.proc is None
        config = self.config_path()
        env = {**os.environ, "DISCORD_TOKEN": self.fake.token, "RUNWARE_API_KEY": SIM_KEY,
               "PYTHONPATH": str(ROOT)}
        env.pop("KLINGBOT_FAILPOINT", None)
        argv = [sys.executable, "-m", "bench.botproc", "--config", str(config),
                "--report", str(self.tmp / "bot-report.json")]
        if self.profile is not None:
            argv += ["--profile", str(self.profile)]
        if self.watchdog:
            argv += ["--watchdog", "--db-profile"]
        self._log = open(self.tmp / "bot.log", "ab")  # noqa: SIM115 - closed in stop_bot
        self.started_at = time.time()
        self.proc = await asyncio.create_subprocess_exec(*argv, cwd=str(ROOT), env=env,
                                                         stdout=self._log, stderr=self._log)
        if wait_ready:
            await self.wait_ready()
        return self.started_at

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the bot's gateway session is READY (its engine started before that, in setup_hook)."""
        waiter = asyncio.ensure_future(self.fake.wait_ready(timeout))
        assert self.proc is not None
        died = asyncio.ensure_future(self.proc.wait())
        done, _ = await asyncio.wait({waiter, died}, return_when=asyncio.FIRST_COMPLETED)
        if died in done:
            waiter.cancel()
            raise RuntimeError(f"the bot's process exited ({self.proc.returncode}); "
                               f"see {self.tmp / 'bot.log'}:\n" + self.log_tail())
        died.cancel()
        waiter.result()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.tmp / "bot.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def note_peak_rss(self) -> int | None:
        """The child's peak resident set so far (VmHWM), remembered for the report."""
        if self.proc is not None and self.proc.returncode is None:
            value = rss_kb(self.proc.pid, "VmHWM")
            if value is not None:
                self.peak_rss_kb = max(self.peak_rss_kb or 0, value)
        return self.peak_rss_kb

    async def stop_bot(self, timeout: float = 60.0) -> dict[str, Any]:
        """SIGTERM (the bot's clean stop), then read its report."""
        if self.proc is None:
            return self.report
        self.note_peak_rss()
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        with contextlib.suppress(OSError, ValueError):
            self.report = json.loads((self.tmp / "bot-report.json").read_text())
        return self.report

    # ---- members act -------------------------------------------------------------------------

    async def video(self, i: int, prompt: str | None = None, **options: Any) -> str:
        """/video from member i % members in channel i % channels; returns the interaction id."""
        user = self.user_ids[i % len(self.user_ids)]
        channel = self.channel_ids[i % len(self.channel_ids)]
        return await self.fake.send_slash(
            "video",
            {"prompt": prompt or f"bench video {i}: a red fox running through fresh snow", **options},
            user_id=user, guild_id=GUILD_ID, channel_id=channel)

    def defer_latency(self, interaction_id: str) -> float | None:
        """Seconds from the interaction's dispatch to the bot's first callback, at the fake."""
        inter = self.fake.interaction(interaction_id)
        callback = next((r for r in inter.responses if r.kind == "callback"), None)
        return None if callback is None else callback.at - inter.created_at

    def queued_replies(self) -> int:
        """Interactions whose deferred reply was edited (the job is queued, or an error was shown)."""
        return sum(1 for inter in self.fake._interactions.values()
                   if any(r.kind == "edit_original" for r in inter.responses))


async def send_at_rate(world: ProcWorld, start_index: int, count: int, per_second: float,
                       **options: Any) -> list[str]:
    """Send ``count`` /video interactions at ``per_second``, on a fixed schedule (a slow send does not
    delay the next one). Returns the interaction ids in order."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks = []
    for k in range(count):
        delay = t0 + k / per_second - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(world.video(start_index + k, **options)))
    return list(await asyncio.gather(*tasks))
