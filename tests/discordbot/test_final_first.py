"""Final posts first (SPEC 3.4), through the real bot and the fake Discord: a job that finishes while
its progress message is still waiting for the channel's pace gets no progress message at all; its
result is the first message of it, and it goes before the progress messages of other jobs waiting
in the same channel."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.discordbot.pacer import CREATE, ROUTINE, URGENT
from tests.fakes.world import eventually, started_world


async def test_a_job_finished_before_its_progress_message_gets_none_and_its_result_goes_first(
        tmp_path: Path) -> None:
    async with started_world(tmp_path) as w:
        assert w.bot is not None and w.bot.sink is not None
        pacer, channel = w.bot.sink.pacer, w.seed.channel_id
        # Something else holds the channel's create lane (a long upload): creates wait behind it.
        lane_free = asyncio.Event()
        blocker = pacer.submit(channel, lane_free.wait, kind=CREATE)
        await w.video({"prompt": "finished before it was shown"})
        await w.video({"prompt": "still running"})
        await w.wait_submitted(2)
        def lane() -> list:
            return [(i.priority, i.key) for i in pacer.waiting(channel, CREATE)]

        async def lane_is(expected: list) -> bool:  # the pacer's state: polled, the fake is not told
            return lane() == expected

        await eventually(lambda: lane_is([(ROUTINE, ("progress", 1)), (ROUTINE, ("progress", 2))]))
        first = (await w.jobs())[-1]
        assert first.id == 1
        w.sim.finish(first.task_uuid)
        # The result waits for the lane, at the head of it; the finished job's progress create is gone.
        await eventually(lambda: lane_is([(ROUTINE, ("progress", 2)), (URGENT, None)]))
        lane_free.set()
        await blocker
        [result] = await w.wait_result(1)
        assert "Job #1" in result.embeds[0]["title"]
        progress = await w.wait(lambda: w.progress_messages())
        assert [m.embeds[0]["title"].split(" ·")[0] for m in progress] == ["Job #2"]
        assert w.channel_messages()[0].id == result.id  # the first message the channel got
        job = await w.wait_notified(1)
        assert job.progress_message_id is None
