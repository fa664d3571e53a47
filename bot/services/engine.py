"""The engine: creates jobs (reserve -> upload -> queue), submits them through the fair queue,
drives the poller and delivery, and reports progress. One engine per process; the Discord bot and
`klingbot generate` are two faces on it. Everything it knows is in SQLite, so a new engine on the
same database resumes where a killed one stopped."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
from dataclasses import dataclass

import httpx

from bot.config import Config
from bot.db.connection import Database
from bot.db.guilds import get_guild_settings
from bot.db.jobs import get_job, get_job_by_task, make_all_due
from bot.db.kv import kv_delete, kv_get, kv_set, write_heartbeat
from bot.db.records import JobRecord
from bot.errors import NotPermitted, RunwareUnavailable, UserFacingError
from bot.images import CheckedImage
from bot.requests import ResolvedRequest, build_task
from bot.runware.client import RunwareClient
from bot.runware.errors import AuthError, BalanceError, RequestValidationError, RunwareError
from bot.runware.models import TaskStatus, new_task_uuid
from bot.services import queue
from bot.services.clock import Clock, SystemClock
from bot.services.delivery import Deliverer
from bot.services.jobs import JobStore
from bot.services.metrics import Metrics
from bot.services.moderation.permissions import may_manage_job
from bot.services.poller import Poller
from bot.services.quotas import RUNWARE_PAUSE_KEY, RUNWARE_PAUSED_MESSAGE, Member, Quotas
from bot.services.reporter import ProgressReporter
from bot.services.sink import JobSink
from bot.services.webhooks import WebhookReceiver, webhook_settings

log = logging.getLogger(__name__)

PAUSE_PROBE_S = 60.0       # while Runware refuses the key or balance, check the key this often
ALERT_EVERY_S = 3600.0     # repeat the operator alert at most this often
SUBMIT_CONCURRENCY = 8
HEARTBEAT_S = 5.0          # `klingbot health` reads it; written by its own task so a slow tick cannot stall it


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
        metrics: Metrics | None = None,
    ) -> None:
        hooks = webhook_settings(cfg)  # first: UserFacingError when the secret is missing
        self.cfg = cfg
        self.db = db
        self.client = client
        self.sink = sink
        self.clock = clock or SystemClock()
        tz = cfg.progress.tz
        self.quotas = Quotas(db, cfg.limits, tz, self.clock)
        self.store = JobStore(db, self.quotas, self.clock, tz, metrics=metrics)
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(cfg.runware.request_timeout_s), follow_redirects=False
        )
        self.poller = Poller(cfg, self.store, client, self.clock, self._runware_refused)
        self.deliverer = Deliverer(cfg, self.store, sink, self.http, self.clock, wake=self.wake)
        self.reporter = ProgressReporter(cfg, db, sink, self.clock)
        self.webhooks = WebhookReceiver(hooks, self.apply_webhook) if hooks else None
        self._webhook_url = hooks.signed_url() if hooks else None  # a SecretStr: it carries the token
        self._wake = asyncio.Event()
        # taskUUIDs of jobs whose frames this process is still uploading: the submit loop must wait
        # for them, not take them for jobs whose creator died before the upload (and abandon them).
        self._uploading: set[str] = set()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._trouble: str | None = None           # shown on progress messages while Runware misbehaves
        self._last_probe = 0.0
        self._alerted_at = -ALERT_EVERY_S
        self.tick_interval_s = beat_step(cfg.runware.poll_interval_s)

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        _freeze_startup_heap()
        if self.webhooks is not None:
            await self.webhooks.start()
        await make_all_due(self.db, self.clock.now())
        await self._write_heartbeat()
        self._task = asyncio.create_task(self._run(), name="klingbot-engine")
        self._heartbeat_task = asyncio.create_task(self._beat(), name="klingbot-heartbeat")

    async def stop(self) -> None:
        self._stopping = True
        if self.webhooks is not None:
            await self.webhooks.stop()
        self._wake.set()
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)
            self._heartbeat_task = None
        if self._task is not None:
            await self._task
            self._task = None
        await self.deliverer.close()
        if self._own_http:
            await self.http.aclose()

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        # Ticks keep a fixed beat whose step divides the poll interval, and polls are scheduled from
        # the beat: a job polled on the beat comes due on the beat again, so its polls are exactly one
        # interval apart (a tick that ran late does not push every later poll back) and jobs due
        # together share batches. A wake (a new job) ticks at once, on the last beat.
        step = self.tick_interval_s
        origin = self.clock.now()
        while not self._stopping:
            beat = origin + math.floor((self.clock.now() - origin) / step) * step
            try:
                await self.tick(beat)
            except Exception:
                log.exception("engine tick failed; continuing")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, beat + step - self.clock.now()))
            except TimeoutError:
                pass
            self._wake.clear()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._write_heartbeat()
            except Exception:
                log.exception("could not write the heartbeat")

    async def _write_heartbeat(self) -> None:
        await write_heartbeat(self.db, self.clock.now(), os.getpid())

    async def tick(self, beat: float | None = None) -> None:
        await self._submit_queued()
        report = await self.poller.tick(now=beat)
        if report.failed_request is not None and not isinstance(report.failed_request, (AuthError, BalanceError)):
            self._trouble = "Runware is not answering, retrying"
        elif report.polled:
            self._trouble = None
        await self.deliverer.tick()
        await self.reporter.report(self._trouble, self._uploading)

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
        task_uuid = new_task_uuid()
        self._uploading.add(task_uuid)  # before the row exists: no tick may see it without frames
        try:
            job = await self.store.create(
                member,
                channel_id=channel_id,
                model_key=request.model_key,
                params=request.model_dump(mode="json"),
                task_uuid=task_uuid,
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
                # The command's own reply tells the member (raised below); no public notice as well.
                await self.store.abandon(job.id, f"The image upload failed: {exc.user_message}", told=True)
                if isinstance(exc, (AuthError, BalanceError)):
                    await self._runware_refused(exc)
                    raise RunwareUnavailable(RUNWARE_PAUSED_MESSAGE) from None
                raise UserFacingError(f"The image upload to Runware failed: {exc.user_message}") from None
            if uuids:
                await self.store.set_image_uuids(job.id, uuids)
        finally:
            self._uploading.discard(task_uuid)
        self.wake()
        refreshed = await get_job(self.db, job.id)
        assert refreshed is not None
        return refreshed

    async def reroll(self, job_id: int, member: Member, *, channel_id: int, upload_limit: int | None) -> JobRecord:
        """Same parameters and stored frames, a new task, charged to ``member``."""
        source = await get_job(self.db, job_id)
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
        job = await get_job(self.db, job_id)
        if job is None or job.guild_id != member.guild_id:
            raise UserFacingError(f"Job #{job_id} does not exist here.")
        if not may_manage_job(job, member, moderator=is_moderator):
            raise NotPermitted("Only the member who started this job or a moderator can cancel it.")
        if job.state not in ("queued", "submitted", "processing") or job.cancel_requested:
            raise UserFacingError(f"Job #{job_id} is already {job.state}; there is nothing to cancel.")
        updated = await self.store.request_cancel(job_id, f"discord:{member.user_id}")
        if updated.state == "cancelled" and not updated.may_be_at_runware:
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

    async def _runware_refused(self, exc: RunwareError) -> None:
        """401/402 from Runware: pause every submission bot-wide and alert the operator (at most
        once an hour: a probe that fails again must not flood the ops channel)."""
        await kv_set(self.db, RUNWARE_PAUSE_KEY, f"{type(exc).__name__}: {exc.code}")
        now = self.clock.now()
        self._last_probe = now
        if now - self._alerted_at < ALERT_EVERY_S:
            return
        self._alerted_at = now
        log.error("Runware refused the request (%s); generation paused", exc.code)
        what = "the API key was rejected" if isinstance(exc, AuthError) else "the account balance is exhausted"
        try:
            await self.sink.alert(f"Runware refused requests ({what}, code {exc.code}). Generation is paused; "
                                  "queued jobs wait and resume by themselves once Runware accepts work again.")
        except Exception:
            log.exception("could not alert the operator")

    async def probe_runware(self) -> bool:
        """While generation is paused by a 401/402: one cheap authenticated call. True (and the
        pause lifted) when Runware accepts the key again; a balance still empty shows up as a
        402 on the next submit, which pauses again."""
        if await kv_get(self.db, RUNWARE_PAUSE_KEY) is None:
            return True
        self._last_probe = self.clock.now()
        try:
            await self.client.check_key()
        except RunwareError as exc:
            log.info("Runware still refuses (%s); generation stays paused", exc.code)
            return False
        await kv_delete(self.db, RUNWARE_PAUSE_KEY)
        log.info("Runware accepts the key again; generation resumed")
        return True

    async def _submit_queued(self) -> None:
        if await kv_get(self.db, RUNWARE_PAUSE_KEY) is not None:
            if self.clock.now() - self._last_probe < PAUSE_PROBE_S or not await self.probe_runware():
                return
        jobs = await queue.next_to_submit(self.db, self.cfg.limits.max_in_flight)
        if not jobs:
            return
        semaphore = asyncio.Semaphore(SUBMIT_CONCURRENCY)

        async def one(job: JobRecord) -> None:
            async with semaphore:
                await self._submit(job)

        await asyncio.gather(*(one(job) for job in jobs))

    async def _submit(self, job: JobRecord) -> None:
        request = ResolvedRequest.model_validate(job.params)
        if _frames_missing(request, job):
            if job.task_uuid in self._uploading or queue.creator_may_be_uploading(job, self.clock.now()):
                await self.store.unclaim(job.id)  # still uploading (here, or in its creator's process)
                return
            job = await get_job(self.db, job.id) or job  # the upload may have finished since the claim
            if _frames_missing(request, job):
                # Killed between the reserve and the upload: the frames only lived in memory.
                await self.store.abandon(job.id, "The bot restarted before your images were uploaded; "
                                                 "please try again.")
                return
        uuids = job.image_uuids or {}
        task = build_task(
            request,
            task_uuid=job.task_uuid,
            runware=self.cfg.runware,
            first_image=uuids.get("first"),
            last_image=uuids.get("last"),
            safety_mode=(await get_guild_settings(self.db, job.guild_id)).safety_mode,
            webhook_url=self.webhook_url_for(job),
        )
        if not await self.store.begin_submit(job.id):
            return  # cancelled or finished while waiting for its turn
        try:
            await self.client.submit(task)
        except RequestValidationError as exc:
            await self.store.abandon(job.id, exc.user_message)
            return
        except (AuthError, BalanceError) as exc:
            await self.store.unclaim(job.id)
            await self._runware_refused(exc)
            return
        except RunwareError as exc:
            if not exc.retryable:
                # 403, a content check on the prompt...: Runware would refuse it again (SPEC 3.5).
                await self.store.abandon(job.id, exc.user_message)
                return
            log.warning("job %s: submit failed (%s); stays queued", job.id, exc.code)
            await self.store.unclaim(job.id)
            self._trouble = "Runware is not answering, retrying"
            return
        await self.store.mark_submitted(job.id, self.clock.now() + self.cfg.runware.first_poll_after_s)

    def webhook_url_for(self, job: JobRecord) -> str | None:
        """``{webhook_public_url}?token=<secret>`` when webhooks are on. Never log it."""
        return self._webhook_url.get_secret_value() if self._webhook_url is not None else None

    async def apply_webhook(self, status: TaskStatus) -> bool:
        """Items Runware pushed for one task (the receiver calls this). False when no job has the
        task. Applied through the poller's own path, then the loop is woken to deliver at once."""
        job = await get_job_by_task(self.db, status.task_uuid)
        if job is None:
            return False
        await self.poller.apply_pushed(job, status, self.clock.now())
        self.wake()
        return True


def beat_step(poll_interval_s: float) -> float:
    """The engine's tick step: at most 0.5 s, at most half the poll interval, and dividing it."""
    return poll_interval_s / max(2, math.ceil(poll_interval_s / 0.5 - 1e-9))


_heap_frozen = False


def _freeze_startup_heap() -> None:
    """Once per process: move what start-up allocated (modules, discord.py, pydantic schemas) out of
    the garbage collector's reach. It lives as long as the process anyway, and each full collection
    walked all of it: 400 ms with the event loop stopped, with 1,000 jobs in flight (bench: ack)."""
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.freeze()


def _frames_missing(request: ResolvedRequest, job: JobRecord) -> bool:
    uuids = job.image_uuids or {}
    return ((request.has_first_frame and "first" not in uuids)
            or (request.has_last_frame and "last" not in uuids))
