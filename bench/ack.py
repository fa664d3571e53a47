"""ack: /video at a steady rate while hundreds of jobs are in flight; the interaction-to-defer
latency is measured at the fake Discord (the time its callback route was called minus the time the
interaction was dispatched on the gateway). The bot runs in its own process; the fake Discord and
the simulator (whose generations do not finish during the run) in the bench's."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench.common import ScenarioResult, cpu_seconds, percentile
from bench.lag import lag_stats
from bench.procworld import ProcWorld, send_at_rate

NAME = "ack"
P99_BAR_MS = 150.0


async def run(tmp: Path, *, quick: bool = False, profile: Path | None = None, watchdog: bool = False,
              in_flight: int | None = None, rate: float | None = None, seconds: float | None = None
              ) -> ScenarioResult:
    result = ScenarioResult(NAME)
    in_flight = in_flight or (50 if quick else 500)
    rate = rate or (25.0 if quick else 50.0)
    seconds = seconds or (2.0 if quick else 10.0)
    measured_n = int(rate * seconds)
    async with ProcWorld(tmp, channels=max(1, in_flight // 10), members=max(1, int(in_flight / 2.5)),
                         profile=profile, watchdog=watchdog) as world:
        await world.start_bot()
        ramp_ids = await send_at_rate(world, 0, in_flight, rate)
        await asyncio.wait_for(world.sim.wait_submitted(in_flight), 120)
        at_start = world.sim.in_flight()
        window_start = time.time()
        cpu_start = (cpu_seconds(world.pid), cpu_seconds())
        measured_ids = await send_at_rate(world, in_flight, measured_n, rate)
        await world.fake.wait_for(lambda: all(world.defer_latency(i) is not None for i in measured_ids), 60)
        await asyncio.wait_for(world.sim.wait_submitted(in_flight + measured_n), 120)
        at_end = world.sim.in_flight()
        window_end = time.time()
        cpu_bot, cpu_bench = cpu_seconds(world.pid) - cpu_start[0], cpu_seconds() - cpu_start[1]
        latencies = [world.defer_latency(i) or 0.0 for i in measured_ids]
        ramp = [world.defer_latency(i) for i in ramp_ids]
        world.note_peak_rss()
        report = await world.stop_bot()
    ms = [x * 1000 for x in latencies]
    ramp_ms = [x * 1000 for x in ramp if x is not None]
    p99 = percentile(ms, 99)
    result.add(f"p99 interaction-to-defer ({rate:g}/s, {at_start} in flight)", p99, "ms",
               f"< {P99_BAR_MS:.0f} ms", p99 < P99_BAR_MS)
    result.add("p50 / max interaction-to-defer", f"{percentile(ms, 50):.1f} / {max(ms):.1f}", "ms")
    lag = lag_stats(report.get("lag_samples", []), window_start, window_end)
    result.add("bot event loop lag p99 / max", f"{lag.get('p99_ms')} / {lag.get('max_ms')}", "ms")
    result.details = {
        "in_flight_before": at_start, "in_flight_after": at_end, "rate_per_s": rate, "measured": measured_n,
        "latency_ms": {"p50": round(percentile(ms, 50), 2), "p90": round(percentile(ms, 90), 2),
                       "p99": round(p99, 2), "max": round(max(ms), 2)},
        "ramp_latency_ms": {"n": len(ramp_ms), "p50": round(percentile(ramp_ms, 50), 2),
                            "p99": round(percentile(ramp_ms, 99), 2)},
        "cpu_share_while_measured": {"bot_process": round(cpu_bot / (window_end - window_start), 2),
                                     "bench_process": round(cpu_bench / (window_end - window_start), 2)},
        "bot_lag_while_measured": lag, "bot_lag_whole_run": report.get("lag"),
        "bot_db_thread": report.get("db_thread"), "bot_marks": report.get("marks"),
        "bot_gc_pauses": report.get("gc_pauses"),
        "measure": "fake Discord: time.time() when the bot's POST /interactions/{id}/{token}/callback "
                   "arrived, minus time.time() when the INTERACTION_CREATE was built and sent",
    }
    return result
