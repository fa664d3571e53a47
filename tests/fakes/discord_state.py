"""World state and records of the fake Discord: guilds, channels, roles, members, messages.

Payload builders here produce the JSON shapes Discord sends (checked against Discord's OpenAPI
description); the REST and gateway halves of the fake share them.
"""

from __future__ import annotations

import io
import itertools
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from PIL import Image

DISCORD_EPOCH_MS = 1_420_070_400_000
MIB = 1024 * 1024
DEFAULT_UPLOAD_LIMIT = 10 * MIB
TIER_UPLOAD_LIMITS = {0: 10 * MIB, 1: 10 * MIB, 2: 50 * MIB, 3: 100 * MIB}

# Permission bits used by the fake (Discord's values).
ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_EXTERNAL_EMOJIS = 1 << 18
USE_APPLICATION_COMMANDS = 1 << 31
SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = (1 << 51) - 1

EVERYONE_PERMISSIONS = (
    VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES | READ_MESSAGE_HISTORY | ADD_REACTIONS
    | USE_EXTERNAL_EMOJIS | USE_APPLICATION_COMMANDS | SEND_MESSAGES_IN_THREADS
)
BOT_PERMISSIONS = EVERYONE_PERMISSIONS | MANAGE_MESSAGES

DEFAULT_GUILD_ID = 1_100_000_000_000_000_001
DEFAULT_CHANNEL_ID = 1_100_000_000_000_000_002
DEFAULT_USER_ID = 1_100_000_000_000_000_003
DEFAULT_OWNER_ID = 1_100_000_000_000_000_004

# Default (code, message) per status for injected faults; 401 is the dead interaction token.
FAULT_DEFAULTS = {
    400: (50035, "Invalid Form Body"), 403: (50013, "Missing Permissions"),
    404: (10008, "Unknown Message"), 413: (40005, "Request entity too large"),
    401: (50027, "Invalid Webhook Token"), 429: (0, "You are being rate limited."),
    500: (0, "500: Internal Server Error"),
    502: (0, "502: Bad Gateway"), 503: (0, "503: Service Unavailable"),
}
UNKNOWN = {
    "channel": (10003, "Unknown Channel"), "guild": (10004, "Unknown Guild"),
    "member": (10007, "Unknown Member"), "message": (10008, "Unknown Message"),
    "user": (10013, "Unknown User"), "webhook": (10015, "Unknown Webhook"),
    "interaction": (10062, "Unknown interaction"),
}

_seq = itertools.count()
_last_snowflake = 0


def snowflake(at: float | None = None) -> int:
    """A unique, increasing snowflake whose timestamp is ``at`` (default: now)."""
    global _last_snowflake
    ms = int((time.time() if at is None else at) * 1000) - DISCORD_EPOCH_MS
    value = (ms << 22) | (next(_seq) & 0xFFF)
    if value <= _last_snowflake and at is None:
        value = _last_snowflake + 1
    _last_snowflake = max(_last_snowflake, value)
    return value


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def image_size(data: bytes) -> tuple[int | None, int | None]:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        return None, None


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    filesize_limit: int
    premium_tier: int = 0
    channels: dict[int, dict] = field(default_factory=dict)
    roles: dict[int, dict] = field(default_factory=dict)
    members: dict[int, dict] = field(default_factory=dict)  # user id -> member (without "user")
    bot_role_id: int = 0


@dataclass
class Edit:
    """One PATCH of a message: the state after it, what was sent, and when (time.time())."""

    content: str
    embeds: list
    components: list
    attachments: list[dict]
    payload: dict
    at: float


@dataclass
class Message:
    id: int
    channel_id: int
    author_id: int
    content: str
    embeds: list
    components: list
    allowed_mentions: dict | None
    attachments: list[dict]  # {id, filename, size, data, content_type, url, ...}
    flags: int = 0
    created: int = 0  # creation order across the whole fake
    created_at: float = field(default_factory=time.time)
    edits: list[Edit] = field(default_factory=list)
    deleted: bool = False
    interaction_id: int | None = None  # set for interaction responses and followups
    webhook_id: int | None = None
    guild_id: int | None = None
    nonce: str | int | None = None
    # Who the creation notified (an edit notifies no one).
    notified_user_ids: list[int] = field(default_factory=list)
    notified_role_ids: list[int] = field(default_factory=list)
    notified_everyone: bool = False

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & 64)

    @property
    def loading(self) -> bool:
        return bool(self.flags & 128)

    def custom_ids(self) -> list[str]:
        found: list[str] = []

        def walk(items: list) -> None:
            for item in items:
                if isinstance(item, dict):
                    if "custom_id" in item:
                        found.append(item["custom_id"])
                    walk(item.get("components", []))

        walk(self.components)
        return found


@dataclass
class InteractionResponse:
    """One thing the bot did with an interaction: kind is callback, edit_original, get_original,
    delete_original, followup, edit_followup or delete_followup."""

    kind: str
    type: int | None  # the callback type (5 = deferred), None for webhook calls
    data: dict
    message_id: int | None
    at: float

    @property
    def flags(self) -> int:
        return int((self.data or {}).get("flags") or 0)


@dataclass
class Interaction:
    id: int
    token: str
    type: int
    channel_id: int
    guild_id: int | None
    user_id: int
    created_at: float
    payload: dict
    acknowledged: bool = False
    callback_type: int | None = None
    expired: bool = False
    original_id: int | None = None
    responses: list[InteractionResponse] = field(default_factory=list)


@dataclass
class Call:
    method: str
    path: str  # below the API base, e.g. /channels/1/messages
    query: dict
    status: int = 0
    payload: Any = None
    files: list[dict] = field(default_factory=list)
    at: float = field(default_factory=time.time)


@dataclass
class Fault:
    """An error the fake answers instead of handling a request (``FakeDiscord.fail_next``)."""

    method: str
    pattern: re.Pattern
    status: int
    code: int
    message: str
    remaining: int
    retry_after: float

    @classmethod
    def make(cls, method: str, path_regex: str, status: int, code: int | None, message: str | None,
             count: int, retry_after: float) -> Fault:
        default_code, default_message = FAULT_DEFAULTS.get(status, (0, f"{status}: Error"))
        return cls(method.upper(), re.compile(path_regex), status, default_code if code is None else code,
                   message or default_message, count, retry_after)

    def matches(self, method: str, path: str) -> bool:
        return self.remaining > 0 and self.method in ("*", method) and bool(self.pattern.search(path))


# ---- payloads ------------------------------------------------------------------------------


def user_payload(user_id: int, name: str, *, bot: bool = False) -> dict:
    return {
        "id": str(user_id), "username": name, "global_name": None if bot else name,
        "discriminator": "0", "avatar": None, "public_flags": 0, "flags": 0, "bot": bot,
        "banner": None, "accent_color": None, "avatar_decoration_data": None, "primary_guild": None,
    }


def member_payload(member: dict, user: dict | None = None, permissions: int | None = None) -> dict:
    out = {
        "roles": [str(r) for r in member["roles"]], "joined_at": member["joined_at"], "nick": None,
        "avatar": None, "banner": None, "deaf": False, "mute": False, "flags": 0, "pending": False,
        "premium_since": None, "communication_disabled_until": None,
    }
    if user is not None:
        out["user"] = user
    if permissions is not None:
        out["permissions"] = str(permissions)
    return out


def role_payload(role_id: int, name: str, permissions: int, position: int, *, managed: bool = False,
                 bot_id: int | None = None) -> dict:
    role = {
        "id": str(role_id), "name": name, "permissions": str(permissions), "position": position,
        "color": 0, "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False, "managed": managed, "mentionable": False, "icon": None, "unicode_emoji": None,
        "flags": 0,
    }
    if bot_id is not None:
        role["tags"] = {"bot_id": str(bot_id)}
    return role


def text_channel_payload(channel_id: int, guild_id: int, name: str, position: int) -> dict:
    return {
        "id": str(channel_id), "type": 0, "guild_id": str(guild_id), "name": name,
        "position": position, "permission_overwrites": [], "nsfw": False, "topic": None,
        "last_message_id": None, "rate_limit_per_user": 0, "parent_id": None, "flags": 0,
    }


def dm_channel_payload(channel_id: int, recipient: dict) -> dict:
    return {"id": str(channel_id), "type": 1, "flags": 0, "last_message_id": None,
            "recipients": [recipient]}


def guild_payload(guild: Guild, *, full: bool, users: dict[int, dict]) -> dict:
    """The guild object; ``full`` adds what GUILD_CREATE carries (channels, members...)."""
    out: dict[str, Any] = {
        "id": str(guild.id), "name": guild.name, "icon": None, "description": None, "splash": None,
        "discovery_splash": None, "banner": None, "home_header": None, "features": [],
        "owner_id": str(guild.owner_id), "application_id": None, "region": "deprecated",
        "afk_channel_id": None, "afk_timeout": 300, "system_channel_id": None, "system_channel_flags": 0,
        "widget_enabled": False, "widget_channel_id": None, "verification_level": 0,
        "roles": list(guild.roles.values()), "default_message_notifications": 0, "mfa_level": 0,
        "explicit_content_filter": 0, "max_presences": None, "max_members": 500000,
        "max_stage_video_channel_users": 50, "max_video_channel_users": 25, "vanity_url_code": None,
        "premium_tier": guild.premium_tier, "premium_subscription_count": 0, "preferred_locale": "en-US",
        "rules_channel_id": None, "safety_alerts_channel_id": None, "public_updates_channel_id": None,
        "premium_progress_bar_enabled": False, "nsfw": False, "nsfw_level": 0, "emojis": [],
        "stickers": [], "incidents_data": None,
    }
    if full:
        out.update({
            "joined_at": iso_now(), "large": False, "unavailable": False,
            "member_count": len(guild.members), "voice_states": [], "presences": [], "threads": [],
            "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
            "channels": list(guild.channels.values()),
            "members": [member_payload(m, users[uid]) for uid, m in guild.members.items()],
        })
    return out


# ---- rules Discord applies ------------------------------------------------------------------


def member_permissions(guild: Guild, user_id: int) -> int:
    """Guild-level permissions of a member (no channel overwrites in the fake)."""
    if user_id == guild.owner_id:
        return ALL_PERMISSIONS
    member = guild.members.get(user_id)
    perms = int(guild.roles[guild.id]["permissions"])
    for role_id in (member or {}).get("roles", ()):
        role = guild.roles.get(int(role_id))
        if role is not None:
            perms |= int(role["permissions"])
    return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms


_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


def notified(content: str, allowed: dict | None, *, reply_to_author: int | None = None
             ) -> tuple[list[int], list[int], bool]:
    """Who a new message's mentions notify, after ``allowed_mentions`` (Discord's rules)."""
    users = [int(u) for u in _USER_MENTION.findall(content)]
    roles = [int(r) for r in _ROLE_MENTION.findall(content)]
    everyone = "@everyone" in content or "@here" in content
    if allowed is None:
        out_users, out_roles, out_everyone = users, roles, everyone
    else:
        parse = allowed.get("parse") or []
        allow_users = {int(u) for u in allowed.get("users") or []}
        allow_roles = {int(r) for r in allowed.get("roles") or []}
        out_users = [u for u in users if "users" in parse or u in allow_users]
        out_roles = [r for r in roles if "roles" in parse or r in allow_roles]
        out_everyone = everyone and "everyone" in parse
        if reply_to_author is not None and allowed.get("replied_user"):
            out_users.append(reply_to_author)
    return sorted(set(out_users)), sorted(set(out_roles)), out_everyone


def form_error(field_path: str, code: str, message: str) -> dict:
    """Discord's 400 50035 body naming one field."""
    node: dict = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(field_path.split(".")):
        node = {part: node}
    return {"code": 50035, "message": "Invalid Form Body", "errors": node}


def validate_message(payload: dict, files: list[dict], *, creating: bool) -> dict | None:
    """Rules Discord applies to a message beyond its schema (discord_schema.py checks that and the
    documented size limits before a handler runs); returns an error body or None."""
    if creating and not (payload.get("content") or payload.get("embeds") or files or payload.get("components")
                         or payload.get("attachments")):
        return {"code": 50006, "message": "Cannot send an empty message"}
    return None


def error_body(code: int, message: str) -> dict:
    return {"code": code, "message": message}


def command_schema(commands: dict[int | None, list[dict]], path: list[str], guild_id: int | None
                   ) -> tuple[dict | None, dict[str, int], int | None]:
    """The registered chat command for ``path``, its leaf options' types by name, and the guild it is
    registered in (None = global); guild commands win, as on Discord."""
    for gid in (guild_id, None) if guild_id else (None,):
        for cmd in commands.get(gid, []):
            if cmd["name"] != path[0] or cmd.get("type", 1) != 1:
                continue
            node: dict | None = cmd
            for sub in path[1:]:
                node = next((o for o in (node or {}).get("options", [])
                             if o["name"] == sub and o["type"] in (1, 2)), None)
            options = (node or {}).get("options", [])
            return cmd, {o["name"]: o["type"] for o in options if o["type"] not in (1, 2)}, gid
    return None, {}, None
