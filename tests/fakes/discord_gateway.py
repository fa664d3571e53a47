"""Gateway websocket and interactions of the fake Discord, as a mixin of FakeDiscord.

Gateway: HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeat ACK, RESUME -> RESUMED, member chunks.
Interactions: members' slash commands and button clicks are dispatched as INTERACTION_CREATE with the
fields discord.py 2.7 requires; the bot's answers (callback, @original, followups) are REST routes here.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.discord_rest import FILES, PAYLOAD, json_response, no_content, unknown
from tests.fakes.discord_state import (
    DEFAULT_USER_ID,
    Guild,
    Interaction,
    InteractionResponse,
    Message,
    command_schema,
    error_body,
    form_error,
    member_payload,
    member_permissions,
    snowflake,
    user_payload,
)

# Which callback types Discord accepts per interaction type (2 = command, 3 = component).
_CALLBACK_TYPES = {2: {4, 5, 9}, 3: {4, 5, 6, 7, 9}, 5: {4, 5, 6, 7}}
_TRUE = ("1", "true", "True")


class _Conn:
    """One websocket connection; sends are serialised so sequence numbers stay in order."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.lock = asyncio.Lock()

    async def send(self, payload: dict) -> None:
        async with self.lock:
            await self.ws.send_str(json.dumps(payload))


class GatewaySession:
    def __init__(self, session_id: str, shard: list | None) -> None:
        self.session_id = session_id
        self.shard = shard
        self.seq = 0
        self.conn: _Conn | None = None
        self.ready = False
        self.events: list[str] = []

    @property
    def live(self) -> bool:
        return self.ready and self.conn is not None and not self.conn.ws.closed

    async def dispatch(self, event: str, data: Any) -> None:
        assert self.conn is not None
        async with self.conn.lock:
            self.seq += 1
            self.events.append(event)
            await self.conn.ws.send_str(json.dumps({"op": 0, "t": event, "s": self.seq, "d": data}))


class GatewayMixin:
    """``self`` is the FakeDiscord."""

    def __init__(self) -> None:
        self.sessions: list[GatewaySession] = []
        self.identify_payloads: list[dict] = []
        self.resumes = 0
        self._conns: set[_Conn] = set()
        self._pending: set[asyncio.Task] = set()

    # ---- gateway -------------------------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = _Conn(ws)
        self._conns.add(conn)
        try:
            await conn.send({"op": 10, "s": None, "t": None,
                             "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_gateway(conn, json.loads(msg.data))
        finally:
            self._conns.discard(conn)
            await self.notify()
        return ws

    async def _on_gateway(self, conn: _Conn, msg: dict) -> None:
        op, data = msg.get("op"), msg.get("d") or {}
        if op == 1:
            await conn.send({"op": 11, "s": None, "t": None, "d": None})
        elif op == 2:
            await self._identify(conn, data)
        elif op == 6:
            session = next((s for s in self.sessions if s.session_id == data.get("session_id")), None)
            if session is None or data.get("token") != self.token:
                await conn.send({"op": 9, "s": None, "t": None, "d": False})
                return
            session.conn = conn
            await session.dispatch("RESUMED", {})
            self.resumes += 1
        elif op == 8:
            await self._member_chunk(conn, data)
        await self.notify()

    async def _identify(self, conn: _Conn, data: dict) -> None:
        if data.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        self.identify_payloads.append({k: v for k, v in data.items() if k != "token"})
        shard = data.get("shard")
        session = GatewaySession(uuid.uuid4().hex, shard)
        session.conn = conn
        self.sessions.append(session)
        shard_id, shards = shard or (0, 1)
        guilds = [g for g in self.guilds.values() if (g.id >> 22) % shards == shard_id]
        await session.dispatch("READY", {
            "v": 10, "user": self._bot_user_json(), "session_id": session.session_id,
            "resume_gateway_url": self.gateway_url, "shard": [shard_id, shards],
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "application": {"id": str(self.app_id), "flags": self.app_flags},
            "private_channels": [], "relationships": [], "presences": [], "user_settings": {},
            "session_type": "normal", "_trace": ["fake-discord"],
        })
        for guild in guilds:
            await session.dispatch("GUILD_CREATE", self._guild_json(guild, full=True))
        session.ready = True

    async def _member_chunk(self, conn: _Conn, data: dict) -> None:
        guild = self.guilds.get(int(data.get("guild_id", 0)))
        session = next((s for s in self.sessions if s.conn is conn), None)
        if guild is None or session is None:
            return
        wanted = {int(u) for u in data.get("user_ids") or []}
        members = [self._member_json(guild, uid) for uid in guild.members if not wanted or uid in wanted]
        await session.dispatch("GUILD_MEMBERS_CHUNK", {
            "guild_id": str(guild.id), "members": members, "chunk_index": 0, "chunk_count": 1,
            "not_found": [], "nonce": data.get("nonce")})

    def _live_session(self, guild_id: int | None = None) -> GatewaySession | None:
        """The newest ready session; for a guild's event, the one of the shard that guild is on
        (``(guild_id >> 22) % shard_count``, as Discord routes), when such a session is connected."""
        live = [s for s in reversed(self.sessions) if s.live]
        if guild_id:
            for session in live:
                shard_id, shards = session.shard or (0, 1)
                if (guild_id >> 22) % shards == shard_id:
                    return session
        return live[0] if live else None

    def _announce(self, event: str, data: Any) -> None:
        """World changes made while a bot is connected reach it as gateway events, in order."""
        if self._live_session() is None:
            return
        task = asyncio.get_running_loop().create_task(self._dispatch_now(event, data))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _announce_guild(self, guild: Guild) -> None:
        self._announce("GUILD_CREATE", self._guild_json(guild, full=True))

    async def _dispatch_now(self, event: str, data: Any) -> None:
        guild_id = None
        if isinstance(data, dict):
            guild_id = data.get("id") if event in ("GUILD_CREATE", "GUILD_UPDATE") else data.get("guild_id")
        session = self._live_session(int(guild_id) if guild_id else None)
        if session is None:
            raise RuntimeError("fake Discord: no gateway session is ready; await fake.wait_ready() first")
        await session.dispatch(event, data)

    async def dispatch(self, event: str, data: Any) -> None:
        """Send a DISPATCH event to the connected bot (after any pending world changes)."""
        while self._pending:
            await asyncio.gather(*list(self._pending))
        await self._dispatch_now(event, data)
        await self.notify()

    async def wait_ready(self, timeout: float = 10.0) -> GatewaySession:
        """Until a bot has identified and been sent READY and every GUILD_CREATE."""
        return await self.wait_for(self._live_session, timeout)

    async def reconnect_gateway(self, timeout: float = 10.0) -> None:
        """Ask the bot to reconnect (op 7) and wait until it RESUMEd its session."""
        session = self._live_session()
        assert session is not None and session.conn is not None, "no gateway session is ready"
        before = self.resumes
        await session.conn.send({"op": 7, "s": None, "t": None, "d": None})
        await self.wait_for(lambda: self.resumes > before and self._live_session(), timeout)

    async def _close_gateway(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        for conn in list(self._conns):
            await conn.ws.close(code=1001, message=b"fake Discord stopping")

    # ---- members act ---------------------------------------------------------------------------

    async def send_slash(self, name: str, options: dict | list | None = None, *, user_id: int | None = None,
                         guild_id: int | None = None, channel_id: int | None = None,
                         attachments: dict[str, dict] | None = None, app_permissions: int | None = None,
                         permissions: int | None = None, locale: str = "en-US", dm: bool = False) -> str:
        """A member runs ``/name`` ("genadmin quota set" for subcommands). ``options``: {name: value}
        or [(name, value) | (name, type, value)]; types come from the registered command when it was
        synced, else from the Python type. User/role/channel options take ids; attachment options take
        objects from ``host_attachment``. Returns the interaction id."""
        path = name.split()
        guild, channel, uid = self._context(user_id, guild_id, channel_id, dm)
        cmd, leaf, registered_in = command_schema(self.commands, path, guild.id if guild else None)
        items = list(options.items()) if isinstance(options, dict) else list(options or [])
        items += list((attachments or {}).items())
        resolved: dict[str, dict] = {}
        built = []
        for item in items:
            opt_name, opt_type, value = item if len(item) == 3 else (item[0], None, item[1])
            built.append(self._option(opt_name, opt_type or leaf.get(opt_name), value, resolved, guild))
        for depth in range(len(path) - 1, 0, -1):
            built = [{"type": 1 if depth == len(path) - 1 else 2, "name": path[depth], "options": built}]
        data: dict[str, Any] = {"id": cmd["id"] if cmd else str(snowflake()), "name": path[0], "type": 1,
                                "options": built}
        if resolved:
            data["resolved"] = resolved
        if registered_in:
            data["guild_id"] = str(registered_in)
        return await self._interact(2, data, guild, channel, uid, app_permissions, permissions, locale)

    async def click_button(self, message: Message | int, custom_id: str, *, user_id: int | None = None,
                           values: list[str] | None = None, check: bool = True,
                           app_permissions: int | None = None, permissions: int | None = None) -> str:
        """A member clicks a component of a message. Raises LookupError when the message (as the
        fake holds it now) has no component with that custom_id. Returns the interaction id."""
        msg = message if isinstance(message, Message) else self._messages[int(message)]
        msg = self._messages[msg.id]
        if check and (msg.deleted or custom_id not in msg.custom_ids()):
            raise LookupError(f"message {msg.id} has no component {custom_id!r} "
                              f"(deleted={msg.deleted}, has {msg.custom_ids()})")
        guild, channel, uid = self._context(user_id, msg.guild_id, msg.channel_id, msg.guild_id is None)
        data = {"custom_id": custom_id, "component_type": 3 if values is not None else 2}
        if values is not None:
            data["values"] = values
        return await self._interact(3, data, guild, channel, uid, app_permissions, permissions, "en-US",
                                    message=msg)

    def post_member_message(self, channel_id: int, user_id: int, content: str = "",
                            attachments: list[dict] | tuple = ()) -> Message:
        """A member's own message in a channel (attachments from ``host_attachment``)."""
        _, guild_id = self._find_channel(channel_id)
        msg = Message(id=snowflake(), channel_id=channel_id, author_id=user_id, content=content, embeds=[],
                      components=[], allowed_mentions=None, attachments=[dict(a) for a in attachments],
                      created=next(self._order), guild_id=guild_id)
        self._messages[msg.id] = msg
        return msg

    async def send_message_command(self, name: str, message: Message, *, user_id: int | None = None) -> str:
        """A member picks the message context-menu command ``name`` (Apps menu) on ``message``."""
        guild, channel, uid = self._context(user_id, message.guild_id, message.channel_id, message.guild_id is None)
        gid = guild.id if guild else None
        found = [(c, g) for g in ((gid, None) if gid else (None,)) for c in self.commands.get(g, [])
                 if c["name"] == name and c.get("type") == 3]
        if not found:
            raise LookupError(f"no message command {name!r} is registered")
        cmd, registered_in = found[0]
        data: dict[str, Any] = {"id": cmd["id"], "name": name, "type": 3, "target_id": str(message.id),
                                "resolved": {"messages": {str(message.id): self._message_json(message)}}}
        if registered_in:
            data["guild_id"] = str(registered_in)
        return await self._interact(2, data, guild, channel, uid, None, None, "en-US")

    def opened_modal(self, interaction_id: int | str) -> dict:
        """The modal the bot opened in answer to an interaction (callback type 9)."""
        for r in self.interaction_responses(interaction_id):
            if r.kind == "callback" and r.type == 9:
                return r.data
        raise LookupError(f"interaction {interaction_id} opened no modal")

    async def submit_modal(self, interaction_id: int | str, values: dict[str, str] | None = None, *,
                           user_id: int | None = None) -> str:
        """The member submits the modal opened for ``interaction_id``: ``values`` by the text inputs'
        labels; the rest keep what the bot prefilled. Returns the submit's interaction id."""
        opening = self.interaction(interaction_id)
        modal = self.opened_modal(interaction_id)
        values = dict(values or {})
        rows = []
        for row in modal.get("components") or []:
            inputs = [row["component"]] if row.get("type") == 18 else row.get("components") or []
            label = row.get("label")
            answered = []
            for text in inputs:
                key = label or text.get("label")
                value = values.pop(key, text.get("value") or "")
                answered.append({"type": 4, "custom_id": text["custom_id"], "value": value})
            rows.append({"type": 18, "component": answered[0]} if row.get("type") == 18
                        else {"type": 1, "components": answered})
        if values:
            raise LookupError(f"the modal has no input labelled {sorted(values)}")
        guild = self.guilds.get(opening.guild_id) if opening.guild_id else None
        channel, _ = self._find_channel(opening.channel_id)
        assert channel is not None
        uid = user_id or opening.user_id
        message = self._messages.get(int(opening.payload["message"]["id"])) if "message" in opening.payload else None
        return await self._interact(5, {"custom_id": modal["custom_id"], "components": rows}, guild, channel, uid,
                                    None, None, "en-US", message=message)

    def _context(self, user_id: int | None, guild_id: int | None, channel_id: int | None, dm: bool
                 ) -> tuple[Guild | None, dict, int]:
        if dm:
            channel = self.dm_channels.get(channel_id) if channel_id else None
            uid = user_id or (int(channel["recipients"][0]["id"]) if channel else DEFAULT_USER_ID)
            self.users.setdefault(uid, user_payload(uid, f"user{uid}"))
            return None, channel or self.dm_channel_for(uid), uid
        if not self.guilds:
            raise RuntimeError("fake Discord has no guild: call seed_default() or add_guild() first")
        guild = self.guilds[guild_id] if guild_id else next(iter(self.guilds.values()))
        channel = guild.channels[channel_id] if channel_id else next(iter(guild.channels.values()))
        uid = user_id or next(u for u in guild.members if u != self.bot_user_id)
        if uid not in guild.members:
            self.add_member(guild.id, uid, f"user{uid}")
        return guild, channel, uid

    def _option(self, name: str, opt_type: int | None, value: Any, resolved: dict, guild: Guild | None
                ) -> dict:
        if opt_type is None:
            opt_type = (5 if isinstance(value, bool) else 4 if isinstance(value, int)
                        else 10 if isinstance(value, float) else 11 if isinstance(value, dict) else 3)
        if opt_type == 11:
            att = value if isinstance(value, dict) else self._attachment_objects[int(value)]
            resolved.setdefault("attachments", {})[att["id"]] = att
            value = att["id"]
        elif opt_type == 6 or (opt_type == 9 and int(value) in self.users):
            uid = int(value)
            self.users.setdefault(uid, user_payload(uid, f"user{uid}"))
            resolved.setdefault("users", {})[str(uid)] = self.users[uid]
            if guild is not None and uid in guild.members:
                resolved.setdefault("members", {})[str(uid)] = member_payload(
                    guild.members[uid], None, member_permissions(guild, uid))
            value = str(uid)
        elif opt_type in (8, 9):
            role = guild.roles[int(value)]  # type: ignore[union-attr]
            resolved.setdefault("roles", {})[role["id"]] = role
            value = role["id"]
        elif opt_type == 7:
            channel, _ = self._find_channel(int(value))
            if channel is None:
                raise KeyError(f"fake Discord has no channel {value}")
            resolved.setdefault("channels", {})[channel["id"]] = {**channel, "permissions": str(
                member_permissions(guild, self.bot_user_id) if guild else 0)}
            value = channel["id"]
        elif opt_type == 4:
            value = int(value)
        elif opt_type == 10:
            value = float(value)
        elif opt_type == 5:
            value = bool(value)
        elif opt_type == 3:
            value = str(value)
        return {"name": name, "type": opt_type, "value": value}

    async def _interact(self, itype: int, data: dict, guild: Guild | None, channel: dict, uid: int,
                        app_permissions: int | None, permissions: int | None, locale: str,
                        message: Message | None = None) -> str:
        iid, token = snowflake(), "fake-interaction-" + secrets.token_urlsafe(24)
        channel_id = int(channel["id"])
        perms = permissions if permissions is not None else (
            member_permissions(guild, uid) if guild else 0)
        app_perms = app_permissions if app_permissions is not None else self._bot_permissions(
            guild.id if guild else None, channel_id)
        payload: dict[str, Any] = {
            "id": str(iid), "application_id": str(self.app_id), "type": itype, "data": data,
            "token": token, "version": 1, "locale": locale,
            "entitlements": self.entitlements_for(uid, guild.id if guild else None),
            "attachment_size_limit": self.upload_limit(guild.id if guild else None),
            "channel_id": str(channel_id), "channel": {**channel, "permissions": str(perms)},
            "app_permissions": str(app_perms),
        }
        if guild is not None:
            payload.update(guild_id=str(guild.id), guild_locale="en-US", context=0,
                           guild={"id": str(guild.id), "locale": "en-US", "features": []},
                           member=self._member_json(guild, uid, permissions=perms),
                           authorizing_integration_owners={"0": str(guild.id)})
        else:
            payload.update(user=self.users[uid], context=1, authorizing_integration_owners={"0": "0"})
        if message is not None:
            payload["message"] = self._message_json(message)
        inter = Interaction(iid, token, itype, channel_id, guild.id if guild else None, uid, time.time(),
                            payload)
        self._interactions[iid] = inter
        self._by_token[token] = inter
        await self.dispatch("INTERACTION_CREATE", payload)
        return str(iid)

    # ---- the bot answers (REST) -------------------------------------------------------------------

    async def _callback(self, request: web.Request) -> web.Response:
        inter = self._interactions.get(int(request.match_info["iid"]))
        late = (inter is not None and self.callback_deadline_s is not None
                and time.time() - inter.created_at > self.callback_deadline_s)
        if inter is None or inter.token != request.match_info["token"] or inter.expired or late:
            return unknown("interaction")
        if inter.acknowledged:
            return json_response(error_body(40060, "Interaction has already been acknowledged."), status=400)
        payload, files = request[PAYLOAD], request[FILES]
        ctype, data = int(payload.get("type", 0)), payload.get("data") or {}
        if ctype not in _CALLBACK_TYPES.get(inter.type, ()):
            return json_response(form_error("type", "BASE_TYPE_CHOICES", "Value must be one of ..."), 400)
        msg: Message | None = None
        if ctype in (4, 5):
            body = data if ctype == 4 else {"flags": data.get("flags", 0)}
            msg, error = self._new_message(inter.channel_id, inter.guild_id, body, files, interaction=inter,
                                           flags=128 if ctype == 5 else 0)
            if error:
                return error
        elif ctype in (6, 7):
            msg = self._messages[int(inter.payload["message"]["id"])]
            if ctype == 7 and (error := self._edit_message(msg, data, files)):
                return error
        if msg is not None:
            inter.original_id = msg.id
        inter.acknowledged, inter.callback_type = True, ctype
        inter.responses.append(InteractionResponse("callback", ctype, data, msg.id if msg else None,
                                                   time.time()))
        if request.query.get("with_response") not in _TRUE:
            return no_content()
        shown = msg is not None and ctype in (4, 5, 7)
        body: dict[str, Any] = {"interaction": {
            "id": str(inter.id), "type": inter.type, "response_message_loading": ctype == 5,
            "response_message_ephemeral": bool(msg and msg.ephemeral)}}
        if shown:
            body["interaction"]["response_message_id"] = str(msg.id)
            body["resource"] = {"type": ctype, "message": self._message_json(msg)}
        return json_response(body)

    def _webhook_interaction(self, request: web.Request) -> tuple[Interaction | None, web.Response | None]:
        inter = self._by_token.get(request.match_info["token"])
        if inter is None or int(request.match_info["app"]) != self.app_id:
            return None, unknown("webhook")
        if inter.expired or time.time() - inter.created_at > self.interaction_token_ttl_s:
            return None, json_response(error_body(50027, "Invalid Webhook Token"), status=401)
        return inter, None

    async def _followup(self, request: web.Request) -> web.Response:
        inter, error = self._webhook_interaction(request)
        if error:
            return error
        if not inter.acknowledged:
            return unknown("webhook")
        payload, files = request[PAYLOAD], request[FILES]
        original = self._messages.get(inter.original_id) if inter.original_id else None
        if original is not None and original.loading:
            # Discord: the first followup after a "thinking" defer replaces the loading message.
            msg, error = original, self._edit_message(original, payload, files)
        else:
            msg, error = self._new_message(inter.channel_id, inter.guild_id, payload, files,
                                           interaction=inter)
        if error:
            return error
        inter.responses.append(InteractionResponse("followup", None, payload, msg.id, time.time()))
        return json_response(self._message_json(msg)) if request.query.get("wait") in _TRUE else no_content()

    async def _webhook_message(self, request: web.Request) -> web.Response:
        inter, error = self._webhook_interaction(request)
        if error:
            return error
        raw = request.match_info["mid"]
        msg_id = inter.original_id if raw == "@original" else (int(raw) if raw.isdigit() else None)
        msg = self._messages.get(msg_id) if msg_id else None
        if msg is None or msg.deleted or (msg.interaction_id != inter.id and msg_id != inter.original_id):
            return unknown("message")
        kind = "original" if msg_id == inter.original_id else "followup"
        if request.method == "GET":
            return json_response(self._message_json(msg))
        if request.method == "DELETE":
            msg.deleted = True
            inter.responses.append(InteractionResponse("delete_" + kind, None, {}, msg.id, time.time()))
            return no_content()
        if error := self._edit_message(msg, request[PAYLOAD], request[FILES]):
            return error
        inter.responses.append(InteractionResponse("edit_" + kind, None, request[PAYLOAD], msg.id,
                                                   time.time()))
        return json_response(self._message_json(msg))
