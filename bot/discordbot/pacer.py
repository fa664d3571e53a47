"""Per-channel pacing of Discord writes (SPEC 3.4).

Discord allows about 5 message creates and 5 edits per 5 s per channel, counted apart, and
discord.py's own limiter still lets bursts land in a fresh rate-limit window, so the bot spaces its
own writes: each channel has two lanes, creates and edits, one write at a time each, and neither
waits for the other. A lane paces by Discord's own account of its bucket once it has one (the
X-RateLimit-Remaining and -Reset-After headers of the lane's last answer, handed in through
``observe_response``): Discord counts fixed windows, so a lane may spend what the window has left and
start again the moment it resets, and writes of other processes on the same token are counted too.
Until an answer has carried those headers (a proxy may strip them), every lane keeps at most
``limit`` starts in any ``window_s``; then a lane not heard from yet starts as a fresh window. Work is keyed: a newer
submission with the key of one still waiting replaces it (only the newest render of a message is
ever sent), and urgent work (a result, a failure notice) goes before routine work (progress). No
discord import: the work items are plain coroutines.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

URGENT = 0
ROUTINE = 1
CREATE = "create"
EDIT = "edit"

Lane = tuple[int, str]  # (channel id, CREATE | EDIT)
RESET_MARGIN_S = 0.05  # start a little after Discord's window resets, not at the edge
MAX_IDLE_BUCKETS = 1000  # past this many remembered buckets, the expired ones are forgotten

# A channel message create or edit, after the API version prefix of the path.
_WRITE_PATHS = ((re.compile(r"(?:/api/v\d+)?/channels/(\d+)/messages"), "POST", CREATE),
                (re.compile(r"(?:/api/v\d+)?/channels/(\d+)/messages/\d+"), "PATCH", EDIT))


def lane_of(method: str, path: str) -> Lane | None:
    """The lane a REST request writes to, or None when it is not a channel message create or edit."""
    for pattern, lane_method, kind in _WRITE_PATHS:
        match = pattern.fullmatch(path)
        if match and method.upper() == lane_method:
            return int(match.group(1)), kind
    return None


class SlidingWindow:
    """At most ``limit`` events in any window of ``window_s`` seconds. Pure: time is passed in."""

    def __init__(self, limit: int, window_s: float) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._starts: deque[float] = deque()

    def _forget(self, now: float) -> None:
        while self._starts and self._starts[0] <= now - self.window_s:
            self._starts.popleft()

    def delay(self, now: float) -> float:
        """Seconds to wait from ``now`` before the next event may start (0 = now)."""
        self._forget(now)
        if len(self._starts) < self.limit:
            return 0.0
        return max(0.0, self._starts[0] + self.window_s - now)

    def record(self, now: float) -> None:
        self._forget(now)
        self._starts.append(now)

    @property
    def idle(self) -> bool:
        return not self._starts


class BucketWindow:
    """Discord's account of one bucket: how many writes its current window has left and when it
    resets (local monotonic time). Pure: time is passed in."""

    def __init__(self, fallback_window_s: float, limit: int = 1) -> None:
        self.remaining = 0
        self.reset_at = float("-inf")  # no window open at Discord that we know of
        self.fallback_window_s = fallback_window_s
        self.limit = max(limit, 1)

    def observe(self, now: float, *, limit: int, remaining: int, reset_after_s: float) -> None:
        self.limit = max(limit, 1)
        self.remaining = max(remaining, 0)
        self.reset_at = now + max(reset_after_s, 0.0) + RESET_MARGIN_S

    def delay(self, now: float) -> float:
        if now >= self.reset_at or self.remaining > 0:
            return 0.0
        return self.reset_at - now

    def record(self, now: float) -> None:
        """A write starts: it spends one of the window's slots; past a reset it opens a new window
        (the answer's headers replace this guess)."""
        if now >= self.reset_at:
            self.remaining, self.reset_at = self.limit, now + self.fallback_window_s
        self.remaining = max(self.remaining - 1, 0)

    def expired(self, now: float) -> bool:
        return now >= self.reset_at


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass
class _Item:
    seq: int
    key: Hashable | None
    priority: int
    not_before: float
    work: Callable[[], Awaitable[Any]]
    future: asyncio.Future[Any] = field(repr=False)


class ChannelPacer:
    """Runs keyed work per channel lane (creates, edits), spaced by a SlidingWindow, one item at a
    time per lane.

    ``clock`` and ``sleep`` are injectable so the schedule can be tested without real time."""

    def __init__(
        self,
        *,
        limit: int = 5,
        window_s: float = 5.5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._seq = itertools.count()
        self._queues: dict[Lane, list[_Item]] = {}
        self._windows: dict[Lane, SlidingWindow] = {}
        self._buckets: dict[Lane, BucketWindow] = {}  # lanes Discord has told us about
        self._server_limit: int | None = None  # X-RateLimit-Limit of the last answer; None: no headers yet
        self._workers: dict[Lane, asyncio.Task[None]] = {}
        self._wake: dict[Lane, asyncio.Event] = {}
        self._closed = False
        self.started = 0  # work items started, all channels (tests and the bench read it)

    def pending(self, channel_id: int) -> int:
        return sum(len(self._queues.get((channel_id, kind), ())) for kind in (CREATE, EDIT))

    def remembered_buckets(self) -> int:
        """How many lanes' Discord windows are remembered (tests look at it)."""
        return len(self._buckets)

    def waiting(self, channel_id: int, kind: str) -> list[_Item]:
        """The items waiting in one lane (tests look at them)."""
        return list(self._queues.get((channel_id, kind), ()))

    def discard(self, channel_id: int, key: Hashable, kind: str) -> bool:
        """Drop the waiting item with ``key`` from a lane (its callers see CancelledError); False when
        none waits. A progress message not created yet when its job finished is never created."""
        queue = self._queues.get((channel_id, kind)) or []
        for item in queue:
            if item.key == key:
                queue.remove(item)
                item.future.cancel()
                self._poke((channel_id, kind))
                return True
        return False

    def submit(
        self,
        channel_id: int,
        work: Callable[[], Awaitable[Any]],
        *,
        key: Hashable | None = None,
        priority: int = ROUTINE,
        not_before: float | None = None,
        kind: str = CREATE,
    ) -> asyncio.Future[Any]:
        """Queue ``work`` (a message create, or with ``kind=EDIT`` an edit) for ``channel_id``;
        returns a future for its result.

        With a ``key`` already waiting in that lane, the waiting item takes the new work (and the
        earlier of the two start times and the more urgent priority); both callers get the result
        of the one call that runs."""
        if self._closed:
            raise RuntimeError("pacer is closed")
        if kind not in (CREATE, EDIT):
            raise ValueError(f"kind must be {CREATE!r} or {EDIT!r}, not {kind!r}")
        loop = asyncio.get_running_loop()
        when = self._clock() if not_before is None else not_before
        lane = (channel_id, kind)
        queue = self._queues.setdefault(lane, [])
        if key is not None:
            for item in queue:
                if item.key == key:
                    item.work = work
                    item.not_before = min(item.not_before, when)
                    item.priority = min(item.priority, priority)
                    self._poke(lane)
                    return item.future
        item = _Item(next(self._seq), key, priority, when, work, loop.create_future())
        queue.append(item)
        self._poke(lane)
        worker = self._workers.get(lane)
        if worker is None or worker.done():
            self._workers[lane] = loop.create_task(self._drain(lane), name=f"pacer-{channel_id}-{kind}")
        return item.future

    async def run(self, channel_id: int, work: Callable[[], Awaitable[Any]], **kwargs: Any) -> Any:
        """submit() and wait for the result (exceptions of the work are raised here)."""
        return await self.submit(channel_id, work, **kwargs)

    def observe_response(self, method: str, path: str, headers: Mapping[str, str]) -> None:
        """Take Discord's rate-limit headers of one REST answer (any write on the token, paced here
        or not); answers without them, or to other routes, change nothing."""
        lane = lane_of(method, path)
        if lane is None:
            return
        remaining = _header_number(headers, "X-RateLimit-Remaining")
        reset_after = _header_number(headers, "X-RateLimit-Reset-After")
        if remaining is None or reset_after is None:
            return
        limit = _header_number(headers, "X-RateLimit-Limit") or remaining + 1
        now = self._clock()
        if len(self._buckets) >= MAX_IDLE_BUCKETS:  # writes outside the pacer (DMs...) leave buckets behind
            for stale in [k for k, b in self._buckets.items() if b.expired(now) and k not in self._workers]:
                del self._buckets[stale]
        if self._server_limit is None:
            # Discord sends its count with every answer: from now on every lane paces by it (a lane
            # not heard from yet starts as a fresh window), and the guess's starts are dropped, also
            # those of work that made no request.
            self._windows.clear()
            for waiting in list(self._wake):
                self._poke(waiting)
        self._server_limit = int(limit)
        bucket = self._buckets.setdefault(lane, BucketWindow(self.window_s, self._server_limit))
        bucket.observe(now, limit=int(limit), remaining=int(remaining), reset_after_s=reset_after)
        self._poke(lane)

    def _window(self, lane: Lane) -> SlidingWindow | BucketWindow:
        bucket = self._buckets.get(lane)
        if bucket is None and self._server_limit is not None:
            bucket = self._buckets[lane] = BucketWindow(self.window_s, self._server_limit)
        if bucket is not None:
            return bucket
        return self._windows.setdefault(lane, SlidingWindow(self.limit, self.window_s))

    def _poke(self, lane: Lane) -> None:
        event = self._wake.get(lane)
        if event is not None:
            event.set()

    def next_item(self, lane: Lane, now: float) -> tuple[_Item | None, float]:
        """The item to start now in a lane, or None and how long to wait. Pure scheduling
        decision: among items whose time has come, the most urgent, then the oldest."""
        queue = self._queues.get(lane) or []
        if not queue:
            return None, 0.0
        window = self._window(lane)
        ready = [item for item in queue if item.not_before <= now]
        if not ready:
            return None, min(item.not_before for item in queue) - now
        wait = window.delay(now)
        if wait > 0:
            return None, wait
        return min(ready, key=lambda item: (item.priority, item.seq)), 0.0

    async def _drain(self, lane: Lane) -> None:
        wake = self._wake.setdefault(lane, asyncio.Event())
        try:
            while self._queues.get(lane):
                wake.clear()
                now = self._clock()
                item, wait = self.next_item(lane, now)
                if item is None:
                    await self._wait(wait, wake)
                    continue
                self._queues[lane].remove(item)
                if item.future.cancelled():
                    continue
                self._window(lane).record(now)
                self.started += 1
                try:
                    result = await item.work()
                except Exception as exc:  # handed to the caller through the future
                    if not item.future.done():
                        item.future.set_exception(exc)
                else:
                    if not item.future.done():
                        item.future.set_result(result)
        finally:
            self._workers.pop(lane, None)
            self._wake.pop(lane, None)
            if not self._queues.get(lane):
                self._queues.pop(lane, None)
                window = self._windows.get(lane)
                if window is not None and window.idle:
                    self._windows.pop(lane, None)
                bucket = self._buckets.get(lane)
                if bucket is not None and bucket.expired(self._clock()):
                    self._buckets.pop(lane, None)  # a fresh window at Discord: nothing to remember

    async def _wait(self, seconds: float, wake: asyncio.Event) -> None:
        """Sleep ``seconds`` (through the injected sleep) unless new work arrives first."""
        sleeper = asyncio.ensure_future(self._sleep(max(seconds, 0.0)))
        waiter = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waiter):
                task.cancel()

    async def close(self) -> None:
        """Stop: waiting work is dropped (its callers see CancelledError); running work finishes."""
        self._closed = True
        for queue in self._queues.values():
            for item in queue:
                item.future.cancel()
            queue.clear()
        workers = list(self._workers.values())
        for event in self._wake.values():
            event.set()
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)
