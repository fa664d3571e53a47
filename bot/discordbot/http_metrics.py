"""Counts every Discord REST response (retried 429s included) for the metrics, through aiohttp's
trace hooks on discord.py's own session (``http_trace``): REST, interaction callbacks, followups
and ``@original`` edits all go through it. Labels are a fixed set of request kinds, never a path:
webhook and interaction URLs carry tokens. Each answer's headers also go to ``on_response`` (the
pacer reads Discord's rate-limit headers there)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import SimpleNamespace

import aiohttp
from yarl import URL

from bot.services.metrics import Metrics

_ID = r"\d+"
_TOKEN = r"[^/]+"
# (method or None for any, path pattern after the API version prefix, kind)
_ROUTES: tuple[tuple[str | None, re.Pattern[str], str], ...] = tuple(
    (method, re.compile(pattern), kind)
    for method, pattern, kind in (
        ("POST", rf"/interactions/{_ID}/{_TOKEN}/callback", "interaction_response"),
        ("PATCH", rf"/webhooks/{_ID}/{_TOKEN}/messages/@original", "interaction_edit"),
        ("DELETE", rf"/webhooks/{_ID}/{_TOKEN}/messages/@original", "interaction_delete"),
        ("POST", rf"/webhooks/{_ID}/{_TOKEN}", "followup_create"),
        ("PATCH", rf"/webhooks/{_ID}/{_TOKEN}/messages/{_ID}", "followup_edit"),
        ("POST", rf"/channels/{_ID}/messages", "message_create"),
        ("PATCH", rf"/channels/{_ID}/messages/{_ID}", "message_edit"),
        ("DELETE", rf"/channels/{_ID}/messages/{_ID}", "message_delete"),
        ("GET", rf"/channels/{_ID}/messages/{_ID}", "message_fetch"),
        ("POST", r"/users/@me/channels", "dm_open"),
        (None, rf"/applications/{_ID}(/guilds/{_ID})?/commands(/.*)?", "commands"),
        ("GET", r"/(users|oauth2/applications)/@me", "login"),
        ("GET", r"/gateway(/bot)?", "gateway"),
    )
)
_VERSION_PREFIX = re.compile(r"^/api/v\d+")

REQUEST_KINDS = tuple(dict.fromkeys(kind for _, _, kind in _ROUTES)) + ("other",)


def request_kind(method: str, url: str | URL) -> str:
    path = _VERSION_PREFIX.sub("", URL(str(url)).path) or "/"
    for route_method, pattern, kind in _ROUTES:
        if (route_method is None or route_method == method.upper()) and pattern.fullmatch(path):
            return kind
    return "other"


ResponseObserver = Callable[[str, str, Mapping[str, str]], None]  # (method, URL path, headers)


def discord_trace(metrics: Metrics, on_response: ResponseObserver | None = None) -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()

    async def on_end(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                     params: aiohttp.TraceRequestEndParams) -> None:
        status = params.response.status
        kind = "gateway" if status == 101 else request_kind(params.method, params.url)
        metrics.discord_request(kind, str(status))
        if on_response is not None:
            on_response(params.method, URL(str(params.url)).path, params.response.headers)

    async def on_exception(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                           params: aiohttp.TraceRequestExceptionParams) -> None:
        metrics.discord_request(request_kind(params.method, params.url), "error")

    trace.on_request_end.append(on_end)
    trace.on_request_exception.append(on_exception)
    trace.freeze()
    return trace
