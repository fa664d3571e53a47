"""The edges of the platform in the fake Discord, as a mixin of FakeDiscord: the message nonce, the
per-channel limits on creates and edits (429s with Discord's headers), 30046 on old messages, and a
test's "stop right after storing this post" (the window where Discord has a message the bot never heard
about).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.discord_rest import json_response
from tests.fakes.discord_state import Message, error_body

OLD_MESSAGE_S = 3600.0  # Discord limits edits of messages older than this (30046)
TOO_MANY_OLD_EDITS = 30046


@dataclass
class _Stop:
    where: Callable[[Message], bool]
    then: Callable[[Message], Any] | None
    stored: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class PlatformEdges:
    """``self`` is the FakeDiscord. Knobs (tests turn them): ``channel_rate_limit`` = (requests, window
    s) for creates and, apart, for edits in each channel, None = unlimited; ``nonce_window_s``;
    ``old_message_edits_per_hour`` (None = never answer 30046)."""

    def _init_edges(self) -> None:
        self.channel_rate_limit: tuple[int, float] | None = None
        self.nonce_window_s = 300.0  # Discord: "the past few minutes"
        self.old_message_edits_per_hour: int | None = 3
        self.count_429 = 0
        self.nonce_hits = 0  # creates answered with the earlier message of the same nonce
        self._windows: dict[tuple[int, str], list[float]] = {}
        self._stops: list[_Stop] = []

    # ---- the nonce ----------------------------------------------------------------------------------

    def earlier_by_nonce(self, channel_id: int, author_id: int, payload: dict) -> Message | None:
        """With ``enforce_nonce``, the message the same author created in the same channel with the same
        nonce within the window; a deleted one does not count (a new create goes through)."""
        nonce = payload.get("nonce")
        if nonce is None or not payload.get("enforce_nonce"):
            return None
        since = time.time() - self.nonce_window_s
        found = [m for m in self._messages.values()
                 if m.channel_id == channel_id and m.author_id == author_id and m.nonce is not None
                 and str(m.nonce) == str(nonce) and m.created_at >= since and not m.deleted]
        if found:
            self.nonce_hits += 1
        return found[-1] if found else None

    # ---- stop after storing ---------------------------------------------------------------------------

    def stop_after_storing(self, where: Callable[[Message], bool],
                           then: Callable[[Message], Any] | None = None) -> asyncio.Future:
        """The next channel message created (not a nonce hit) for which ``where`` holds is stored, then
        ``then(message)`` runs (e.g. SIGKILL the bot process; it may be async), then the connection is
        dropped without an answer: Discord has the post, the bot never heard. Returns a future with it."""
        stop = _Stop(where, then)
        self._stops.append(stop)
        return stop.stored

    async def _after_store(self, msg: Message, request: web.Request) -> bool:
        """True when a stop took this message: the caller must not answer."""
        stop = next((s for s in self._stops if s.where(msg)), None)
        if stop is None:
            return False
        self._stops.remove(stop)
        if stop.then is not None:
            outcome = stop.then(msg)
            if inspect.isawaitable(outcome):
                await outcome
        if request.transport is not None:
            request.transport.abort()
        if not stop.stored.done():
            stop.stored.set_result(msg)
        return True

    # ---- 30046 -------------------------------------------------------------------------------------

    def _old_message_refusal(self, msg: Message) -> web.Response | None:
        """Discord caps edits of a message older than an hour: past the cap, 400 30046."""
        limit = self.old_message_edits_per_hour
        now = time.time()
        if limit is None or now - msg.created_at < OLD_MESSAGE_S:
            return None
        recent = [e for e in msg.edits if now - e.at < 3600.0 and e.at - msg.created_at >= OLD_MESSAGE_S]
        if len(recent) < limit:
            return None
        return json_response(error_body(TOO_MANY_OLD_EDITS, "Maximum number of edits to messages older than 1 hour "
                                                    "reached. Try again later"), status=400)

    # ---- per-channel limits ------------------------------------------------------------------------

    def _rate_limited(self, retry_after: float, *, limit: int, bucket: str, is_global: bool = False
                      ) -> web.Response:
        # Discord's 429: the body carries retry_after; Via tells discord.py it is not a Cloudflare ban.
        self.count_429 += 1
        retry_after = math.ceil(max(retry_after, 0.001) * 1000) / 1000
        headers = {
            "Via": "1.1 google", "Retry-After": str(math.ceil(retry_after)),
            "X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}", "X-RateLimit-Bucket": bucket,
            "X-RateLimit-Scope": "global" if is_global else "user",
        }
        body = {"message": "You are being rate limited.", "retry_after": retry_after,
                "global": is_global, "code": 0}
        return json_response(body, status=429, headers=headers)

    def _channel_limit(self, channel_id: int, method: str) -> tuple[web.Response | None, dict]:
        """Creates (POST) and edits (PATCH) each have their own window per channel, as on Discord;
        returns (a 429, or None) and the X-RateLimit-* headers of the answer."""
        limit, window = self.channel_rate_limit  # type: ignore[misc]
        bucket = f"fake-{'create' if method == 'POST' else 'edit'}-{channel_id}"
        now = asyncio.get_running_loop().time()
        state = self._windows.get((channel_id, method))
        if state is None or now >= state[0]:
            state = self._windows[(channel_id, method)] = [now + window, 0]
        reset_after = state[0] - now
        if state[1] >= limit:
            return self._rate_limited(reset_after, limit=limit, bucket=bucket), {}
        state[1] += 1
        return None, {
            "X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(int(limit - state[1])),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}", "X-RateLimit-Bucket": bucket,
        }
