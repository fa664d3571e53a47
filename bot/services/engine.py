"""The engine: creates jobs (reserve -> upload -> queue) and runs the loops that take them through
their life (SPEC 3.5): submitting, polling, delivering, progress reporting, and this run's lease,
each a task of its own on its own cadence, so none waits on another: a paced Discord write, a slow
upload or a submit that Runware makes us retry never delays a poll round. One engine per process;
the Discord bot and `klingbot generate` are two faces on it. Everything it knows is in the
database, so a new engine on the same database resumes where a killed one stopped."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from bot.config import Config
from bot.db.connection import Database
from bot.db.jobs import get_job, get_job_by_task, make_all_due
from bot.db.records import JobRecord
from bot.db.runs import record_poll_round, set_deliver_to
from bot.errors import NotPermitted, RunwareUnavailable, UserFacingError
from bot.images import CheckedImage
from bot.requests import ResolvedRequest
from bot.runware.client import RunwareClient
from bot.runware.errors import AuthError, BalanceError, RunwareError
from bot.runware.models import TaskStatus, new_task_uuid
from bot.services import queue
from bot.services.clock import Clock, SystemClock
from bot.services.delivery import Deliverer
from bot.services.enhance import enhancement_charge, made_request
from bot.services.jobs import JobStore
from bot.services.metrics import Metrics
from bot.services.moderation.permissions import may_manage_job
from bot.services.ownership import BOT_KIND, RENEW_EVERY_S, Ownership
from bot.services.poller import Poller
from bot.services.quotas import RUNWARE_PAUSED_MESSAGE, Member, Quotas
from bot.services.reporter import ProgressReporter
from bot.services.sink import JobSink
from bot.services.submitter import Submitter
from bot.services.trouble import RunwareTrouble
from bot.services.webhooks import WebhookReceiver, webhook_settings
from bot.usd import micro_to_usd

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0  # a finished poll round writes its run's polled_at (`klingbot health`) at most this often


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
        kind: str = BOT_KIND,
        deliver_to: str | None = None,
        heartbeat: bool = True,
        adopt_while_running: bool = True,
    ) -> None:
        """``kind`` names this run in the runs table; ``deliver_to`` is where its sink puts results
        (the terminal's --out), kept with each job it creates. ``heartbeat``: record this run's
        finished poll rounds for `klingbot health` (the bot's; a terminal run's do not count).
        ``adopt_while_running``: take over orphaned jobs all along, not only at start (a terminal run
        reports those it took at start)."""
        hooks = webhook_settings(cfg)  # first: UserFacingError when the secret is missing
        self.cfg = cfg
        self.db = db
        self.client = client
        self.sink = sink
        self.clock = clock or SystemClock()
        tz = cfg.progress.tz
        self.quotas = Quotas(db, cfg.limits, tz, self.clock, cfg.premium)
        self.store = JobStore(db, self.quotas, self.clock, tz, metrics=metrics)
        self.ownership = Ownership(db, self.clock, self.store.run_id, kind=kind, deliver_to=deliver_to)
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(cfg.runware.request_timeout_s), follow_redirects=False
        )
        self.trouble = RunwareTrouble(self.clock, sink.alert)
        self._webhook_url = hooks.signed_url() if hooks else None  # a SecretStr: it carries the token
        self.submitter = Submitter(cfg, db, self.store, client, self.clock, self.trouble, sink.alert,
                                   self.webhook_url_for)
        self.poller = Poller(cfg, self.store, client, self.clock, self.submitter.runware_refused,
                             self.trouble.job_finished)
        self.deliverer = Deliverer(cfg, self.store, sink, self.http, self.clock, owns=self.ownership.owns,
                                   wake=lambda: self._wake_deliver.set())
        self.reporter = ProgressReporter(cfg, db, sink, self.clock, owns=self.ownership.owns)
        self.webhooks = WebhookReceiver(hooks, self.apply_webhook) if hooks else None
        self.deliver_to = deliver_to
        self.writes_heartbeat = heartbeat
        self.adopt_while_running = adopt_while_running
        self.adopted: list[int] = []  # jobs of gone processes taken over at start
        self.tick_interval_s = beat_step(cfg.runware.poll_interval_s)
        self.poll_rounds = 0
        self._heartbeat_at = -math.inf
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._wake_submit = asyncio.Event()
        self._wake_poll = asyncio.Event()
        self._wake_deliver = asyncio.Event()
        self._wake_report = asyncio.Event()
        self._wake_lease = asyncio.Event()

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        _freeze_startup_heap()
        await self.ownership.start()
        self.adopted = await self.ownership.adopt(self._shows)
        if self.webhooks is not None:
            await self.webhooks.start()
        await make_all_due(self.db, self.clock.now())
        step = self.tick_interval_s
        self._tasks = [
            asyncio.create_task(self._poll_loop(), name="klingbot-poll"),
            asyncio.create_task(self._loop("submit", step, self._wake_submit, self.submitter.submit_due),
                                name="klingbot-submit"),
            asyncio.create_task(self._loop("deliver", step, self._wake_deliver, self.deliverer.dispatch),
                                name="klingbot-deliver"),
            asyncio.create_task(self._loop("report", step, self._wake_report, self._report), name="klingbot-report"),
            asyncio.create_task(self._loop("lease", RENEW_EVERY_S, self._wake_lease, self._lease),
                                name="klingbot-lease"),
        ]

    async def stop(self) -> None:
        """The one shutdown path (SIGTERM ends here): every loop finishes what it is doing and
        stops, the submits and deliveries in flight finish, and the lease is given up so the next
        process takes this one's unfinished jobs over at once."""
        self._stopping = True
        if self.webhooks is not None:
            await self.webhooks.stop()
        for wake in (self._wake_submit, self._wake_poll, self._wake_deliver, self._wake_report, self._wake_lease):
            wake.set()
        tasks, self._tasks = self._tasks, []
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.submitter.drain()
        await self.deliverer.drain()
        await self.deliverer.close()
        if tasks:
            try:
                await self.ownership.end()
            except Exception:
                log.exception("could not end this run's lease; its jobs are taken over when it lapses")
        if self._own_http:
            await self.http.aclose()

    def wake(self) -> None:
        """Something changed that the loops should see now (a new job, a cancel)."""
        for wake in (self._wake_submit, self._wake_deliver, self._wake_report):
            wake.set()

    async def _loop(self, name: str, step_s: float, wake: asyncio.Event, body: Callable[[], Awaitable[object]]
                    ) -> None:
        while not self._stopping:
            wake.clear()  # before the body: a wake while it runs means one more round at once
            try:
                await body()
            except Exception:
                log.exception("the %s loop failed; continuing", name)
            if not self._stopping:
                await _wait(wake, step_s)

    async def _poll_loop(self) -> None:
        # Rounds keep a fixed beat whose step divides the poll interval, and polls are scheduled from
        # the beat: a job polled on the beat comes due on the beat again, so its polls are exactly one
        # interval apart (a round that ran late does not push every later poll back) and jobs due
        # together share batches.
        step = self.tick_interval_s
        origin = self.clock.now()
        while not self._stopping:
            beat = origin + math.floor((self.clock.now() - origin) / step) * step
            self._wake_poll.clear()
            try:
                await self._poll_round(beat)
            except Exception:
                log.exception("poll round failed; continuing")
            if not self._stopping:
                await _wait(self._wake_poll, max(0.0, beat + step - self.clock.now()))

    async def _poll_round(self, beat: float | None = None) -> None:
        report = await self.poller.tick(now=beat)
        note = self.trouble.note
        failed = report.failed_request
        if failed is not None and not isinstance(failed, (AuthError, BalanceError)):
            await self.trouble.request_failed(f"getResponse: {failed.code}")
        elif report.polled:
            self.trouble.request_answered()
        if self.trouble.note != note:
            self._wake_report.set()
        if report.finished:
            self._wake_deliver.set()
            self._wake_submit.set()  # slots freed
        self.poll_rounds += 1
        if self.writes_heartbeat and self.clock.now() - self._heartbeat_at >= HEARTBEAT_S:
            await self._write_heartbeat()

    async def _write_heartbeat(self) -> None:
        # Written by a finished poll round, never by a timer: a stuck poll loop shows. Until the first
        # one, `klingbot health` counts from the run's start.
        try:
            now = self.clock.now()
            await record_poll_round(self.db, self.ownership.run_id, now)
            self._heartbeat_at = now
        except Exception:
            log.exception("could not record this run's finished poll round")

    async def _report(self) -> None:
        await self.reporter.report(self.trouble.note, self.submitter.uploading)

    async def _lease(self) -> None:
        await self.ownership.renew()
        if self.adopt_while_running and await self.ownership.adopt(self._shows):
            self._wake_deliver.set()
            self._wake_report.set()

    def _shows(self, job: JobRecord) -> bool:
        return self.sink.handles(job)

    async def tick(self, beat: float | None = None) -> None:
        """One round of every loop, in order, each awaited to the end (tests step the engine this
        way instead of starting the loops)."""
        await self.submitter.submit_due(wait=True)
        await self._poll_round(beat)
        await self.deliverer.tick()
        await self._report()

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
        self.submitter.uploading.add(task_uuid)  # before the row exists: no tick may see it without frames
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
                enhance_reserve_micro=request.enhance_reserve_micro if request.enhance else None,
            )
            if self.deliver_to:  # before anything is sent: a run taking the job over delivers it there
                await set_deliver_to(self.db, job.id, self.deliver_to)
            uuids = dict(image_uuids or {})
            try:
                for name, image in (("first", first), ("last", last)):
                    if image is not None and name not in uuids:
                        uuids[name] = await self.client.upload_image(image.data_uri())
            except RunwareError as exc:
                # The command's own reply tells the member (raised below); no public notice as well.
                await self.store.abandon(job.id, f"The image upload failed: {exc.user_message}", told=True)
                if isinstance(exc, (AuthError, BalanceError)):
                    await self.submitter.runware_refused(exc)
                    raise RunwareUnavailable(RUNWARE_PAUSED_MESSAGE) from None
                raise UserFacingError(f"The image upload to Runware failed: {exc.user_message}") from None
            if uuids:
                await self.store.set_image_uuids(job.id, uuids)
        finally:
            self.submitter.uploading.discard(task_uuid)
        self.wake()
        refreshed = await get_job(self.db, job.id)
        assert refreshed is not None
        return refreshed

    async def reroll(self, job_id: int, member: Member, *, channel_id: int, upload_limit: int | None) -> JobRecord:
        """Same parameters and stored frames, a new task, charged to ``member``."""
        source = await get_job(self.db, job_id)
        if source is None or source.guild_id != member.guild_id:
            raise UserFacingError(f"Job #{job_id} does not exist here.")
        # An enhanced job's prompt is the enhancer's text, used as it is (not enhanced again).
        request = made_request(source).model_copy(update={"origin": "reroll"})
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
        if updated is None:  # gone between the read and the cancel
            raise UserFacingError(f"Job #{job_id} does not exist here.")
        enhancement = enhancement_charge(updated)
        if updated.state == "cancelled" and not updated.may_be_at_runware and enhancement:
            message = (f"Job #{job_id} was cancelled before its video reached Runware; only its prompt "
                       f"enhancement is charged ({micro_to_usd(enhancement)}).")
        elif updated.state == "cancelled" and not updated.may_be_at_runware:
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

    async def probe_runware(self) -> bool:
        return await self.submitter.probe_runware()

    def webhook_url_for(self, job: JobRecord) -> str | None:
        """``{webhook_public_url}?token=<secret>`` when webhooks are on. Never log it."""
        return self._webhook_url.get_secret_value() if self._webhook_url is not None else None

    async def apply_webhook(self, status: TaskStatus) -> bool:
        """Items Runware pushed for one task (the receiver calls this). False when no job has the
        task. Applied through the poller's own path, then the loop is woken to deliver at once."""
        job = await get_job_by_task(self.db, status.task_uuid)
        if job is None:
            return False
        if await self.poller.apply_pushed(job, status, self.clock.now()):
            self._wake_deliver.set()
            self._wake_submit.set()
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



async def _wait(event: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout=timeout)
    except TimeoutError:
        pass
