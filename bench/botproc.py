"""The bot in its own process, for the bench: the path of `klingbot run --config PATH` (load_config,
then run_bot until SIGTERM) plus an event-loop lag monitor, an optional cProfile, and a JSON report
written at exit (peak RSS from getrusage, lag statistics, start-up times).

    python -m bench.botproc --config PATH --report PATH [--profile PATH]
"""

from __future__ import annotations

import time

STARTED = time.time()  # before the heavy imports: the process's own start, as near as Python sees it

import argparse  # noqa: E402
import asyncio  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.lag import LagMonitor  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.botproc")
    parser.add_argument("--config", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--profile")
    parser.add_argument("--watchdog", action="store_true", help="sample the stack whenever the loop stalls")
    parser.add_argument("--db-profile", action="store_true",
                        help="time every function the database thread runs (CPU and wall, per name)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from bot.config import load_config
    from bot.discordbot.app import KlingBot, run_bot

    imported = time.time()
    db_times = _time_database_thread() if args.db_profile else None
    cfg = load_config(args.config)
    monitor = LagMonitor(watchdog=args.watchdog)
    pauses = _watch_gc()
    marks: dict[str, float] = {"started": STARTED, "imported": imported}

    def on_bot(bot: KlingBot) -> None:
        async def note_setup() -> None:
            await bot.setup_done.wait()
            marks["setup_done"] = time.time()

        asyncio.get_running_loop().create_task(note_setup())

    async def run() -> None:
        lag = asyncio.create_task(monitor.run())
        try:
            await run_bot(cfg, sandbox=False, on_bot=on_bot)
        finally:
            lag.cancel()

    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.runcall(asyncio.run, run())
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(40)
        Path(args.profile).write_text(out.getvalue(), encoding="utf-8")
    else:
        asyncio.run(run())
    report: dict[str, Any] = {
        # VmHWM is this process's own peak. ru_maxrss is not: Linux carries the maxrss of the forked
        # parent (the bench, at spawn) across exec.
        "vmhwm_kb": _vmhwm_kb(),
        "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "lag": monitor.summary(),
        "lag_samples": [[round(at, 3), round(late, 5)] for at, late in monitor.samples],
        "marks": marks,
        "gc_pauses": pauses,
    }
    if db_times is not None:
        report["db_thread"] = sorted(
            ({"fn": k, "calls": v[0], "cpu_s": round(v[1], 3), "wall_s": round(v[2], 3)}
             for k, v in db_times.items()),
            key=lambda d: -d["cpu_s"])[:25]
    Path(args.report).write_text(json.dumps(report), encoding="utf-8")
    return 0


def _vmhwm_kb() -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def _watch_gc() -> dict[str, list[float]]:
    """Collections of each generation: [count, total s, max s] (a full collection stops the loop)."""
    import gc

    stats: dict[str, list[float]] = {}
    began = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
            return
        took = time.perf_counter() - began[0]
        entry = stats.setdefault(f"gen{info['generation']}", [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] = round(entry[1] + took, 4)
        entry[2] = round(max(entry[2], took), 4)

    gc.callbacks.append(callback)
    return stats


def _time_database_thread() -> dict[str, list[float]]:
    """Wrap what aiosqlite runs in its thread (the bot's query functions, each transaction as one
    call named after the function it runs) to add up calls, thread CPU time and wall time per name."""
    import aiosqlite.core

    totals: dict[str, list[float]] = {}
    original = aiosqlite.core.Connection._execute

    async def _execute(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        inner = next((a for a in args if callable(a) and hasattr(a, "__name__")), None)
        name = getattr(fn, "__name__", repr(fn))
        if inner is not None and name.startswith("_in_"):
            name = f"{name}:{inner.__name__}"

        def timed(*a: Any, **k: Any) -> Any:
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                entry = totals.setdefault(name, [0, 0.0, 0.0])
                entry[0] += 1
                entry[1] += time.thread_time() - cpu
                entry[2] += time.perf_counter() - wall

        return await original(self, timed, *args, **kwargs)

    aiosqlite.core.Connection._execute = _execute  # type: ignore[method-assign]
    return totals


if __name__ == "__main__":
    raise SystemExit(main())
