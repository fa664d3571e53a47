"""memory: the bot's own process with 1,000 jobs in flight, each started by a /video interaction
(reserve, submit, a progress message per job), held through several poll intervals. The peak resident
set is read from /proc (VmHWM) while it runs and from getrusage in the process at exit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.common import BOT, ScenarioResult
from bench.lag import lag_stats
from bench.procworld import ProcWorld, send_at_rate

NAME = "memory"
RSS_BAR_MB = 150.0
HOLD_POLLS = 3  # poll intervals held with everything in flight


async def run(tmp: Path, *, quick: bool = False, profile: Path | None = None, watchdog: bool = False,
              jobs: int | None = None, runware: dict[str, Any] | None = None, hold_s: float | None = None
              ) -> ScenarioResult:
    """By default the shipped intervals (first poll after 10 s, then every 3 s; edits 8 s apart);
    ``runware`` overrides them (the smoke test)."""
    result = ScenarioResult(NAME)
    n = jobs or (100 if quick else 1000)
    hold_s = HOLD_POLLS * 3.0 if hold_s is None else hold_s
    async with ProcWorld(tmp, channels=min(n, max(10, n // 10)), members=max(1, n // 5), runware=runware,
                         profile=profile, watchdog=watchdog) as world:
        await world.start_bot()
        idle_rss = world.note_peak_rss()
        sampler = asyncio.create_task(_sample(world))
        try:
            await send_at_rate(world, 0, n, 100.0)
            await asyncio.wait_for(world.sim.wait_submitted(n), 180)
            loaded = time.time()
            # Held until every job has been polled and HOLD_POLLS more intervals passed, with every
            # progress message posted.
            await world.fake.wait_for(lambda: len(world.sim.first_answer[BOT]) >= n, 120)
            await asyncio.sleep(hold_s)
            await world.fake.wait_for(lambda: _progress_posted(world) >= n, 120)
            held_until = time.time()
            held = held_until - loaded
            in_flight = world.sim.in_flight()
        finally:
            sampler.cancel()
        peak_kb = world.note_peak_rss() or 0
        report = await world.stop_bot()
    running_mb = peak_kb * 1024 / 1e6
    exit_mb = (report.get("vmhwm_kb") or 0) * 1024 / 1e6
    peak_mb = max(running_mb, exit_mb)  # its whole life, the clean stop included
    result.add(f"peak RSS of the bot, {in_flight} in flight", peak_mb, "MB", f"< {RSS_BAR_MB:.0f} MB",
               peak_mb < RSS_BAR_MB and in_flight >= n)
    result.add("RSS of the idle bot (after start)", (idle_rss or 0) * 1024 / 1e6, "MB")
    lag = lag_stats(report.get("lag_samples", []), loaded, held_until)
    result.add(f"bot event loop lag p99 / max, {in_flight} in flight",
               f"{lag['p99_ms']} / {lag['max_ms']}", "ms")
    result.details = {
        "jobs": n, "in_flight": in_flight, "peak_rss_mb": round(peak_mb, 1),
        "peak_rss_mb_while_running": round(running_mb, 1),
        "peak_rss_mb_at_exit": round(exit_mb, 1), "idle_rss_mb": round((idle_rss or 0) * 1024 / 1e6, 1),
        "held_s": round(held, 1), "progress_messages": _progress_posted(world), "bot_lag_while_held": lag,
        "bot_lag_whole_run": report.get("lag"), "bot_gc_pauses": report.get("gc_pauses"),
        "bot_db_thread": report.get("db_thread"),
        "measure": "VmHWM (peak resident set) of the bot's process from /proc/PID/status, read by the bench "
                   "every 0.5 s and by the process itself at exit (getrusage's ru_maxrss is not used: "
                   "Linux carries the forked parent's maxrss across exec); MB = 10^6 bytes",
    }
    return result


async def _sample(world: ProcWorld) -> None:
    while True:
        world.note_peak_rss()
        await asyncio.sleep(0.5)


def _progress_posted(world: ProcWorld) -> int:
    return sum(len(world.fake.messages(c)) for c in world.channel_ids)
