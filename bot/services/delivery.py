"""Hands finished jobs to the sink: downloads each result (streamed, size-capped, allowed hosts
only), posts the final message through the sink, then records delivery and notification."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx

from bot.config import Config
from bot.db.jobs import results_for_job, set_result_message, unnotified_jobs
from bot.db.money import job_money
from bot.db.records import JobRecord
from bot.download import DownloadError, download_to_file
from bot.services.clock import Clock
from bot.services.jobs import JobStore
from bot.services.sink import JobSink, Outcome, ResultFile

log = logging.getLogger(__name__)

RETRY_BASE_S = 2.0
RETRY_CAP_S = 300.0
PENDING_SCAN = 5000  # final jobs read per tick when looking for this sink's undelivered ones


class Deliverer:
    def __init__(self, cfg: Config, store: JobStore, sink: JobSink, http: httpx.AsyncClient, clock: Clock) -> None:
        self.cfg = cfg
        self.store = store
        self.db = store.db
        self.sink = sink
        self.http = http
        self.clock = clock
        self._failures: dict[int, tuple[int, float]] = {}  # job id -> (attempts, next try); memory only

    async def tick(self, limit: int = 50) -> int:
        now = self.clock.now()
        # Another process's jobs (the terminal's, or the bot's) and ones backing off are skipped
        # before the limit is applied, so they can never hold up this sink's own.
        pending = [
            job
            for job in await unnotified_jobs(self.db, PENDING_SCAN)
            if self.sink.handles(job) and now >= self._failures.get(job.id, (0, 0.0))[1]
        ]
        # Channels are delivered side by side, each in job order: one busy channel (paced by
        # Discord's per-channel limit) must not hold up the results of every other channel.
        by_channel: dict[int, list[JobRecord]] = {}
        for job in pending[:limit]:
            by_channel.setdefault(job.channel_id, []).append(job)
        counts = await asyncio.gather(*(self._deliver_in_order(jobs, now) for jobs in by_channel.values()))
        return sum(counts)

    async def _deliver_in_order(self, jobs: list[JobRecord], now: float) -> int:
        delivered = 0
        for job in jobs:
            attempts = self._failures.get(job.id, (0, 0.0))[0]
            try:
                await self.deliver(job)
            except Exception:
                log.exception("job %s: delivery failed (attempt %d); will retry", job.id, attempts + 1)
                delay = min(RETRY_CAP_S, RETRY_BASE_S * 2**attempts)
                self._failures[job.id] = (attempts + 1, now + delay)
                continue
            self._failures.pop(job.id, None)
            delivered += 1
        return delivered

    async def _fetch(self, job: JobRecord, url: str, dest: Path) -> int | None:
        if dest.exists():  # downloaded before a restart
            return dest.stat().st_size
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            return await download_to_file(
                self.http,
                url,
                dest,
                allowed_hosts=self.cfg.runware.download_hosts,
                max_bytes=self.sink.download_cap(job),
                what="video",
            )
        except DownloadError as exc:
            # Too large for the sink, or not fetchable: the member still gets the link.
            log.info("job %s: result not attached (%s)", job.id, exc.message)
            return None

    async def deliver(self, job: JobRecord) -> int | None:
        files: list[ResultFile] = []
        flagged = 0
        ext = str(job.params.get("output_format", "MP4")).lower()
        results = await results_for_job(self.db, job.id)
        for result in results:
            if result.nsfw:
                flagged += 1
                continue
            path: Path | None = None
            size: int | None = None
            # A cancelled job is never posted, nor are a timed-out job's early videos (they go out
            # with the late ones, if those come): not worth fetching now.
            if result.video_url and job.state not in ("cancelled", "timed_out") and not job.cancel_requested:
                dest = self.sink.download_dir(job) / f"job{job.id}-{result.video_uuid}.{ext}"
                size = await self._fetch(job, result.video_url, dest)
                path = dest if size is not None else None
            files.append(
                ResultFile(
                    result=result,
                    path=path,
                    size=size,
                    expires_at=result.created_at + self.cfg.runware.output_ttl_s,
                )
            )
        failures = [line for line in (job.error or "").splitlines() if line]
        outcome = Outcome(
            job=job,
            files=files,
            failures=failures,
            flagged=flagged,
            cost_micro=(await job_money(self.db, job.id)).settled,
            # Results are marked delivered only once the final message is out (killed in between:
            # resumed here, and not posted twice).
            already_posted=any(r.delivered_at is not None for r in results),
        )
        message_id = await self.sink.deliver(outcome)
        if message_id is not None and message_id != job.result_message_id and files:
            await set_result_message(self.db, job.id, message_id)  # known again after a restart
        for file in files:
            # A time-out notice posts no video: marking one delivered would make the late results
            # message look already posted.
            if file.result.delivered_at is None and job.state != "timed_out":
                await self.store.mark_delivered(file.result.id, str(file.path) if file.path else None)
        await self.store.mark_notified(job.id, message_id)
        return message_id
