"""transcode (SPEC 6): fit a 13 MiB 720p 5 s and a 25 MiB 1080p 10 s video to Discord's 10 MiB, the
way delivery does (bot.services.media: a worker process per fit), while a lag monitor runs on this
event loop. Measured: wall time per second of video (bar <= 1.0), the fitted size (<= the limit),
and the event loop's lag p99 while the fits run (bar < 50 ms).

The sources are the simulator's own sized videos (bot.simulator.media), made before the clock starts.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import av

from bench.common import ScenarioResult
from bench.lag import LagMonitor
from bot.services.media import MediaWorkers
from bot.simulator.media import MIB, build_video

NAME = "transcode"
LIMIT = 10 * MIB
# (label, width, height, seconds, fps, source size): Kling 2.5 Turbo Pro and 2.1 Pro results.
CASES = (("720p 5 s", 1280, 720, 5, 30, 13 * MIB), ("1080p 10 s", 1920, 1080, 10, 24, 25 * MIB))
QUICK_CASES = (("360p 2 s", 640, 360, 2, 30, 2 * MIB),)
QUICK_LIMIT = MIB
BAR_S_PER_VIDEO_S = 1.0
BAR_LAG_MS = 50.0


async def run(tmp: Path, *, quick: bool = False) -> ScenarioResult:
    result = ScenarioResult(NAME)
    cases, limit = (QUICK_CASES, QUICK_LIMIT) if quick else (CASES, LIMIT)
    sources = []
    for label, width, height, seconds, fps, size in cases:
        path = tmp / f"{label.replace(' ', '-')}.mp4"
        path.write_bytes(await asyncio.to_thread(build_video, width, height, seconds, fps, "MP4", size))
        sources.append((label, path, seconds, fps))
    workers = MediaWorkers(concurrency=1)
    monitor = LagMonitor()
    lag_task = asyncio.create_task(monitor.run())
    started_wall = time.time()
    try:
        for label, path, seconds, fps in sources:
            began = time.monotonic()
            fitted = await workers.fit(path, tmp / f"{path.stem}.fit.mp4", limit)
            wall = time.monotonic() - began
            frames = await asyncio.to_thread(_frames, fitted.path)
            per_second = wall / seconds
            result.add(f"{label} ({path.stat().st_size / MIB:.1f} MiB -> {fitted.size / MIB:.1f} MiB, "
                       f"{fitted.width}x{fitted.height})", round(per_second, 3), "s per s of video",
                       f"<= {BAR_S_PER_VIDEO_S}", per_second <= BAR_S_PER_VIDEO_S)
            result.add(f"{label} fitted file", "fits" if fitted.size <= limit and frames == seconds * fps
                       else f"{fitted.size} bytes, {frames} frames", "", "<= limit, every frame",
                       fitted.size <= limit and frames == seconds * fps)
            result.details[label] = {"wall_s": round(wall, 3), "source_bytes": path.stat().st_size,
                                     "fitted_bytes": fitted.size, "size": [fitted.width, fitted.height],
                                     "frames": frames}
    finally:
        lag_task.cancel()
        await asyncio.gather(lag_task, return_exceptions=True)
    lag = monitor.summary(started_wall)
    result.details["event_loop_lag"] = lag
    result.add("event-loop lag p99 while fitting", lag["p99_ms"], "ms", f"< {BAR_LAG_MS:.0f}",
               lag["p99_ms"] < BAR_LAG_MS)
    return result


def _frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
