"""The whole bot on loopback, for tests: the Runware simulator, the fake Discord, and the REAL bot
started through ``run_bot`` (login, gateway, setup_hook, engine) on a SQLite file in tmp_path.

Use the ``world`` fixture (import it into a test module) or ``async with BotWorld(tmp_path) as w``.
The simulator runs at speed 1 with long generations, so nothing finishes until a test says so
(``w.sim.finish_all()``): no timing luck. Everything waits on the fake's condition or on events.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import SecretStr

from bot.config import Config, Secrets
from bot.db.jobs import get_job, jobs_by_state
from bot.db.money import ledger_rows
from bot.db.records import JobRecord, LedgerRecord
from bot.discordbot.app import KlingBot, run_bot
from bot.discordbot.endpoints import reset_discord_endpoints
from bot.simulator.server import Simulator
from tests.fakes.discord import FakeDiscord, InteractionResponse, Message, Seed

SIM_KEY = "harness-key"
# Nothing finishes by itself within a test: tests call sim.finish_all() / sim.finish(uuid).
GENERATION_S = 3600.0


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def image_bytes(width: int = 640, height: int = 360, fmt: str = "PNG", colour: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, fmt)
    return out.getvalue()


class BotWorld:
    def __init__(self, tmp_path: Path, config: dict[str, Any] | None = None) -> None:
        self.tmp_path = tmp_path
        self.config_overrides = config or {}
        self.fake = FakeDiscord()
        self.sim = Simulator(api_key=SIM_KEY, speed=1.0, base_generation_s=GENERATION_S)
        self.seed: Seed = self.fake.seed_default()
        self.cfg: Config | None = None
        self.bot: KlingBot | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self.bots_started = 0

    # ---- life cycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> BotWorld:
        await self.fake.start()
        await self.sim.start()
        self.cfg = self.make_config(self.config_overrides)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.stop_bot()
        finally:
            await self.sim.stop()
            await self.fake.stop()
            reset_discord_endpoints()

    def make_config(self, overrides: dict[str, Any] | None = None) -> Config:
        data = {
            "discord": {"api_base_url": self.fake.api_base_url, "attachment_hosts": ["127.0.0.1"]},
            "runware": {"api_url": self.sim.url, "first_poll_after_s": 0.05, "poll_interval_s": 0.05,
                        "download_hosts": ["127.0.0.1"], "request_timeout_s": 10.0, "max_retries": 2},
            "storage": {"path": str(self.tmp_path / "klingbot.sqlite3")},
            "progress": {"min_edit_interval_s": 0.05},
            # No cost confirmation unless a test asks for it: most tests start jobs in one step.
            "limits": {"daily_videos": 50, "monthly_usd": 100, "max_concurrent": 10, "confirm_above_usd": 0},
        }
        data = deep_merge(data, overrides or {})
        secrets = Secrets(discord_token=SecretStr(self.fake.token), runware_api_key=SecretStr(SIM_KEY))
        return Config.model_validate({**data, "secrets": secrets})

    async def start_bot(self, cfg: Config | None = None, **bot_options: Any) -> KlingBot:
        """Start a NEW bot (same database unless ``cfg`` says otherwise) and wait until it is ready.
        ``bot_options`` go to KlingBot (e.g. ``pace=(2, 0.6)``)."""
        assert self._task is None, "a bot is already running"
        cfg = cfg or self.cfg
        assert cfg is not None
        self._stop = asyncio.Event()
        # The fake enforces no channel limit unless a test sets one: pace loosely by default.
        options = {"pace": (100, 1.0), **bot_options}
        try:
            self._task, bot = await launch(cfg, sandbox=False, stop=self._stop, **options)
        except BaseException:
            self._task = None
            raise
        try:
            await asyncio.wait_for(bot.wait_until_ready(), 20)
        except BaseException:
            await self.stop_bot()
            raise
        self.bot = bot
        self.bots_started += 1
        return bot

    async def stop_bot(self) -> None:
        """Stop the bot as SIGTERM would, and wait for run_bot to return."""
        if self._task is None:
            return
        assert self._stop is not None
        self._stop.set()
        try:
            await asyncio.wait_for(self._task, 30)
        finally:
            self._task = None
            self.bot = None

    # ---- members act -----------------------------------------------------------------------------

    async def video(self, options: dict[str, Any] | None = None, *,
                    attachments: dict[str, dict] | None = None, **kwargs: Any) -> str:
        """/video as the default member in the default channel; returns the interaction id."""
        return await self.fake.send_slash("video", options or {"prompt": "a red fox running through snow"},
                                          attachments=attachments, **kwargs)

    def attach(self, filename: str, data: bytes, content_type: str = "image/png") -> dict:
        return self.fake.host_attachment(filename, data, content_type)

    # ---- what the member sees ------------------------------------------------------------------

    def reply_edits(self, iid: str) -> list[InteractionResponse]:
        return [r for r in self.fake.interaction_responses(iid) if r.kind == "edit_original"]

    async def reply(self, iid: str, contains: str = "", timeout: float = 15.0) -> str:
        """The text of the first edit of the deferred reply (containing ``contains``)."""
        def find() -> str | None:
            for r in self.reply_edits(iid):
                text = (r.data or {}).get("content") or ""
                if contains in text:
                    return text
            return None
        return await self.fake.wait_for(find, timeout)

    async def answer(self, iid: str, contains: str = "") -> str:
        """What the member was told: an immediate ephemeral message, or the edited "thinking" reply
        (containing ``contains``)."""
        def find() -> str | None:
            for r in self.fake.interaction_responses(iid):
                text = (r.data or {}).get("content") or ""
                if r.kind in ("callback", "edit_original") and text and contains in text:
                    return text
            return None
        return await self.wait(find)

    def channel_messages(self, channel_id: int | None = None) -> list[Message]:
        return self.fake.messages(channel_id or self.seed.channel_id)

    def progress_messages(self, channel_id: int | None = None) -> list[Message]:
        """The bot's progress messages: every channel message that does not mention the member."""
        return [m for m in self.channel_messages(channel_id) if not m.content.startswith("<@")]

    def result_messages(self, channel_id: int | None = None) -> list[Message]:
        return [m for m in self.channel_messages(channel_id) if m.content.startswith("<@")]

    async def wait_result(self, count: int = 1, channel_id: int | None = None, timeout: float = 20.0
                          ) -> list[Message]:
        return await self.fake.wait_for(
            lambda: (found := self.result_messages(channel_id)) and len(found) >= count and found, timeout)

    async def wait_submitted(self, n: int = 1, timeout: float = 20.0) -> None:
        await asyncio.wait_for(self.sim.wait_submitted(n), timeout)

    async def wait(self, predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
        return await self.fake.wait_for(predicate, timeout)

    # ---- the database --------------------------------------------------------------------------

    async def jobs(self) -> list[JobRecord]:
        assert self.bot is not None and self.bot.db is not None
        return await jobs_by_state(self.bot.db, None, 1000)

    async def ledger(self, **filters: Any) -> list[LedgerRecord]:
        assert self.bot is not None and self.bot.db is not None
        return await ledger_rows(self.bot.db, **filters)

    async def wait_notified(self, job_id: int, timeout: float = 20.0) -> JobRecord:
        """The job once its final message is recorded (notified_at set)."""
        async def notified() -> JobRecord | None:
            job = await self.job(job_id)
            return job if job is not None and job.notified_at is not None else None
        return await eventually(notified, timeout)

    async def wait_job(self, job_id: int, predicate: Callable[[JobRecord], bool], timeout: float = 20.0
                       ) -> JobRecord:
        async def check() -> JobRecord | None:
            job = await self.job(job_id)
            return job if job is not None and predicate(job) else None
        return await eventually(check, timeout)

    async def job(self, job_id: int) -> JobRecord | None:
        assert self.bot is not None and self.bot.engine is not None
        return await get_job(self.bot.engine.db, job_id)


async def launch(cfg: Config, *, sandbox: bool = False, stop: asyncio.Event | None = None,
                 install_signals: bool = False, **bot_options: Any) -> tuple[asyncio.Task[None], KlingBot]:
    """Start ``run_bot`` in a task and return it with its bot once setup_hook has finished (the
    engine runs, the commands are registered). Raises what the start raised."""
    handed: asyncio.Future[KlingBot] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_bot(
        cfg, sandbox=sandbox, stop=stop, install_signals=install_signals, on_bot=handed.set_result,
        bot_options={"guild_ready_timeout": 0.05, **bot_options},
    ))
    await asyncio.wait({handed, task}, return_when=asyncio.FIRST_COMPLETED)
    if not handed.done():
        task.result()
    bot = handed.result()
    setup = asyncio.create_task(bot.setup_done.wait())
    done, _ = await asyncio.wait({setup, task}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if setup not in done:
        setup.cancel()
        if task.done():
            task.result()
        task.cancel()
        await asyncio.wait({task})
        raise TimeoutError("the bot did not finish setup_hook")
    return task, bot


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    """Re-check an async condition (a database row) until it holds; for state the fake cannot see."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"condition {check!r} not met within {timeout}s")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def started_world(tmp_path: Path, config: dict[str, Any] | None = None) -> AsyncIterator[BotWorld]:
    """A world with a running bot, configured by ``config`` (merged over the test defaults)."""
    async with BotWorld(tmp_path, config) as w:
        await w.start_bot()
        yield w


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[BotWorld]:
    """A started world and bot with the test defaults."""
    async with started_world(tmp_path) as w:
        yield w


def callback(w: BotWorld, iid: str):
    """The interaction's first response (the defer or the direct reply), or None."""
    return next((r for r in w.fake.interaction_responses(iid) if r.kind == "callback"), None)
