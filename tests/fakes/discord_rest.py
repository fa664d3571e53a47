"""REST routes of the fake Discord (the ones discord.py calls for the bot), as a mixin of FakeDiscord.

Every JSON answer has Content-Type exactly ``application/json``: discord.py decodes nothing else.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakes.discord_state import (
    ATTACH_FILES,
    EMBED_LINKS,
    MANAGE_MESSAGES,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    UNKNOWN,
    VIEW_CHANNEL,
    Edit,
    Guild,
    Message,
    dm_channel_payload,
    error_body,
    guild_payload,
    image_size,
    iso,
    member_payload,
    member_permissions,
    notified,
    snowflake,
    validate_message,
)

if TYPE_CHECKING:
    from tests.fakes.discord_state import Interaction

# aiohttp >= 3.14 wants typed keys for request storage; older versions take plain strings.
_RequestKey = getattr(web, "RequestKey", None)
PAYLOAD = _RequestKey("fake_discord_payload", object) if _RequestKey else "fake_discord_payload"
FILES = _RequestKey("fake_discord_files", list) if _RequestKey else "fake_discord_files"



def json_response(body: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), status=status,
                        headers={**(headers or {}), "Content-Type": "application/json"})


def no_content() -> web.Response:
    return web.Response(status=204)


def unknown(what: str) -> web.Response:
    code, message = UNKNOWN[what]
    return json_response(error_body(code, message), status=404)


def forbidden(code: int = 50013, message: str = "Missing Permissions") -> web.Response:
    return json_response(error_body(code, message), status=403)


class RestRoutes:
    """Handlers; ``self`` is the FakeDiscord (state attributes are defined there)."""

    def _rest_routes(self, prefix: str) -> list:
        p = prefix
        return [
            web.get(p + "/users/@me", self._get_me),
            web.post(p + "/users/@me/channels", self._create_dm),
            web.get(p + "/users/{uid:\\d+}", self._get_user),
            web.get(p + "/oauth2/applications/@me", self._get_application),
            web.get(p + "/gateway", self._get_gateway),
            web.get(p + "/gateway/bot", self._get_gateway_bot),
            web.put(p + "/applications/{app:\\d+}/commands", self._put_commands),
            web.get(p + "/applications/{app:\\d+}/commands", self._get_commands),
            web.put(p + "/applications/{app:\\d+}/guilds/{gid:\\d+}/commands", self._put_commands),
            web.get(p + "/applications/{app:\\d+}/guilds/{gid:\\d+}/commands", self._get_commands),
            web.get(p + "/channels/{cid:\\d+}", self._get_channel),
            web.post(p + "/channels/{cid:\\d+}/typing", self._typing),
            web.get(p + "/channels/{cid:\\d+}/messages", self._history),
            web.post(p + "/channels/{cid:\\d+}/messages", self._post_message),
            web.get(p + "/channels/{cid:\\d+}/messages/{mid:\\d+}", self._get_message),
            web.patch(p + "/channels/{cid:\\d+}/messages/{mid:\\d+}", self._patch_message),
            web.delete(p + "/channels/{cid:\\d+}/messages/{mid:\\d+}", self._delete_message),
            web.get(p + "/guilds/{gid:\\d+}", self._get_guild),
            web.get(p + "/guilds/{gid:\\d+}/channels", self._get_guild_channels),
            web.get(p + "/guilds/{gid:\\d+}/roles", self._get_guild_roles),
            web.get(p + "/guilds/{gid:\\d+}/members/{uid:\\d+}", self._get_member),
            web.post(p + "/interactions/{iid:\\d+}/{token}/callback", self._callback),
            web.post(p + "/webhooks/{app:\\d+}/{token}", self._followup),
            web.get(p + "/webhooks/{app:\\d+}/{token}/messages/{mid}", self._webhook_message),
            web.patch(p + "/webhooks/{app:\\d+}/{token}/messages/{mid}", self._webhook_message),
            web.delete(p + "/webhooks/{app:\\d+}/{token}/messages/{mid}", self._webhook_message),
        ]

    # ---- shapes --------------------------------------------------------------------------------

    def _bot_user_json(self) -> dict:
        return {**self.users[self.bot_user_id], "verified": True, "mfa_enabled": False, "email": None}

    def _guild_json(self, guild: Guild, *, full: bool) -> dict:
        return guild_payload(guild, full=full, users=self.users)

    def _member_json(self, guild: Guild, user_id: int, *, permissions: int | None = None) -> dict:
        return member_payload(guild.members[user_id], self.users[user_id], permissions)

    def _bot_permissions(self, guild_id: int | None, channel_id: int | None = None) -> int:
        if guild_id is None:
            return VIEW_CHANNEL | SEND_MESSAGES | ATTACH_FILES | EMBED_LINKS | READ_MESSAGE_HISTORY
        if channel_id in self.denied_channels:
            return 0
        denied = self.channel_denies.get(channel_id, 0) if channel_id is not None else 0
        return member_permissions(self.guilds[guild_id], self.bot_user_id) & ~denied

    def _find_channel(self, channel_id: int) -> tuple[dict | None, int | None]:
        """(channel, guild id); guild id None for a DM channel."""
        for guild in self.guilds.values():
            if channel_id in guild.channels:
                return guild.channels[channel_id], guild.id
        return self.dm_channels.get(channel_id), None

    def _message_json(self, msg: Message) -> dict:
        out: dict[str, Any] = {
            "id": str(msg.id), "channel_id": str(msg.channel_id), "type": 0,
            "author": self.users.get(msg.author_id, self.users[self.bot_user_id]),
            "content": msg.content, "embeds": msg.embeds, "components": msg.components,
            "attachments": [{k: v for k, v in a.items() if k != "data"} for a in msg.attachments],
            "mentions": [self.users[u] for u in msg.notified_user_ids if u in self.users],
            "mention_roles": [str(r) for r in msg.notified_role_ids],
            "mention_everyone": msg.notified_everyone, "pinned": False, "tts": False,
            "timestamp": iso(msg.created_at),
            "edited_timestamp": iso(msg.edits[-1].at) if msg.edits else None, "flags": msg.flags,
        }
        if msg.nonce is not None:
            out["nonce"] = msg.nonce
        if msg.guild_id:
            out["guild_id"] = str(msg.guild_id)
        inter = self._interactions.get(msg.interaction_id) if msg.interaction_id else None
        if inter is not None:
            out.update(type=20 if inter.type == 2 else 19, webhook_id=str(self.app_id),
                       application_id=str(self.app_id),
                       interaction_metadata={"id": str(inter.id), "type": inter.type,
                                             "user": self.users[inter.user_id],
                                             "authorizing_integration_owners":
                                                 inter.payload["authorizing_integration_owners"]})
        return out

    # ---- users, application, gateway -----------------------------------------------------------

    async def _get_me(self, request: web.Request) -> web.Response:
        return json_response(self._bot_user_json())

    async def _get_user(self, request: web.Request) -> web.Response:
        user = self.users.get(int(request.match_info["uid"]))
        return json_response(user) if user else unknown("user")

    async def _create_dm(self, request: web.Request) -> web.Response:
        user_id = int(request[PAYLOAD].get("recipient_id", 0))
        if user_id not in self.users:
            return unknown("user")
        return json_response(self.dm_channel_for(user_id))

    def dm_channel_for(self, user_id: int) -> dict:
        """The DM channel between the bot and a user (created on first use)."""
        for channel in self.dm_channels.values():
            if int(channel["recipients"][0]["id"]) == user_id:
                return channel
        channel = dm_channel_payload(snowflake(), self.users[user_id])
        self.dm_channels[int(channel["id"])] = channel
        return channel

    async def _get_application(self, request: web.Request) -> web.Response:
        return json_response({
            "id": str(self.app_id), "name": self.bot_name, "icon": None, "description": "",
            "type": None, "bot": self._bot_user_json(), "bot_public": True,
            "bot_require_code_grant": False, "verify_key": "00" * 32, "flags": self.app_flags,
            "flags_new": str(self.app_flags), "redirect_uris": [], "interactions_endpoint_url": None,
            "role_connections_verification_url": None, "owner": self.users[self.bot_user_id],
            "team": None, "approximate_guild_count": len(self.guilds), "explicit_content_filter": 0,
            "rpc_origins": [], "tags": [], "install_params": None, "custom_install_url": None,
        })

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        return json_response({"url": self.gateway_url, "shards": 1, "session_start_limit": {
            "total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1}})

    # ---- application commands ------------------------------------------------------------------

    async def _put_commands(self, request: web.Request) -> web.Response:
        if int(request.match_info["app"]) != self.app_id:
            return forbidden(50001, "Missing Access")
        gid = int(request.match_info["gid"]) if "gid" in request.match_info else None
        if gid is not None and gid not in self.guilds:
            return unknown("guild")
        old = {c["name"]: c for c in self.commands.get(gid, [])}
        stored = []
        for cmd in request[PAYLOAD] or []:
            prev = old.get(cmd["name"])
            stored.append({**cmd, "id": prev["id"] if prev else str(snowflake()),
                           "application_id": str(self.app_id), "version": str(snowflake()),
                           "type": cmd.get("type", 1), "description": cmd.get("description", ""),
                           **({"guild_id": str(gid)} if gid else {})})
        self.commands[gid] = stored
        self.command_syncs.append((gid, request[PAYLOAD]))
        return json_response(stored)

    async def _get_commands(self, request: web.Request) -> web.Response:
        gid = int(request.match_info["gid"]) if "gid" in request.match_info else None
        return json_response(self.commands.get(gid, []))

    # ---- guilds ----------------------------------------------------------------------------------

    async def _get_guild(self, request: web.Request) -> web.Response:
        guild = self.guilds.get(int(request.match_info["gid"]))
        return json_response(self._guild_json(guild, full=False)) if guild else unknown("guild")

    async def _get_guild_channels(self, request: web.Request) -> web.Response:
        guild = self.guilds.get(int(request.match_info["gid"]))
        return json_response(list(guild.channels.values())) if guild else unknown("guild")

    async def _get_guild_roles(self, request: web.Request) -> web.Response:
        guild = self.guilds.get(int(request.match_info["gid"]))
        return json_response(list(guild.roles.values())) if guild else unknown("guild")

    async def _get_member(self, request: web.Request) -> web.Response:
        guild = self.guilds.get(int(request.match_info["gid"]))
        if guild is None:
            return unknown("guild")
        uid = int(request.match_info["uid"])
        return json_response(self._member_json(guild, uid)) if uid in guild.members else unknown("member")

    # ---- channels and messages -----------------------------------------------------------------

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel, _ = self._find_channel(int(request.match_info["cid"]))
        return json_response(channel) if channel else unknown("channel")

    async def _typing(self, request: web.Request) -> web.Response:
        channel, _ = self._find_channel(int(request.match_info["cid"]))
        return no_content() if channel else unknown("channel")

    def _channel_message(self, request: web.Request) -> tuple[Message | None, web.Response | None]:
        cid, mid = int(request.match_info["cid"]), int(request.match_info["mid"])
        channel, _ = self._find_channel(cid)
        if channel is None:
            return None, unknown("channel")
        msg = self._messages.get(mid)
        if msg is None or msg.deleted or msg.channel_id != cid or msg.ephemeral:
            return None, unknown("message")
        return msg, None

    async def _history(self, request: web.Request) -> web.Response:
        cid = int(request.match_info["cid"])
        if self._find_channel(cid)[0] is None:
            return unknown("channel")
        limit = min(int(request.query.get("limit", 50)), 100)
        found = [m for m in reversed(self.messages(cid)) if not m.deleted][:limit]
        return json_response([self._message_json(m) for m in found])

    async def _get_message(self, request: web.Request) -> web.Response:
        msg, error = self._channel_message(request)
        return error or json_response(self._message_json(msg))

    async def _post_message(self, request: web.Request) -> web.Response:
        cid = int(request.match_info["cid"])
        channel, guild_id = self._find_channel(cid)
        if channel is None:
            return unknown("channel")
        files = request[FILES]
        if guild_id is None:
            if int(channel["recipients"][0]["id"]) in self.dm_closed:
                return forbidden(50007, "Cannot send messages to this user")
        else:
            perms = self._bot_permissions(guild_id, cid)
            need = VIEW_CHANNEL | SEND_MESSAGES | (ATTACH_FILES if files else 0)
            if perms & need != need:
                return forbidden()
        earlier = self.earlier_by_nonce(cid, self.bot_user_id, request[PAYLOAD])
        if earlier is not None:  # Discord returns the message it already has and creates none
            return json_response(self._message_json(earlier))
        msg, error = self._new_message(cid, guild_id, request[PAYLOAD], files)
        if error:
            return error
        if await self._after_store(msg, request):
            return no_content()  # never reaches the bot: the connection is gone
        return json_response(self._message_json(msg))

    async def _patch_message(self, request: web.Request) -> web.Response:
        msg, error = self._channel_message(request)
        if error:
            return error
        if msg.author_id != self.bot_user_id:
            return forbidden(50005, "Cannot edit a message authored by another user")
        if msg.guild_id and not self._bot_permissions(msg.guild_id, msg.channel_id) & VIEW_CHANNEL:
            return forbidden()
        if refused := self._old_message_refusal(msg):
            return refused
        error = self._edit_message(msg, request[PAYLOAD], request[FILES])
        return error or json_response(self._message_json(msg))

    async def _delete_message(self, request: web.Request) -> web.Response:
        msg, error = self._channel_message(request)
        if error:
            return error
        if msg.author_id != self.bot_user_id and not (
                self._bot_permissions(msg.guild_id, msg.channel_id) & MANAGE_MESSAGES):
            return forbidden()
        msg.deleted = True
        return no_content()

    # ---- message bodies ----------------------------------------------------------------------------

    def _store_files(self, payload: dict, files: list[dict], guild_id: int | None
                     ) -> tuple[list[dict], web.Response | None]:
        limit = self.upload_limit(guild_id)
        if any(f["size"] > limit for f in files):
            return [], json_response(error_body(40005, "Request entity too large"), status=413)
        meta = {str(a.get("id")): a for a in payload.get("attachments") or []}
        out = []
        for f in files:
            extra = meta.get(str(f["index"]), {})
            aid, name = snowflake(), extra.get("filename") or f["filename"]
            url = f"{self.base_url}/attachments/{aid}/{name}"
            out.append({"id": str(aid), "filename": name, "size": f["size"], "url": url, "proxy_url": url,
                        "content_type": f["content_type"], "description": extra.get("description"),
                        "data": f["data"]})
            self._hosted[aid] = (name, f["data"], f["content_type"])
        return out, None

    def _new_message(self, channel_id: int, guild_id: int | None, payload: dict, files: list[dict], *,
                     interaction: Interaction | None = None, flags: int = 0
                     ) -> tuple[Message | None, web.Response | None]:
        problem = validate_message(payload, files, creating=not flags & 128)
        if problem:
            return None, json_response(problem, status=400)
        attachments, error = self._store_files(payload, files, guild_id)
        if error:
            return None, error
        allowed = payload.get("allowed_mentions")
        users, roles, everyone = notified(payload.get("content") or "", allowed)
        msg = Message(
            id=snowflake(), channel_id=channel_id, author_id=self.bot_user_id,
            content=payload.get("content") or "", embeds=payload.get("embeds") or [],
            components=payload.get("components") or [], allowed_mentions=allowed, attachments=attachments,
            flags=flags | (int(payload.get("flags") or 0) & 64), created=next(self._order),
            interaction_id=interaction.id if interaction else None, guild_id=guild_id,
            webhook_id=self.app_id if interaction else None, notified_user_ids=users,
            notified_role_ids=roles, notified_everyone=everyone, nonce=payload.get("nonce"),
        )
        self._messages[msg.id] = msg
        return msg, None

    def _edit_message(self, msg: Message, payload: dict, files: list[dict]) -> web.Response | None:
        problem = validate_message(payload, files, creating=False)
        if problem:
            return json_response(problem, status=400)
        new, error = self._store_files(payload, files, msg.guild_id)
        if error:
            return error
        if "content" in payload:
            msg.content = payload["content"] or ""
        if "embeds" in payload:
            msg.embeds = payload["embeds"] or []
        if "components" in payload:
            msg.components = payload["components"] or []
        if "allowed_mentions" in payload:
            msg.allowed_mentions = payload["allowed_mentions"]
        if "attachments" in payload:
            keep = {str(a.get("id")) for a in payload["attachments"] or []}
            msg.attachments = [a for a in msg.attachments if a["id"] in keep]
        msg.attachments += new
        msg.flags &= ~128  # an edit ends "thinking"
        msg.edits.append(Edit(msg.content, msg.embeds, msg.components, list(msg.attachments), payload,
                              time.time()))
        return None

    # ---- attachments CDN -------------------------------------------------------------------------

    def host_attachment(self, filename: str, data: bytes, content_type: str = "image/png", *,
                        width: int | None = None, height: int | None = None) -> dict:
        """Serve ``data`` like Discord's CDN; returns the attachment object for an interaction."""
        if width is None and content_type.startswith("image/"):
            width, height = image_size(data)
        aid = snowflake()
        url = f"{self.base_url}/attachments/{aid}/{filename}"
        self._hosted[aid] = (filename, data, content_type)
        obj = {"id": str(aid), "filename": filename, "size": len(data), "url": url, "proxy_url": url,
               "content_type": content_type, "width": width, "height": height, "ephemeral": True}
        self._attachment_objects[aid] = obj
        return obj

    async def _serve_attachment(self, request: web.Request) -> web.Response:
        aid = int(request.match_info["aid"])
        hosted = self._hosted.get(aid)
        if hosted is None or hosted[0] != request.match_info["filename"]:
            return web.Response(status=404, text="not found")
        self.attachment_downloads.append(aid)
        return web.Response(body=hosted[1], headers={"Content-Type": hosted[2]})

