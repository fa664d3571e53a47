"""Progress for every active job, rendered by the sink: each tick picks the jobs whose phase
changed or whose edit interval passed, and hands the sink one ProgressUpdate each."""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections.abc import Callable

from bot.config import Config
from bot.db.connection import Database
from bot.db.jobs import active_job_states, get_jobs, recent_durations, set_progress_message
from bot.db.kv import kv_get
from bot.db.records import JobRecord
from bot.services import queue
from bot.services.clock import Clock
from bot.services.quotas import RUNWARE_PAUSE_KEY
from bot.services.sink import JobSink, ProgressUpdate, phase_of

log = logging.getLogger(__name__)
# Shown on queued jobs while Runware refuses the bot's key or balance (401/402): they wait, they resume.
QUEUED_WHILE_PAUSED = ("Generation is paused: the bot's Runware account needs attention. This job waits "
                       "in the queue and starts by itself once generation resumes.")

STATS_REFRESH_S = 60.0  # how long a median duration (the progress estimate) is reused
YIELD_EVERY = 25        # renders between two yields to the event loop
MEDIAN_SAMPLE = 51      # recent jobs the progress estimate looks at


async def median_duration(db: Database, model_key: str, duration_s: int) -> float | None:
    """Median seconds from submit to finish of recent succeeded jobs like this one."""
    sample = await recent_durations(db, model_key, duration_s, MEDIAN_SAMPLE)
    return statistics.median(sample) if sample else None


class ProgressReporter:
    def __init__(self, cfg: Config, db: Database, sink: JobSink, clock: Clock,
                 owns: Callable[[JobRecord], bool] | None = None) -> None:
        self.cfg = cfg
        self.owns = owns or (lambda job: True)
        self.db = db
        self.sink = sink
        self.clock = clock
        # job id -> (phase, note, when) of the last update handed over; memory only
        self._last_report: dict[int, tuple[str, str | None, float]] = {}
        self._medians: dict[tuple[str, int], float | None] = {}
        self._medians_at = -STATS_REFRESH_S

    async def _estimate(self, job: JobRecord) -> float | None:
        now = self.clock.now()
        if now - self._medians_at > STATS_REFRESH_S:
            self._medians.clear()
            self._medians_at = now
        key = (job.model_key, job.duration_s)
        if key not in self._medians:
            self._medians[key] = await median_duration(self.db, *key)
        return self._medians[key]

    async def report(self, note: str | None, uploading: frozenset[str] | set[str] = frozenset()) -> None:
        """``note`` is shown on every message (e.g. "Runware is not answering, retrying"). Jobs whose
        frames this process is still uploading (``uploading``: taskUUIDs) are not shown yet: the
        command that creates them answers first, and says so itself if the upload fails."""
        now = self.clock.now()
        interval = self.cfg.progress.min_edit_interval_s
        # A cheap (id, state) scan picks the jobs whose phase changed or whose interval passed; only
        # those are read in full and rendered (with 1,000 in flight, reading them all every tick kept
        # the database thread, and through the GIL the event loop, busy). A message not posted yet
        # is the sink's to post: it keeps the newest render.
        states = await active_job_states(self.db, 10_000)
        paused = any(phase == "queued" for _, phase in states) and await kv_get(self.db, RUNWARE_PAUSE_KEY) is not None
        live = {job_id for job_id, _ in states}
        for stale in [jid for jid in self._last_report if jid not in live]:
            del self._last_report[stale]
        # A new note (Runware stopped answering, or answers again) is shown at once, not an interval later.
        wanted = [job_id for job_id, phase in states
                  if (last := self._last_report.get(job_id)) is None or last[0] != phase
                  or last[1] != note or now - last[2] >= interval]
        if not wanted:
            return
        jobs = await get_jobs(self.db, wanted)
        positions = await queue.queue_positions(self.db) if any(j.state == "queued" for j in jobs) else {}
        for count, job in enumerate(jobs, start=1):
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # rendering hundreds of embeds must not hold the loop
            phase = phase_of(job.state)
            if phase is None or job.task_uuid in uploading:
                continue  # finished since the scan, or not created yet as far as the member knows
            self._last_report[job.id] = (phase, note, now)
            if not self.sink.handles(job) or not self.owns(job):
                continue  # another process's job: its own sink shows it
            started = job.submitted_at if phase != "queued" and job.submitted_at else job.created_at
            update = ProgressUpdate(
                job=job,
                phase=phase,
                elapsed_s=max(0.0, now - started),
                queue_position=positions.get(job.id) if phase == "queued" else None,
                estimate_s=await self._estimate(job),
                note=QUEUED_WHILE_PAUSED if paused and phase == "queued" else note,
            )
            try:
                new_id = await self.sink.progress(update)
            except Exception:
                log.exception("job %s: progress update failed", job.id)
                continue
            if new_id and new_id != job.progress_message_id:
                await set_progress_message(self.db, job.id, new_id)
