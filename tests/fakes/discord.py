"""A fake Discord: a real aiohttp server on 127.0.0.1 standing in for Discord's REST API and gateway.

discord.py's real ``Bot.start()`` path runs against it once ``bot.discordbot.endpoints.point_discord_at``
aimed discord.py at ``fake.api_base_url``. Tests build the world (guilds, channels, roles, members),
drive members' actions (``send_slash``, ``click_button``) and assert what Discord received
(``messages``, ``interaction_responses``, ``calls``), waiting with ``wait_for`` instead of sleeps.

REST handlers live in discord_rest.py, the gateway and interaction payloads in discord_gateway.py,
the world records and payload shapes in discord_state.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.discord_edges import PlatformEdges
from tests.fakes.discord_entitlements import EntitlementsMixin
from tests.fakes.discord_gateway import GatewayMixin
from tests.fakes.discord_rest import FILES, PAYLOAD, RestRoutes, json_response
from tests.fakes.discord_schema import LEDGER, Violation, check_request
from tests.fakes.discord_state import (
    ALL_PERMISSIONS,
    BOT_PERMISSIONS,
    DEFAULT_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    DEFAULT_OWNER_ID,
    DEFAULT_UPLOAD_LIMIT,
    DEFAULT_USER_ID,
    EVERYONE_PERMISSIONS,
    TIER_UPLOAD_LIMITS,
    Call,
    Fault,
    Guild,
    Interaction,
    InteractionResponse,
    Message,
    error_body,
    iso_now,
    role_payload,
    snowflake,
    text_channel_payload,
    user_payload,
)

__all__ = ["FakeDiscord", "Message", "InteractionResponse", "Call", "Seed"]

API_PREFIX = "/api/v10"
_CHANNEL_MESSAGES = re.compile(r"^/channels/(\d+)/messages(?:/\d+)?$")
_NO_AUTH = ("/webhooks/", "/interactions/")


@dataclass
class Seed:
    guild_id: int
    channel_id: int
    user_id: int


class FakeDiscord(RestRoutes, GatewayMixin, PlatformEdges, EntitlementsMixin):
    def __init__(self, *, app_id: int = 1_200_000_000_000_000_001, bot_user_id: int | None = None,
                 bot_name: str = "klingbot") -> None:
        self.app_id = app_id
        self.bot_user_id = bot_user_id or app_id
        self.bot_name = bot_name
        self.token = "fake-bot-token." + secrets.token_urlsafe(12)
        self.app_flags = 0
        self.heartbeat_interval_ms = 41_250
        # Knobs tests turn (and the platform's edges in discord_edges.py).
        self._init_edges()
        self._init_entitlements()  # grant_entitlement: what interactions carry (discord_entitlements.py)
        self.max_upload_bytes: int | None = None  # overrides every guild's limit when set
        self.interaction_token_ttl_s = 900.0
        self.callback_deadline_s: float | None = None  # None: a late first response is accepted
        # A test that sends a body Discord refuses on purpose says so here (or with the
        # discord_invalid_bodies marker); any other violation fails the test that caused it.
        self.invalid_bodies_expected = False
        # World.
        self.guilds: dict[int, Guild] = {}
        self.users: dict[int, dict] = {self.bot_user_id: user_payload(self.bot_user_id, bot_name, bot=True)}
        self.dm_channels: dict[int, dict] = {}  # channel id -> DM channel
        self.dm_closed: set[int] = set()  # users whose DMs refuse the bot (50007)
        self.denied_channels: set[int] = set()  # channels where the bot has no permission at all
        self.channel_denies: dict[int, int] = {}  # channel id -> the permissions the bot lacks there
        # Records.
        self.calls: list[Call] = []
        self.unhandled: list[str] = []
        self.bodies_checked = 0
        self.schema_violations: list[Violation] = []
        self.commands: dict[int | None, list[dict]] = {}  # guild id (None = global) -> registered
        self.command_syncs: list[tuple[int | None, list]] = []
        self.attachment_downloads: list[int] = []
        self._messages: dict[int, Message] = {}
        self._order = itertools.count(1)
        self._interactions: dict[int, Interaction] = {}
        self._by_token: dict[str, Interaction] = {}
        self._hosted: dict[int, tuple[str, bytes, str]] = {}
        self._attachment_objects: dict[int, dict] = {}
        self._faults: list[Fault] = []
        self._cond = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0
        GatewayMixin.__init__(self)

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=256 * 1024 * 1024)
        app.add_routes(self._rest_routes(API_PREFIX))
        app.add_routes([web.get("/gateway", self._ws_handler),
                        web.get("/attachments/{aid:\\d+}/{filename}", self._serve_attachment)])
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        await self._close_gateway()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base_url(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # ---- world ---------------------------------------------------------------------------------

    def seed_default(self) -> Seed:
        """One guild with one text channel and one member (no special roles)."""
        if DEFAULT_GUILD_ID not in self.guilds:
            self.add_guild(DEFAULT_GUILD_ID, "Test Guild")
            self.add_channel(DEFAULT_GUILD_ID, DEFAULT_CHANNEL_ID, "gen")
            self.add_member(DEFAULT_GUILD_ID, DEFAULT_USER_ID, "member")
        return Seed(DEFAULT_GUILD_ID, DEFAULT_CHANNEL_ID, DEFAULT_USER_ID)

    def add_guild(self, guild_id: int, name: str, *, filesize_limit: int | None = None,
                  premium_tier: int = 0, owner_id: int = DEFAULT_OWNER_ID,
                  everyone_permissions: int = EVERYONE_PERMISSIONS,
                  bot_permissions: int = BOT_PERMISSIONS) -> dict:
        """A guild with its @everyone role, the bot's managed role and the bot as a member."""
        limit = filesize_limit if filesize_limit is not None else TIER_UPLOAD_LIMITS[premium_tier]
        guild = Guild(guild_id, name, owner_id, limit, premium_tier)
        self.guilds[guild_id] = guild
        guild.roles[guild_id] = role_payload(guild_id, "@everyone", everyone_permissions, 0)
        guild.bot_role_id = snowflake()
        guild.roles[guild.bot_role_id] = role_payload(guild.bot_role_id, self.bot_name, bot_permissions, 1,
                                                      managed=True, bot_id=self.bot_user_id)
        guild.members[self.bot_user_id] = {"roles": [guild.bot_role_id], "joined_at": iso_now()}
        self._announce_guild(guild)
        return self._guild_json(guild, full=True)

    def add_channel(self, guild_id: int, channel_id: int, name: str) -> dict:
        guild = self.guilds[guild_id]
        channel = text_channel_payload(channel_id, guild_id, name, len(guild.channels))
        guild.channels[channel_id] = channel
        self._announce("CHANNEL_CREATE", channel)
        return channel

    def add_role(self, guild_id: int, role_id: int, name: str, permissions: int) -> dict:
        guild = self.guilds[guild_id]
        role = role_payload(role_id, name, permissions, len(guild.roles))
        guild.roles[role_id] = role
        self._announce("GUILD_ROLE_CREATE", {"guild_id": str(guild_id), "role": role})
        return role

    def add_member(self, guild_id: int, user_id: int, name: str, role_ids: tuple | list = ()) -> dict:
        guild = self.guilds[guild_id]
        self.users.setdefault(user_id, user_payload(user_id, name))
        member = {"roles": [int(r) for r in role_ids], "joined_at": iso_now()}
        guild.members[user_id] = member
        self._announce("GUILD_MEMBER_ADD", {**self._member_json(guild, user_id), "guild_id": str(guild_id)})
        return member

    def set_role_permissions(self, guild_id: int, role_id: int, permissions: int) -> None:
        role = self.guilds[guild_id].roles[role_id]
        role["permissions"] = str(permissions)
        self._announce("GUILD_ROLE_UPDATE", {"guild_id": str(guild_id), "role": role})

    def set_bot_permissions(self, guild_id: int, permissions: int) -> None:
        """Set the bot's managed role (the @everyone role still adds its own permissions)."""
        self.set_role_permissions(guild_id, self.guilds[guild_id].bot_role_id, permissions)

    def deny_channel(self, channel_id: int, denied: bool = True, *, permissions: int = ALL_PERMISSIONS) -> None:
        """The bot loses (or regains) ``permissions`` (default: every one) in one channel, via a member
        overwrite."""
        channel, guild_id = self._find_channel(channel_id)
        assert channel is not None and guild_id is not None, "deny_channel takes a guild channel"
        self.denied_channels.discard(channel_id)
        self.channel_denies.pop(channel_id, None)
        channel["permission_overwrites"] = []
        if denied:
            if permissions == ALL_PERMISSIONS:
                self.denied_channels.add(channel_id)
            else:
                self.channel_denies[channel_id] = permissions
            channel["permission_overwrites"] = [
                {"id": str(self.bot_user_id), "type": 1, "allow": "0", "deny": str(permissions)}]
        self._announce("CHANNEL_UPDATE", channel)

    def delete_channel(self, channel_id: int) -> None:
        for guild in self.guilds.values():
            channel = guild.channels.pop(channel_id, None)
            if channel is not None:
                self._announce("CHANNEL_DELETE", channel)

    def remove_guild(self, guild_id: int) -> None:
        """The bot is removed from a guild (or the guild is deleted): its routes answer 404."""
        del self.guilds[guild_id]
        self._announce("GUILD_DELETE", {"id": str(guild_id), "unavailable": False})

    def delete_message(self, message_id: int) -> None:
        """A member (or a moderator) deletes a message: the bot's later edits get 404 10008."""
        msg = self._messages[message_id]
        msg.deleted = True
        body = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
        if msg.guild_id:
            body["guild_id"] = str(msg.guild_id)
        self._announce("MESSAGE_DELETE", body)

    def upload_limit(self, guild_id: int | None) -> int:
        if self.max_upload_bytes is not None:
            return self.max_upload_bytes
        guild = self.guilds.get(guild_id) if guild_id else None
        return guild.filesize_limit if guild else DEFAULT_UPLOAD_LIMIT

    # ---- what tests read -----------------------------------------------------------------------

    def messages(self, channel_id: int, *, ephemeral: bool = False) -> list[Message]:
        """Messages of a channel in creation order, deleted ones included (``deleted`` is set).
        Ephemeral interaction replies are left out unless ``ephemeral=True``."""
        return [m for m in self._messages.values()
                if m.channel_id == channel_id and (ephemeral or not m.ephemeral)]

    def message(self, message_id: int) -> Message:
        return self._messages[int(message_id)]

    def all_messages(self) -> list[Message]:
        return list(self._messages.values())

    def interaction(self, interaction_id: int | str) -> Interaction:
        return self._interactions[int(interaction_id)]

    def interaction_responses(self, interaction_id: int | str) -> list[InteractionResponse]:
        """The callback, every @original edit and every followup, in order."""
        inter = self._interactions.get(int(interaction_id))
        return list(inter.responses) if inter else []

    def interaction_message(self, interaction_id: int | str) -> Message | None:
        """The @original message of an interaction (``loading`` while a defer was not followed up)."""
        inter = self._interactions.get(int(interaction_id))
        return self._messages.get(inter.original_id) if inter and inter.original_id else None

    def expire_interaction(self, interaction_id: int | str) -> None:
        """The interaction token dies (as after 15 minutes): webhook calls get 401 50027."""
        self._interactions[int(interaction_id)].expired = True

    def registered_commands(self, guild_id: int | None = None) -> list[dict]:
        return list(self.commands.get(guild_id, []))

    # ---- faults ----------------------------------------------------------------------------------

    def fail_next(self, method: str, path_regex: str, status: int, code: int | None = None,
                  message: str | None = None, count: int = 1, *, retry_after: float = 0.05) -> None:
        """The next ``count`` requests whose method matches (``"*"`` = any) and whose path below the
        API base matches ``path_regex`` (re.search) get this error instead of being handled."""
        self._faults.append(Fault.make(method, path_regex, status, code, message, count, retry_after))

    def _take_fault(self, method: str, path: str) -> Fault | None:
        fault = next((f for f in self._faults if f.matches(method, path)), None)
        if fault is not None:
            fault.remaining -= 1
            if fault.remaining == 0:
                self._faults.remove(fault)
        return fault

    def _fault_response(self, fault: Fault) -> web.Response:
        if fault.status == 429:
            return self._rate_limited(fault.retry_after, limit=1, bucket="fake-fault")
        return json_response(error_body(fault.code, fault.message), status=fault.status)

    # ---- request pipeline ------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX + "/"):
            return await handler(request)
        path = request.path[len(API_PREFIX):]
        call = Call(request.method, path, dict(request.query))
        self.calls.append(call)
        try:
            call.payload, files = await self._read_body(request)
        except ValueError:
            response = json_response(error_body(50109, "The request body contains invalid JSON."), 400)
        else:
            call.files = [{k: v for k, v in f.items() if k != "data"} for f in files]
            request[PAYLOAD], request[FILES] = call.payload or {}, files
            response = await self._pipeline(request, handler, path, call)
        call.status = response.status
        await self.notify()
        return response

    async def _pipeline(self, request: web.Request, handler: Callable, path: str, call: Call
                        ) -> web.StreamResponse:
        fault = self._take_fault(request.method, path)
        if fault is not None:
            return self._fault_response(fault)
        if request.match_info.http_exception is not None:
            self.unhandled.append(f"{request.method} {path}")
            return json_response(error_body(0, "404: Not Found"), status=404)
        if not path.startswith(_NO_AUTH) and request.headers.get("Authorization") != f"Bot {self.token}":
            return json_response(error_body(0, "401: Unauthorized"), status=401)
        headers: dict = {}
        match = _CHANNEL_MESSAGES.match(path)
        if match and request.method in ("POST", "PATCH") and self.channel_rate_limit:
            limited, headers = self._channel_limit(int(match.group(1)), request.method)
            if limited is not None:
                return limited
        if call.payload is not None or call.files:
            violation = self._check_schema(request.method, path, call)
            if violation is not None:
                return json_response(violation.body(), status=400)
        response = await handler(request)
        response.headers.update(headers)
        return response

    def _check_schema(self, method: str, path: str, call: Call) -> Violation | None:
        """Discord's schema for this route (tests/fakes/discord_schema.py); a violation is recorded for
        the suite's count and answered 400/50035 naming the field, as Discord does."""
        self.bodies_checked += 1
        LEDGER.checked += 1
        violation = check_request(method, path, call.payload, len(call.files))
        if violation is not None:
            self.schema_violations.append(violation)
            if self.invalid_bodies_expected or LEDGER.test_expects_invalid:
                LEDGER.expected.append(violation)
            else:
                LEDGER.unexpected.append((LEDGER.current_test, violation))
        return violation

    async def _read_body(self, request: web.Request) -> tuple[Any, list[dict]]:
        """JSON, or multipart with ``payload_json`` and ``files[n]`` parts, as discord.py sends."""
        if not request.can_read_body:
            return None, []
        if request.content_type == "multipart/form-data":
            payload, files = {}, []
            reader = await request.multipart()
            async for part in reader:
                data = await part.read(decode=False)
                if part.name == "payload_json":
                    payload = json.loads(data.decode())
                elif part.name and part.name.startswith("files["):
                    ctype = part.headers.get("Content-Type", "application/octet-stream")
                    files.append({"index": int(part.name[6:-1]), "filename": part.filename or "file",
                                  "content_type": ctype, "size": len(data), "data": bytes(data)})
            return payload, files
        raw = await request.read()
        return (json.loads(raw) if raw.strip() else None), []

    # ---- waiting ---------------------------------------------------------------------------------

    async def notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait until ``predicate()`` is truthy and return its value. Re-checked on every REST call and
        gateway event, and every 20 ms for state the fake cannot see change (the bot's own caches)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._cond:
            while not (value := predicate()):
                left = deadline - loop.time()
                if left <= 0:
                    recent = [f"{c.method} {c.path} -> {c.status}" for c in self.calls[-8:]]
                    raise TimeoutError(f"fake Discord: condition not met in {timeout}s; "
                                       f"last calls: {recent}")
                try:
                    await asyncio.wait_for(self._cond.wait(), min(left, 0.02))
                except TimeoutError:
                    pass
            return value

    async def wait_for_message(self, channel_id: int, where: Callable[[Message], bool] = lambda m: True,
                               timeout: float = 10.0) -> Message:
        """The first message of ``channel_id`` (ephemeral excluded) for which ``where`` holds."""
        def find() -> Message | None:
            return next((m for m in self.messages(channel_id) if where(m)), None)
        return await self.wait_for(find, timeout)
