"""The invite URL `klingbot doctor` prints: the scopes and exactly the channel permissions the bot
uses."""

from __future__ import annotations

from urllib.parse import urlencode

import discord

INVITE_BASE = "https://discord.com/oauth2/authorize"
INVITE_SCOPES = ("bot", "applications.commands")
# The channel permissions the bot uses, as discord.Permissions attribute names: see the channel
# (View Channel), post progress and results (Send Messages, also in threads), the result embed
# (Embed Links), the video files (Attach Files), and fetch its own progress message again to edit
# it after a restart (Read Message History). Nothing else: no admin, no manage permissions.
INVITE_PERMISSIONS = (
    "view_channel",
    "send_messages",
    "send_messages_in_threads",
    "embed_links",
    "attach_files",
    "read_message_history",
)


def invite_permissions() -> int:
    """The permissions bitfield for the invite URL."""
    return discord.Permissions(**{name: True for name in INVITE_PERMISSIONS}).value


def invite_url(application_id: int | str) -> str:
    query = urlencode({"client_id": str(application_id), "scope": " ".join(INVITE_SCOPES),
                       "permissions": str(invite_permissions())})
    return f"{INVITE_BASE}?{query}"
