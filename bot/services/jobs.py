"""The persistent job state machine (SPEC 3.1). No network here: the engine that talks to Runware
calls these methods. Each transition is one transaction, followed by its failpoint, so a process
killed right after any of them resumes from the database alone.

Money rules applied by ``finish``: a known cost settles (a failure billed 0 releases instead); an
unknown cost releases, except for jobs that may still be billed (timed out, or cancelled after they
were submitted): their reserve stays open until a late ``finish``/``settle_late`` brings the cost,
or ``expire``/``close_late_window`` releases it.
"""

from __future__ import annotations

import os
import statistics
from datetime import tzinfo
from typing import Any

from bot import failpoints
from bot.db import Database, Executor
from bot.db import queries as q
from bot.db.records import (
    ACTIVE_STATES,
    FINAL_STATES,
    JobMoney,
    JobRecord,
    LedgerRecord,
    ResultRecord,
)
from bot.runware.models import VideoResult
from bot.services import queue
from bot.services.clock import Clock, day_of, month_of
from bot.services.quotas import RUNWARE_PAUSE_KEY, Member, Quotas

SYSTEM_ACTOR = "system"
MEDIAN_SAMPLE = 51  # recent jobs the progress estimate looks at


def _actor(member: Member) -> str:
    return "terminal" if member.guild_id == 0 else f"user:{member.user_id}"


class JobStore:
    def __init__(
        self,
        db: Database,
        quotas: Quotas,
        clock: Clock,
        tz: tzinfo,
        *,
        late_window_s: float = 86400.0,
        run_id: str = queue.RUN_ID,
    ) -> None:
        self.db = db
        self.quotas = quotas
        self.clock = clock
        self.tz = tz
        self.late_window_s = late_window_s
        self.run_id = run_id

    # ---- creation (the reserve) --------------------------------------------------------------------

    async def precheck(
        self,
        member: Member,
        *,
        channel_id: int,
        blocklist_text: str | None = None,
        estimate_micro: int | None = None,
        variations: int = 1,
    ) -> None:
        """The reserve's checks without reserving (before attachments are fetched: SPEC 3.2).
        Limits are checked too when ``estimate_micro`` is given."""
        async with self.db.transaction(immediate=False) as tx:
            await self.quotas.check_access(tx, member)
            await self.quotas.check_place(tx, member, channel_id, blocklist_text)
            if estimate_micro is not None:
                await self.quotas.check_limits(
                    tx, member, estimate_micro=estimate_micro, variations=variations, now=self.clock.now()
                )

    async def create(
        self,
        member: Member,
        *,
        channel_id: int,
        model_key: str,
        params: dict[str, Any],
        task_uuid: str,
        duration_s: int,
        variations: int,
        estimate_micro: int,
        upload_limit: int | None = None,
        parent_job_id: int | None = None,
        blocklist_text: str | None = None,
    ) -> JobRecord:
        """Check everything and reserve the estimate in ONE ``BEGIN IMMEDIATE`` transaction, writing the
        queued job and its reserve row. Raises LimitExceeded / NotPermitted / InvalidInput /
        RunwareUnavailable with nothing written."""
        if variations < 1 or duration_s < 1 or estimate_micro < 0:
            raise ValueError("variations and duration_s must be positive, estimate_micro >= 0")
        now = self.clock.now()
        day, month = day_of(now, self.tz), month_of(now, self.tz)
        async with self.db.transaction() as tx:
            await self.quotas.check_access(tx, member)
            await self.quotas.check_place(tx, member, channel_id, blocklist_text)
            await self.quotas.check_limits(
                tx, member, estimate_micro=estimate_micro, variations=variations, now=now
            )
            job_id = await q.insert_job(
                tx, guild_id=member.guild_id, channel_id=channel_id, user_id=member.user_id,
                model_key=model_key, params=params, task_uuid=task_uuid, duration_s=duration_s,
                variations=variations, estimate_micro=estimate_micro, created_at=now, day=day,
                month=month, upload_limit=upload_limit, parent_job_id=parent_job_id,
            )
            await q.insert_ledger(
                tx, kind="reserve", guild_id=member.guild_id, user_id=member.user_id, job_id=job_id,
                amount_micro=estimate_micro, day=day, month=month, actor=_actor(member), reason=None, at=now,
            )
            job = await q.get_job(tx, job_id)
        failpoints.hit("after_reserve")
        assert job is not None
        return job

    # ---- transitions ---------------------------------------------------------------------------

    async def set_image_uuids(self, job_id: int, image_uuids: dict[str, str]) -> None:
        await q.set_image_uuids(self.db, job_id, image_uuids)
        failpoints.hit("after_upload")

    async def mark_submitted(self, job_id: int, next_poll_at: float) -> bool:
        """queued -> submitted (Runware acknowledged). False when the job was not queued."""
        done = await q.mark_submitted(self.db, job_id, self.clock.now(), next_poll_at)
        if done:
            failpoints.hit("after_submit")
        return done

    async def mark_processing(self, job_id: int) -> bool:
        return await q.mark_processing(self.db, job_id)

    async def unclaim(self, job_id: int) -> JobRecord | None:
        """Give a claimed queued job back to the queue (submit failed for now). A cancel asked for
        while it was being submitted takes effect here: cancelled and released."""
        async with self.db.transaction() as tx:
            job = await q.get_job(tx, job_id)
            if job is None or job.state != "queued":
                return job
            if job.cancel_requested:
                await self._cancel_now(tx, job, job.cancelled_by or SYSTEM_ACTOR)
            else:
                await q.unclaim_job(tx, job_id)
            return await q.get_job(tx, job_id)

    async def record_result(self, job_id: int, result: VideoResult) -> bool:
        """Store one variation; False if its videoUUID was already recorded (getResponse repeats)."""
        row = await q.insert_result(
            self.db, job_id=job_id, video_uuid=result.video_uuid, video_url=result.video_url,
            seed=result.seed, cost_micro=result.cost_micro, nsfw=result.nsfw, now=self.clock.now(),
        )
        if row is None:
            return False
        failpoints.hit("after_result_recorded")
        return True

    async def finish(
        self,
        job_id: int,
        state: str,
        error: str | None,
        cost_micro: int | None,
        failed_variations: int = 0,
    ) -> bool:
        """Final state plus settle or release, in one transaction, exactly once; a repeated call is a
        no-op answering False. Pass ``cost_micro=0`` when Runware is done and billed nothing.

        A job with ``cancel_requested`` ends as 'cancelled' whatever Runware said. On a job that
        may still be billed (timed out / cancelled after submit, cost not settled) this is the late
        answer: the cost settles, and a timed-out job whose videos came late becomes 'succeeded'
        with ``notified_at`` cleared, so its results are posted."""
        if state not in FINAL_STATES:
            raise ValueError(f"not a final state: {state!r}")
        now = self.clock.now()
        async with self.db.transaction() as tx:
            job = await q.get_job(tx, job_id)
            if job is None:
                return False
            if job.cancel_requested:
                state = "cancelled"
            if job.is_final:
                if not self._may_still_bill(job.state, job) or (await q.job_money(tx, job_id)).finalized:
                    return False
                if cost_micro is None and state != "succeeded":
                    return False  # e.g. a second time_out(): nothing new
                if job.state == "timed_out" and state == "succeeded":
                    await q.late_success(tx, job_id, error, failed_variations)
            elif not await q.finish_job(tx, job_id, state, error, failed_variations, now):
                return False
            if cost_micro is None and state == "succeeded":
                # includeCost is always sent; if Runware still said nothing, the results' own costs
                # or else the estimate: a delivered video is never free by accident.
                count, total = await q.results_cost(tx, job_id)
                cost_micro = total if count and total else job.estimate_micro
            if cost_micro is not None and (state == "succeeded" or cost_micro > 0):
                await self._ledger(tx, job, "settle", cost_micro, state, now)
            elif cost_micro is None and self._may_still_bill(state, job):
                pass  # reserve stays open: a late cost, or expire() / close_late_window()
            else:
                await self._ledger(tx, job, "release", job.estimate_micro, error or state, now)
        failpoints.hit("after_settle")
        return True

    complete = finish  # the engine's name: complete(job_id, state=..., error=..., cost_micro=...)

    async def abandon(self, job_id: int, error: str) -> bool:
        """Failed before Runware took it (upload refused, submit rejected): failed, released."""
        return await self.finish(job_id, "failed", error, None)

    async def time_out(self, job_id: int, error: str) -> bool:
        """Past the deadline: timed_out; the reserve stays open for a late cost."""
        return await self.finish(job_id, "timed_out", error, None)

    @staticmethod
    def _may_still_bill(state: str, job: JobRecord) -> bool:
        return state == "timed_out" or (state == "cancelled" and job.submitted_at is not None)

    async def settle_late(self, job_id: int, cost_micro: int) -> bool:
        """A timed-out or cancelled job's cost arrived after it was finished: settle it, once."""
        now = self.clock.now()
        async with self.db.transaction() as tx:
            job = await q.get_job(tx, job_id)
            if job is None or not job.is_final:
                return False
            if cost_micro > 0 or job.state == "succeeded":
                row = await self._ledger(tx, job, "settle", cost_micro, "late cost", now)
            else:
                row = await self._ledger(tx, job, "release", job.estimate_micro, "billed nothing", now)
        if row is not None:
            failpoints.hit("after_settle")
        return row is not None

    async def expire(self, job_id: int) -> bool:
        """Close one job's late window: release its still-open reserve. False if nothing was open."""
        now = self.clock.now()
        async with self.db.transaction() as tx:
            job = await q.get_job(tx, job_id)
            if job is None or not job.is_final:
                return False
            row = await self._ledger(tx, job, "release", job.estimate_micro, "no cost reported", now)
        return row is not None

    async def close_late_window(self) -> list[int]:
        """Release the reserves of jobs whose late window passed without a cost. Returns their ids."""
        now = self.clock.now()
        released = []
        async with self.db.transaction() as tx:
            for job in await q.late_window_closed(tx, now - self.late_window_s):
                if await self._ledger(tx, job, "release", job.estimate_micro, "no cost reported", now):
                    released.append(job.id)
        return released

    async def _ledger(
        self, c: Executor, job: JobRecord, kind: str, amount: int, reason: str | None, now: float
    ) -> int | None:
        return await q.insert_ledger(
            c, kind=kind, guild_id=job.guild_id, user_id=job.user_id, job_id=job.id, amount_micro=amount,
            day=job.day, month=job.month, actor=SYSTEM_ACTOR, reason=reason, at=now,
        )

    async def _cancel_now(self, c: Executor, job: JobRecord, actor: str) -> None:
        await queue.cancel_queued(c, job, actor, self.clock.now())

    async def request_cancel(self, job_id: int, actor: str) -> JobRecord | None:
        """Queued: cancelled and released at once. Submitted/processing (or being submitted by this
        process): ``cancel_requested`` is set; it keeps being polled to settle, and is never delivered.
        Final jobs are unchanged. Returns the job as it is now."""
        async with self.db.transaction() as tx:
            job = await q.get_job(tx, job_id)
            if job is None or job.is_final:
                return job
            fresh_claim = job.claimed_by == self.run_id and (job.claimed_at or 0) >= (
                self.clock.now() - queue.CLAIM_TTL_S
            )
            if job.state == "queued" and not fresh_claim:
                await self._cancel_now(tx, job, actor)
            else:
                await q.set_cancel_requested(tx, job_id, actor)
            return await q.get_job(tx, job_id)

    async def mark_delivered(self, result_id: int, local_path: str | None = None) -> bool:
        done = await q.mark_delivered(self.db, result_id, self.clock.now(), local_path)
        if done:
            failpoints.hit("after_delivery")
        return done

    async def mark_notified(self, job_id: int, result_message_id: int | None = None) -> bool:
        done = await q.mark_notified(self.db, job_id, self.clock.now(), result_message_id)
        if done:
            failpoints.hit("after_notify")
        return done

    async def set_progress_message(self, job_id: int, message_id: int | None) -> None:
        await q.set_progress_message(self.db, job_id, message_id)

    async def set_result_message(self, job_id: int, message_id: int | None) -> None:
        await q.set_result_message(self.db, job_id, message_id)

    async def set_next_poll(self, job_id: int, ts: float | None) -> None:
        await q.set_next_poll(self.db, job_id, ts)

    async def mark_polled(self, job_ids: list[int], next_poll_at: float) -> None:
        """One write for a whole poll batch: last_polled_at = now, next_poll_at for each."""
        if job_ids:
            async with self.db.transaction() as tx:
                await q.mark_polled(tx, job_ids, self.clock.now(), next_poll_at)

    # ---- reads ---------------------------------------------------------------------------------

    async def get(self, job_id: int) -> JobRecord | None:
        return await q.get_job(self.db, job_id)

    async def get_by_task(self, task_uuid: str) -> JobRecord | None:
        return await q.get_job_by_task(self.db, task_uuid)

    async def results(self, job_id: int) -> list[ResultRecord]:
        return await q.results_for_job(self.db, job_id)

    async def money(self, job_id: int) -> JobMoney:
        return await q.job_money(self.db, job_id)

    async def ledger(self, job_id: int) -> list[LedgerRecord]:
        return await q.ledger_for_job(self.db, job_id)

    async def history(self, member: Member, limit: int = 10) -> list[JobRecord]:
        return await q.member_jobs(self.db, member.guild_id, member.user_id, limit)

    async def jobs_by_state(
        self, state: str | None, limit: int = 50, guild_id: int | None = None
    ) -> list[JobRecord]:
        return await q.jobs_by_state(self.db, state, limit, guild_id)

    # Resume (SPEC 3.1): what a fresh process picks up.
    async def queued(self, limit: int = 10_000) -> list[JobRecord]:
        return await q.queued_jobs(self.db, limit)

    async def at_runware(self, limit: int = 10_000) -> list[JobRecord]:
        """Submitted/processing (cancel_requested included), and timed-out or cancelled-after-submit
        jobs whose cost is not settled yet."""
        return await q.at_runware_jobs(self.db, limit)

    async def due_for_poll(self, now: float | None = None, limit: int = 500) -> list[JobRecord]:
        """The at_runware() jobs whose next_poll_at has come (NULL counts as due), soonest first."""
        return await q.due_for_poll(self.db, self.clock.now() if now is None else now, limit)

    async def make_in_flight_due(self, now: float | None = None) -> int:
        """On start: every job at Runware is polled at once."""
        return await q.make_all_due(self.db, self.clock.now() if now is None else now)

    async def active_jobs(self, limit: int = 10_000) -> list[JobRecord]:
        """Queued, submitted, processing (cancel_requested included): the ones with live progress."""
        return await q.active_jobs(self.db, limit)

    async def undelivered(self, limit: int = 1000) -> list[JobRecord]:
        return await q.undelivered_jobs(self.db, limit)

    async def unnotified(self, limit: int = 1000) -> list[JobRecord]:
        """Final jobs whose final message (results or notice) is not posted yet."""
        return await q.unnotified_jobs(self.db, limit)

    pending_notices = unnotified

    async def settled_cost(self, job_id: int) -> int | None:
        """The settled cost in micro-USD; None while reserved (or when released)."""
        return (await q.job_money(self.db, job_id)).settled

    async def median_duration(self, model_key: str, duration_s: int) -> float | None:
        """Median seconds from submit to finish of recent succeeded jobs like this one."""
        sample = await q.recent_durations(self.db, model_key, duration_s, MEDIAN_SAMPLE)
        return statistics.median(sample) if sample else None

    # ---- bot-wide state --------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        await q.write_heartbeat(self.db, self.clock.now(), os.getpid())

    async def heartbeat_age(self) -> float | None:
        beat = await q.read_heartbeat(self.db)
        return None if beat is None else max(self.clock.now() - beat.at, 0.0)

    async def set_runware_paused(self, reason: str | None) -> None:
        """Runware refused our key (401) or balance (402): new jobs are refused (RunwareUnavailable),
        queued ones wait. ``None`` lifts the pause."""
        if reason is None:
            await q.kv_delete(self.db, RUNWARE_PAUSE_KEY)
        else:
            await q.kv_set(self.db, RUNWARE_PAUSE_KEY, reason)

    async def runware_paused(self) -> str | None:
        """The pause reason, or None when not paused."""
        return await q.kv_get(self.db, RUNWARE_PAUSE_KEY)

    async def guild_safety_mode(self, guild_id: int) -> str | None:
        """The guild's chosen content check ('none'|'fast'|'full'), None = runware.safety_mode."""
        return (await q.get_guild_settings(self.db, guild_id)).safety_mode


__all__ = ["ACTIVE_STATES", "FINAL_STATES", "JobStore", "Member"]
