"""The engine: creates jobs (reserve -> upload -> queue), submits them through the fair queue,
drives the poller and delivery, and reports progress. One engine per process; the Discord bot and
`klingbot generate` are two faces on it. Everything it knows is in SQLite, so a new engine on the
same database resumes where a killed one stopped."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx

from bot import failpoints
from bot.config import Config
from bot.db.connection import Database
from bot.db.records import JobRecord
from bot.errors import NotPermitted, RunwareUnavailable, UserFacingError
from bot.images import CheckedImage
from bot.requests import ResolvedRequest, build_task
from bot.runware.client import RunwareClient
from bot.runware.errors import AuthError, BalanceError, RequestValidationError, RunwareError
from bot.runware.models import new_task_uuid
from bot.services import queue
from bot.services.clock import Clock, SystemClock
from bot.services.delivery import Deliverer
from bot.services.jobs import JobStore
from bot.services.poller import Poller
from bot.services.progress import JobSink, ProgressUpdate
from bot.services.quotas import Member, Quotas

log = logging.getLogger("bot.engine")

PAUSE_PROBE_S = 60.0       # while Runware refuses the key or balance, try one submit this often
SUBMIT_CONCURRENCY = 8
STATS_REFRESH_S = 60.0


@dataclass(frozen=True)
class CancelResult:
    job: JobRecord
    message: str


class Engine:
    def __init__(
        self,
        *,
        cfg: Config,
        db: Database,
        client: RunwareClient,
        sink: JobSink,
        clock: Clock | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.cfg = cfg
        self.db = db
        self.client = client
        self.sink = sink
        self.clock = clock or SystemClock()
        tz = cfg.progress.tz
        self.quotas = Quotas(db, cfg.limits, tz, self.clock)
        self.store = JobStore(db, self.quotas, self.clock, tz)
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(cfg.runware.request_timeout_s), follow_redirects=False
        )
        self.poller = Poller(cfg, self.store, client, self.clock, self._runware_refused)
        self.deliverer = Deliverer(cfg, self.store, sink, self.http, self.clock)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._trouble: str | None = None           # shown on progress messages while Runware misbehaves
        self._last_probe = 0.0
        self._last_report: dict[int, tuple[str, float]] = {}
        self._medians: dict[tuple[str, int], float | None] = {}
        self._medians_at = -STATS_REFRESH_S
        self.tick_interval_s = max(0.01, min(cfg.runware.poll_interval_s / 2, 0.5))

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.make_in_flight_due(self.clock.now())
        self._task = asyncio.create_task(self._run(), name="klingbot-engine")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._own_http:
            await self.http.aclose()

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.tick()
            except Exception:
                log.exception("engine tick failed; continuing")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.tick_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def tick(self) -> None:
        await self.store.heartbeat()
        await self._submit_queued()
        report = await self.poller.tick()
        if report.failed_request is not None and not isinstance(report.failed_request, (AuthError, BalanceError)):
            self._trouble = "Runware is not answering, retrying"
        elif report.polled:
            self._trouble = None
        await self.deliverer.tick()
        await self._report_progress()

    # ---- creating jobs -----------------------------------------------------------------------

    async def create_job(
        self,
        member: Member,
        request: ResolvedRequest,
        *,
        channel_id: int,
        first: CheckedImage | None = None,
        last: CheckedImage | None = None,
        upload_limit: int | None = None,
        parent_job_id: int | None = None,
        image_uuids: dict[str, str] | None = None,
    ) -> JobRecord:
        """Reserve (one transaction that checks every limit), upload the frames, queue the job."""
        job = await self.store.create(
            member,
            channel_id=channel_id,
            model_key=request.model_key,
            params=request.model_dump(mode="json"),
            task_uuid=new_task_uuid(),
            duration_s=request.duration,
            variations=request.variations,
            estimate_micro=request.estimate_micro,
            upload_limit=upload_limit,
            parent_job_id=parent_job_id,
            blocklist_text="\n".join(filter(None, [request.prompt, request.negative_prompt])),
        )
        uuids = dict(image_uuids or {})
        try:
            for name, image in (("first", first), ("last", last)):
                if image is not None and name not in uuids:
                    uuids[name] = await self.client.upload_image(image.data_uri())
        except RunwareError as exc:
            await self.store.abandon(job.id, f"The image upload failed: {exc.user_message}")
            if isinstance(exc, (AuthError, BalanceError)):
                await self._runware_refused(exc)
                raise RunwareUnavailable(self._paused_message()) from None
            raise UserFacingError(f"The image upload to Runware failed: {exc.user_message}") from None
        if uuids:
            await self.store.set_image_uuids(job.id, uuids)
        self.wake()
        refreshed = await self.store.get(job.id)
        assert refreshed is not None
        return refreshed

    async def reroll(self, job_id: int, member: Member, *, channel_id: int, upload_limit: int | None) -> JobRecord:
        """Same parameters and stored frames, a new task, charged to ``member``."""
        source = await self.store.get(job_id)
        if source is None or source.guild_id != member.guild_id:
            raise UserFacingError(f"Job #{job_id} does not exist here.")
        request = ResolvedRequest.model_validate(source.params)
        missing = [n for n, has in (("first", request.has_first_frame), ("last", request.has_last_frame))
                   if has and n not in (source.image_uuids or {})]
        if missing:
            raise UserFacingError(f"Job #{job_id}'s frames were never uploaded, so it cannot be re-rolled.")
        return await self.create_job(
            member,
            request,
            channel_id=channel_id,
            upload_limit=upload_limit,
            parent_job_id=source.id,
            image_uuids=dict(source.image_uuids or {}),
        )

    async def cancel(self, job_id: int, member: Member, *, is_moderator: bool) -> CancelResult:
        job = await self.store.get(job_id)
        if job is None or job.guild_id != member.guild_id:
            raise UserFacingError(f"Job #{job_id} does not exist here.")
        if job.user_id != member.user_id and not is_moderator:
            raise NotPermitted("Only the member who started this job or a moderator can cancel it.")
        if job.state not in ("queued", "submitted", "processing") or job.cancel_requested:
            raise UserFacingError(f"Job #{job_id} is already {job.state}; there is nothing to cancel.")
        updated = await self.store.request_cancel(job_id, f"discord:{member.user_id}")
        if updated.state == "cancelled":
            message = f"Job #{job_id} was cancelled before it reached Runware; nothing was charged."
        else:
            message = (
                f"Job #{job_id} is cancelled and will not be posted. Runware cannot stop a video it has "
                "started, so it may still be billed; the real cost is settled when Runware reports it."
            )
        self.wake()
        return CancelResult(updated, message)

    async def queue_position(self, job_id: int) -> int | None:
        return await queue.queue_position(self.db, job_id)

    # ---- submitting ----------------------------------------------------------------------------

    def _paused_message(self) -> str:
        return "Generation is paused: the bot's Runware account needs attention. Please try again later."

    async def _runware_refused(self, exc: RunwareError) -> None:
        """401/402 from Runware: pause every submission bot-wide and alert the operator once."""
        first_time = not await self.store.runware_paused()
        await self.store.set_runware_paused(f"{type(exc).__name__}: {exc.code}")
        self._last_probe = self.clock.now()
        if first_time:
            log.error("Runware refused the request (%s); generation paused", exc.code)
            alert = getattr(self.sink, "alert", None)
            if alert is not None:
                what = "the API key was rejected" if isinstance(exc, AuthError) else "the account balance is exhausted"
                try:
                    await alert(f"Runware refused requests ({what}, code {exc.code}). Generation is paused; "
                                "queued jobs wait and resume by themselves once Runware accepts work again.")
                except Exception:
                    log.exception("could not alert the operator")

    async def _submit_queued(self) -> None:
        paused = await self.store.runware_paused()
        now = self.clock.now()
        if paused and now - self._last_probe < PAUSE_PROBE_S:
            return
        jobs = await queue.next_to_submit(self.db, self.cfg.limits.max_in_flight)
        if paused:
            jobs = jobs[:1]  # one probe while paused
            self._last_probe = now
        if not jobs:
            return
        semaphore = asyncio.Semaphore(SUBMIT_CONCURRENCY)

        async def one(job: JobRecord) -> None:
            async with semaphore:
                await self._submit(job)

        await asyncio.gather(*(one(job) for job in jobs))

    async def _submit(self, job: JobRecord) -> None:
        request = ResolvedRequest.model_validate(job.params)
        uuids = job.image_uuids or {}
        if (request.has_first_frame and "first" not in uuids) or (request.has_last_frame and "last" not in uuids):
            # Killed between the reserve and the upload: the frames only lived in memory.
            await self.store.abandon(job.id, "The bot restarted before your images were uploaded; please try again.")
            return
        task = build_task(
            request,
            task_uuid=job.task_uuid,
            runware=self.cfg.runware,
            first_image=uuids.get("first"),
            last_image=uuids.get("last"),
            safety_mode=await self.store.guild_safety_mode(job.guild_id),
            webhook_url=self.webhook_url_for(job),
        )
        failpoints.hit("before_submit")
        try:
            await self.client.submit(task)
        except RequestValidationError as exc:
            await self.store.abandon(job.id, exc.user_message)
            return
        except (AuthError, BalanceError) as exc:
            await self._runware_refused(exc)
            return
        except RunwareError as exc:
            log.warning("job %s: submit failed (%s); stays queued", job.id, exc.code)
            self._trouble = "Runware is not answering, retrying"
            return
        if await self.store.runware_paused():
            await self.store.set_runware_paused(None)
            log.info("Runware accepts work again; generation resumed")
        await self.store.mark_submitted(job.id, self.clock.now() + self.cfg.runware.first_poll_after_s)

    def webhook_url_for(self, job: JobRecord) -> str | None:
        return None  # replaced when the webhook receiver is enabled (bot/services/webhooks.py)

    # ---- progress --------------------------------------------------------------------------------

    async def _estimate(self, job: JobRecord) -> float | None:
        now = self.clock.now()
        if now - self._medians_at > STATS_REFRESH_S:
            self._medians.clear()
            self._medians_at = now
        key = (job.model_key, job.duration_s)
        if key not in self._medians:
            self._medians[key] = await self.store.median_duration(*key)
        return self._medians[key]

    async def _report_progress(self) -> None:
        now = self.clock.now()
        interval = self.cfg.progress.min_edit_interval_s
        active = await self.store.active_jobs()
        live = {job.id for job in active}
        for stale in [jid for jid in self._last_report if jid not in live]:
            del self._last_report[stale]
        for job in active:
            phase = job.state
            last = self._last_report.get(job.id)
            if last is not None and last[0] == phase and now - last[1] < interval and job.progress_message_id:
                continue
            position = await self.queue_position(job.id) if phase == "queued" else None
            started = job.submitted_at if phase != "queued" and job.submitted_at else job.created_at
            update = ProgressUpdate(
                job=job,
                phase=phase,  # type: ignore[arg-type]
                elapsed_s=max(0.0, now - started),
                queue_position=position,
                estimate_s=await self._estimate(job),
                note=self._trouble,
            )
            self._last_report[job.id] = (phase, now)
            try:
                new_id = await self.sink.progress(update)
            except Exception:
                log.exception("job %s: progress update failed", job.id)
                continue
            if new_id and new_id != job.progress_message_id:
                await self.store.set_progress_message(job.id, new_id)
