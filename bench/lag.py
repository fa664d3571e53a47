"""Event-loop lag: a task that asks to sleep a few milliseconds and notes how late it wakes (a loop
that something blocks wakes it late by that long), and, optionally, a watchdog thread that samples
the loop thread's stack whenever the loop has not come round for a while: what blocked it."""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
import traceback
from collections import Counter
from typing import Any

STALL_S = 0.05


class LagMonitor:
    def __init__(self, period_s: float = 0.01, *, watchdog: bool = False) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []  # (wall time, seconds late) of each wake
        self.blocked_stacks: Counter[str] = Counter()  # stack (innermost frames) -> samples
        self._beat = time.monotonic()
        self._watchdog = watchdog
        self._stop = threading.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        thread = None
        if self._watchdog:
            thread = threading.Thread(target=self._watch, args=(threading.get_ident(),), daemon=True)
            thread.start()
        try:
            while True:
                before = loop.time()
                self._beat = time.monotonic()
                await asyncio.sleep(self.period_s)
                self.samples.append((time.time(), max(0.0, loop.time() - before - self.period_s)))
        finally:
            self._stop.set()

    def _watch(self, loop_thread: int) -> None:
        """Every 10 ms: if the loop's heartbeat is older than STALL_S, note where its thread is."""
        while not self._stop.wait(0.01):
            if time.monotonic() - self._beat < STALL_S:
                continue
            frame = sys._current_frames().get(loop_thread)
            if frame is None:
                continue
            frames = [f for f in traceback.extract_stack(frame) if "/asyncio/" not in f.filename][-6:]
            key = " <- ".join(f"{_short(f.filename)}:{f.lineno} {f.name}" for f in reversed(frames))
            self.blocked_stacks[key] += 1

    def summary(self, start: float | None = None, end: float | None = None) -> dict[str, Any]:
        """Lag statistics in milliseconds, over the wakes between ``start`` and ``end`` (wall times)."""
        out = lag_stats(self.samples, start, end)
        if self._watchdog:
            out["blocked_in"] = [{"samples_10ms": n, "stack": s}
                                 for s, n in self.blocked_stacks.most_common(12)]
        return out


def _short(path: str) -> str:
    for marker in ("/site-packages/", "/work/main/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def lag_stats(samples: list[tuple[float, float]] | list[list[float]], start: float | None = None,
              end: float | None = None) -> dict[str, Any]:
    ordered = sorted(late for at, late in samples
                     if (start is None or at >= start) and (end is None or at <= end))

    def pct(p: float) -> float:
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]

    stalls = [x for x in ordered if x >= STALL_S]
    return {
        "samples": len(ordered),
        "p50_ms": round(pct(50) * 1000, 2),
        "p99_ms": round(pct(99) * 1000, 2),
        "max_ms": round((ordered[-1] if ordered else math.nan) * 1000, 2),
        "stalls_over_50ms": len(stalls),
        "worst_stalls_ms": [round(x * 1000, 1) for x in reversed(stalls[-10:])],
    }
