"""Point discord.py at a Discord stand-in (a REST proxy, or the fake Discord in tests).

discord.py has no public option for either endpoint: REST goes to ``discord.http.Route.BASE`` (read
on every request, interaction callbacks and webhooks included) and a plain ``Client`` dials
``DiscordWebSocket.DEFAULT_GATEWAY`` without asking REST first. Both are class attributes, so this
changes them for the whole process; ``reset_discord_endpoints`` puts Discord's own back.

Reconnects: after READY discord.py resumes at the ``resume_gateway_url`` the gateway sent, and a
session invalidated with ``resume=False`` falls back to ``DEFAULT_GATEWAY``, i.e. the URL set here.
"""

from __future__ import annotations

import logging

import aiohttp
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route
from pydantic import SecretStr

from bot.errors import UserFacingError

log = logging.getLogger(__name__)

DISCORD_API_BASE = "https://discord.com/api/v10"
_DISCORD_GATEWAY = DiscordWebSocket.DEFAULT_GATEWAY
_GATEWAY_TIMEOUT_S = 15.0


def is_discord_api(api_base_url: str) -> bool:
    return api_base_url.rstrip("/") == DISCORD_API_BASE


def set_rest_base(api_base_url: str) -> None:
    """Send every discord.py REST call (bot token and interaction webhooks) to ``api_base_url``."""
    Route.BASE = api_base_url.rstrip("/")


async def fetch_gateway_url(api_base_url: str, token: SecretStr, trace: aiohttp.TraceConfig | None = None) -> str:
    """Ask ``GET {api_base_url}/gateway/bot`` where the gateway lives. The token is never logged."""
    url = api_base_url.rstrip("/") + "/gateway/bot"
    headers = {"Authorization": "Bot " + token.get_secret_value()}
    timeout = aiohttp.ClientTimeout(total=_GATEWAY_TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout, trace_configs=[trace] if trace else None) as session:
            async with session.get(url, headers=headers) as resp:
                if resp.status == 401:
                    raise UserFacingError(f"Discord at {api_base_url} rejected the bot token (401).")
                if resp.status != 200:
                    raise UserFacingError(
                        f"Could not get the gateway URL from {url}: HTTP {resp.status}."
                    )
                body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as exc:
        # The exception text names the URL only; headers (the token) are not part of it.
        raise UserFacingError(f"Could not reach {url}: {type(exc).__name__}.") from None
    gateway = body.get("url") if isinstance(body, dict) else None
    if not isinstance(gateway, str) or yarl.URL(gateway).scheme not in ("ws", "wss"):
        raise UserFacingError(f"{url} did not return a ws:// or wss:// gateway URL.")
    return gateway


def set_gateway(url: str) -> None:
    """Make discord.py's websocket dial ``url`` for new sessions (and after an invalidated one)."""
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)


def reset_discord_endpoints() -> None:
    """Restore Discord's own REST base and gateway (tests call this after a fake Discord)."""
    Route.BASE = DISCORD_API_BASE
    DiscordWebSocket.DEFAULT_GATEWAY = _DISCORD_GATEWAY


async def point_discord_at(api_base_url: str, token: SecretStr, trace: aiohttp.TraceConfig | None = None
                           ) -> str | None:
    """Aim discord.py at ``api_base_url`` and the gateway it names; a no-op for Discord's own API.
    ``trace`` sees the gateway request (the metrics count it like discord.py's own).

    Returns the gateway URL in use when it was changed, else None.
    """
    if is_discord_api(api_base_url):
        reset_discord_endpoints()
        return None
    set_rest_base(api_base_url)
    gateway = await fetch_gateway_url(api_base_url, token, trace)
    set_gateway(gateway)
    log.info("Discord REST at %s, gateway at %s", api_base_url.rstrip("/"), gateway)
    return gateway
