"""Hands finished jobs to the sink: downloads each result (streamed, size-capped, allowed hosts
only), fits a result over the sink's size limit into it (PyAV, in a worker process), posts the
final message through the sink, then records delivery and notification.

A fit runs as its own task, never inside a tick: the job waits (its channel's later jobs behind
it, in order) while other channels and the poller go on, and the engine is woken when it ends."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx

from bot.config import Config
from bot.db.jobs import get_job, results_for_job, set_result_message, unnotified_jobs
from bot.db.money import job_money
from bot.db.records import JobRecord, ResultRecord
from bot.download import DownloadError, download_to_file
from bot.services.clock import Clock
from bot.services.jobs import JobStore
from bot.services.media import FittedVideo, MediaError, MediaWorkers
from bot.services.sink import JobSink, Outcome, ProgressUpdate, ResultFile

log = logging.getLogger(__name__)

RETRY_BASE_S = 2.0
RETRY_CAP_S = 300.0
PENDING_SCAN = 5000  # final jobs read per tick when looking for this sink's undelivered ones
# Largest result downloaded to be fitted (Kling's 10 s 1080p videos are tens of MiB).
MAX_FIT_SOURCE = 512 * 1024 * 1024


class FitPending(Exception):
    """The job's videos are still being fitted; it is delivered once that ends."""


class Deliverer:
    """Delivers this process's finished jobs: ``dispatch`` hands each one to its channel's worker and
    returns at once; each channel's worker delivers its jobs one after another in job order, side by
    side with the other channels', so one busy channel (Discord paces each channel) or one slow
    download never holds up another channel, nor the loop that called ``dispatch``."""

    def __init__(self, cfg: Config, store: JobStore, sink: JobSink, http: httpx.AsyncClient, clock: Clock,
                 *, owns: Callable[[JobRecord], bool] | None = None, media: MediaWorkers | None = None,
                 wake: Callable[[], None] | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.db = store.db
        self.sink = sink
        self.http = http
        self.clock = clock
        self.owns = owns or (lambda job: True)
        self.media = media or MediaWorkers(cfg.delivery.transcode_concurrency)
        self._wake = wake or (lambda: None)
        self._failures: dict[int, tuple[int, float]] = {}  # job id -> (attempts, next try); memory only
        self.retry_base_s = RETRY_BASE_S
        # (job id, result id) -> the running or finished fit; memory only (a fitted file on disk
        # is found again after a restart).
        self._fits: dict[tuple[int, int], asyncio.Task[FittedVideo | str]] = {}
        self._waiting: dict[int, deque[int]] = {}          # channel id -> job ids, in job order
        self._taken: set[int] = set()                       # waiting or being delivered
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._stopping = False
        self.delivered = 0

    async def close(self) -> None:
        """Stop the fits still running (their workers are killed; nothing half-written is kept)."""
        for task in self._fits.values():
            task.cancel()
        await asyncio.gather(*self._fits.values(), return_exceptions=True)
        self._fits.clear()
        await self.media.close()

    def _mine(self, job: JobRecord) -> bool:
        return self.sink.handles(job) and self.owns(job)

    async def dispatch(self) -> int:
        """Hand the undelivered jobs this process owns to their channels' workers; returns how many
        were handed over now. Never waits for a delivery."""
        if self._stopping:
            return 0
        now = self.clock.now()
        handed = 0
        # Another process's jobs and ones backing off are skipped before anything else.
        for job in await unnotified_jobs(self.db, PENDING_SCAN):
            if job.id in self._taken or not self._mine(job) or now < self._failures.get(job.id, (0, 0.0))[1]:
                continue
            self._taken.add(job.id)
            self._waiting.setdefault(job.channel_id, deque()).append(job.id)
            handed += 1
            if job.channel_id not in self._workers:
                self._workers[job.channel_id] = asyncio.create_task(
                    self._work(job.channel_id), name=f"deliver-{job.channel_id}")
        return handed

    async def tick(self) -> int:
        """dispatch, then wait until every channel's worker is idle; returns how many were delivered."""
        before = self.delivered
        self._stopping = False  # an explicit step runs even after drain() (tests settle this way)
        await self.dispatch()
        while self._workers:
            await asyncio.gather(*list(self._workers.values()), return_exceptions=True)
        return self.delivered - before

    async def drain(self) -> None:
        """Stop taking jobs; the deliveries in progress finish (their writes are in flight)."""
        self._stopping = True
        while self._workers:
            await asyncio.gather(*list(self._workers.values()), return_exceptions=True)

    async def _work(self, channel_id: int) -> None:
        queue = self._waiting[channel_id]
        try:
            while queue and not self._stopping:
                job_id = queue.popleft()
                try:
                    job = await get_job(self.db, job_id)  # fresh: the scan that found it may be old
                    if job is not None and job.notified_at is None and not await self._attempt(job):
                        break  # its fit still runs: the rest of this channel waits its turn behind it
                finally:
                    self._taken.discard(job_id)
        except Exception:
            log.exception("channel %s: delivery worker failed", channel_id)
        finally:
            # Empty unless stopping or broken: what is left is found again by the next dispatch.
            self._workers.pop(channel_id, None)
            self._waiting.pop(channel_id, None)
            self._taken.difference_update(queue)

    async def _attempt(self, job: JobRecord) -> bool:
        """Deliver one job; False while its videos are being fitted (the fit wakes the engine)."""
        attempts = self._failures.get(job.id, (0, 0.0))[0]
        try:
            await self.deliver(job)
        except FitPending:
            return False
        except Exception:
            log.exception("job %s: delivery failed (attempt %d); will retry", job.id, attempts + 1)
            delay = min(RETRY_CAP_S, self.retry_base_s * 2**attempts)
            self._failures[job.id] = (attempts + 1, self.clock.now() + delay)
            return True
        self._failures.pop(job.id, None)
        self.delivered += 1
        return True

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
                max_bytes=self._fetch_cap(job),
                what="video",
            )
        except DownloadError as exc:
            # Too large for the sink, or not fetchable: the member still gets the link.
            log.info("job %s: result not attached (%s)", job.id, exc.message)
            return None

    def original_path(self, job: JobRecord, result: ResultRecord) -> Path:
        """Where a result's video, as Runware made it, is downloaded."""
        ext = str(job.params.get("output_format", "MP4")).lower()
        return self.sink.download_dir(job) / f"job{job.id}-{result.video_uuid}.{ext}"

    def _fetch_cap(self, job: JobRecord) -> int:
        cap = self.sink.download_cap(job)
        return max(cap, MAX_FIT_SOURCE) if self.sink.fit_limit(job) is not None else cap

    async def _fit_files(self, job: JobRecord, files: list[ResultFile]) -> list[ResultFile]:
        """Each downloaded video over the sink's fit limit, with its fitted MP4 (or why there is
        none). Raises FitPending while a fit still runs."""
        limit = self.sink.fit_limit(job)
        if limit is None or job.state != "succeeded" or job.cancel_requested:
            return files
        out: list[ResultFile] = []
        running = False
        for file in files:
            if file.path is None or file.size is None or file.size <= limit:
                out.append(file)
                continue
            key = (job.id, file.result.id)
            dest = file.path.with_name(f"{file.path.stem}.fit.mp4")
            task = self._fits.get(key)
            if task is None and dest.is_file() and dest.stat().st_size <= limit:
                out.append(replace(file, fitted=dest, fitted_size=dest.stat().st_size,
                                   converted_from=_format_of(file.path)))
                continue
            if task is None:
                task = asyncio.create_task(self._fit(job, file.path, dest, limit), name=f"fit-job{job.id}")
                self._fits[key] = task
                await self._show_fitting(job)
            if not task.done():
                running = True
                out.append(file)
                continue
            answer = task.result()
            if isinstance(answer, str):
                out.append(replace(file, fit_error=answer))
            else:
                out.append(replace(file, fitted=answer.path, fitted_size=answer.size,
                                   converted_from=None if answer.source_format == "MP4" else answer.source_format))
        if running:
            raise FitPending(job.id)
        return out

    async def _fit(self, job: JobRecord, src: Path, dest: Path, limit: int) -> FittedVideo | str:
        try:
            return await self.media.fit(src, dest, limit)
        except MediaError as exc:
            log.warning("job %s: %s could not be fitted to %d bytes: %s", job.id, src.name, limit, exc.message)
            return exc.message
        finally:
            self._wake()  # deliver it now, not on some later tick

    async def _show_fitting(self, job: JobRecord) -> None:
        elapsed = self.clock.now() - (job.submitted_at or job.created_at)
        try:
            await self.sink.progress(ProgressUpdate(job=job, phase="fitting", elapsed_s=elapsed))
        except Exception:
            log.exception("job %s: could not show the fitting step", job.id)

    async def deliver(self, job: JobRecord) -> int | None:
        files: list[ResultFile] = []
        flagged = 0
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
                dest = self.original_path(job, result)
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
        files = await self._fit_files(job, files)
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
                # /job re-posts this file: the fitted one when there is one.
                kept = file.fitted or file.path
                await self.store.mark_delivered(file.result.id, str(kept) if kept else None)
        await self.store.mark_notified(job.id, message_id)
        for file in files:
            self._fits.pop((job.id, file.result.id), None)
        return message_id


def _format_of(path: Path) -> str | None:
    """The original's format when it was not MP4 (the fitted file always is)."""
    ext = path.suffix.lstrip(".").upper()
    return ext if ext in ("WEBM", "MOV") else None
