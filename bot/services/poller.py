"""One poller for every job at Runware: each tick sends the due jobs' getResponse tasks in batches
(one HTTP request per batch) and turns what Runware says into state transitions."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.config import Config
from bot.db.jobs import claim_due_for_poll, mark_polled, mark_processing, results_for_job, set_next_poll
from bot.db.records import AT_RUNWARE_STATES, JobRecord
from bot.runware.client import RunwareClient
from bot.runware.errors import AuthError, BalanceError, RunwareError, error_for
from bot.runware.models import TaskError, TaskStatus
from bot.services.clock import Clock
from bot.services.jobs import JobStore

log = logging.getLogger(__name__)
# How long a poll round holds its jobs against other processes on the same database; a process killed
# mid-round leaves them to the others after this long (a finished round reschedules them at once).
POLL_LEASE_S = 30.0



@dataclass
class PollReport:
    polled: int = 0
    finished: int = 0
    failed_request: RunwareError | None = None


class Poller:
    def __init__(
        self,
        cfg: Config,
        store: JobStore,
        client: RunwareClient,
        clock: Clock,
        on_runware_refused: Callable[[RunwareError], Awaitable[None]],
        on_job_finished: Callable[[str, str | None], Awaitable[None]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.db = store.db
        self.client = client
        self.clock = clock
        self.on_runware_refused = on_runware_refused
        self.on_job_finished = on_job_finished  # (final state, error): once per job Runware finished
        self.seen_ready: dict[str, float] = {}  # task_uuid -> when the poller first saw it finished (bench)
        self.pushed_errors: set[str] = set()  # task uuids with an error item from a webhook

    async def tick(self, limit: int = 5000, now: float | None = None) -> PollReport:
        """Poll every due job. ``now`` is the engine's beat: the next polls are scheduled from it."""
        now = self.clock.now() if now is None else now
        # Leased: another process on the same database polls other jobs meanwhile (see claim_due_for_poll).
        due = await self.db.run_tx(claim_due_for_poll, now, limit, now + POLL_LEASE_S)
        report = PollReport(polled=len(due))
        if not due:
            return report
        try:
            # In id order, a task's place among the round's batches only moves forward as older
            # tasks finish, so its polls stay one interval apart.
            statuses = await self.client.poll_many([job.task_uuid for job in sorted(due, key=lambda j: j.id)])
        except (AuthError, BalanceError) as exc:
            await self.on_runware_refused(exc)
            report.failed_request = exc
            await self._postpone(due, now)
            return report
        except RunwareError as exc:
            log.warning("getResponse failed (%s); will try again next interval", exc.code)
            report.failed_request = exc
            await self._postpone(due, now)
            return report
        running: list[int] = []
        for job in due:
            status = statuses.get(job.task_uuid) or TaskStatus(task_uuid=job.task_uuid)
            try:
                if await self.apply(job, status, now, reschedule=False):
                    report.finished += 1
                else:
                    running.append(job.id)
            except Exception:  # one bad job must not stop the poller for the rest
                log.exception("job %s: could not apply Runware's answer", job.id)
        # One write for all the jobs still running, not one per job (1,000 in flight: 1,000 writes).
        if running:
            await self.db.run_tx(mark_polled, running, self.clock.now(), now + self.cfg.runware.poll_interval_s)
        return report

    async def _postpone(self, due: list[JobRecord], now: float) -> None:
        # One write for the whole round, as after a successful poll (1,000 jobs must not mean
        # 1,000 database hops every interval while Runware is down).
        ids = [job.id for job in due]
        await self.db.run_tx(mark_polled, ids, self.clock.now(), now + self.cfg.runware.poll_interval_s)

    async def apply(self, job: JobRecord, status: TaskStatus, now: float, *, reschedule: bool = True) -> bool:
        """Record what a getResponse said about one job (its full state). Returns True when the job
        reached its end at Runware; otherwise its next poll is set (unless ``reschedule`` is False:
        the caller then sets it, for many jobs at once)."""
        for result in status.results:
            await self.store.record_result(job.id, result)
        real_errors = [e for e in status.errors if e.code != "taskNotFound"]
        accounted = len({r.video_uuid for r in status.results}) + len(real_errors)
        complete = not status.processing and accounted >= job.variations
        if not complete:
            if job.state == "submitted" and (status.processing or status.results):
                await mark_processing(self.db, job.id)
            at_runware = job.state in AT_RUNWARE_STATES
            if at_runware and now - (job.submitted_at or job.created_at) > self.cfg.runware.job_deadline_s:
                error = "Runware did not finish this video in time."
                if await self.store.time_out(job.id, error):
                    await self._finished("timed_out", error)
            elif not at_runware and (
                now - (job.finished_at or job.created_at) > self.cfg.runware.late_result_window_s
            ):
                # A timed-out or cancelled job whose cost never came: stop polling and release. The
                # window runs from the time-out, not from creation (a job may have queued for long).
                await self.store.expire(job.id)
                return True
            if reschedule:
                await set_next_poll(self.db, job.id, now + self.cfg.runware.poll_interval_s)
            return False
        return await self._complete(job, real_errors, now)

    async def apply_pushed(self, job: JobRecord, status: TaskStatus, now: float) -> bool:
        """Items Runware pushed by webhook: one item per variation, not the task's full state. Results
        are recorded (de-duplicated by videoUUID) and the job completes through the same path as a
        poll once every variation is in; until then it waits (the poller finishes it otherwise)."""
        for result in status.results:
            await self.store.record_result(job.id, result)
        errors = [e for e in status.errors if e.code != "taskNotFound"]
        if job.state == "queued":
            return False  # its submit is not confirmed yet; the poll after it finishes the job
        if (errors and job.variations > 1) or job.task_uuid in self.pushed_errors:
            # An error item carries no id of its own, so a re-sent one looks like a second failed
            # variation: let a poll (the full state) decide, now.
            self.pushed_errors.add(job.task_uuid)
            await set_next_poll(self.db, job.id, now)
            return False
        stored = await results_for_job(self.db, job.id)
        if len(stored) + len(errors) < job.variations:
            if job.state == "submitted":
                await mark_processing(self.db, job.id)
            return False
        return await self._complete(job, errors, now)

    async def _complete(self, job: JobRecord, real_errors: list[TaskError], now: float) -> bool:
        """Runware is done with the job: final state and settle, exactly once (a poll and a webhook
        may both get here for the same result; the second ``complete`` is a no-op)."""
        self.pushed_errors.discard(job.task_uuid)
        self.seen_ready.setdefault(job.task_uuid, now)
        results = await results_for_job(self.db, job.id)
        cost = sum(r.cost_micro or 0 for r in results) + sum(e.cost_micro or 0 for e in real_errors)
        if results and all(r.cost_micro is None for r in results):
            cost = job.video_estimate_micro  # includeCost was ignored: settle what we reserved, never less
        failures = [error_for(None, e).user_message for e in real_errors]
        state = "succeeded" if results else "failed"
        error = "\n".join(failures) or None
        if await self.store.finish(job.id, state=state, error=error, cost_micro=cost,
                                     failed_variations=len(real_errors)):
            await self._finished(state, error)
        return True

    async def _finished(self, state: str, error: str | None) -> None:
        if self.on_job_finished is not None:
            try:
                await self.on_job_finished(state, error)
            except Exception:
                log.exception("the job-finished hook failed")
