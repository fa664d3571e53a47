"""The discord.py bot: owns the config, the database, the Runware client, the engine and the Discord
sink, and loads its cogs by name (it never imports a cog module).

Start-up (setup_hook, after login): open and migrate the database, build the client, sink and
engine, load the cogs (the buttons cog registers its dynamic items), start the engine (which
resumes every unfinished job from the database), and register the slash commands when they changed
since the last time.
Shut-down (SIGTERM/SIGINT): stop taking commands, stop the engine (writes in flight finish), close.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import discord
import httpx
from discord.ext import commands
from pydantic import SecretStr

from bot.config import Config
from bot.db import Database, open_database
from bot.db.kv import kv_get, kv_set
from bot.discordbot.endpoints import point_discord_at
from bot.discordbot.http_metrics import discord_trace
from bot.discordbot.pacer import ChannelPacer
from bot.discordbot.sink import DiscordSink
from bot.errors import UserFacingError
from bot.runware.client import RunwareClient
from bot.sandbox import enter_sandbox
from bot.services.clock import Clock
from bot.services.engine import Engine
from bot.services.metrics import Metrics, MetricsServer

log = logging.getLogger(__name__)

# Loaded in this order when the module exists (member and admin cogs arrive later).
EXTENSIONS = tuple(f"bot.discordbot.cogs.{name}" for name in ("errors", "video", "buttons", "next_steps", "gallery",
                                                                 "member", "admin"))
ENGINE_STOP_TIMEOUT_S = 30.0
# Discord allows 5 message writes per 5 s per channel; the extra half second absorbs latency jitter.
PACE_LIMIT, PACE_WINDOW_S = 5, 5.5
RESTARTING = "The bot is restarting; please try again in a minute."


class ButtonHandler(Protocol):
    """A cog that handles presses of the job messages' persistent components (``klingbot:ACTION:JOB``)."""

    async def handle(self, action: str, interaction: discord.Interaction, job_id: int) -> None: ...


@dataclass(frozen=True)
class Running:
    """What a command or button works with, present only while the bot takes commands."""

    db: Database
    engine: Engine
    sink: DiscordSink
    web: httpx.AsyncClient


class KlingBot(commands.Bot):
    def __init__(
        self,
        cfg: Config,
        *,
        runware_api_key: SecretStr | None,
        commands_only: bool = False,
        clock: Clock | None = None,
        pace: tuple[int, float] = (PACE_LIMIT, PACE_WINDOW_S),
        **options: Any,
    ) -> None:
        intents = discord.Intents.none()
        intents.guilds = True  # the only intent needed; nothing privileged
        # This process's counters (SPEC 2.4), served on [metrics] listen when set.
        metrics = Metrics(cfg.models)
        # Made before the client: discord.py's session reports Discord's rate-limit headers to it.
        self.pacer = ChannelPacer(limit=pace[0], window_s=pace[1])
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            http_trace=discord_trace(metrics, self.pacer.observe_response),
            **options,
        )
        self.metrics = metrics
        self.metrics_server: MetricsServer | None = None
        self.cfg = cfg
        self.runware_api_key = runware_api_key
        self.commands_only = commands_only  # `klingbot sync`: commands only, no database or engine
        self.clock = clock
        self.db: Database | None = None
        self.web: httpx.AsyncClient | None = None  # attachments and result downloads
        self.runware: RunwareClient | None = None
        self.sink: DiscordSink | None = None
        self.engine: Engine | None = None
        self.accepting_commands = False
        self.synced: list[str] | None = None  # names registered by the last sync, when one happened
        self._closing = False
        self.setup_done = asyncio.Event()  # set when setup_hook has finished (the engine runs)
        # action -> the cog handling its presses: each cog adds its actions in cog_load, drops them in
        # cog_unload, so a press while its cog is not loaded gets RESTARTING (button_handler).
        self.button_handlers: dict[str, ButtonHandler] = {}

    def running(self) -> Running:
        """The live services; a UserFacingError (shown to the member) while the bot starts, stops, or
        only registers its commands."""
        if (not self.accepting_commands or self.db is None or self.engine is None or self.sink is None
                or self.web is None):
            raise UserFacingError(RESTARTING)
        return Running(self.db, self.engine, self.sink, self.web)

    def add_button_handlers(self, actions: Iterable[str], handler: ButtonHandler) -> None:
        """A cog declares the actions it handles (in cog_load)."""
        self.button_handlers.update(dict.fromkeys(actions, handler))

    def drop_button_handlers(self, actions: Iterable[str]) -> None:
        """A cog withdraws its actions (in cog_unload): their presses get RESTARTING until it is back."""
        for action in actions:
            self.button_handlers.pop(action, None)

    def button_handler(self, action: str) -> ButtonHandler:
        """The cog handling ``action``; a UserFacingError while none is loaded (starting, stopping, or
        its extension being reloaded)."""
        handler = self.button_handlers.get(action)
        if handler is None:
            raise UserFacingError(RESTARTING)
        return handler

    # ---- start -----------------------------------------------------------------------------------

    async def login(self, token: str) -> None:
        # Aim REST and the gateway at discord.api_base_url before the first request.
        await point_discord_at(self.cfg.discord.api_base_url, SecretStr(token), self.http.http_trace)
        await super().login(token)

    async def setup_hook(self) -> None:
        if not self.commands_only:
            await self._open_services()
        await self._load_extensions()
        if self.commands_only:
            self.setup_done.set()
            return
        assert self.engine is not None
        await self.engine.start()
        self.accepting_commands = True
        try:
            await self.sync_commands_if_changed()
        except discord.HTTPException as exc:
            log.error("registering slash commands failed (%s %s); the old ones stay", exc.status, exc.code)
        self.setup_done.set()

    async def _open_services(self) -> None:
        cfg = self.cfg
        if self.runware_api_key is None:
            raise UserFacingError("RUNWARE_API_KEY is not set (or run with --sandbox).")
        self.db = await open_database(cfg.database)
        self.web = httpx.AsyncClient(timeout=httpx.Timeout(cfg.runware.request_timeout_s),
                                     follow_redirects=False)
        self.runware = RunwareClient(
            api_url=cfg.runware.api_url,
            api_key=self.runware_api_key,
            timeout_s=cfg.runware.request_timeout_s,
            max_retries=cfg.runware.max_retries,
            poll_batch_size=cfg.runware.poll_batch_size,
            on_request=self.metrics.runware_request,
        )
        self.sink = DiscordSink(self, pacer=self.pacer)
        self.engine = Engine(cfg=cfg, db=self.db, client=self.runware, sink=self.sink, clock=self.clock,
                             http=self.web, metrics=self.metrics)
        if cfg.metrics.listen:
            self.metrics_server = MetricsServer(self.metrics, self.db, cfg.metrics.listen)
            await self.metrics_server.start()

    async def _load_extensions(self) -> None:
        for name in EXTENSIONS:  # a missing cog is an error: the bot must not run without it
            await self.load_extension(name)

    @property
    def components_for(self) -> Callable[..., Any] | None:
        """The hook the sink calls for a job's buttons: ``(job, stage) -> View | None``."""
        return self.sink.components_for if self.sink else None

    @components_for.setter
    def components_for(self, hook: Callable[..., Any] | None) -> None:
        if self.sink is not None:
            self.sink.components_for = hook

    # ---- commands --------------------------------------------------------------------------------

    def command_scope(self) -> discord.Object | None:
        gid = self.cfg.discord.dev_guild_id
        return discord.Object(id=gid) if gid else None

    def command_payload(self, guild: discord.Object | None) -> list[dict[str, Any]]:
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        commands_ = self.tree.get_commands(guild=guild)
        return sorted((c.to_dict(self.tree) for c in commands_), key=lambda d: (d.get("type", 1), d["name"]))

    async def sync_commands(self, guild: discord.Object | None) -> list[str]:
        """Register the tree with Discord (to ``guild``, else globally); returns the names."""
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        registered = await self.tree.sync(guild=guild)
        return [c.name for c in registered]

    async def sync_commands_if_changed(self) -> bool:
        """Sync when the payload's hash differs from the one stored at the last sync."""
        assert self.db is not None
        guild = self.command_scope()
        payload = self.command_payload(guild)
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
        scope = f"guild:{guild.id}" if guild else "global"
        key = f"commands_hash:{self.application_id}:{scope}"
        if await kv_get(self.db, key) == digest:
            log.info("slash commands unchanged since the last registration (%s)", scope)
            return False
        self.synced = await self.sync_commands(guild)
        await kv_set(self.db, key, digest)
        log.info("registered %d slash command(s) (%s): %s", len(self.synced), scope, ", ".join(self.synced))
        return True

    # ---- stop ------------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.accepting_commands = False
        if self.engine is not None:
            try:
                await asyncio.wait_for(self.engine.stop(), ENGINE_STOP_TIMEOUT_S)
            except TimeoutError:
                log.error("the engine did not stop within %.0f s; closing anyway", ENGINE_STOP_TIMEOUT_S)
            except Exception:
                log.exception("stopping the engine failed")
        if self.sink is not None:
            await self.sink.close()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        await super().close()
        if self.runware is not None:
            await self.runware.aclose()
        if self.web is not None:
            await self.web.aclose()
        if self.db is not None:
            await self.db.close()
        log.info("bot stopped")


class ShardedKlingBot(KlingBot, commands.AutoShardedBot):
    """The bot with ``discord.shard_count`` gateway shards, of which this process runs
    ``discord.shard_ids`` (all when empty): several processes on one PostgreSQL split the guilds."""


def new_bot(cfg: Config, **kwargs: Any) -> KlingBot:
    """The bot ``klingbot run`` starts: sharded when ``discord.shard_count`` is set, else one gateway
    connection (enough for a bot in up to 2,500 guilds)."""
    if cfg.discord.shard_count:
        return ShardedKlingBot(cfg, shard_count=cfg.discord.shard_count,
                               shard_ids=list(cfg.discord.shard_ids) or None, **kwargs)
    return KlingBot(cfg, **kwargs)


@contextlib.contextmanager
def _signals_set(event: asyncio.Event, enabled: bool):
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if enabled:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, event.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_bot(
    cfg: Config,
    *,
    sandbox: bool,
    stop: asyncio.Event | None = None,
    on_bot: Callable[[KlingBot], None] | None = None,
    install_signals: bool = True,
    bot_options: dict[str, Any] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set), then shut down cleanly.

    ``stop`` and ``on_bot`` let tests drive the real start path and stop it as a signal would."""
    token = cfg.secrets.discord_token
    if token is None:
        raise UserFacingError("DISCORD_TOKEN is not set: put the bot's token in the environment.")
    stop = stop or asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        if sandbox:
            cfg, sandbox_api_key = await enter_sandbox(stack, cfg)
            key: SecretStr | None = sandbox_api_key
            log.info("sandbox: Runware simulator at %s, database %s", cfg.runware.api_url, cfg.storage.path)
        else:
            key = cfg.secrets.runware_api_key
            if key is None:
                raise UserFacingError("RUNWARE_API_KEY is not set: put the Runware API key in the "
                                      "environment, or run with --sandbox.")
        bot = new_bot(cfg, runware_api_key=key, **(bot_options or {}))
        if on_bot is not None:
            on_bot(bot)
        with _signals_set(stop, install_signals):
            runner = asyncio.create_task(bot.start(token.get_secret_value()), name="klingbot")
            stopper = asyncio.create_task(stop.wait(), name="klingbot-stop")
            try:
                await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                await bot.close()
        try:
            await runner
        except discord.LoginFailure:
            raise UserFacingError("Discord rejected DISCORD_TOKEN (401): check the bot token.") from None
        except discord.PrivilegedIntentsRequired as exc:  # pragma: no cover - no privileged intents used
            raise UserFacingError(str(exc)) from None


async def sync_commands(cfg: Config, guild_id: int | None) -> list[str]:
    """Log in, build the command tree from the cogs, register it, log out. Returns the names."""
    token = cfg.secrets.discord_token
    if token is None:
        raise UserFacingError("DISCORD_TOKEN is not set: put the bot's token in the environment.")
    bot = KlingBot(cfg, runware_api_key=cfg.secrets.runware_api_key, commands_only=True)
    try:
        try:
            await bot.login(token.get_secret_value())
        except discord.LoginFailure:
            raise UserFacingError("Discord rejected DISCORD_TOKEN (401): check the bot token.") from None
        try:
            return await bot.sync_commands(discord.Object(id=guild_id) if guild_id else None)
        except discord.HTTPException as exc:
            raise UserFacingError(f"Discord refused the commands: {exc.status} {exc.text}") from None
    finally:
        await bot.close()
