"""The per-channel pacer: spacing, coalescing, priorities, with an injected clock (no real waiting)."""

from __future__ import annotations

import asyncio

import pytest

from bot.discordbot.pacer import (
    CREATE,
    EDIT,
    MAX_IDLE_BUCKETS,
    RESET_MARGIN_S,
    ROUTINE,
    URGENT,
    BucketWindow,
    ChannelPacer,
    SlidingWindow,
    lane_of,
)


class FakeTime:
    """Virtual time: sleepers wait until ``advance`` moves the clock past their deadline."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        try:
            await future
        finally:
            self._sleepers = [(d, f) for d, f in self._sleepers if f is not future]

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    async def run_until_done(self, *futures: asyncio.Future) -> None:
        """Let everything runnable run; when all wait, jump the clock to the next sleeper."""
        for _ in range(1000):
            await self.settle()
            if all(f.done() for f in futures):
                return
            live = [(d, f) for d, f in self._sleepers if not f.done()]
            assert live, "deadlock: nothing sleeps and the work is not done"
            deadline = min(d for d, _ in live)
            self.now = max(self.now, deadline)
            for d, f in live:
                if d <= self.now:
                    f.set_result(None)
        raise AssertionError("did not finish")


def make(limit: int = 5, window_s: float = 5.0) -> tuple[ChannelPacer, FakeTime]:
    t = FakeTime()
    return ChannelPacer(limit=limit, window_s=window_s, clock=t.clock, sleep=t.sleep), t


async def gather(t: FakeTime, *futures: asyncio.Future) -> list:
    await t.run_until_done(*futures)
    return [f.result() for f in futures]


def test_sliding_window_allows_limit_then_waits_for_the_oldest_to_age_out():
    w = SlidingWindow(3, 5.0)
    for at in (0.0, 1.0, 2.0):
        assert w.delay(at) == 0
        w.record(at)
    assert w.delay(2.5) == pytest.approx(2.5)  # the start at 0.0 leaves the window at 5.0
    assert w.delay(5.0) == 0
    w.record(5.0)
    assert w.delay(5.5) == pytest.approx(0.5)  # now the start at 1.0 is the oldest


def test_sliding_window_rejects_nonsense():
    with pytest.raises(ValueError):
        SlidingWindow(0, 5.0)
    with pytest.raises(ValueError):
        SlidingWindow(5, 0)


async def test_no_more_than_limit_starts_in_any_window_per_channel():
    pacer, t = make(limit=5, window_s=5.0)
    starts: list[float] = []

    async def work() -> None:
        starts.append(t.now)

    await gather(t, *(pacer.submit(1, work) for _ in range(12)))
    assert len(starts) == 12
    for i in range(len(starts) - 5):
        assert starts[i + 5] - starts[i] >= 5.0 - 1e-9, starts
    # The first five go at once; nothing waits longer than it must.
    assert starts[:5] == [1000.0] * 5
    assert starts[5] == pytest.approx(1005.0)


async def test_channels_are_paced_independently():
    pacer, t = make(limit=1, window_s=5.0)
    seen: list[tuple[int, float]] = []

    def work(ch: int):
        async def go() -> None:
            seen.append((ch, t.now))
        return go

    await gather(t, pacer.submit(1, work(1)), pacer.submit(2, work(2)))
    assert sorted(seen) == [(1, 1000.0), (2, 1000.0)]


async def test_same_key_waiting_is_coalesced_to_the_newest_work():
    pacer, t = make(limit=1, window_s=5.0)
    ran: list[str] = []

    def work(name: str):
        async def go() -> str:
            ran.append(name)
            return name
        return go

    first = pacer.submit(1, work("a"))              # starts at once
    r1 = pacer.submit(1, work("edit-1"), key="m")   # waits for the window...
    r2 = pacer.submit(1, work("edit-2"), key="m")   # ...and is replaced by this one
    r3 = pacer.submit(1, work("edit-3"), key="m")
    assert r1 is r2 is r3
    assert await gather(t, first, r3) == ["a", "edit-3"]
    assert ran == ["a", "edit-3"]


async def test_urgent_work_goes_before_routine_work_already_waiting():
    pacer, t = make(limit=1, window_s=5.0)
    ran: list[str] = []

    def work(name: str):
        async def go() -> None:
            ran.append(name)
        return go

    futures = [pacer.submit(1, work("first"))]
    futures += [pacer.submit(1, work(f"progress-{i}"), key=i, priority=ROUTINE) for i in range(3)]
    futures.append(pacer.submit(1, work("delivery"), priority=URGENT))
    await gather(t, *futures)
    # All were waiting when the worker first looked: the delivery goes first, then the rest in order.
    assert ran == ["delivery", "first", "progress-0", "progress-1", "progress-2"]
    more = [pacer.submit(1, work(f"late-progress-{i}"), key=i) for i in range(2)]
    more.append(pacer.submit(1, work("late-delivery"), priority=URGENT))
    await gather(t, *more)
    assert ran[5:] == ["late-delivery", "late-progress-0", "late-progress-1"]


async def test_not_before_delays_an_item_and_new_work_wakes_the_worker():
    pacer, t = make(limit=5, window_s=5.0)
    ran: list[tuple[str, float]] = []

    def work(name: str):
        async def go() -> None:
            ran.append((name, t.now))
        return go

    later = pacer.submit(1, work("later"), not_before=t.now + 8.0)
    await t.settle()  # the worker now sleeps until the item is due
    now = pacer.submit(1, work("now"))
    await gather(t, later, now)
    names = [n for n, _ in ran]
    assert names == ["now", "later"]
    assert dict(ran) == {"now": 1000.0, "later": 1008.0}


async def test_errors_reach_the_caller_and_do_not_stop_the_channel():
    pacer, _ = make()

    async def boom() -> None:
        raise RuntimeError("discord said no")

    async def fine() -> str:
        return "ok"

    bad = pacer.submit(1, boom)
    good = pacer.submit(1, fine)
    with pytest.raises(RuntimeError, match="discord said no"):
        await bad
    assert await good == "ok"


async def test_close_cancels_waiting_work():
    pacer, _ = make(limit=1, window_s=5.0)
    gate = asyncio.Event()

    async def slow() -> None:
        await gate.wait()

    async def never() -> None:  # pragma: no cover - must not run
        raise AssertionError("ran after close")

    running = pacer.submit(1, slow)
    waiting = pacer.submit(1, never)
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(pacer.close())
    await asyncio.sleep(0)
    gate.set()
    await closing
    assert waiting.cancelled()
    await running
    with pytest.raises(RuntimeError):
        pacer.submit(1, slow)


async def test_creates_and_edits_are_paced_apart_and_neither_waits_for_the_other():
    pacer, t = make(limit=1, window_s=5.0)
    starts: list[tuple[str, float]] = []

    def work(name: str):
        async def go() -> None:
            starts.append((name, t.now))
        return go

    futures = [pacer.submit(1, work("create-1"), kind=CREATE), pacer.submit(1, work("edit-1"), kind=EDIT),
               pacer.submit(1, work("create-2"), kind=CREATE), pacer.submit(1, work("edit-2"), kind=EDIT)]
    await gather(t, *futures)
    when = dict(starts)
    assert when["create-1"] == when["edit-1"] == 1000.0  # one of each at once: two windows
    assert when["create-2"] == when["edit-2"] == 1005.0
    with pytest.raises(ValueError):
        pacer.submit(1, work("x"), kind="delete")


async def test_a_waiting_item_can_be_discarded_and_its_slot_is_not_spent():
    pacer, t = make(limit=1, window_s=5.0)
    ran: list[str] = []

    def work(name: str):
        async def go() -> None:
            ran.append(name)
        return go

    first = pacer.submit(1, work("result-1"), priority=URGENT)
    dropped = pacer.submit(1, work("progress"), key=("progress", 7))
    result = pacer.submit(1, work("result-2"), priority=URGENT)
    assert pacer.discard(1, ("progress", 7), CREATE)
    assert not pacer.discard(1, ("progress", 7), CREATE) and not pacer.discard(1, ("progress", 8), EDIT)
    await gather(t, first, result)
    assert dropped.cancelled() and ran == ["result-1", "result-2"]
    assert t.now == 1005.0  # the discarded item took no window slot


def test_lane_of_knows_channel_message_creates_and_edits_only():
    assert lane_of("POST", "/api/v10/channels/42/messages") == (42, CREATE)
    assert lane_of("patch", "/api/v10/channels/42/messages/7") == (42, EDIT)
    assert lane_of("DELETE", "/api/v10/channels/42/messages/7") is None
    assert lane_of("GET", "/api/v10/channels/42/messages/7") is None
    assert lane_of("POST", "/api/v10/webhooks/1/token") is None
    assert lane_of("POST", "/api/v10/interactions/1/token/callback") is None


def _headers(remaining: int, reset_after: float, limit: int = 5) -> dict[str, str]:
    return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset-After": f"{reset_after:.3f}", "X-RateLimit-Bucket": "abc"}


async def test_a_lane_spends_what_discords_window_has_left_and_starts_again_at_its_reset():
    """Discord counts fixed windows: with its headers the lane sends its 5 and, the moment the window
    resets, 5 more, where a sliding window of 5.5 s would hold the 6th to 10th back."""
    pacer, t = make(limit=5, window_s=5.5)
    opened: list[float] = []
    starts: list[float] = []

    def work(n: int):
        async def go() -> None:
            starts.append(t.now)
            if not opened or t.now >= opened[-1] + 5.0:
                opened.append(t.now)  # Discord opens a window at the first write after a reset
            used = sum(1 for s in starts if s >= opened[-1])
            pacer.observe_response("POST", "/api/v10/channels/1/messages",
                                   _headers(5 - used, opened[-1] + 5.0 - t.now))
            t.now += 0.1  # each write takes a while
        return go

    await gather(t, *(pacer.submit(1, work(n)) for n in range(10)))
    assert starts[:5] == pytest.approx([1000.0, 1000.1, 1000.2, 1000.3, 1000.4])
    # The 6th waits for the reset Discord announced (+ a small margin), not for 1000.0 + 5.5.
    assert starts[5] == pytest.approx(1005.0 + RESET_MARGIN_S)
    assert starts[9] - starts[5] == pytest.approx(0.4)


async def test_a_lane_holds_writes_when_discord_says_none_are_left_even_from_another_process():
    pacer, t = make(limit=5, window_s=5.5)
    # Another process on the same token spent this window: an answer seen says so.
    pacer.observe_response("POST", "/api/v10/channels/1/messages", _headers(0, 3.0))
    pacer.observe_response("POST", "/api/v10/channels/2/messages/9", _headers(0, 3.0))  # ignored: not a create
    starts: list[tuple[int, float]] = []

    def work(ch: int):
        async def go() -> None:
            starts.append((ch, t.now))
        return go

    await gather(t, pacer.submit(1, work(1)), pacer.submit(2, work(2)), pacer.submit(1, work(1), kind=EDIT))
    assert sorted(starts) == [(1, 1000.0), (1, pytest.approx(1003.0 + RESET_MARGIN_S)), (2, 1000.0)]


def test_a_bucket_window_without_fresh_headers_assumes_a_new_window_and_counts_down():
    bucket = BucketWindow(fallback_window_s=5.5)
    assert bucket.delay(0.0) == 0.0 and bucket.expired(0.0)
    bucket.observe(0.0, limit=2, remaining=0, reset_after_s=1.0)
    assert bucket.delay(0.5) == pytest.approx(0.5 + RESET_MARGIN_S)
    # Past the reset, writes whose answers carry no headers spend a guessed window of the limit.
    bucket.record(2.0)
    assert bucket.delay(2.0) == 0.0
    bucket.record(2.1)
    assert bucket.delay(2.2) == pytest.approx(5.3)


async def test_answers_without_rate_limit_headers_leave_the_sliding_window_in_charge():
    pacer, t = make(limit=2, window_s=5.0)
    starts: list[float] = []

    async def work() -> None:
        starts.append(t.now)
        pacer.observe_response("POST", "/api/v10/channels/1/messages", {"Content-Type": "application/json"})

    await gather(t, *(pacer.submit(1, work) for _ in range(3)))
    assert starts == [1000.0, 1000.0, 1005.0]


def test_buckets_of_writes_outside_the_pacer_do_not_pile_up():
    pacer, t = make()
    for channel in range(MAX_IDLE_BUCKETS):
        pacer.observe_response("POST", f"/api/v10/channels/{channel}/messages", _headers(4, 5.0))
    assert pacer.remembered_buckets() == MAX_IDLE_BUCKETS
    t.now += 10.0  # every window above has reset
    pacer.observe_response("POST", "/api/v10/channels/999999/messages", _headers(4, 5.0))
    assert pacer.remembered_buckets() == 1


async def test_a_lane_that_heard_from_discord_is_not_held_back_by_the_guess_after_a_quiet_spell():
    """The fallback guess (here 1 write per 30 s) recorded the lane's first write; a slow upload
    outlasted Discord's window, so the lane forgot the window when it drained; the next write
    still goes at once."""
    pacer, t = make(limit=1, window_s=30.0)
    starts: list[float] = []

    async def slow_upload() -> None:
        starts.append(t.now)
        pacer.observe_response("POST", "/api/v10/channels/1/messages", _headers(4, 5.0))
        t.now += 6.0

    await gather(t, pacer.submit(1, slow_upload))
    assert pacer.remembered_buckets() == 0  # the window had reset when the lane drained
    await gather(t, pacer.submit(1, slow_upload))
    assert starts == [1000.0, 1006.0]


async def test_once_discord_sends_its_count_work_that_made_no_request_does_not_hold_a_lane():
    """An edit whose work found nothing to send spent a slot of the guess (1 per 30 s) before any
    answer came; the first answer with headers, in another lane, frees it."""
    pacer, t = make(limit=1, window_s=30.0)
    edits: list[float] = []

    async def nothing_to_send() -> None:
        return None

    async def edit() -> None:
        edits.append(t.now)

    async def create() -> None:
        pacer.observe_response("POST", "/api/v10/channels/1/messages", _headers(4, 5.0))

    await gather(t, pacer.submit(1, nothing_to_send, kind=EDIT))
    waiting = pacer.submit(1, edit, kind=EDIT)
    await t.settle()
    assert edits == []  # held by the guess
    await gather(t, pacer.submit(1, create), waiting)
    assert edits == [1000.0]
