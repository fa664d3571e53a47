"""edits: many jobs in ONE channel through the real bot (started as tests/fakes/world starts it:
run_bot, login, gateway, setup_hook, engine) against a fake Discord that enforces Discord's message
limits of 5 creates and 5 edits per 5 s per channel. Every 429 the fake answers is counted; every
job's final message is checked as a member would see it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.common import UNLIMITED, BenchSimulator, ScenarioResult
from bot.db.records import JobRecord
from bot.discordbot.app import PACE_LIMIT, PACE_WINDOW_S
from tests.fakes.discord import Message
from tests.fakes.world import SIM_KEY as HARNESS_KEY
from tests.fakes.world import BotWorld

NAME = "edits"
CHANNEL_LIMIT = (5, 5.0)
GENERATION_S = (30.0, 60.0)


def check_final(job: JobRecord, message: Message | None) -> str | None:
    """What is wrong with a job's final message, or None when it is right."""
    if job.state != "succeeded":
        return f"state {job.state}"
    if message is None:
        return "no final message"
    if not message.content.startswith(f"<@{job.user_id}>"):
        return "does not mention the member"
    if message.notified_user_ids != [job.user_id] or message.notified_role_ids or message.notified_everyone:
        return f"notified {message.notified_user_ids} (roles {message.notified_role_ids})"
    videos = [a for a in message.attachments if str(a.get("filename", "")).endswith(".mp4") and a.get("size")]
    if len(videos) != job.variations:
        return f"{len(videos)} video(s) attached"
    if not message.embeds or f"Job #{job.id}" not in str(message.embeds[0].get("title", "")):
        return "no result embed for this job"
    return None


def _max_in_window(times: list[float], window: float) -> int:
    best, start = 0, 0
    for end in range(len(times)):
        while times[end] - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def run(tmp: Path, *, quick: bool = False, jobs: int | None = None, speed: float | None = None
              ) -> ScenarioResult:
    result = ScenarioResult(NAME)
    n = jobs or (8 if quick else 50)
    speed = speed or (6.0 if quick else 2.0)
    members = max(1, min(10, n // 5))
    overrides: dict[str, Any] = {
        "runware": {"first_poll_after_s": 10.0 / speed, "poll_interval_s": 3.0 / speed},
        "progress": {"min_edit_interval_s": 8.0},
        "limits": dict(UNLIMITED),
    }
    world = BotWorld(tmp, overrides)
    world.sim = BenchSimulator(api_key=HARNESS_KEY, speed=speed, generation_s=GENERATION_S, seed=7)
    started = time.time()
    async with world:
        world.fake.channel_rate_limit = CHANNEL_LIMIT
        users = [world.seed.user_id] + [world.seed.user_id + 1 + k for k in range(members - 1)]
        for k, uid in enumerate(users[1:]):
            world.fake.add_member(world.seed.guild_id, uid, f"bench{k}")
        await world.start_bot(pace=(PACE_LIMIT, PACE_WINDOW_S))
        await asyncio.gather(*(
            world.fake.send_slash("video", {"prompt": f"bench edits {i}: a fox in the snow",
                                            "duration": 5 if i % 2 == 0 else 10},
                                  user_id=users[i % members]) for i in range(n)))
        # Generation ends after 60 s / speed at most; then every write waits for the channel's pace.
        timeout = 60.0 / speed + 10.0 / speed + n * 3 * PACE_WINDOW_S / PACE_LIMIT + 60.0
        await world.wait_result(n, timeout=timeout)
        jobs_ = await all_notified(world, n, timeout=60.0)
        # The progress messages' last edit (a finished line) goes out after the final message.
        await world.fake.wait_for(lambda: _all_progress_finished(world, jobs_), timeout=60.0)
        elapsed = time.time() - started
        problems: dict[int, str] = {}
        for job in jobs_:
            message = _message(world, job.result_message_id)
            problem = check_final(job, message)
            if problem:
                problems[job.id] = problem
        results = world.result_messages()
        channel_path = f"/channels/{world.seed.channel_id}/messages"
        writes = sorted(c.at for c in world.fake.calls
                        if c.method in ("POST", "PATCH") and c.path.startswith(channel_path))
        count_429 = world.fake.count_429
        progress_posted = sum(1 for j in jobs_ if j.progress_message_id)
    correct = n - len(problems)
    result.add("Discord 429s", count_429, "", "0", count_429 == 0)
    result.add("final messages correct", f"{correct}/{n}", "", f"{n}/{n}", correct == n and len(results) == n)
    result.add("channel writes / max in any 5 s", f"{len(writes)} / {_max_in_window(writes, 5.0)}")
    result.details = {
        "jobs": n, "members": members, "speed": speed, "channel_limit": list(CHANNEL_LIMIT),
        "bot_pace": [PACE_LIMIT, PACE_WINDOW_S], "count_429": count_429, "result_messages": len(results),
        "problems": problems, "channel_writes": len(writes), "max_writes_in_5s": _max_in_window(writes, 5.0),
        "progress_messages_posted": progress_posted, "wall_s": round(elapsed, 1),
    }
    return result


async def all_notified(world: BotWorld, n: int, timeout: float) -> list[JobRecord]:
    """The world's jobs once all ``n`` have their final message (also used by ``latency``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        jobs_ = await world.jobs()
        if len(jobs_) >= n and all(j.notified_at is not None for j in jobs_):
            return jobs_
        if loop.time() > deadline:
            raise TimeoutError(f"{sum(j.notified_at is not None for j in jobs_)}/{n} jobs notified")
        await asyncio.sleep(0.2)


def _all_progress_finished(world: BotWorld, jobs_: list[JobRecord]) -> bool:
    for job in jobs_:
        if job.progress_message_id:
            message = _message(world, job.progress_message_id)
            if message is None or f"Job #{job.id}" not in message.content:
                return False
    return True


def _message(world: BotWorld, message_id: int | None) -> Message | None:
    try:
        return world.fake.message(message_id) if message_id else None
    except KeyError:
        return None
