"""latency: 200 jobs over 8 channels through the real bot against a fake Discord that limits message
creates and edits to 5 per 5 s per channel each (SPEC 6). Per job: when the simulator had the result
ready, when the bot recorded it (fetched), and when the fake Discord received its final message
(posted). Run twice: polling only, then with Runware's webhooks on."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench.common import UNLIMITED, BenchSimulator, ScenarioResult, percentile
from bench.edits import all_notified
from bot.db.jobs import results_for_job
from bot.discordbot.app import PACE_LIMIT, PACE_WINDOW_S
from bot.services.engine import beat_step
from tests.fakes.world import SIM_KEY as HARNESS_KEY
from tests.fakes.world import BotWorld

NAME = "latency"
CHANNEL_LIMIT = (5, 5.0)      # per channel, creates and edits each (as Discord)
GENERATION_S = (30.0, 60.0)   # about 0.8 results per second per channel with 25 jobs each
POLL_INTERVAL_S = 1.0
POSTED_P99_BAR_S = 5.0
WEBHOOK_FETCHED_P99_BAR_S = 0.5
SEND_EVERY_S = 0.02           # /video arrives at 50 per second
WEBHOOK_SECRET = "bench-webhook-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(tmp: Path, *, quick: bool = False, jobs: int | None = None, channels: int | None = None,
              speed: float | None = None) -> ScenarioResult:
    result = ScenarioResult(NAME)
    n = jobs or (40 if quick else 200)
    n_channels = channels or (4 if quick else 8)
    speed = speed or (4.0 if quick else 1.0)
    beat = beat_step(POLL_INTERVAL_S)
    fetch_bar = POLL_INTERVAL_S + beat
    for webhooks in (False, True):
        label = "webhooks" if webhooks else "polling"
        measured = await _measure(tmp / label, n, n_channels, speed, webhooks)
        late = measured["fetched_late_s"]
        posted = measured["posted_s"]
        if webhooks:
            p99 = percentile(late, 99)
            result.add(f"{label}: ready -> fetched p99", p99, "s", f"< {WEBHOOK_FETCHED_P99_BAR_S} s",
                       p99 < WEBHOOK_FETCHED_P99_BAR_S)
        else:
            worst = max(late)
            result.add(f"{label}: ready -> fetched max", worst, "s", f"<= {fetch_bar:g} s (interval + beat)",
                       worst <= fetch_bar)
            result.add(f"{label}: ready -> fetched p50", percentile(late, 50), "s")
        result.add(f"{label}: ready -> posted p50", percentile(posted, 50), "s")
        p99 = percentile(posted, 99)
        result.add(f"{label}: ready -> posted p99", p99, "s", f"< {POSTED_P99_BAR_S:g} s", p99 < POSTED_P99_BAR_S)
        result.add(f"{label}: Discord 429s", measured["count_429"], "", "0", measured["count_429"] == 0)
        result.add(f"{label}: results posted", f"{measured['results']}/{n}", "", f"{n}/{n}",
                   measured["results"] == n)
        result.details[label] = {k: v for k, v in measured.items() if k not in ("fetched_late_s", "posted_s")} | {
            "fetched_late_p50_s": percentile(late, 50), "fetched_late_p99_s": percentile(late, 99),
            "fetched_late_max_s": max(late), "posted_p50_s": percentile(posted, 50),
            "posted_p99_s": percentile(posted, 99), "posted_max_s": max(posted),
        }
    result.details.update({"jobs": n, "channels": n_channels, "speed": speed, "poll_interval_s": POLL_INTERVAL_S,
                           "beat_s": beat, "channel_limit": list(CHANNEL_LIMIT),
                           "bot_pace": [PACE_LIMIT, PACE_WINDOW_S]})
    return result


async def _measure(tmp: Path, n: int, n_channels: int, speed: float, webhooks: bool) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    runware: dict[str, Any] = {"first_poll_after_s": 2.0, "poll_interval_s": POLL_INTERVAL_S}
    if webhooks:
        port = _free_port()
        runware |= {"webhook_public_url": f"http://127.0.0.1:{port}/runware/hook",
                    "webhook_listen": f"127.0.0.1:{port}"}
    # Progress edits at the shipped interval (the test harness's default is much shorter).
    world = BotWorld(tmp, {"runware": runware, "limits": dict(UNLIMITED), "progress": {"min_edit_interval_s": 8.0}})
    world.sim = BenchSimulator(api_key=HARNESS_KEY, speed=speed, generation_s=GENERATION_S, seed=11)
    started = time.time()
    async with world:
        assert world.cfg is not None
        if webhooks:
            secrets = world.cfg.secrets.model_copy(update={"runware_webhook_secret": SecretStr(WEBHOOK_SECRET)})
            world.cfg = world.cfg.model_copy(update={"secrets": secrets})
        world.fake.channel_rate_limit = CHANNEL_LIMIT
        guild = world.seed.guild_id
        channel_ids = [world.seed.channel_id] + [world.seed.channel_id + 1 + k for k in range(n_channels - 1)]
        for k, cid in enumerate(channel_ids[1:]):
            world.fake.add_channel(guild, cid, f"gen{k}")
        users = [world.seed.user_id] + [world.seed.user_id + 1 + k for k in range(39)]
        for k, uid in enumerate(users[1:]):
            world.fake.add_member(guild, uid, f"bench{k}")
        await world.start_bot(pace=(PACE_LIMIT, PACE_WINDOW_S))
        for i in range(n):
            await world.fake.send_slash("video", {"prompt": f"bench latency {i}: a fox in the snow", "duration": 5},
                                        user_id=users[i % len(users)], channel_id=channel_ids[i % n_channels])
            await asyncio.sleep(SEND_EVERY_S)
        timeout = GENERATION_S[1] / speed + 180.0

        def posted() -> int:
            return sum(len(world.result_messages(cid)) for cid in channel_ids)

        await world.wait(lambda: posted() >= n, timeout=timeout)
        jobs_ = await all_notified(world, n, timeout=60.0)
        late, to_post = [], []
        assert world.bot is not None and world.bot.engine is not None
        for job in jobs_:
            sim = world.sim.stats.tasks[job.task_uuid]
            results = await results_for_job(world.bot.db, job.id)
            fetched = min(r.created_at for r in results)
            message = world.fake.message(job.result_message_id) if job.result_message_id else None
            late.append(max(0.0, fetched - sim.ready_at))
            if message is not None:
                to_post.append(max(0.0, message.created_at - sim.ready_at))
        creates = [c for c in world.fake.calls if c.method == "POST" and "/messages" in c.path
                   and c.path.startswith("/channels/") and c.status == 200]
        return {
            "fetched_late_s": late, "posted_s": to_post, "count_429": world.fake.count_429,
            "results": posted(), "channel_creates": len(creates),
            "progress_messages": sum(1 for j in jobs_ if j.progress_message_id),
            "poll_requests": world.sim.polls["bot"], "wall_s": round(time.time() - started, 1),
        }


