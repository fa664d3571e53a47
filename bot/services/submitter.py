"""Submitting (SPEC 3.6, 3.5): the fair queue's next jobs go to Runware, each in a task of its own,
so a submit that Runware makes us retry never holds up another submit, nor a poll round. While
Runware refuses the key or the balance (401/402) submissions pause bot-wide, the operator is told,
and the key is probed now and then until Runware accepts work again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.config import Config
from bot.db.connection import Database
from bot.db.guilds import get_guild_settings, list_blocklist
from bot.db.jobs import get_job
from bot.db.kv import kv_delete, kv_get, kv_set
from bot.db.records import JobRecord
from bot.requests import PROMPT_MAX, ResolvedRequest, build_task
from bot.runware.client import RunwareClient
from bot.runware.errors import AuthError, BalanceError, ConflictTaskUUID, RequestValidationError, RunwareError
from bot.services import queue
from bot.services.clock import Clock
from bot.services.enhance import enhance_task, needs_enhancement
from bot.services.jobs import JobStore
from bot.services.quotas import RUNWARE_PAUSE_KEY, blocked_term
from bot.services.trouble import RunwareTrouble

log = logging.getLogger(__name__)

PAUSE_PROBE_S = 60.0       # while Runware refuses the key or balance, check the key this often
ALERT_EVERY_S = 3600.0     # repeat the operator alert at most this often
SUBMIT_CONCURRENCY = 8

Alert = Callable[[str], Awaitable[None]]


class Submitter:
    def __init__(self, cfg: Config, db: Database, store: JobStore, client: RunwareClient, clock: Clock,
                 trouble: RunwareTrouble, alert: Alert, webhook_url: Callable[[JobRecord], str | None]) -> None:
        self.cfg = cfg
        self.db = db
        self.store = store
        self.client = client
        self.clock = clock
        self.trouble = trouble
        self.alert = alert
        self.webhook_url = webhook_url
        # taskUUIDs of jobs whose frames this process is still uploading: they must be waited for,
        # not taken for jobs whose creator died before the upload (and abandoned).
        self.uploading: set[str] = set()
        # Called with the operator's text when Runware refuses the key or balance (the terminal
        # ends its run: nothing in it would ever lift the pause).
        self.on_refused: Alert | None = None
        self._slots = asyncio.Semaphore(SUBMIT_CONCURRENCY)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._last_probe = 0.0
        self._alerted_at = -ALERT_EVERY_S

    async def submit_due(self, *, wait: bool = False) -> int:
        """Claim the jobs to submit now and start their submits; returns how many were started.
        With ``wait``, return once those submits are done (tests step the engine this way)."""
        if await kv_get(self.db, RUNWARE_PAUSE_KEY) is not None:
            if self.clock.now() - self._last_probe < PAUSE_PROBE_S or not await self.probe_runware():
                return 0
        jobs = await self.store.next_to_submit(self.cfg.limits.max_in_flight)
        started = [asyncio.create_task(self._one(job), name=f"submit-{job.id}") for job in jobs]
        for task in started:
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        if wait and started:
            await asyncio.gather(*started, return_exceptions=True)
        return len(started)

    async def drain(self) -> None:
        """Wait for the submits in flight (their outcome is written before the process stops)."""
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    async def _one(self, job: JobRecord) -> None:
        async with self._slots:
            try:
                await self._submit(job)
            except Exception:
                log.exception("job %s: submit failed unexpectedly; its claim lapses and it is taken again", job.id)

    async def _submit(self, job: JobRecord) -> None:
        request = ResolvedRequest.model_validate(job.params)
        if _frames_missing(request, job):
            if job.task_uuid in self.uploading or queue.creator_may_be_uploading(job, self.clock.now()):
                await self.store.unclaim(job.id)  # still uploading (here, or in its creator's process)
                return
            job = await get_job(self.db, job.id) or job  # the upload may have finished since the claim
            if _frames_missing(request, job):
                # Killed between the reserve and the upload: the frames only lived in memory.
                await self.store.abandon(job.id, "The bot restarted before your images were uploaded; "
                                                 "please try again.")
                return
        prompt = job.enhanced_prompt
        if needs_enhancement(request, job):
            prompt = await self._enhance(job, request)
            if prompt is None:
                return
        if prompt is not None and (term := await self._blocked_here(job, prompt)) is not None:
            # The member's own text passed the server's blocklist; the enhancer's must too.
            await self.store.abandon(job.id, f"Runware's prompt enhancer rewrote the prompt with {term!r}, "
                                             "which is blocked on this server, so no video was made.")
            return
        uuids = job.image_uuids or {}
        task = build_task(
            request,
            task_uuid=job.task_uuid,
            runware=self.cfg.runware,
            first_image=uuids.get("first"),
            last_image=uuids.get("last"),
            safety_mode=(await get_guild_settings(self.db, job.guild_id)).safety_mode,
            webhook_url=self.webhook_url(job),
            prompt=prompt,
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
            await self.runware_refused(exc)
            return
        except RunwareError as exc:
            if not exc.retryable:
                # 403, a content check on the prompt...: Runware would refuse it again (SPEC 3.5).
                await self.store.abandon(job.id, exc.user_message)
                return
            log.warning("job %s: submit failed (%s); stays queued", job.id, exc.code)
            await self.store.unclaim(job.id)
            await self.trouble.request_failed(f"submit: {exc.code}")
            return
        await self.store.mark_submitted(job.id, self.clock.now() + self.cfg.runware.first_poll_after_s)

    async def _enhance(self, job: JobRecord, request: ResolvedRequest) -> str | None:
        """Runware's prompt enhancer, before the video task is built: the call written down first,
        sent once, its answer stored in one write (bot/services/enhance.py: what it costs). The
        enhanced text, or None when the job is not submitted now (failed, cancelled, or retried later)."""
        if not await self.store.begin_enhance(job.id):
            return None
        task = enhance_task(job.task_uuid, request.prompt)
        try:
            first, *_ = await self.client.enhance_prompt(task)
        except (AuthError, BalanceError) as exc:
            await self.store.enhance_not_billed(job.id)  # refused before any work: billed nothing
            await self.store.unclaim(job.id)
            await self.runware_refused(exc)
            return None
        except RunwareError as exc:
            if exc.retryable:
                if exc.status is not None and exc.status < 500:
                    await self.store.enhance_not_billed(job.id)  # 429: answered, nothing was done
                log.warning("job %s: prompt enhancement failed (%s); stays queued", job.id, exc.code)
                await self.store.unclaim(job.id)
                await self.trouble.request_failed(f"promptEnhance: {exc.code}")
                return None
            if isinstance(exc, ConflictTaskUUID):  # Runware has the call and will not answer it again
                await self.store.abandon(job.id, "Runware's prompt enhancer did not answer again after "
                                                 "the bot restarted; please try again.")
                return None
            await self.store.enhance_refused(job.id, f"Runware's prompt enhancer refused the prompt: "
                                                     f"{exc.message[:300]}")
            return None
        if not await self.store.record_enhancement(job.id, first.text[:PROMPT_MAX], first.cost_micro):
            return None  # cancelled while the call was out (it then counted at its reserve)
        return first.text[:PROMPT_MAX]

    async def _blocked_here(self, job: JobRecord, prompt: str) -> str | None:
        if job.guild_id <= 0:  # the terminal and DMs have no blocklist
            return None
        return blocked_term(prompt, await list_blocklist(self.db, job.guild_id))

    async def runware_refused(self, exc: RunwareError) -> None:
        """401/402 from Runware: pause every submission bot-wide and alert the operator (at most
        once an hour: a probe that fails again must not flood the ops channel)."""
        now = self.clock.now()
        self._last_probe = now  # first: the submit loop must not probe the moment the pause is written
        await kv_set(self.db, RUNWARE_PAUSE_KEY, f"{type(exc).__name__}: {exc.code}")
        what = "the API key was rejected" if isinstance(exc, AuthError) else "the account balance is exhausted"
        text = (f"Runware refused requests ({what}, code {exc.code}). Generation is paused; "
                "queued jobs wait and resume by themselves once Runware accepts work again.")
        if self.on_refused is not None:
            await self.on_refused(text)
        if now - self._alerted_at < ALERT_EVERY_S:
            return
        self._alerted_at = now
        log.error("Runware refused the request (%s); generation paused", exc.code)
        try:
            await self.alert(text)
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


def _frames_missing(request: ResolvedRequest, job: JobRecord) -> bool:
    uuids = job.image_uuids or {}
    return ((request.has_first_frame and "first" not in uuids)
            or (request.has_last_frame and "last" not in uuids))
